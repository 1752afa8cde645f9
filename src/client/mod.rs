//! The async Rust client: a cloneable [`Client`] handle for requests and an
//! [`Incoming`] stream of pushed messages, over one background connection task.
//!
//! Requests carry an integer `id` and are matched to their replies by it, so
//! several tasks may use one `Client` at once. The connection task answers the
//! server's heartbeat pings by itself, so an application that only listens
//! stays connected. Every failing code surfaces as [`ClientError::Server`]
//! with the code and the server's `error` sentence; a server-initiated close
//! (64, 65, 66, 67, 68) as [`ClientError::Closed`] with its code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::protocol::code::{Code, Status};
use crate::protocol::codec::LineCodec;
use crate::protocol::envelope::{Envelope, Id};
use crate::protocol::reply::{encode_pong, ChatMessage, LoginOk, Messages, Receipt, Users};
use crate::protocol::request::{
    Broadcast, Credential, Direct, History, Login, Peer, Register, Request,
};

/// Largest frame the client accepts: a full history reply is far above the server's request limit.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;
/// Frames queued for the socket before a request waits.
const SEND_QUEUE: usize = 256;
/// Pushed messages held for the application before the client stops reading.
const INCOMING_QUEUE: usize = 1024;

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

type Pending = HashMap<u64, oneshot::Sender<Envelope>>;

struct Shared {
    out: mpsc::Sender<Bytes>,
    /// `None` once the connection has ended, so no request can wait forever.
    pending: Mutex<Option<Pending>>,
    next_id: AtomicU64,
    close_reason: Mutex<Option<ClientError>>,
    stop: CancellationToken,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Option<Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn closed_error(&self) -> ClientError {
        self.close_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or(ClientError::Closed {
                code: None,
                reason: "the connection is closed".into(),
            })
    }

    fn set_close_reason(&self, err: ClientError) {
        let mut reason = self
            .close_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
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

/// Messages pushed by the server, in arrival order.
pub struct Incoming {
    rx: mpsc::Receiver<ChatMessage>,
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
    pub async fn recv(&mut self) -> Result<ChatMessage, ClientError> {
        match self.rx.recv().await {
            Some(m) => Ok(m),
            None => Err(self.shared.closed_error()),
        }
    }
}

impl Client {
    /// Connects to `host:port`.
    pub async fn connect(host: &str, port: u16) -> Result<(Client, Incoming), ClientError> {
        let addr = format!("{host}:{port}");
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| ClientError::Connect {
                addr,
                reason: e.to_string(),
                kind: e.kind(),
            })?;
        let _ = stream.set_nodelay(true);
        Ok(Client::over(stream))
    }

    /// Wraps an already connected stream.
    pub fn over(stream: TcpStream) -> (Client, Incoming) {
        let (rd, wr) = stream.into_split();
        let (out_tx, out_rx) = mpsc::channel(SEND_QUEUE);
        let (in_tx, in_rx) = mpsc::channel(INCOMING_QUEUE);
        let shared = Arc::new(Shared {
            out: out_tx,
            pending: Mutex::new(Some(HashMap::new())),
            next_id: AtomicU64::new(1),
            close_reason: Mutex::new(None),
            stop: CancellationToken::new(),
        });
        tokio::spawn(write_loop(wr, out_rx, shared.stop.clone()));
        tokio::spawn(read_loop(rd, in_tx, shared.clone()));
        let owner = Arc::new(Owner {
            stop: shared.stop.clone(),
        });
        (
            Client {
                shared: shared.clone(),
                _owner: owner.clone(),
            },
            Incoming {
                rx: in_rx,
                shared,
                _owner: owner,
            },
        )
    }

    /// Sends `request` and waits for the frame that answers it.
    pub async fn request(&self, request: &Request) -> Result<Envelope, ClientError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match self.shared.pending().as_mut() {
            Some(p) => p.insert(id, tx),
            None => return Err(self.shared.closed_error()),
        };
        // Drop the slot if this call is cancelled (a timeout) before its answer.
        let _slot = PendingSlot {
            shared: &self.shared,
            id,
        };
        if self
            .shared
            .out
            .send(request.encode(Some(&Id::UInt(id))))
            .await
            .is_err()
        {
            return Err(self.shared.closed_error());
        }
        rx.await.map_err(|_| self.shared.closed_error())
    }

    /// Logs in with a password; returns the server's login info (session token, heartbeat).
    pub async fn login(&self, user: &str, password: &str) -> Result<LoginOk, ClientError> {
        let req = Request::Login(Login {
            user: user.into(),
            credential: Credential::Password(password.into()),
            acks: false,
        });
        let env = expect(self.request(&req).await?, &[Code::LoginOk])?;
        decode(env)
    }

