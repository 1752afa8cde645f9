//! One client connection, served by one task: it reads and parses frames, runs
//! the session, and writes the answers and pushes, all from one `select!`.
//!
//! An idle connection is that one task and a few small allocations; its buffers
//! exist only while bytes are waiting in them. No peer can pin the task in one
//! place: a socket that does not drain stops the reading of new requests once
//! [`MAX_IN_FLIGHT`] answers are owed (a client that does not read its replies
//! stops being read), pushes wait in the hub's bounded inbox (a client that does
//! not read its pushes is a slow consumer, `e`/67), and a close, a shutdown or a
//! timer is seen whatever the socket is doing. The task also owns delivery
//! order: after login it first writes the user's stored messages, page by page,
//! then the live inbox, skipping what the catch-up already wrote, and reports the
//! delivery cursor as the socket takes the bytes.
//!
//! With TLS configured the handshake comes first, bounded in time; after it the
//! task sees one byte stream, the same code either way. A WebSocket from the HTTP
//! listener is one more kind of stream (`ws.rs` maps its messages to lines), so a
//! browser's connection is served by this same task.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::Decoder;

use super::hub::{Conn, Push};
use super::session::{Outbound, Session};
use super::ws::{Read, Refusal, WsIo};
use super::Context;
use crate::metrics::Transport;
use crate::protocol::code::Code;
use crate::protocol::codec::{CodecError, LineCodec};
use crate::protocol::envelope::encode_error;
use crate::protocol::reply::{encode_heartbeat, ChatMessage};
use crate::store::StoreError;

/// Bytes taken from the socket per read. They land on the stack and are copied
/// into the connection's input buffer, which exists only while it holds bytes.
const READ_CHUNK: usize = 8 * 1024;
/// First size of the output buffer when there is something to write.
const WRITE_BUFFER: usize = 4 * 1024;
/// Stored messages fetched per catch-up step.
const CATCH_UP_PAGE: u32 = 256;
/// How long a goodbye frame may take to leave before the socket is dropped anyway.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the connection may keep writing what it owes after it stopped reading.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long, and how much, a closing connection reads and discards (see [`linger`]).
const LINGER_TIMEOUT: Duration = Duration::from_millis(500);
const LINGER_BYTES: u64 = 4 << 20;
/// Pushes gathered into one socket write.
const MAX_GATHER: usize = 256;
/// Answers a connection may owe at once (sends waiting for their commit included)
/// before it stops reading requests.
const MAX_IN_FLIGHT: usize = 256;
/// How long a TLS client may take to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A connection's byte stream: the socket itself, a TLS session over it, or a
/// WebSocket's messages as lines.
enum Io {
    Plain(TcpStream),
    // Boxed: a TLS session is kilobytes, and a plain connection should not carry its size.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Ws(Box<WsIo>),
}

impl Io {
    /// Appends what has arrived to `input`.
    fn poll_read_into(&mut self, cx: &mut TaskContext<'_>, input: &mut BytesMut) -> Poll<Read> {
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut chunk);
        let read = match self {
            Io::Plain(s) => Pin::new(s).poll_read(cx, &mut buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, &mut buf),
            Io::Ws(ws) => return ws.poll_read_into(cx, input),
        };
        match read {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Read::Eof),
            Poll::Ready(Ok(())) => {
                input.extend_from_slice(buf.filled());
                Poll::Ready(Read::Data)
            }
            Poll::Ready(Err(_)) => Poll::Ready(Read::Eof),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether written bytes may wait in a layer above the socket until a flush.
    fn buffers_writes(&self) -> bool {
        !matches!(self, Io::Plain(_))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Ws(ws) => ws.poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Ws(ws) => ws.poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Ws(ws) => ws.poll_shutdown(cx),
        }
    }
}

