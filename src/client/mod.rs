//! The async Rust client: a cloneable [`Client`] handle for requests and an
//! [`Incoming`] stream of pushed messages, over one background connection task.
//!
//! Requests carry an integer `id` and are matched to their replies by it, so
//! several tasks may use one `Client` at once. The connection task answers the
//! server's heartbeat pings by itself, so an application that only listens
//! stays connected. Every failing code surfaces as [`ClientError::Server`]
//! with the code and the server's `error` sentence; a server-initiated close
//! (64, 65, 66, 67, 68) as [`ClientError::Closed`] with its code.
//!
//! With [`ClientOptions::reconnect`], a client that has logged in logs in with
//! acks on, acknowledges each direct message once the application has taken it
//! from [`Incoming::recv`], drops redelivered ones, and when the connection
//! breaks reconnects with backoff and resumes with its session token; requests
//! still waiting for an answer are sent again on the new connection (every send
//! carries a nonce, so a repeat is answered, not stored twice). It never
//! reconnects after a takeover (64) or `logout`.
//!
//! With [`ClientOptions::tls`] every connection (the first and each
//! reconnection) is TLS, verified against the system's roots or a given CA, for
//! the name dialled; a failed verification is [`ClientError::Tls`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use rustls_pki_types::ServerName;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::protocol::code::{Code, Status};
use crate::protocol::codec::LineCodec;
use crate::protocol::envelope::{Envelope, Id};
use crate::protocol::reply::{
    encode_ack, encode_pong, ChatMessage, LoginOk, Messages, PushFrame, Receipt, Users,
};
use crate::protocol::request::{
    Broadcast, Credential, Direct, History, Login, Peer, Register, Request,
};
use crate::sync::lock;

/// Largest frame the client accepts: a full history reply is far above the server's request limit.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;
/// Frames queued for the socket before a request waits.
const SEND_QUEUE: usize = 256;
/// Pushed messages held for the application before the client stops reading.
const INCOMING_QUEUE: usize = 1024;
/// First and longest pause between reconnection attempts.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long one resume login may take before the attempt counts as failed.
const RESUME_TIMEOUT: Duration = Duration::from_secs(10);
/// Characters in a send's nonce.
const NONCE_CHARS: usize = 20;
/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest pause before a login or register answered `r`/24 (busy) is sent
/// again, and how long to keep trying before the busy answer is the call's error.
const BUSY_FIRST: Duration = Duration::from_millis(50);
const BUSY_MAX: Duration = Duration::from_secs(1);
const BUSY_RETRY_FOR: Duration = Duration::from_secs(30);

/// The reading half of a connection, plain or TLS.
type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection, plain or TLS.
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// What a reconnecting client reports to the application.
#[derive(Debug, Clone)]
pub enum ConnectionEvent {
    /// The connection broke; the client is reconnecting. Carries why it broke.
    Disconnected(ClientError),
    /// The session was resumed on a new connection.
    Reconnected,
}

/// Called with each [`ConnectionEvent`], from the client's background task.
pub type EventHook = Arc<dyn Fn(ConnectionEvent) + Send + Sync>;

/// How a [`Client`] behaves when its connection breaks.
#[derive(Clone)]
pub struct ClientOptions {
    /// After a login: acks on, and reconnect and resume when the connection breaks.
    pub reconnect: bool,
    /// How long to keep trying to reconnect before giving up with the original error.
    pub reconnect_for: Duration,
    /// Told when the connection breaks and when it is back.
    pub on_event: Option<EventHook>,
    /// Speak TLS, verifying the server; `None` is plain TCP.
    pub tls: Option<TlsOptions>,
}

/// How a client verifies a TLS server. There is no way to turn verification off.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file of the CA certificates to trust instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// The name the certificate must be valid for, when it is not the host dialled.
    pub server_name: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            reconnect: true,
            reconnect_for: Duration::from_secs(30),
            on_event: None,
            tls: None,
        }
    }
}

impl ClientOptions {
    /// One connection, no reconnection: every break ends the client.
    pub fn no_reconnect() -> ClientOptions {
        ClientOptions {
            reconnect: false,
            ..ClientOptions::default()
        }
    }

