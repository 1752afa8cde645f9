//! One client connection: a reader task that parses frames and runs the
//! session, and a writer task that owns the socket's sending half.
//!
//! The reader never writes to the socket and the writer never parses, so a
//! client that stops reading stalls only its own writer. Replies reach the
//! writer through a small bounded queue (a client that does not read its
//! replies stops being read); pushes reach it through the hub's bounded
//! inbox (a client that does not read its pushes is a slow consumer, `e`/67).
//! The writer also owns delivery order: after login it first writes the
//! user's stored messages from the store, then the live inbox, skipping what
//! the catch-up already wrote, and reports the delivery cursor as it goes.
//!
//! With TLS configured the handshake comes first, bounded in time; the two
//! tasks then see only a byte stream, the same code either way.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::FramedRead;

use super::hub::{Conn, Push};
use super::queue::{self, Receiver, Sender};
use super::session::{Outbound, Session};
use super::Context;
use crate::protocol::code::Code;
use crate::protocol::codec::{CodecError, LineCodec};
use crate::protocol::envelope::encode_error;
use crate::protocol::reply::encode_heartbeat;

/// Replies queued to the writer before the reader waits.
const REPLY_QUEUE: usize = 64;
/// First size of a connection's read buffer, bytes.
const READ_BUFFER: usize = 256;
/// Stored messages fetched per catch-up step.
const CATCH_UP_PAGE: u32 = 256;
/// How long a goodbye frame may take to leave before the socket is dropped anyway.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the writer may keep draining replies after the reader has stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long, and how much, a closing connection reads and discards (see [`linger`]).
const LINGER_TIMEOUT: Duration = Duration::from_millis(500);
const LINGER_BYTES: u64 = 4 << 20;
/// Frames gathered into one socket write.
const MAX_GATHER: usize = 256;
/// Replies a connection may owe at once (sends waiting for their commit included)
/// before the writer stops taking more, and so the reader stops reading.
const MAX_IN_FLIGHT: usize = 256;
/// How long a TLS client may take to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The reading half of a connection, plain or TLS.
type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection, plain or TLS.
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Serves one accepted connection until it closes.
pub async fn serve(stream: TcpStream, ctx: Arc<Context>, _permit: OwnedSemaphorePermit) {
    let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
    let peer = stream
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let _ = stream.set_nodelay(true);
    // Boxed: the handshake's state would otherwise stay in every idle connection's task.
    let Some((rd, wr)) = Box::pin(open(stream, &ctx)).await else {
        return;
    };
    let (out_tx, out_rx) = queue::queue(REPLY_QUEUE);
    let (inbox_tx, inbox_rx) = queue::queue(ctx.config.outbound_queue);
    let conn = Arc::new(Conn::new(ctx.next_conn_id(), inbox_tx));
    let writer = tokio::spawn(write_loop(wr, out_rx, inbox_rx, conn.clone(), ctx.clone()));
    let (user, rd, peer_done) =
        read_loop(rd, out_tx, conn.clone(), ctx.clone(), local_port, peer).await;
    if let Some(user) = user {
        ctx.hub.unregister(&user, conn.id);
    }
    // Boxed like the handshake: only a closing connection needs this state.
    Box::pin(finish(writer, conn, rd, peer_done)).await;
}

/// After the reader stops: lets the writer drain, then lingers if the peer may still send.
async fn finish(
    mut writer: tokio::task::JoinHandle<()>,
    conn: Arc<Conn>,
    rd: Reader,
    peer_done: bool,
) {
    // The writer still sends the replies queued before the reader stopped (a client may
    // half-close after its last request), but a peer that never reads cannot hold it.
    if timeout(DRAIN_TIMEOUT, &mut writer).await.is_err() {
        conn.abort();
        let _ = writer.await;
    }
    if !peer_done {
        linger(rd).await;
    }
}