/// Serves one accepted connection until it closes.
pub(crate) fn serve(
    stream: TcpStream,
    ctx: Arc<Context>,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send {
    // Boxed: the handshake's state, and the arguments it consumes, would otherwise
    // stay in every idle connection's task for its whole life.
    let setup = Box::pin(accept(stream, ctx));
    async move {
        // `let else`, not `if let`: the latter would keep the whole `Option` alive,
        // and laid out in the task, next to the values taken out of it.
        let Some((io, connection)) = setup.await else {
            return;
        };
        serve_io(io, connection).await;
        drop(permit);
    }
}

/// Serves a WebSocket accepted by the HTTP listener until it closes.
pub(crate) async fn serve_ws(
    ws: axum::extract::ws::WebSocket,
    ctx: Arc<Context>,
    permit: OwnedSemaphorePermit,
    peer: std::net::IpAddr,
    local_port: u16,
) {
    let transport = if ctx.tls.is_some() {
        Transport::Wss
    } else {
        Transport::Ws
    };
    let connection = Connection::new(ctx, local_port, peer, transport);
    serve_io(Io::Ws(Box::new(WsIo::new(ws))), connection).await;
    drop(permit);
}

async fn serve_io(mut io: Io, mut connection: Connection) {
    let end = connection.run(&mut io).await;
    // Boxed like the handshake: only a closing connection needs this state.
    Box::pin(connection.finish(io, end)).await;
}

/// The stream (after the TLS handshake, if configured) and its connection state.
async fn accept(stream: TcpStream, ctx: Arc<Context>) -> Option<(Io, Connection)> {
    let local_port = stream.local_addr().map(|a| a.port()).unwrap_or(0);
    let peer = stream
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let _ = stream.set_nodelay(true);
    let io = open(stream, &ctx).await?;
    let transport = match io {
        Io::Tls(_) => Transport::Tls,
        _ => Transport::Tcp,
    };
    Some((io, Connection::new(ctx, local_port, peer, transport)))
}

/// The connection's stream, or `None` when a TLS handshake failed, timed out or
/// was cut by shutdown.
async fn open(stream: TcpStream, ctx: &Context) -> Option<Io> {
    let Some(acceptor) = &ctx.tls else {
        return Some(Io::Plain(stream));
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
    Some(Io::Tls(Box::new(tls)))
}

/// Whether the peer's first byte starts a TLS handshake (`false` also when it sent nothing).
async fn speaks_tls(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0] == TLS_HANDSHAKE_RECORD)
}

/// Tells a client that sent plain frames to a TLS port what is wrong, in plain text,
/// and closes: `e`/62, since its bytes are not a frame this port can read.
async fn refuse_plain(stream: TcpStream) {
    let frame = encode_error(
        Code::MalformedFrame,
        "this server speaks TLS: connect with TLS",
        None,
    );
    let mut io = Io::Plain(stream);
    let sent = timeout(GOODBYE_TIMEOUT, async {
        let _ = io.write_all(&frame).await;
        let _ = io.shutdown().await;
    })
    .await;
    if sent.is_ok() {
        linger(&mut io).await;
    }
}

/// Reads and discards what the peer still sends, briefly, before the socket is dropped.
///
/// Closing a socket with unread input makes the kernel send a reset, which can
/// destroy the goodbye frame (`e`/61 after an oversized line) before the peer reads it.
async fn linger(io: &mut Io) {
    let drained = async {
        let mut input = BytesMut::new();
        let mut seen = 0;
        while seen < LINGER_BYTES {
            input.clear();
            match poll_fn(|cx| io.poll_read_into(cx, &mut input)).await {
                Read::Eof | Read::Refused(Refusal::TooLong) => return,
                Read::Data | Read::Refused(Refusal::Binary) => seen += input.len().max(1) as u64,
            }
        }
    };
    let _ = timeout(LINGER_TIMEOUT, drained).await;
}

/// How the connection's main loop ended.
enum End {
    /// Closed by a [`Conn::close`] or [`Conn::abort`]: a goodbye is due if a reason was given.
    Closed,
    /// Everything owed was written (and, after a `Close`, the sending side shut).
    Done,
}

/// What woke the connection.
enum Event {
    /// A push or a close ([`Conn::signalled`]; shutdown closes every connection).
    Signal,
    Timer,
    Ready(Bytes),
    Page(Page),
    Io(IoProgress),
}