    fn emit(&self, event: ConnectionEvent) {
        if let Some(hook) = &self.on_event {
            hook(event);
        }
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("reconnect", &self.reconnect)
            .field("reconnect_for", &self.reconnect_for)
            .field("on_event", &self.on_event.is_some())
            .field("tls", &self.tls)
            .finish()
    }
}

/// What a client call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The OS error, in words.
        reason: String,
        /// The OS error kind (refused, timed out, …).
        kind: std::io::ErrorKind,
    },
    /// The server answered with a failing code.
    #[error("{message} (code {code})")]
    Server {
        /// The `status_code`.
        code: u8,
        /// The server's `error` sentence.
        message: String,
    },
    /// The connection is closed; `code` is the server's closing code when it sent one.
    #[error("connection closed: {reason}")]
    Closed {
        /// 64, 65, 66, 67, 68, 22, 61 … or `None` when the socket just ended.
        code: Option<u8>,
        /// Why, in words.
        reason: String,
    },
    /// The server sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// TLS could not be set up: the CA file, or the server failed verification
    /// (a certificate for another name, expired, or from an unknown CA).
    #[error("TLS with {addr} failed: {reason}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// Why, in words.
        reason: String,
    },
}

impl ClientError {
    /// The protocol code carried by this error, if any.
    pub fn code(&self) -> Option<u8> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::Closed { code, .. } => *code,
            _ => None,
        }
    }

    /// The code as a named [`Code`], when it is one of the table's.
    pub fn named_code(&self) -> Option<Code> {
        self.code().and_then(Code::from_number)
    }
}

/// The receipt of a sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The id the server's store gave the message.
    pub msg_id: u64,
    /// `true` for `r`/51: the recipient is offline and the message is stored for it.
    pub stored: bool,
    /// For a broadcast, how many online users it was queued to.
    pub recipients: Option<u64>,
    /// The server recognised the nonce of an earlier send and stored nothing new.
    pub duplicate: bool,
}

/// A request waiting for its answer; `frame` is kept to send it again after a resume.
struct Waiter {
    tx: oneshot::Sender<Envelope>,
    frame: Bytes,
    resend: bool,
}

type Pending = HashMap<u64, Waiter>;

/// The connection in use: where frames go, and which connection it is.
struct Link {
    out: mpsc::Sender<Bytes>,
    generation: u64,
}

struct Shared {
    options: ClientOptions,
    dialer: Dialer,
    link: Mutex<Link>,
    /// `link`'s generation, readable without its lock (the ack fast path).
    link_generation: AtomicU64,
    /// `None` once the client has ended, so no request can wait forever.
    pending: Mutex<Option<Pending>>,
    next_id: AtomicU64,
    generations: AtomicU64,
    close_reason: Mutex<Option<ClientError>>,
    stop: CancellationToken,
    /// Where pushes go; taken when the client ends so `Incoming` sees the end.
    incoming: Mutex<Option<mpsc::Sender<Pushed>>>,
    /// `(user, token)` of the session to resume, once logged in with reconnect on.
    session: Mutex<Option<(String, String)>>,
    logged_out: AtomicBool,
    /// Highest direct `msg_id` handed to the application: redeliveries at or below it are dropped.
    last_direct: AtomicU64,
    /// Highest direct `msg_id` handed out by `recv`, not yet known to be handled.
    taken: AtomicU64,
    /// Highest direct `msg_id` acknowledged to the server.
    acked: AtomicU64,
    /// The generation of the connection whose writer has an [`ACK_DUE`] marker still
    /// queued (0: none): further acks only raise `acked`. Per connection, so a marker
    /// stranded in a dead connection's queue holds back no other's acks.
    ack_queued: AtomicU64,
}