/// The connection's two halves: the socket's own, or a finished TLS session's.
/// `None` when a TLS handshake failed, timed out or was cut by shutdown.
async fn open(stream: TcpStream, ctx: &Context) -> Option<(Reader, Writer)> {
    let Some(acceptor) = &ctx.tls else {
        let (rd, wr) = stream.into_split();
        return Some((Box::new(rd), Box::new(wr)));
    };
    let handshake = async {
        if !speaks_tls(&stream).await {
            refuse_plain(stream).await;
            return None;
        }
        match acceptor.accept(stream).await {
            Ok(tls) => Some(tls),
            Err(e) => {
                tracing::debug!("TLS handshake failed: {e}");
                None
            }
        }
    };
    let tls = tokio::select! {
        _ = ctx.shutdown.cancelled() => None,
        t = timeout(TLS_HANDSHAKE_TIMEOUT, handshake) => t.ok().flatten(),
    }?;
    let (rd, wr) = tokio::io::split(tls);
    Some((Box::new(rd), Box::new(wr)))
}

/// Whether the peer's first byte starts a TLS handshake (`false` also when it sent nothing).
async fn speaks_tls(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0] == TLS_HANDSHAKE_RECORD)
}

/// Tells a client that sent plain frames to a TLS port what is wrong, in plain text,
/// and closes: `e`/62, since its bytes are not a frame this port can read.
async fn refuse_plain(mut stream: TcpStream) {
    let frame = encode_error(
        Code::MalformedFrame,
        "this server speaks TLS: connect with TLS",
        None,
    );
    let sent = timeout(GOODBYE_TIMEOUT, async {
        let _ = stream.write_all(&frame).await;
        let _ = stream.shutdown().await;
    })
    .await;
    if sent.is_ok() {
        linger(Box::new(stream)).await;
    }
}

/// Reads and discards what the peer still sends, briefly, before the socket is dropped.
///
/// Closing a socket with unread input makes the kernel send a reset, which can
/// destroy the goodbye frame (`e`/61 after an oversized line) before the peer reads it.
async fn linger<R: AsyncRead + Unpin>(mut rd: R) {
    let mut sink = tokio::io::sink();
    let mut limited = (&mut rd).take(LINGER_BYTES);
    let _ = timeout(LINGER_TIMEOUT, tokio::io::copy(&mut limited, &mut sink)).await;
}

/// Reads and handles frames. Returns the user still logged in when it stops, the
/// reading half, and whether the peer ended the stream itself.
async fn read_loop(
    rd: Reader,
    out: Sender<Outbound>,
    conn: Arc<Conn>,
    ctx: Arc<Context>,
    local_port: u16,
    peer: std::net::IpAddr,
) -> (Option<Arc<str>>, Reader, bool) {
    let mut peer_done = false;
    // A small first buffer: most connections sit idle most of the time, and the buffer
    // doubles as soon as a frame needs more (tokio-util's default is 8 KiB each).
    let mut frames =
        FramedRead::with_capacity(rd, LineCodec::new(ctx.config.max_frame_bytes), READ_BUFFER);
    let mut session = Session::new(ctx.clone(), conn.clone(), local_port, peer);
    let heartbeat = ctx.config.heartbeat;
    let mut deadline = Instant::now() + heartbeat;
    let mut pinged = false;
    let mut actions = Vec::new();
    loop {
        let next = tokio::select! {
            biased;
            _ = conn.closed() => break,
            _ = ctx.shutdown.cancelled() => {
                conn.close(Code::ShuttingDown);
                break;
            }
            _ = sleep_until(deadline) => {
                if pinged {
                    conn.close(Code::HeartbeatTimeout);
                    break;
                }
                pinged = true;
                deadline = Instant::now() + heartbeat;
                if out.send(Outbound::Frame(encode_heartbeat())).await.is_err() {
                    break;
                }
                continue;
            }
            next = frames.next() => next,
        };
        let line = match next {
            None => {
                peer_done = true;
                break;
            }
            Some(Ok(line)) => line,
            Some(Err(CodecError::FrameTooLong { limit })) => {
                let reason = format!("frame longer than {limit} bytes; closing the connection");
                let _ = out
                    .send(Outbound::Frame(encode_error(
                        Code::FrameTooLong,
                        &reason,
                        None,
                    )))
                    .await;
                let _ = out.send(Outbound::Close).await;
                break;
            }
            Some(Err(CodecError::Io(_))) => {
                peer_done = true;
                break;
            }
        };
        pinged = false;
        deadline = Instant::now() + heartbeat;
        // Boxed: a request's state (a login's, say) lives only while it is handled,
        // not in the idle connection's task.
        Box::pin(session.handle_line(&line, &mut actions)).await;
        // Taken, not drained: an idle connection keeps no action buffer.
        let actions = std::mem::take(&mut actions);
        let mut closing = false;
        for action in actions {
            closing |= matches!(action, Outbound::Close);
            if out.send(action).await.is_err() {
                closing = true;
            }
        }
        if closing {
            break;
        }
    }
    let user = session.user().cloned();
    (user, frames.into_inner(), peer_done)
}