/// What one poll of the socket achieved.
#[derive(Default)]
struct IoProgress {
    /// Bytes left the output buffer, or a flush completed.
    wrote: bool,
    /// Bytes were appended to the input buffer.
    read: bool,
    /// The peer ended its stream (or reading failed): nothing more will arrive.
    eof: bool,
    /// Writing failed: nothing more can be sent.
    broken: bool,
    /// A WebSocket message to refuse arrived (after any lines read with it).
    refused: Option<Refusal>,
}

/// A page of a user's stored messages, and whose they are.
type Page = (Arc<str>, Result<Vec<ChatMessage>, StoreError>);

/// A catch-up in progress: the next page, on its way.
type CatchUp = Pin<Box<dyn Future<Output = Page> + Send>>;

/// Starts fetching `user`'s stored messages above `after` (default: the cursor).
fn fetch_page(ctx: &Context, user: Arc<str>, after: Option<u64>) -> CatchUp {
    let store = ctx.store.clone();
    Box::pin(async move {
        let page = store
            .undelivered(user.to_string(), after, CATCH_UP_PAGE)
            .await;
        (user, page)
    })
}

/// One connection's state between wake-ups.
struct Connection {
    /// Also holds the server's context and the hub's handle, for everything here.
    session: Session,
    codec: LineCodec,
    /// Received bytes not yet cut into frames; unallocated while empty.
    input: BytesMut,
    /// Bytes the socket has not taken yet; unallocated while empty. `BytesMut`, so a
    /// write cut short by a close resumes at the exact byte it stopped at.
    output: BytesMut,
    replies: Replies,
    delivery: Delivery,
    catch_up: Option<CatchUp>,
    /// Requests are still read (until the peer's end of stream, a `Close`, or a close).
    reading: bool,
    /// The peer ended its stream itself.
    peer_done: bool,
    /// Written bytes may still sit in the TLS layer until a flush.
    unflushed: bool,
    /// A heartbeat was sent and no frame has come since.
    pinged: bool,
    /// When the heartbeat is due, or, once reading stopped, when draining gives up.
    deadline: Instant,
    /// How the peer reached us, for the connection gauges.
    transport: Transport,
}

impl Connection {
    fn new(
        ctx: Arc<Context>,
        local_port: u16,
        peer: std::net::IpAddr,
        transport: Transport,
    ) -> Connection {
        let conn = Arc::new(Conn::new(ctx.next_conn_id(), ctx.config.outbound_queue));
        ctx.connections.add(conn.clone(), &ctx.shutdown);
        ctx.metrics.connection_opened(transport);
        Connection {
            session: Session::new(ctx.clone(), conn, local_port, peer),
            codec: LineCodec::new(ctx.config.max_frame_bytes),
            deadline: Instant::now() + ctx.config.heartbeat,
            input: BytesMut::new(),
            output: BytesMut::new(),
            replies: Replies::default(),
            delivery: Delivery::default(),
            catch_up: None,
            reading: true,
            peer_done: false,
            unflushed: false,
            pinged: false,
            transport,
        }
    }