/// Queued to the writer in place of an ack frame: "write an ack for `acked` as it is
/// by then". A receiver taking messages quickly sends one ack per writer batch (or
/// per [`ACK_DELAY`]) instead of one per message; each still covers everything
/// handled before it, so coalescing delays acks but never skips a message.
const ACK_DUE: Bytes = Bytes::new();
/// How long the writer holds an ack that has nothing to travel with, so that it
/// covers more. A crash within it means a few more redeliveries, never a loss.
const ACK_DELAY: Duration = Duration::from_millis(5);

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Option<Pending>> {
        lock(&self.pending)
    }

    fn out(&self) -> mpsc::Sender<Bytes> {
        lock(&self.link).out.clone()
    }

    /// Acknowledges what the application has finished with (see [`Incoming::recv`]).
    fn ack_taken(&self) {
        let taken = self.taken.load(Ordering::Acquire);
        // Raised before the marker is looked at, while a writer clears the marker
        // before it reads `acked`: one of the two sees the other's write, so no ack
        // falls between them (which takes SeqCst on both sides).
        if taken <= self.acked.fetch_max(taken, Ordering::SeqCst) {
            return;
        }
        // Per message on a busy receiver: a marker already waiting on the current
        // connection will carry this ack too, no lock needed.
        let queued = self.ack_queued.load(Ordering::SeqCst);
        if queued != 0 && queued == self.link_generation.load(Ordering::Acquire) {
            return;
        }
        let (out, generation) = {
            let link = lock(&self.link);
            (link.out.clone(), link.generation)
        };
        if self.ack_queued.swap(generation, Ordering::SeqCst) == generation {
            return;
        }
        if out.try_send(ACK_DUE).is_err() {
            // A lost ack only means a redelivery, which is dropped by msg_id; the
            // next one may try again.
            let _ = self.ack_queued.compare_exchange(
                generation,
                0,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// Ends the client for good: waiting requests fail, `Incoming` ends.
    fn finish(&self, err: ClientError) {
        self.set_close_reason(err);
        self.pending().take();
        lock(&self.incoming).take();
        self.stop.cancel();
    }

    /// Called when connection `generation` ended; reconnects or ends the client.
    fn connection_lost(self: &Arc<Self>, generation: u64, err: ClientError) {
        if lock(&self.link).generation != generation {
            return; // a connection that was never put in use, or already replaced
        }
        let final_code = matches!(
            err.named_code(),
            Some(Code::TakenOver | Code::TooManyAttempts | Code::FrameTooLong)
        );
        let resumable = self.options.reconnect
            && !self.stop.is_cancelled()
            && !final_code
            && !self.logged_out.load(Ordering::Acquire)
            && lock(&self.session).is_some();
        if resumable {
            self.options
                .emit(ConnectionEvent::Disconnected(err.clone()));
            tokio::spawn(reconnect(self.clone(), err));
        } else {
            self.finish(err);
        }
    }

    fn closed_error(&self) -> ClientError {
        lock(&self.close_reason)
            .clone()
            .unwrap_or(ClientError::Closed {
                code: None,
                reason: "the connection is closed".into(),
            })
    }

    fn set_close_reason(&self, err: ClientError) {
        let mut reason = lock(&self.close_reason);
        if reason.is_none() {
            *reason = Some(err);
        }
    }
}

/// A connection to a MoeChat server. Clones share the connection; it closes when
/// the last clone and its [`Incoming`] are dropped, or on [`Client::close`].
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

/// A pushed message on its way to the application: still in (a copy of) its frame
/// when the server wrote it the usual way, so the reader makes one allocation for it
/// rather than one per string; owned otherwise.
#[derive(Debug, Clone)]
pub(crate) enum Pushed {
    Frame(PushFrame),
    Message(ChatMessage),
}

impl Pushed {
    pub(crate) fn msg_id(&self) -> u64 {
        match self {
            Pushed::Frame(f) => f.msg_id(),
            Pushed::Message(m) => m.msg_id,
        }
    }

    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn ts(&self) -> i64 {
        match self {
            Pushed::Frame(f) => f.ts(),
            Pushed::Message(m) => m.ts,
        }
    }

    /// See [`PushFrame::utf8_strings`].
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn utf8_strings(&self) -> (&[u8], Option<&[u8]>, &[u8]) {
        match self {
            Pushed::Frame(f) => f.utf8_strings(),
            Pushed::Message(m) => (
                m.from.as_bytes(),
                m.to.as_ref().map(|t| t.as_bytes()),
                m.text.as_bytes(),
            ),
        }
    }

    pub(crate) fn is_direct(&self) -> bool {
        match self {
            Pushed::Frame(f) => f.is_direct(),
            Pushed::Message(m) => m.to.is_some(),
        }
    }

    fn into_message(self) -> ChatMessage {
        match self {
            Pushed::Frame(f) => f.to_message(),
            Pushed::Message(m) => m,
        }
    }
}

/// Messages pushed by the server, in arrival order.
pub struct Incoming {
    rx: mpsc::Receiver<Pushed>,
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

/// Held by the application's handles only (the connection tasks hold [`Shared`]),
/// so dropping every handle stops the tasks instead of leaving the socket open.
struct Owner {
    stop: CancellationToken,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Incoming {
    /// The next pushed message; once the connection has ended and every message
    /// was taken, the reason it ended.
    ///
    /// With reconnect on, a direct message counts as taken once the application
    /// comes back for the next one (or closes the client): that is when it is
    /// acknowledged, so an application that crashes while handling a message gets
    /// it again after its next login.
    pub async fn recv(&mut self) -> Result<ChatMessage, ClientError> {
        self.shared.ack_taken();
        match self.rx.recv().await {
            Some(m) => {
                self.took(&m);
                Ok(m.into_message())
            }
            None => Err(self.shared.closed_error()),
        }
    }

    /// Waits for the next message, then appends it and the others already here (up to
    /// `limit` in all) to `out`, counting none as taken: a front end that hands them
    /// out one by one calls [`Incoming::ack_taken`] and [`Incoming::took`] as it does,
    /// so acknowledgement follows what the application really received. Cancel-safe.
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) async fn recv_batch(
        &mut self,
        limit: usize,
        out: &mut std::collections::VecDeque<Pushed>,
    ) -> Result<(), ClientError> {
        match self.rx.recv().await {
            Some(m) => out.push_back(m),
            None => return Err(self.shared.closed_error()),
        }
        while out.len() < limit {
            match self.rx.try_recv() {
                Ok(m) => out.push_back(m),
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// The application came back for another message: what it took before is handled.
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn ack_taken(&self) {
        self.shared.ack_taken();
    }

    /// `m` is in the application's hands (acknowledged once it comes back).
    pub(crate) fn took(&self, m: &Pushed) {
        if self.shared.options.reconnect && m.is_direct() {
            self.shared.taken.fetch_max(m.msg_id(), Ordering::AcqRel);
        }
    }
}

impl Client {
    /// Connects to `host:port` with the default options (reconnecting after a login).
    pub async fn connect(host: &str, port: u16) -> Result<(Client, Incoming), ClientError> {
        Client::connect_with(host, port, ClientOptions::default()).await
    }

    /// Connects to `host:port`.
    pub async fn connect_with(
        host: &str,
        port: u16,
        options: ClientOptions,
    ) -> Result<(Client, Incoming), ClientError> {
        let dialer = Dialer::new(host, port, options.tls.as_ref()).await?;
        let stream = dialer.dial().await?;
        let (in_tx, in_rx) = mpsc::channel(INCOMING_QUEUE);
        // A placeholder link, replaced by the real one below before anyone can use it.
        let (placeholder, _) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            options,
            dialer,
            link: Mutex::new(Link {
                out: placeholder,
                generation: 0,
            }),
            pending: Mutex::new(Some(HashMap::new())),
            next_id: AtomicU64::new(1),
            generations: AtomicU64::new(0),
            close_reason: Mutex::new(None),
            stop: CancellationToken::new(),
            incoming: Mutex::new(Some(in_tx)),
            session: Mutex::new(None),
            logged_out: AtomicBool::new(false),
            last_direct: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            ack_queued: AtomicU64::new(0),
            link_generation: AtomicU64::new(0),
        });
        let first = attach(&shared, stream);
        *lock(&shared.link) = Link {
            out: first.out,
            generation: first.generation,
        };
        shared
            .link_generation
            .store(first.generation, Ordering::Release);
        let owner = Arc::new(Owner {
            stop: shared.stop.clone(),
        });
        Ok((
            Client {
                shared: shared.clone(),
                _owner: owner.clone(),
            },
            Incoming {
                rx: in_rx,
                shared,
                _owner: owner,
            },
        ))
    }

    /// Sends `request` and waits for the frame that answers it.
    pub async fn request(&self, request: &Request) -> Result<Envelope, ClientError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = request.encode(Some(&Id::UInt(id)));
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter {
            tx,
            frame: frame.clone(),
            resend: true,
        };
        match self.shared.pending().as_mut() {
            Some(p) => p.insert(id, waiter),
            None => return Err(self.shared.closed_error()),
        };
        // Drop the slot if this call is cancelled (a timeout) before its answer.
        let _slot = PendingSlot {
            shared: &self.shared,
            id,
        };
        // Read the link only after the waiter is in place: a resume that installs a
        // new link either is seen here or sends this request again itself.
        let out = self.shared.out();
        if out.send(frame).await.is_err() && !self.shared.options.reconnect {
            return Err(self.shared.closed_error());
        }
        rx.await.map_err(|_| self.shared.closed_error())
    }

    /// Logs in with a password; returns the server's login info (session token, heartbeat).
    pub async fn login(&self, user: &str, password: &str) -> Result<LoginOk, ClientError> {
        let req = Request::Login(Login {
            user: user.into(),
            credential: Credential::Password(password.into()),
            acks: self.shared.options.reconnect,
        });
        let env = expect(self.request_unless_busy(&req).await?, &[Code::LoginOk])?;
        let info: LoginOk = decode(env)?;
        if self.shared.options.reconnect {
            *lock(&self.shared.session) = Some((info.user.clone(), info.session.clone()));
        }
        Ok(info)
    }

    /// Creates a user.
    pub async fn register(&self, user: &str, password: &str) -> Result<(), ClientError> {
        let req = Request::Register(Register {
            user: user.into(),
            password: password.into(),
        });
        expect(self.request_unless_busy(&req).await?, &[Code::QueryOk]).map(drop)
    }

    /// [`Client::request`], sent again with backoff (and jitter, so a crowd does not
    /// come back in step) while the server answers `r`/24: too busy hashing passwords.
    async fn request_unless_busy(&self, request: &Request) -> Result<Envelope, ClientError> {
        let give_up = Instant::now() + BUSY_RETRY_FOR;
        let mut delay = BUSY_FIRST;
        loop {
            let env = self.request(request).await?;
            if env.code != Code::Busy.number() || Instant::now() >= give_up {
                return Ok(env);
            }
            tokio::time::sleep(delay / 2 + crate::random::jitter(delay / 2)).await;
            delay = (delay * 2).min(BUSY_MAX);
        }
    }

    /// Online users, sorted.
    pub async fn users(&self) -> Result<Vec<String>, ClientError> {
        let env = expect(self.request(&Request::Users).await?, &[Code::QueryOk])?;
        Ok(decode::<Users>(env)?.users)
    }

    /// Sends a direct message, with a fresh nonce so a resend cannot store it twice.
    pub async fn send(&self, to: &str, text: &str) -> Result<Sent, ClientError> {
        let nonce = crate::random::alphanumeric(NONCE_CHARS);
        self.send_with_nonce(to, text, Some(&nonce)).await
    }

    /// Sends a direct message with the caller's idempotency nonce (or none).
    pub async fn send_with_nonce(
        &self,
        to: &str,
        text: &str,
        nonce: Option<&str>,
    ) -> Result<Sent, ClientError> {
        let req = Request::Direct(Direct {
            to: to.into(),
            text: text.into(),
            nonce: nonce.map(Into::into),
        });
        let env = expect(self.request(&req).await?, &[Code::Delivered, Code::Stored])?;
        receipt(env)
    }

    /// Broadcasts to every online user, with a fresh nonce.
    pub async fn broadcast(&self, text: &str) -> Result<Sent, ClientError> {
        let req = Request::Broadcast(Broadcast {
            text: text.into(),
            nonce: Some(crate::random::alphanumeric(NONCE_CHARS)),
        });
        let env = expect(self.request(&req).await?, &[Code::Delivered])?;
        receipt(env)
    }

    /// Stored messages with `peer`, oldest first: the newest `limit` below `before`.
    pub async fn history(
        &self,
        peer: Peer,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<ChatMessage>, ClientError> {
        let req = Request::History(History {
            with: peer,
            limit,
            before,
        });
        let env = expect(self.request(&req).await?, &[Code::QueryOk])?;
        Ok(decode::<Messages>(env)?.messages)
    }

    /// Round-trip time of a `ping`.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let start = Instant::now();
        expect(self.request(&Request::Ping).await?, &[Code::QueryOk])?;
        Ok(start.elapsed())
    }

    /// Logs out; the server then closes the connection, and the client does not reconnect.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.shared.ack_taken();
        self.shared.logged_out.store(true, Ordering::Release);
        expect(self.request(&Request::Logout).await?, &[Code::QueryOk])?;
        self.shared.set_close_reason(ClientError::Closed {
            code: None,
            reason: "logged out".into(),
        });
        Ok(())
    }

    /// Closes the connection; pending and later calls fail with [`ClientError::Closed`].
    pub fn close(&self) {
        self.shared.ack_taken();
        self.shared.finish(ClientError::Closed {
            code: None,
            reason: "closed by the client".into(),
        });
    }

    /// Whether the client has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.pending().is_none() || self.shared.stop.is_cancelled()
    }
}

/// Where to connect, and how: made once, used for the first connection and each reconnection.
struct Dialer {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Dialer {
    async fn new(host: &str, port: u16, tls: Option<&TlsOptions>) -> Result<Dialer, ClientError> {
        let addr = format!("{host}:{port}");
        let failed = |e: crate::tls::TlsError| ClientError::Tls {
            addr: addr.clone(),
            reason: e.to_string(),
        };
        let tls = match tls {
            None => None,
            Some(t) => {
                let name = crate::tls::server_name(t.server_name.as_deref().unwrap_or(host))
                    .map_err(failed)?;
                // Reading the system's certificate store is file I/O: off the runtime.
                let ca = t.ca.clone();
                let connector =
                    tokio::task::spawn_blocking(move || crate::tls::connector(ca.as_deref()))
                        .await
                        .map_err(|e| ClientError::Tls {
                            addr: addr.clone(),
                            reason: e.to_string(),
                        })?
                        .map_err(failed)?;
                Some((connector, name))
            }
        };
        Ok(Dialer {
            host: host.to_string(),
            port,
            tls,
        })
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A new connection, TLS handshake done when TLS is on.
    async fn dial(&self) -> Result<(Reader, Writer), ClientError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| ClientError::Connect {
                addr: self.addr(),
                reason: e.to_string(),
                kind: e.kind(),
            })?;
        let _ = stream.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            let (rd, wr) = stream.into_split();
            return Ok((Box::new(rd), Box::new(wr)));
        };
        let tls_failed = |reason: String| ClientError::Tls {
            addr: self.addr(),
            reason,
        };
        let tls = tokio::time::timeout(
            TLS_HANDSHAKE_TIMEOUT,
            connector.connect(name.clone(), stream),
        )
        .await
        .map_err(|_| tls_failed("the handshake timed out".into()))?
        .map_err(|e| tls_failed(crate::tls::handshake_failure(&e)))?;
        let (rd, wr) = tokio::io::split(tls);
        Ok((Box::new(rd), Box::new(wr)))
    }
}