/// What woke the writer.
enum Step {
    Out(Option<Outbound>),
    Ready(Bytes),
    Push(Option<Arc<Push>>),
    Closed,
}

/// Replies in request order: ready ones leave at once, a pending one holds back
/// those behind it until its commit finishes.
#[derive(Default)]
struct Replies {
    queue: VecDeque<Outbound>,
    /// What the flags of the write in progress say to do after it.
    close_after_write: bool,
    start: Option<(Arc<str>, bool)>,
}

impl Replies {
    /// Moves every reply that is ready, in order, into `buf`; stops at one that is not,
    /// or at a close or a delivery start (which act after the write).
    fn release(&mut self, buf: &mut BytesMut) {
        self.release_ready(buf);
        if self.queue.is_empty() {
            // An idle connection keeps no queue buffer.
            self.queue = VecDeque::new();
        }
    }

    fn release_ready(&mut self, buf: &mut BytesMut) {
        while !self.close_after_write && self.start.is_none() {
            match self.queue.front_mut() {
                None => return,
                Some(Outbound::Pending(reply)) => match reply.as_mut().now_or_never() {
                    Some(frame) => {
                        buf.extend_from_slice(&frame);
                        self.queue.pop_front();
                    }
                    None => return,
                },
                Some(_) => {
                    if let Some(o) = self.queue.pop_front() {
                        self.apply(o, buf);
                    }
                }
            }
        }
    }

    fn apply(&mut self, o: Outbound, buf: &mut BytesMut) {
        match o {
            Outbound::Frame(f) => buf.extend_from_slice(&f),
            Outbound::Pending(p) => self.queue.push_front(Outbound::Pending(p)),
            Outbound::Close => self.close_after_write = true,
            Outbound::StartDelivery { user, acks } => self.start = Some((user, acks)),
        }
    }

    fn waiting_on_commit(&self) -> bool {
        matches!(self.queue.front(), Some(Outbound::Pending(_)))
    }

    /// The frame of the pending reply at the front, once it is ready.
    async fn front_ready(&mut self) -> Bytes {
        match self.queue.front_mut() {
            Some(Outbound::Pending(reply)) => {
                let frame = reply.as_mut().await;
                self.queue.pop_front();
                frame
            }
            _ => std::future::pending().await,
        }
    }
}