    /// Serves the connection until it is closed or has nothing left to do.
    async fn run(&mut self, io: &mut Io) -> End {
        // One timer for the connection's life, moved only when it must be: a frame
        // read pushes the deadline later without touching it (the timer, when it
        // fires, finds the deadline moved and re-arms), and only an earlier deadline
        // (draining) resets it at once. Re-arming a timer for every wake-up would
        // cost a timer-wheel update per push and per read.
        let timer = sleep_until(self.deadline);
        tokio::pin!(timer);
        loop {
            if self.session.conn().is_closed() {
                return End::Closed;
            }
            if self.deadline < timer.deadline() {
                timer.as_mut().reset(self.deadline);
            }
            if self.output.is_empty() && !self.unflushed {
                // The socket has taken everything: that counts as delivered. Before the
                // input is handled: one poll of the socket may both finish writing a
                // push and read the client's ack of it, and that ack must find the
                // push counted, or it would be dropped as acking what was never sent.
                self.delivery
                    .report(self.session.ctx(), self.session.conn());
            }
            let starved = self.handle_input().await;
            if self.output.is_empty() && !self.unflushed {
                // The next batch can be gathered.
                self.output = BytesMut::new();
                self.gather();
                if self.output.is_empty() {
                    if self.replies.close_after_write {
                        let _ = timeout(GOODBYE_TIMEOUT, io.shutdown()).await;
                        return End::Done;
                    }
                    if !self.reading && self.replies.queue.is_empty() && self.catch_up.is_none() {
                        return End::Done;
                    }
                }
            }
            let idle_out = self.output.is_empty() && !self.unflushed;
            let catching_up = self.catch_up.is_some();
            let wants = Wants {
                commit: idle_out && !catching_up && self.replies.waiting_on_commit(),
                page: idle_out && catching_up,
                read: self.reading && starved && self.replies.queue.len() < MAX_IN_FLIGHT,
            };
            // Three futures, the fewest that cover everything: the timer; one poll of
            // the socket, the commit awaited and the catch-up page; and the signal (a
            // push or a close: a close is seen at the top of the loop whatever woke
            // it, and pushes are gathered there too). Each future is laid out in every
            // idle connection's task, so fewer is less memory.
            let event = tokio::select! {
                biased;
                _ = &mut timer => Event::Timer,
                event = poll_fn(|cx| poll_work(
                    cx,
                    wants,
                    io,
                    &mut self.replies,
                    &mut self.catch_up,
                    &mut self.output,
                    &mut self.unflushed,
                    &mut self.input,
                )) => event,
                _ = self.session.conn().signalled() => Event::Signal,
            };
            match event {
                Event::Signal => {}
                Event::Timer => {
                    if Instant::now() >= self.deadline {
                        self.on_timer();
                    }
                    timer.as_mut().reset(self.deadline);
                }
                Event::Ready(frame) => append(&mut self.output, &frame),
                Event::Page(page) => self.take_page(page),
                Event::Io(progress) => {
                    if progress.broken {
                        self.session.conn().abort();
                        return End::Closed;
                    }
                    match progress.refused {
                        Some(Refusal::Binary) => {
                            let frame = encode_error(
                                Code::MalformedFrame,
                                "binary WebSocket message: every frame is a text message",
                                None,
                            );
                            self.replies.queue.push_back(Outbound::Frame(frame));
                        }
                        Some(Refusal::TooLong) => self.too_long(),
                        None => {}
                    }
                    if progress.eof {
                        self.peer_done = true;
                        self.stop_reading();
                    }
                }
            }
        }
    }

    /// Handles the complete frames already received, while fewer than
    /// [`MAX_IN_FLIGHT`] answers are owed; `true` when it needs more bytes to go on.
    async fn handle_input(&mut self) -> bool {
        while self.reading {
            if self.replies.queue.len() >= MAX_IN_FLIGHT {
                return false;
            }
            // No `decode_eof`: the end of stream is read only once every complete line
            // was handled, so what is left then is a partial line, dropped with the input.
            let line = match self.codec.decode(&mut self.input) {
                Ok(Some(line)) => line,
                Ok(None) => {
                    if self.input.is_empty() {
                        self.input = BytesMut::new();
                    }
                    return true;
                }
                Err(CodecError::FrameTooLong { .. }) => {
                    self.too_long();
                    return false;
                }
                Err(CodecError::Io(_)) => {
                    self.peer_done = true;
                    self.stop_reading();
                    return false;
                }
            };
            self.pinged = false;
            self.deadline = Instant::now() + self.session.ctx().config.heartbeat;
            let before = self.replies.queue.len();
            // Boxed: a request's state (a login's, say) lives only while it is handled,
            // not in the idle connection's task.
            Box::pin(self.session.handle_line(&line, &mut self.replies.queue)).await;
            let closing = self
                .replies
                .queue
                .iter()
                .skip(before)
                .any(|o| matches!(o, Outbound::Close));
            if closing {
                self.stop_reading();
            }
        }
        false
    }