/// A connection's reader and writer, started.
struct Attached {
    generation: u64,
    out: mpsc::Sender<Bytes>,
    /// Cancelled when the connection's reader stops.
    ended: CancellationToken,
}

/// Starts the reader and writer of a new connection.
fn attach(shared: &Arc<Shared>, (rd, wr): (Reader, Writer)) -> Attached {
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
async fn reconnect(shared: Arc<Shared>, cause: ClientError) {
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

struct PendingSlot<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.shared.pending().as_mut() {
            p.remove(&self.id);
        }
    }
}

/// Turns a reply into an error unless its code is one of `ok`.
fn expect(env: Envelope, ok: &[Code]) -> Result<Envelope, ClientError> {
    let success =
        matches!(env.status, Status::Response) && ok.iter().any(|c| c.number() == env.code);
    if success {
        return Ok(env);
    }
    let message = env
        .str_field("error")
        .unwrap_or("request failed")
        .to_string();
    Err(ClientError::Server {
        code: env.code,
        message,
    })
}

fn decode<T: DeserializeOwned>(env: Envelope) -> Result<T, ClientError> {
    serde_json::from_value(serde_json::Value::Object(env.info))
        .map_err(|e| ClientError::Protocol(format!("reply with code {}: {e}", env.code)))
}