    /// Creates a user.
    pub async fn register(&self, user: &str, password: &str) -> Result<(), ClientError> {
        let req = Request::Register(Register {
            user: user.into(),
            password: password.into(),
        });
        expect(self.request(&req).await?, &[Code::QueryOk]).map(drop)
    }

    /// Online users, sorted.
    pub async fn users(&self) -> Result<Vec<String>, ClientError> {
        let env = expect(self.request(&Request::Users).await?, &[Code::QueryOk])?;
        Ok(decode::<Users>(env)?.users)
    }

    /// Sends a direct message.
    pub async fn send(&self, to: &str, text: &str) -> Result<Sent, ClientError> {
        self.send_with_nonce(to, text, None).await
    }

    /// Sends a direct message with an idempotency nonce.
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

    /// Broadcasts to every online user.
    pub async fn broadcast(&self, text: &str) -> Result<Sent, ClientError> {
        let req = Request::Broadcast(Broadcast {
            text: text.into(),
            nonce: None,
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

    /// Logs out; the server then closes the connection.
    pub async fn logout(&self) -> Result<(), ClientError> {
        expect(self.request(&Request::Logout).await?, &[Code::QueryOk])?;
        self.shared.set_close_reason(ClientError::Closed {
            code: None,
            reason: "logged out".into(),
        });
        Ok(())
    }

    /// Closes the connection; pending and later calls fail with [`ClientError::Closed`].
    pub fn close(&self) {
        self.shared.set_close_reason(ClientError::Closed {
            code: None,
            reason: "closed by the client".into(),
        });
        self.shared.stop.cancel();
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.pending().is_none() || self.shared.stop.is_cancelled()
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
    mut wr: OwnedWriteHalf,
    mut out: mpsc::Receiver<Bytes>,
    stop: CancellationToken,
) {
    let mut buf = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            f = out.recv() => match f { Some(f) => f, None => break },
        };
        buf.extend_from_slice(&first);
        while let Ok(f) = out.try_recv() {
            buf.extend_from_slice(&f);
            if buf.len() > 64 * 1024 {
                break;
            }
        }
        let ok = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = wr.write_all(&buf) => r.is_ok(),
        };
        buf.clear();
        if !ok {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop(rd: OwnedReadHalf, incoming: mpsc::Sender<ChatMessage>, shared: Arc<Shared>) {
    let mut frames = FramedRead::new(rd, LineCodec::new(MAX_REPLY_BYTES));
    loop {
        let next = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => break,
            n = frames.next() => n,
        };
        let line = match next {
            Some(Ok(line)) => line,
            Some(Err(e)) => {
                shared.set_close_reason(ClientError::Closed {
                    code: None,
                    reason: e.to_string(),
                });
                break;
            }
            None => break,
        };
        let env = match Envelope::parse(&line) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!("ignoring a frame from the server: {e}");
                continue;
            }
        };
        if let Some(id) = env.id.as_ref().and_then(Id::as_u64) {
            let waiter = shared.pending().as_mut().and_then(|p| p.remove(&id));
            if let Some(w) = waiter {
                let _ = w.send(env);
                continue;
            }
        }
        match (env.status, Code::from_number(env.code)) {
            (Status::Query, Some(Code::Heartbeat)) => {
                let answered = shared.out.send(encode_pong()).await;
                if answered.is_err() {
                    break;
                }
            }
            (Status::Message, Some(Code::Direct | Code::Broadcast)) => {
                match serde_json::from_value::<ChatMessage>(serde_json::Value::Object(env.info)) {
                    // A full queue means the application is slow: stop reading, let the server judge.
                    Ok(m) => {
                        if incoming.send(m).await.is_err() {
                            // Nobody listens for pushes; keep serving replies.
                        }
                    }
                    Err(e) => tracing::warn!("ignoring a malformed push: {e}"),
                }
            }
            (Status::Error, _) | (Status::Response, _) => {
                let reason = env
                    .str_field("error")
                    .unwrap_or("closed by the server")
                    .to_string();
                if Code::from_number(env.code).is_some_and(Code::closes) {
                    shared.set_close_reason(ClientError::Closed {
                        code: Some(env.code),
                        reason,
                    });
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
    shared.set_close_reason(ClientError::Closed {
        code: None,
        reason: "the server closed the connection".into(),
    });
    // Fail every waiting request and refuse new ones.
    shared.pending().take();
    shared.stop.cancel();
}