/// Owns the sending half: replies, catch-up, live pushes and the goodbye frame.
async fn write_loop(
    mut wr: Writer,
    out: Receiver<Outbound>,
    inbox: Receiver<Arc<Push>>,
    conn: Arc<Conn>,
    ctx: Arc<Context>,
) {
    // BytesMut so a write cut short by a close resumes at the exact byte it stopped at.
    let mut buf = BytesMut::new();
    let mut delivery = Delivery::default();
    let mut replies = Replies::default();
    let mut reader_done = false;
    'serve: loop {
        if reader_done && replies.queue.is_empty() && buf.is_empty() {
            break 'serve;
        }
        // Something left over from the last round (replies released after a catch-up)
        // is written before waiting for anything new.
        let owed = !buf.is_empty() || replies.close_after_write || replies.start.is_some();
        if !owed {
            let take_more = !reader_done && replies.queue.len() < MAX_IN_FLIGHT;
            let committing = replies.waiting_on_commit();
            let step = tokio::select! {
                biased;
                _ = conn.closed() => Step::Closed,
                f = replies.front_ready(), if committing => Step::Ready(f),
                o = out.recv(), if take_more => Step::Out(o),
                p = inbox.recv(), if delivery.user.is_some() => Step::Push(p),
            };
            match step {
                Step::Closed => break 'serve,
                Step::Out(None) => {
                    reader_done = true;
                    continue;
                }
                Step::Out(Some(o)) => replies.queue.push_back(o),
                Step::Ready(frame) => buf.extend_from_slice(&frame),
                Step::Push(None) => break 'serve,
                Step::Push(Some(p)) => delivery.take(p, &mut buf),
            }
        }
        replies.release(&mut buf);
        // Gather whatever else is ready into the same write.
        for _ in 0..MAX_GATHER {
            if replies.close_after_write || replies.start.is_some() {
                break;
            }
            let mut took = false;
            if replies.queue.len() < MAX_IN_FLIGHT {
                if let Some(o) = out.try_recv() {
                    replies.queue.push_back(o);
                    replies.release(&mut buf);
                    took = true;
                }
            }
            if delivery.user.is_some() {
                if let Some(p) = inbox.try_recv() {
                    delivery.take(p, &mut buf);
                    took = true;
                }
            }
            if !took {
                break;
            }
        }
        if !write_or_closed(&mut wr, &mut buf, &conn).await {
            break 'serve;
        }
        delivery.report(&ctx, &conn);
        if replies.close_after_write {
            let _ = wr.shutdown().await;
            return;
        }
        if let Some((user, acks)) = replies.start.take() {
            delivery.acks = acks;
            let caught_up = Box::pin(catch_up(
                &mut wr,
                &mut buf,
                &conn,
                &ctx,
                &mut delivery,
                user,
            ))
            .await;
            if !caught_up {
                break 'serve;
            }
            replies.release(&mut buf);
        }
    }
    Box::pin(goodbye_frame(wr, buf, out, replies, delivery, conn, ctx)).await;
}

/// Says goodbye with the close reason, after the replies still owed (the sends in
/// flight finish their commits first). An aborted connection (its socket failed, or
/// its peer never read) gets no goodbye.
async fn goodbye_frame(
    mut wr: Writer,
    mut buf: BytesMut,
    out: Receiver<Outbound>,
    mut replies: Replies,
    mut delivery: Delivery,
    conn: Arc<Conn>,
    ctx: Arc<Context>,
) {
    if let Some(code) = conn.close_reason() {
        let written = timeout(GOODBYE_TIMEOUT, async {
            while let Some(o) = out.try_recv() {
                replies.queue.push_back(o);
            }
            while let Some(o) = replies.queue.pop_front() {
                match o {
                    Outbound::Frame(f) => buf.extend_from_slice(&f),
                    Outbound::Pending(reply) => buf.extend_from_slice(&reply.await),
                    Outbound::Close | Outbound::StartDelivery { .. } => {}
                }
            }
            buf.extend_from_slice(&encode_error(code, goodbye(code), None));
            let ok = wr.write_all(&buf).await.is_ok();
            let _ = wr.shutdown().await;
            ok
        })
        .await
        .unwrap_or(false);
        // Pushes still in the buffer count as delivered only if they really left.
        if written {
            delivery.report(&ctx, &conn);
        }
    }
}

/// Writes `buf` unless the connection is closed first; `false` when it should stop.
///
/// Each `write_buf` consumes only what the socket took, so after a close what is
/// left in `buf` starts on the first unsent byte and the goodbye can follow it.
async fn write_or_closed(wr: &mut Writer, buf: &mut BytesMut, conn: &Conn) -> bool {
    while !buf.is_empty() {
        let written = tokio::select! {
            biased;
            _ = conn.closed() => return false,
            r = wr.write_buf(buf) => r,
        };
        match written {
            Ok(0) | Err(_) => {
                conn.abort();
                return false;
            }
            Ok(_) => {}
        }
    }
    // Do not keep a large buffer alive on an idle connection.
    if buf.capacity() > 64 * 1024 {
        *buf = BytesMut::new();
    }
    true
}