fn receipt(env: Envelope) -> Result<Sent, ClientError> {
    let stored = env.code == Code::Stored.number();
    let r: Receipt = decode(env)?;
    Ok(Sent {
        msg_id: r.msg_id,
        stored,
        recipients: r.recipients,
        duplicate: r.duplicate,
    })
}

async fn write_loop(
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

/// Hands a pushed message to the application, unless it is a repeat; `false` if the
/// client is stopping meanwhile.
async fn deliver(shared: &Shared, incoming: Option<&mpsc::Sender<Pushed>>, m: Pushed) -> bool {
    // Direct messages arrive in msg_id order on a connection; after a resume the
    // server starts again from the last ack, so older ones are repeats.
    if m.is_direct() && shared.last_direct.fetch_max(m.msg_id(), Ordering::AcqRel) >= m.msg_id() {
        return true;
    }
    let Some(incoming) = incoming else {
        return true;
    };
    // Room in the queue is the usual case, and needs no future.
    let m = match incoming.try_send(m) {
        Ok(()) => return true,
        Err(mpsc::error::TrySendError::Closed(_)) => return true,
        Err(mpsc::error::TrySendError::Full(m)) => m,
    };
    // A full queue means the application is slow: stop reading, let the server judge.
    tokio::select! {
        biased;
        _ = shared.stop.cancelled() => false,
        _ = incoming.send(m) => true,
    }
}

async fn read_loop(
    rd: Reader,
    out: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
    generation: u64,
    ended_flag: CancellationToken,
) {
    let mut frames = FramedRead::new(rd, LineCodec::new(MAX_REPLY_BYTES));
    let incoming = lock(&shared.incoming).clone();
    let mut ended = ClientError::Closed {
        code: None,
        reason: "the server closed the connection".into(),
    };
    // One waiter for the whole loop rather than one per frame.
    let stop = shared.stop.cancelled();
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut stop => break,
            n = frames.next() => n,
        };
        let line = match next {
            Some(Ok(line)) => line,
            Some(Err(e)) => {
                ended = ClientError::Closed {
                    code: None,
                    reason: e.to_string(),
                };
                break;
            }
            None => break,
        };
        // The usual push keeps (a copy of) its frame: one allocation for the whole
        // message, not one per string. Any other spelling of a push is parsed whole.
        let pushed = match PushFrame::parse(&line) {
            Some(frame) => Some(Pushed::Frame(frame)),
            None => ChatMessage::parse_push_general(&line).map(Pushed::Message),
        };
        if let Some(m) = pushed {
            if !deliver(&shared, incoming.as_ref(), m).await {
                break;
            }
            continue;
        }
        let env = match Envelope::parse(&line) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!("ignoring a frame from the server: {e}");
                continue;
            }
        };
        // Only an answer can be the answer to a request: an `m` frame with an `id` is
        // not a push (the push reading above declined it) and matches no request.
        let answer = matches!(env.status, Status::Response | Status::Error);
        if let Some(id) = env.id.as_ref().and_then(Id::as_u64).filter(|_| answer) {
            let waiter = shared.pending().as_mut().and_then(|p| p.remove(&id));
            if let Some(w) = waiter {
                let _ = w.tx.send(env);
                continue;
            }
        }
        match (env.status, Code::from_number(env.code)) {
            (Status::Query, Some(Code::Heartbeat)) => {
                let answered = out.send(encode_pong()).await;
                if answered.is_err() {
                    break;
                }
            }
            (Status::Message, _) => {
                // The one reading of pushes (above) declined it: say so, never guess.
                tracing::warn!(
                    "ignoring a message frame that is not a valid push: code {}",
                    env.code
                );
            }
            (Status::Error, _) | (Status::Response, _) => {
                let reason = env
                    .str_field("error")
                    .unwrap_or("closed by the server")
                    .to_string();
                if Code::from_number(env.code).is_some_and(Code::closes) {
                    ended = ClientError::Closed {
                        code: Some(env.code),
                        reason,
                    };
                } else {
                    tracing::warn!(
                        "unsolicited frame from the server: code {} {reason}",
                        env.code
                    );
                }
            }
            _ => {}
        }
    }
    drop(incoming);
    ended_flag.cancel();
    shared.connection_lost(generation, ended);
}