    /// Answers a frame over the limit with `e`/61 and closes: the stream cannot be
    /// resynchronised cheaply.
    fn too_long(&mut self) {
        let limit = self.codec.max_frame_bytes();
        let reason = format!("frame longer than {limit} bytes; closing the connection");
        let frame = encode_error(Code::FrameTooLong, &reason, None);
        self.replies.queue.push_back(Outbound::Frame(frame));
        self.replies.queue.push_back(Outbound::Close);
        self.stop_reading();
    }

    /// Stops reading requests: what is owed is still written, within [`DRAIN_TIMEOUT`].
    fn stop_reading(&mut self) {
        if !self.reading {
            return;
        }
        self.reading = false;
        self.input = BytesMut::new();
        if let Some(user) = self.session.user() {
            self.session
                .ctx()
                .hub
                .unregister(user, self.session.conn().id);
        }
        self.deadline = Instant::now() + DRAIN_TIMEOUT;
    }

    fn on_timer(&mut self) {
        if !self.reading {
            // A peer that never reads cannot hold a closing connection.
            self.session.conn().abort();
        } else if self.pinged {
            self.session.conn().close(Code::HeartbeatTimeout);
        } else {
            self.pinged = true;
            self.deadline = Instant::now() + self.session.ctx().config.heartbeat;
            self.replies
                .queue
                .push_back(Outbound::Frame(encode_heartbeat()));
        }
    }

    /// Moves what is ready into the (empty) output buffer: the answers in request
    /// order, then live pushes, unless a catch-up is still writing stored ones.
    fn gather(&mut self) {
        if self.catch_up.is_some() {
            return;
        }
        if let Some((user, acks)) = self.replies.release(&mut self.output) {
            self.delivery.acks = acks;
            self.catch_up = Some(fetch_page(self.session.ctx(), user, None));
            return;
        }
        if self.delivery.user.is_some() && !self.replies.close_after_write {
            // What the inbox holds, up to a batch.
            let mut written = 0;
            for _ in 0..MAX_GATHER {
                let Some(p) = self.session.conn().take() else {
                    break;
                };
                written += u64::from(self.delivery.take(p, &mut self.output));
            }
            self.session.ctx().metrics.delivered(written);
        }
    }

    /// Writes a page of stored messages and fetches the next while it leaves.
    fn take_page(&mut self, (user, page): Page) {
        self.catch_up = None;
        let messages = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("catch-up for {user} failed: {e}");
                self.session.conn().close(Code::Internal);
                return;
            }
        };
        if !messages.is_empty() {
            give_room(&mut self.output, 0);
        }
        for m in &messages {
            m.write_push(&mut self.output);
            self.delivery.last_direct = self.delivery.last_direct.max(m.msg_id);
        }
        self.session.ctx().metrics.delivered(messages.len() as u64);
        if messages.len() == CATCH_UP_PAGE as usize {
            let after = Some(self.delivery.last_direct);
            self.catch_up = Some(fetch_page(self.session.ctx(), user.clone(), after));
        }
        self.delivery.user = Some(user);
    }

    /// After the main loop: the goodbye, if one is due, then a linger if the peer
    /// may still be sending.
    async fn finish(mut self, mut io: Io, end: End) {
        self.stop_reading();
        if matches!(end, End::Closed) {
            self.goodbye(&mut io).await;
        }
        if !self.peer_done {
            linger(&mut io).await;
        }
    }

    /// Says goodbye with the close reason, after what is still owed: the rest of the
    /// output and the answers queued (sends in flight finish their commits first). An
    /// aborted connection (its socket failed, or its peer never read) gets no goodbye.
    async fn goodbye(&mut self, io: &mut Io) {
        let Some(code) = self.session.conn().close_reason() else {
            return;
        };
        let output = &mut self.output;
        let queue = &mut self.replies.queue;
        let written = timeout(GOODBYE_TIMEOUT, async {
            while let Some(o) = queue.pop_front() {
                match o {
                    Outbound::Frame(f) => output.extend_from_slice(&f),
                    Outbound::Pending(reply) => output.extend_from_slice(&reply.await),
                    Outbound::Close | Outbound::StartDelivery { .. } => {}
                }
            }
            output.extend_from_slice(&encode_error(code, goodbye(code), None));
            let ok = io.write_all(output).await.is_ok() && io.flush().await.is_ok();
            let _ = io.shutdown().await;
            ok
        })
        .await
        .unwrap_or(false);
        // Pushes still in the buffer count as delivered only if they really left.
        if written {
            self.delivery
                .report(self.session.ctx(), self.session.conn());
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // However the task ends (even dropped by a runtime shutting down), the hub
        // stops routing to it.
        self.stop_reading();
        self.session.conn().detach();
        let id = self.session.conn().id;
        self.session.ctx().connections.remove(id);
        self.session.ctx().metrics.connection_closed(self.transport);
    }
}

