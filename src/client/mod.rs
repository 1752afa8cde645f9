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
//!
//! # Layout
//! - `options` ([`ClientOptions`]) and `error` ([`ClientError`]): what a caller sets
//!   and gets.
//! - `dial`: a TCP connection, TLS on top when asked.
//! - `handler`: the one task that owns the connection: reads, writes, answers,
//!   pushes, acks, and reconnection.
//! - `reader`: what each line from the server is (pure).
//! - `reconnect`: a connection, and resuming the session on a new one.
//! - `shared`: the little the handles and the task share (request ids, what the
//!   application has finished with, why the client ended).
//! - this file: the [`Client`] handle and the [`Incoming`] stream.

mod dial;
mod error;
mod handler;
mod options;
mod reader;
mod reconnect;
mod shared;

pub use error::ClientError;
pub use options::{ClientOptions, ConnectionEvent, EventHook, TlsOptions};
pub(crate) use reader::Pushed;

use dial::Dialer;
use handler::{Command, Handler, Kind};
use reconnect::Connection;
use shared::Shared;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::protocol::code::{Code, Status};
use crate::protocol::envelope::{Envelope, Id};
use crate::protocol::reply::{ChatMessage, LoginOk, Messages, Receipt, Users};
use crate::protocol::request::{
    Broadcast, Credential, Direct, History, Login, Peer, Register, Request,
};

/// Requests queued for the connection task before a call waits.
const COMMAND_QUEUE: usize = 256;
/// Pushed messages held for the application before the client stops reading.
const INCOMING_QUEUE: usize = 1024;
/// Characters in a send's nonce.
const NONCE_CHARS: usize = 20;
/// First and longest pause before a login or register answered `r`/24 (busy) is sent
/// again, and how long to keep trying before the busy answer is the call's error.
const BUSY_FIRST: Duration = Duration::from_millis(50);
const BUSY_MAX: Duration = Duration::from_secs(1);
const BUSY_RETRY_FOR: Duration = Duration::from_secs(30);

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

/// A connection to a MoeChat server. Clones share the connection; it closes when
/// the last clone and its [`Incoming`] are dropped, or on [`Client::close`].
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    reconnect: bool,
    _owner: Arc<Owner>,
}

/// Messages pushed by the server, in arrival order.
pub struct Incoming {
    rx: mpsc::Receiver<Pushed>,
    shared: Arc<Shared>,
    reconnect: bool,
    /// Keeps the command channel open while only the stream is held.
    _commands: mpsc::Sender<Command>,
    _owner: Arc<Owner>,
}

/// Held by the application's handles only (the connection task holds [`Shared`]),
/// so dropping every handle stops the task instead of leaving the socket open.
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
        if self.reconnect && m.is_direct() {
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
        let first = Connection::open(&dialer).await?;
        let (in_tx, in_rx) = mpsc::channel(INCOMING_QUEUE);
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let shared = Arc::new(Shared::new());
        let reconnect = options.reconnect;
        let handler = Handler {
            shared: shared.clone(),
            options,
            dialer: Arc::new(dialer),
            commands: command_rx,
            incoming: in_tx,
        };
        tokio::spawn(handler.run(first));
        let owner = Arc::new(Owner {
            stop: shared.stop.clone(),
        });
        Ok((
            Client {
                shared: shared.clone(),
                commands: commands.clone(),
                reconnect,
                _owner: owner.clone(),
            },
            Incoming {
                rx: in_rx,
                shared,
                reconnect,
                _commands: commands,
                _owner: owner,
            },
        ))
    }

    /// Sends `request` and waits for the frame that answers it.
    pub async fn request(&self, request: &Request) -> Result<Envelope, ClientError> {
        self.call(request, Kind::Plain).await
    }

    /// [`Client::request`], telling the connection task what kind of request it is.
    async fn call(&self, request: &Request, kind: Kind) -> Result<Envelope, ClientError> {
        let id = self.shared.next_id();
        let (reply, answer) = oneshot::channel();
        let command = Command {
            id,
            frame: request.encode(Some(&Id::UInt(id))),
            kind,
            reply,
        };
        if self.commands.send(command).await.is_err() {
            return Err(self.shared.closed_error());
        }
        answer.await.map_err(|_| self.shared.closed_error())
    }

    /// Logs in with a password; returns the server's login info (session token, heartbeat).
    pub async fn login(&self, user: &str, password: &str) -> Result<LoginOk, ClientError> {
        let req = Request::Login(Login {
            user: user.into(),
            credential: Credential::Password(password.into()),
            acks: self.reconnect,
        });
        // The connection task keeps the session of a successful login, to resume it.
        let env = expect(
            self.request_unless_busy(&req, Kind::Login).await?,
            &[Code::LoginOk],
        )?;
        decode(env)
    }

    /// Creates a user.
    pub async fn register(&self, user: &str, password: &str) -> Result<(), ClientError> {
        let req = Request::Register(Register {
            user: user.into(),
            password: password.into(),
        });
        expect(
            self.request_unless_busy(&req, Kind::Plain).await?,
            &[Code::QueryOk],
        )
        .map(drop)
    }

    /// [`Client::request`], sent again with backoff (and jitter, so a crowd does not
    /// come back in step) while the server answers `r`/24: too busy hashing passwords.
    async fn request_unless_busy(
        &self,
        request: &Request,
        kind: Kind,
    ) -> Result<Envelope, ClientError> {
        let give_up = Instant::now() + BUSY_RETRY_FOR;
        let mut delay = BUSY_FIRST;
        loop {
            let env = self.call(request, kind).await?;
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
        // The connection task acknowledges what was handled before the logout goes out.
        self.shared.ack_taken();
        expect(
            self.call(&Request::Logout, Kind::Logout).await?,
            &[Code::QueryOk],
        )
        .map(drop)
    }

    /// Closes the connection; pending and later calls fail with [`ClientError::Closed`].
    pub fn close(&self) {
        self.shared.ack_taken();
        self.shared.set_close_reason(ClientError::Closed {
            code: None,
            reason: "closed by the client".into(),
        });
        // The task writes the final ack and says goodbye on its way out.
        self.shared.stop.cancel();
    }

    /// Whether the client has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
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
