//! Starting a connection's tasks, and reconnecting with backoff to resume the
//! session when a connection breaks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::dial::{Reader, Writer};
use super::reader::read_loop;
use super::shared::{Link, Shared, Waiter};
use super::writer::write_loop;
use super::{ClientError, ConnectionEvent};
use crate::protocol::code::Code;
use crate::protocol::envelope::Id;
use crate::protocol::reply::encode_ack;
use crate::protocol::request::{Credential, Login, Request};
use crate::sync::lock;

/// Frames queued for the socket before a request waits.
const SEND_QUEUE: usize = 256;
/// First and longest pause between reconnection attempts.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long one resume login may take before the attempt counts as failed.
const RESUME_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection's reader and writer, started.
pub(super) struct Attached {
    pub(super) generation: u64,
    pub(super) out: mpsc::Sender<Bytes>,
    /// Cancelled when the connection's reader stops.
    pub(super) ended: CancellationToken,
}

/// Starts the reader and writer of a new connection.
pub(super) fn attach(shared: &Arc<Shared>, (rd, wr): (Reader, Writer)) -> Attached {
    let generation = shared.generations.fetch_add(1, Ordering::AcqRel) + 1;
    let (out_tx, out_rx) = mpsc::channel(SEND_QUEUE);
    let ended = CancellationToken::new();
    tokio::spawn(write_loop(wr, out_rx, shared.clone(), generation));
    tokio::spawn(read_loop(
        rd,
        out_tx.clone(),
        shared.clone(),
        generation,
        ended.clone(),
    ));
    Attached {
        generation,
        out: out_tx,
        ended,
    }
}

/// Reconnects with backoff and resumes the session, then sends again what waits for
/// an answer; gives up (ending the client with `cause`) after `reconnect_for`.
pub(super) async fn reconnect(shared: Arc<Shared>, cause: ClientError) {
    // A `reconnect_for` too long for the clock to add means "keep trying".
    let deadline = Instant::now().checked_add(shared.options.reconnect_for);
    let mut delay = BACKOFF_FIRST;
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            shared.finish(cause);
            return;
        }
        delay = (delay * 2).min(BACKOFF_MAX);
        let Some((user, token)) = lock(&shared.session).clone() else {
            shared.finish(cause);
            return;
        };
        let Ok(stream) = shared.dialer.dial().await else {
            continue;
        };
        let Attached {
            generation,
            out,
            ended,
        } = attach(&shared, stream);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let resume = Request::Login(Login {
            user,
            credential: Credential::Session(token),
            acks: true,
        })
        .encode(Some(&Id::UInt(id)));
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter {
            tx,
            frame: resume.clone(),
            resend: false,
        };
        match shared.pending().as_mut() {
            Some(p) => p.insert(id, waiter),
            None => return,
        };
        let _ = out.send(resume).await;
        // The attempt fails fast if this connection dies before answering.
        let answer = tokio::select! {
            a = tokio::time::timeout(RESUME_TIMEOUT, rx) => a.ok(),
            _ = ended.cancelled() => None,
        };
        if let Some(p) = shared.pending().as_mut() {
            p.remove(&id);
        }
        match answer {
            Some(Ok(env)) if env.code == Code::LoginOk.number() => {
                {
                    // A reader that ended marks `ended` before it reports the loss under
                    // this lock: either it is seen here, or its report sees this link.
                    let mut link = lock(&shared.link);
                    if ended.is_cancelled() {
                        continue;
                    }
                    *link = Link {
                        out: out.clone(),
                        generation,
                    };
                    shared.link_generation.store(generation, Ordering::Release);
                }
                let again: Vec<Bytes> = shared
                    .pending()
                    .as_ref()
                    .map(|p| {
                        p.values()
                            .filter(|w| w.resend)
                            .map(|w| w.frame.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                let acked = shared.acked.load(Ordering::Acquire);
                if acked > 0 {
                    let _ = out.send(encode_ack(acked)).await;
                }
                for frame in again {
                    let _ = out.send(frame).await;
                }
                shared.options.emit(ConnectionEvent::Reconnected);
                return;
            }
            Some(Ok(env)) if env.code == Code::BadCredentials.number() => {
                // The token is void (expired, or logged out elsewhere): nothing to resume.
                shared.finish(ClientError::Closed {
                    code: cause.code(),
                    reason: "the session could not be resumed".into(),
                });
                return;
            }
            _ => {} // no answer in time, or the connection broke again: retry
        }
    }
}