/// What the connection waits for besides its timer and its signal.
#[derive(Clone, Copy)]
struct Wants {
    /// The answer at the front is waiting for its commit.
    commit: bool,
    /// A catch-up page is on its way, and the output is empty to take it.
    page: bool,
    /// More requests may be read.
    read: bool,
}

/// Polls, in this order, the commit the front answer waits for, the catch-up page,
/// and the socket (see [`poll_io`]).
#[allow(clippy::too_many_arguments)]
fn poll_work(
    cx: &mut TaskContext<'_>,
    wants: Wants,
    io: &mut Io,
    replies: &mut Replies,
    catch_up: &mut Option<CatchUp>,
    output: &mut BytesMut,
    unflushed: &mut bool,
    input: &mut BytesMut,
) -> Poll<Event> {
    if wants.commit {
        if let Some(Outbound::Pending(reply)) = replies.queue.front_mut() {
            if let Poll::Ready(frame) = reply.as_mut().poll(cx) {
                replies.queue.pop_front();
                return Poll::Ready(Event::Ready(frame));
            }
        }
    }
    if wants.page {
        if let Some(page) = catch_up {
            // Polled again only after `take_page` has replaced it.
            if let Poll::Ready(p) = page.as_mut().poll(cx) {
                return Poll::Ready(Event::Page(p));
            }
        }
    }
    poll_io(cx, io, output, unflushed, input, wants.read).map(Event::Io)
}

/// Polls the socket once for everything the connection wants from it: writing
/// what is owed (or flushing it), and reading if `read`.
fn poll_io(
    cx: &mut TaskContext<'_>,
    io: &mut Io,
    output: &mut BytesMut,
    unflushed: &mut bool,
    input: &mut BytesMut,
    read: bool,
) -> Poll<IoProgress> {
    let mut progress = IoProgress::default();
    if !output.is_empty() {
        match Pin::new(&mut *io).poll_write(cx, output) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => progress.broken = true,
            Poll::Ready(Ok(n)) => {
                output.advance(n);
                *unflushed = io.buffers_writes();
                progress.wrote = true;
            }
            Poll::Pending => {}
        }
    } else if *unflushed {
        match Pin::new(&mut *io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                *unflushed = false;
                progress.wrote = true;
            }
            Poll::Ready(Err(_)) => progress.broken = true,
            Poll::Pending => {}
        }
    }
    // Read even after a write made progress: a peer being sent a stream of pushes
    // must still be heard (its acks, its pongs).
    if read && !progress.broken {
        match io.poll_read_into(cx, input) {
            Poll::Ready(Read::Eof) => progress.eof = true,
            Poll::Ready(Read::Data) => progress.read = true,
            Poll::Ready(Read::Refused(r)) => progress.refused = Some(r),
            Poll::Pending => {}
        }
    }
    if progress.wrote
        || progress.read
        || progress.eof
        || progress.broken
        || progress.refused.is_some()
    {
        Poll::Ready(progress)
    } else {
        Poll::Pending
    }
}

/// Appends `bytes` to `buf`, giving an unallocated buffer room for a whole batch.
fn append(buf: &mut BytesMut, bytes: &[u8]) {
    give_room(buf, bytes.len());
    buf.extend_from_slice(bytes);
}