/// Pushes the user's stored direct messages, oldest first, page by page.
async fn catch_up(
    wr: &mut Writer,
    buf: &mut BytesMut,
    conn: &Conn,
    ctx: &Context,
    delivery: &mut Delivery,
    user: Arc<str>,
) -> bool {
    let fetch = |after| {
        ctx.store
            .undelivered(user.to_string(), after, CATCH_UP_PAGE)
    };
    let mut page = tokio::select! {
        biased;
        _ = conn.closed() => return false,
        page = fetch(None) => page,
    };
    loop {
        let messages = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("catch-up for {user} failed: {e}");
                conn.close(Code::Internal);
                return false;
            }
        };
        for m in &messages {
            buf.extend_from_slice(&m.encode_push());
            delivery.last_direct = delivery.last_direct.max(m.msg_id);
        }
        delivery.user = Some(user.clone());
        let more = messages.len() == CATCH_UP_PAGE as usize;
        drop(messages);
        // The next page is read while this one is written: the store and the socket
        // work at the same time.
        let after = Some(delivery.last_direct);
        let (written, next) = tokio::join!(write_or_closed(wr, buf, conn), async {
            if more {
                Some(fetch(after).await)
            } else {
                None
            }
        });
        if !written {
            return false;
        }
        delivery.report(ctx, conn);
        match next {
            Some(p) => page = p,
            None => return true,
        }
    }
}

/// Delivery state of a logged-in connection.
#[derive(Default)]
struct Delivery {
    /// Set once catch-up has begun: live pushes are taken from then on.
    user: Option<Arc<str>>,
    /// Highest direct `msg_id` written to the socket buffer.
    last_direct: u64,
    /// Highest direct `msg_id` reported (to the cursor, or as pushed in acks mode).
    reported: u64,
    /// At-least-once mode: the client's acks move the cursor, writes do not.
    acks: bool,
}

impl Delivery {
    fn take(&mut self, p: Arc<Push>, buf: &mut BytesMut) {
        if p.direct {
            // The catch-up may already have written it (committed before, routed after login).
            if p.msg_id <= self.last_direct {
                return;
            }
            self.last_direct = p.msg_id;
        }
        buf.extend_from_slice(&p.frame);
    }

    /// Called after each successful write: what was written counts as delivered,
    /// unless the client acknowledges deliveries itself.
    fn report(&mut self, ctx: &Context, conn: &Conn) {
        if let Some(user) = &self.user {
            if self.last_direct > self.reported {
                conn.set_pushed(self.last_direct);
                if !self.acks {
                    ctx.store.advance_cursor(user, self.last_direct);
                }
                self.reported = self.last_direct;
            }
        }
    }
}

fn goodbye(code: Code) -> &'static str {
    match code {
        Code::TakenOver => "session taken over by a newer login",
        Code::ShuttingDown => "server shutting down",
        Code::HeartbeatTimeout => "no frame for two heartbeat intervals; closing",
        Code::SlowConsumer => {
            "slow consumer: outbound queue full; undelivered direct messages are stored"
        }
        Code::ServerFull => "server full",
        _ => "internal error; closing the connection",
    }
}

/// Refuses a connection over the limit with `e`/68 (after the handshake, with TLS,
/// so the client can read why).
pub async fn refuse_full(stream: TcpStream, ctx: Arc<Context>) {
    let frame: Bytes = encode_error(Code::ServerFull, goodbye(Code::ServerFull), None);
    let _ = timeout(GOODBYE_TIMEOUT, async {
        let Some((_rd, mut wr)) = open(stream, &ctx).await else {
            return;
        };
        let _ = wr.write_all(&frame).await;
        let _ = wr.shutdown().await;
    })
    .await;
}
