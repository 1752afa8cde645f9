//! The writing task of a connection: frames in queue order, with acks coalesced.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::dial::Writer;
use super::shared::Shared;
use crate::protocol::reply::encode_ack;

/// Queued to the writer in place of an ack frame: "write an ack for `acked` as it is
/// by then". A receiver taking messages quickly sends one ack per writer batch (or
/// per [`ACK_DELAY`]) instead of one per message; each still covers everything
/// handled before it, so coalescing delays acks but never skips a message.
pub(super) const ACK_DUE: Bytes = Bytes::new();
/// How long the writer holds an ack that has nothing to travel with, so that it
/// covers more. A crash within it means a few more redeliveries, never a loss.
const ACK_DELAY: Duration = Duration::from_millis(5);

pub(super) async fn write_loop(
    mut wr: Writer,
    mut out: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
    generation: u64,
) {
    let stop = &shared.stop;
    let mut batch = Batch {
        shared: &shared,
        generation,
        // BytesMut: a write cut short by `stop` leaves exactly the unsent bytes behind.
        buf: BytesMut::new(),
        ack_due: false,
    };
    'run: loop {
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            f = out.recv() => match f { Some(f) => f, None => break },
        };
        batch.add(first);
        while let Ok(f) = out.try_recv() {
            batch.add(f);
            if batch.buf.len() > 64 * 1024 {
                break;
            }
        }
        if batch.ack_due && batch.buf.is_empty() {
            // Only an ack to send: a moment's wait lets it cover the messages the
            // application takes meanwhile, instead of one ack (a write here, a read and
            // a parse at the server) every few messages.
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                f = out.recv() => if let Some(f) = f { batch.add(f) },
                _ = tokio::time::sleep(ACK_DELAY) => {}
            }
        }
        batch.ack_now();
        while !batch.buf.is_empty() {
            let written = tokio::select! {
                biased;
                _ = stop.cancelled() => break 'run,
                r = wr.write_buf(&mut batch.buf) => r,
            };
            if !matches!(written, Ok(n) if n > 0) {
                return;
            }
        }
    }
    // Closing: what was queued before the close (a final ack) still goes out, briefly.
    while let Ok(f) = out.try_recv() {
        batch.add(f);
    }
    batch.ack_now();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = wr.write_all(&batch.buf).await;
        let _ = wr.shutdown().await;
    })
    .await;
}

/// What the writer is about to write: frames in queue order, and whether an ack is due.
struct Batch<'a> {
    shared: &'a Shared,
    generation: u64,
    buf: BytesMut,
    /// An [`ACK_DUE`] marker was taken; its ack is written before the next frame, or
    /// at the end of the batch.
    ack_due: bool,
}

impl Batch<'_> {
    fn add(&mut self, frame: Bytes) {
        if frame.is_empty() {
            self.ack_due = true;
        } else {
            // An ack keeps its place before later frames (a logout, say).
            self.ack_now();
            self.buf.extend_from_slice(&frame);
        }
    }

    /// Writes the due ack into the batch: one for the highest message handled by now.
    fn ack_now(&mut self) {
        if !std::mem::take(&mut self.ack_due) {
            return;
        }
        // Cleared before `acked` is read: an ack taken after this point queues a new
        // marker (SeqCst, like `ack_taken`'s side).
        let _ = self.shared.ack_queued.compare_exchange(
            self.generation,
            0,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        let acked = self.shared.acked.load(Ordering::SeqCst);
        self.buf.extend_from_slice(&encode_ack(acked));
    }
}