/// Gives an unallocated buffer room for a whole batch, and for at least `len` bytes.
fn give_room(buf: &mut BytesMut, len: usize) {
    if buf.capacity() == 0 {
        buf.reserve(WRITE_BUFFER.max(len));
    }
}

/// Answers in request order: ready ones leave at once, a pending one holds back
/// those behind it until its commit finishes.
#[derive(Default)]
struct Replies {
    queue: VecDeque<Outbound>,
    /// A `Close` was released: the connection shuts once the output has left.
    close_after_write: bool,
}

impl Replies {
    /// Moves every answer that is ready, in order, into `buf`; stops at one that is
    /// not, or at a close or a delivery start (which act after the write). Returns
    /// the delivery start it stopped at: whose messages, and whether in acks mode.
    fn release(&mut self, buf: &mut BytesMut) -> Option<(Arc<str>, bool)> {
        let mut start = None;
        while !self.close_after_write && start.is_none() {
            match self.queue.front_mut() {
                None => break,
                Some(Outbound::Pending(reply)) => match reply.as_mut().now_or_never() {
                    Some(frame) => {
                        append(buf, &frame);
                        self.queue.pop_front();
                    }
                    None => break,
                },
                Some(_) => match self.queue.pop_front() {
                    Some(Outbound::Frame(f)) => append(buf, &f),
                    Some(Outbound::Close) => self.close_after_write = true,
                    Some(Outbound::StartDelivery { user, acks }) => start = Some((user, acks)),
                    Some(Outbound::Pending(_)) | None => {}
                },
            }
        }
        if self.queue.is_empty() {
            // An idle connection keeps no queue buffer.
            self.queue = VecDeque::new();
        }
        start
    }

    fn waiting_on_commit(&self) -> bool {
        matches!(self.queue.front(), Some(Outbound::Pending(_)))
    }
}

/// Delivery state of a logged-in connection.
#[derive(Default)]
struct Delivery {
    /// Set once catch-up has begun: live pushes are taken from then on.
    user: Option<Arc<str>>,
    /// Highest direct `msg_id` written to the output buffer.
    last_direct: u64,
    /// Highest direct `msg_id` reported (to the cursor, or as pushed in acks mode).
    reported: u64,
    /// At-least-once mode: the client's acks move the cursor, writes do not.
    acks: bool,
}

impl Delivery {
    /// Writes `p` unless the catch-up already did; `true` if it was written.
    fn take(&mut self, p: Arc<Push>, buf: &mut BytesMut) -> bool {
        if p.direct() {
            // The catch-up may already have written it (committed before, routed after login).
            if p.msg_id() <= self.last_direct {
                return false;
            }
            self.last_direct = p.msg_id();
        }
        append(buf, p.frame());
        true
    }

    /// Called once the socket has taken the output: what was written counts as
    /// delivered, unless the client acknowledges deliveries itself.
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

/// Refuses a WebSocket over the limit with `e`/68, then closes it.
pub(crate) async fn refuse_full_ws(
    ws: axum::extract::ws::WebSocket,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let frame: Bytes = encode_error(Code::ServerFull, goodbye(Code::ServerFull), None);
    let mut io = Io::Ws(Box::new(WsIo::new(ws)));
    let _ = timeout(GOODBYE_TIMEOUT, async {
        let _ = io.write_all(&frame).await;
        let _ = io.shutdown().await;
    })
    .await;
}

/// Refuses a connection over the limit with `e`/68 (after the handshake, with TLS,
/// so the client can read why).
pub(crate) async fn refuse_full(
    stream: TcpStream,
    ctx: Arc<Context>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let frame: Bytes = encode_error(Code::ServerFull, goodbye(Code::ServerFull), None);
    let _ = timeout(GOODBYE_TIMEOUT, async {
        let Some(mut io) = open(stream, &ctx).await else {
            return;
        };
        let _ = io.write_all(&frame).await;
        let _ = io.shutdown().await;
    })
    .await;
}
