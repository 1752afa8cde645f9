//! One connection's session state machine: turns each valid envelope into the
//! frames that answer it, as values, and owns the login state.
//!
//! The code table decides the shape of every failure: `m` requests fail with
//! `e` frames, `q` requests with `r` frames, and each failure's code comes from
//! a [`Rejection`] or a store error, never a bare number.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use std::net::IpAddr;
use std::time::Instant;

use super::hub::Conn;
use super::limits::{Outcome, Refused, TokenBucket};
use super::Context;
use crate::metrics::LoginOutcome;
use crate::protocol::code::{Code, Status};
use crate::protocol::envelope::{encode_error, Envelope, Id};
use crate::protocol::fast::{self, Fast};
use crate::protocol::reply::{
    self, heartbeat_number, LoginOk, Messages, Receipt, Registered, ReqEcho, Users,
};
use crate::protocol::request::{Credential, Login, Rejection, Request, RequestKind};
use crate::server::accounts::AccountError;
use crate::store::{Appended, NewMessage, StoreError};

/// A reply that is ready once the store has made a message durable.
pub(crate) type PendingReply = Pin<Box<dyn Future<Output = Bytes> + Send>>;

/// What the connection must do after a request, in request order.
pub(crate) enum Outbound {
    /// Write this frame.
    Frame(Bytes),
    /// Write this frame once it is ready; what follows waits behind it, so replies
    /// keep request order while sends are committed in groups.
    Pending(PendingReply),
    /// Start pushing the user's stored messages, then live ones (after `r`/10).
    StartDelivery {
        /// Whose messages.
        user: Arc<str>,
        /// At-least-once mode: the cursor moves on the client's acks, not on writes.
        acks: bool,
    },
    /// Write what is queued, then close the connection.
    Close,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outbound::Frame(b) => f.debug_tuple("Frame").field(b).finish(),
            Outbound::Pending(_) => f.write_str("Pending"),
            Outbound::StartDelivery { user, acks } => f
                .debug_struct("StartDelivery")
                .field("user", user)
                .field("acks", acks)
                .finish(),
            Outbound::Close => f.write_str("Close"),
        }
    }
}

enum State {
    Anonymous {
        failed_logins: u32,
    },
    LoggedIn {
        user: Arc<str>,
        acks: bool,
        session: Box<str>,
    },
}

/// The per-connection session.
pub(crate) struct Session {
    ctx: Arc<Context>,
    conn: Arc<Conn>,
    local_port: u16,
    state: State,
    /// Message frames allowed; `None` when the server sets no rate limit.
    bucket: Option<TokenBucket>,
    /// The client's address, for the per-address login cap.
    peer: IpAddr,
}

impl Session {
    /// A session that has not logged in.
    pub(crate) fn new(
        ctx: Arc<Context>,
        conn: Arc<Conn>,
        local_port: u16,
        peer: IpAddr,
    ) -> Session {
        let limit = ctx.config.rate_limit;
        let bucket =
            (limit > 0.0).then(|| TokenBucket::new(limit, ctx.config.rate_burst, Instant::now()));
        Session {
            ctx,
            conn,
            local_port,
            state: State::Anonymous { failed_logins: 0 },
            bucket,
            peer,
        }
    }

    /// The server's shared state.
    pub(crate) fn ctx(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// This connection's handle, as the hub sees it.
    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// The logged-in user, if any.
    pub(crate) fn user(&self) -> Option<&Arc<str>> {
        match &self.state {
            State::LoggedIn { user, .. } => Some(user),
            State::Anonymous { .. } => None,
        }
    }

    /// Answers one received line.
    pub(crate) async fn handle_line(&mut self, line: &[u8], out: &mut VecDeque<Outbound>) {
        // The commonest frames skip the JSON tree (the shortcut reads them exactly as
        // the full parse would; `protocol::fast`).
        match fast::read(line) {
            Some(Fast::Ack(up_to)) => return self.ack(up_to),
            Some(Fast::Direct {
                to,
                text,
                nonce,
                id,
            }) => {
                let parse = |max| Request::direct(Some(to), Some(text), Ok(nonce), max);
                return self.handle(RequestKind::Direct, id, parse, out).await;
            }
            None => {}
        }
        let env = match Envelope::parse(line) {
            Ok(env) => env,
            Err(e) => {
                let frame = encode_error(e.code(), &e.to_string(), e.id());
                return out.push_back(Outbound::Frame(frame));
            }
        };
        let Some(kind) = RequestKind::of(&env) else {
            // Client `r` frames (pong, acks) and `e` frames get no reply; any frame
            // already counted as a sign of life.
            if let Some(up_to) = ack_of(&env) {
                self.ack(up_to);
            }
            return;
        };
        let id = env.id.clone();
        let info = env.info;
        let parse = |max| Request::parse(kind, &info, max);
        self.handle(kind, id, parse, out).await;
    }

    /// Answers a request of `kind`; `parse` reads its arguments (given the text limit)
    /// once the checks that come first (login state, rate limit) have passed.
    async fn handle(
        &mut self,
        kind: RequestKind,
        id: Option<Id>,
        parse: impl FnOnce(usize) -> Result<Request, Rejection>,
        out: &mut VecDeque<Outbound>,
    ) {
        let logged_in = self.user().is_some();
        if !logged_in && !kind.allowed_before_login() {
            let (code, text) = if kind.is_message() {
                (Code::MessageNotLoggedIn, "log in before sending messages")
            } else {
                (Code::NotLoggedIn, "log in first")
            };
            out.push_back(fail(code, text, id.as_ref()));
            return;
        }
        if logged_in && kind == RequestKind::Login {
            out.push_back(fail(
                Code::AlreadyLoggedIn,
                "this connection is already logged in",
                id.as_ref(),
            ));
            return;
        }
        if logged_in && kind == RequestKind::Register {
            out.push_back(fail(
                Code::UnknownRequest,
                "register is only available before login",
                id.as_ref(),
            ));
            return;
        }
        if kind == RequestKind::Register && !self.ctx.config.registration_open {
            out.push_back(fail(
                Code::RegistrationClosed,
                "registration is closed on this server",
                id.as_ref(),
            ));
            return;
        }
        if kind.is_message() {
            if let Some(bucket) = &mut self.bucket {
                if !bucket.try_take(Instant::now()) {
                    self.ctx.metrics.rate_limited();
                    let reason = format!(
                        "rate limited: at most {} messages a second; try again in {} ms",
                        self.ctx.config.rate_limit,
                        bucket.wait().as_millis().max(1)
                    );
                    out.push_back(fail(Code::RateLimited, &reason, id.as_ref()));
                    return;
                }
            }
        }
        let request = match parse(self.ctx.config.max_text_bytes) {
            Ok(r) => r,
            Err(Rejection { code, reason }) => {
                out.push_back(fail(code, &reason, id.as_ref()));
                return;
            }
        };
        let id = id.as_ref();
        match request {
            Request::Login(login) => self.login(login, id, out).await,
            Request::Register(r) => {
                let frame = match self.ctx.accounts.create(&r.user, &r.password).await {
                    Ok(()) => reply::encode_reply(Code::QueryOk, &Registered { user: r.user }, id),
                    Err(AccountError::Store(StoreError::UserExists(u))) => {
                        encode_error(Code::NameTaken, &format!("the name {u:?} is taken"), id)
                    }
                    Err(AccountError::InvalidName(_) | AccountError::InvalidPassword) => {
                        encode_error(Code::BadArguments, "invalid name or password", id)
                    }
                    // The same answer as a login's: nothing was created, try again soon.
                    Err(AccountError::Busy(busy)) => {
                        encode_error(Code::Busy, &busy.to_string(), id)
                    }
                    Err(e) => internal(&e, id),
                };
                out.push_back(Outbound::Frame(frame));
            }
            Request::Ping => out.push_back(Outbound::Frame(reply::encode_reply(
                Code::QueryOk,
                &ReqEcho { req: "pong".into() },
                id,
            ))),
            Request::Users => {
                let users = self.ctx.hub.online_users();
                out.push_back(Outbound::Frame(reply::encode_reply(
                    Code::QueryOk,
                    &Users { users },
                    id,
                )));
            }
            Request::History(h) => {
                let user = self.user().map(|u| u.to_string()).unwrap_or_default();
                let frame = match self
                    .ctx
                    .store
                    .history(user, h.with, h.before, h.limit)
                    .await
                {
                    Ok(messages) => reply::encode_reply(Code::QueryOk, &Messages { messages }, id),
                    Err(e) => internal(&e, id),
                };
                out.push_back(Outbound::Frame(frame));
            }
            Request::Logout => {
                if let State::LoggedIn { user, session, .. } = &self.state {
                    self.ctx.hub.unregister(user, self.conn.id);
                    if let Err(e) = self.ctx.accounts.close_session(session).await {
                        out.push_back(Outbound::Frame(internal(&e, id)));
                        return;
                    }
                }
                self.state = State::Anonymous { failed_logins: 0 };
                out.push_back(Outbound::Frame(reply::encode_reply(
                    Code::QueryOk,
                    &ReqEcho {
                        req: "logout".into(),
                    },
                    id,
                )));
                out.push_back(Outbound::Close);
            }
            Request::Direct(d) => out.push_back(self.send(Some(d.to), d.text, d.nonce, id).await),
            Request::Broadcast(b) => out.push_back(self.send(None, b.text, b.nonce, id).await),
        }
    }

    /// Submits a message to the store (which routes it once durable); the answer is its
    /// receipt, pending until the commit. Waits only for the message's place in the
    /// log, so the connection reads its next request while this one commits.
    async fn send(
        &self,
        to: Option<String>,
        text: String,
        nonce: Option<String>,
        id: Option<&Id>,
    ) -> Outbound {
        let from = self.user().map(|u| u.to_string()).unwrap_or_default();
        let message = NewMessage {
            from,
            to,
            text,
            nonce,
            nonce_window: self.ctx.config.session_ttl,
        };
        let committing = match self.ctx.store.submit(message).await {
            Ok(c) => c,
            Err(e) => return Outbound::Frame(internal(&e, id)),
        };
        let id = id.cloned();
        Outbound::Pending(Box::pin(async move {
            receipt_frame(committing.await, id.as_ref())
        }))
    }

    async fn login(&mut self, login: Login, id: Option<&Id>, out: &mut VecDeque<Outbound>) {
        let password = matches!(login.credential, Credential::Password(_));
        // Checked before any work, so a capped guesser costs no hashing. Only failures
        // count (below): users behind one address can all log in, and resume.
        let now = Instant::now();
        // The address cap counts after the outcome, so that a crowd logging in at once
        // through one gateway is never refused for being in flight. A password attempt
        // is begun against its account before the (slow) check instead: when failures
        // plus attempts in flight reach the cap, the rest are told `r`/24 (busy), so
        // guesses sent together over many connections get no more verdicts than the cap,
        // and a success still never counts.
        let metrics = &self.ctx.metrics;
        if let Err(wait) = self.ctx.logins.addresses.check(&self.peer, now) {
            metrics.login(LoginOutcome::Capped);
            capped(out, "from this address", wait, id);
            return;
        }
        let attempt = if password {
            match self
                .ctx
                .logins
                .accounts
                .begin(login.user.as_str().into(), now)
            {
                Ok(attempt) => Some(attempt),
                Err(Refused::Capped(wait)) => {
                    metrics.login(LoginOutcome::Capped);
                    capped(out, "for this account", wait, id);
                    return;
                }
                Err(Refused::Busy) => {
                    metrics.login(LoginOutcome::Busy);
                    out.push_back(fail(
                        Code::Busy,
                        "this account's password is being checked already; try again shortly",
                        id,
                    ));
                    return;
                }
            }
        } else {
            None
        };
        let verified = match &login.credential {
            Credential::Password(password) => self.ctx.accounts.verify(&login.user, password).await,
            // A wrong, expired, logged-out or someone else's token is a failed login too.
            Credential::Session(token) => self.ctx.accounts.resume(&login.user, token).await,
        };
        let verified = match verified {
            Ok(true) => match &login.credential {
                Credential::Password(_) => {
                    self.ctx.accounts.open_session(&login.user).await.map(Some)
                }
                Credential::Session(token) => Ok(Some(token.clone())),
            },
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        };
        if let Some(attempt) = attempt {
            // Busy or an internal error: nothing was learned, nothing counts.
            attempt.finish(match &verified {
                Ok(None) => Outcome::Failed,
                Ok(Some(_)) => Outcome::Succeeded,
                Err(_) => Outcome::Unknown,
            });
        }
        let metrics = &self.ctx.metrics;
        metrics.login(match (&verified, &login.credential) {
            (Err(AccountError::Busy(_)), _) => LoginOutcome::Busy,
            (Err(_), _) => LoginOutcome::Error,
            (Ok(None), _) => LoginOutcome::Failed,
            (Ok(Some(_)), Credential::Password(_)) => LoginOutcome::Ok,
            (Ok(Some(_)), Credential::Session(_)) => LoginOutcome::Resumed,
        });
        match verified {
            Err(AccountError::Busy(busy)) => {
                out.push_back(fail(Code::Busy, &busy.to_string(), id));
            }
            Err(e) => out.push_back(Outbound::Frame(internal(&e, id))),
            Ok(None) => {
                // (A password failure was counted against its account above.)
                self.ctx.logins.addresses.fail(self.peer, Instant::now());
                let State::Anonymous { failed_logins } = &mut self.state else {
                    return;
                };
                *failed_logins += 1;
                if *failed_logins >= self.ctx.config.max_failed_logins {
                    out.push_back(fail(
                        Code::TooManyAttempts,
                        "too many failed logins; closing the connection",
                        id,
                    ));
                    out.push_back(Outbound::Close);
                } else {
                    out.push_back(fail(Code::BadCredentials, "wrong name or password", id));
                }
            }
            Ok(Some(session)) => {
                let user: Arc<str> = Arc::from(login.user.as_str());
                // Registering first means no message committed from now on can miss this
                // connection; its catch-up reads everything committed before.
                self.ctx.hub.register(user.clone(), self.conn.clone());
                self.state = State::LoggedIn {
                    user: user.clone(),
                    acks: login.acks,
                    session: session.as_str().into(),
                };
                let info = LoginOk {
                    user: login.user,
                    session,
                    port: self.local_port,
                    heartbeat: heartbeat_number(self.ctx.config.heartbeat),
                };
                out.push_back(Outbound::Frame(reply::encode_reply(
                    Code::LoginOk,
                    &info,
                    id,
                )));
                out.push_back(Outbound::StartDelivery {
                    user,
                    acks: login.acks,
                });
            }
        }
    }
}

impl Session {
    /// A cumulative ack (PROTOCOL.md 3.4): everything up to `up_to` that this connection
    /// was sent is delivered. Ids beyond what was sent count only up to what was sent,
    /// and the store's cursor never moves backwards, so a bad ack changes nothing.
    fn ack(&self, up_to: u64) {
        if let State::LoggedIn {
            user, acks: true, ..
        } = &self.state
        {
            let covered = up_to.min(self.conn.pushed());
            if covered > 0 {
                self.ctx.store.advance_cursor(user, covered);
            }
        }
    }
}

/// The `msg_id` of a client's `r`/50 `{"ack": I}` frame.
fn ack_of(env: &Envelope) -> Option<u64> {
    if env.status != Status::Response || env.code != Code::Delivered.number() {
        return None;
    }
    env.info.get("ack").and_then(serde_json::Value::as_u64)
}

/// `r`/22 for a login cap that is used up (`whose`: "from this address"…), then close.
fn capped(out: &mut VecDeque<Outbound>, whose: &str, wait: std::time::Duration, id: Option<&Id>) {
    let reason = format!(
        "too many failed logins {whose}; try again in {} s",
        wait.as_secs().max(1)
    );
    out.push_back(fail(Code::TooManyAttempts, &reason, id));
    out.push_back(Outbound::Close);
}

fn fail(code: Code, reason: &str, id: Option<&Id>) -> Outbound {
    debug_assert!(matches!(code.status(), Status::Response | Status::Error));
    Outbound::Frame(encode_error(code, reason, id))
}

fn internal(err: &dyn std::fmt::Display, id: Option<&Id>) -> Bytes {
    tracing::error!("internal error: {err}");
    encode_error(
        Code::Internal,
        "internal error; the request had no effect",
        id,
    )
}

/// The answer to a send once the store is done with it.
fn receipt_frame(result: Result<Appended, StoreError>, id: Option<&Id>) -> Bytes {
    match result {
        Ok(a) => {
            // For a repeated nonce the first message decides, even if it was of the other kind.
            let direct = a.message.to.is_some();
            let code = if direct && !a.routed.delivered {
                Code::Stored
            } else {
                Code::Delivered
            };
            let receipt = Receipt {
                msg_id: a.message.msg_id,
                recipients: (!direct).then_some(a.routed.recipients),
                duplicate: a.duplicate,
            };
            reply::encode_reply(code, &receipt, id)
        }
        Err(StoreError::NoSuchUser(u)) => {
            encode_error(Code::NoSuchUser, &format!("no such user {u:?}"), id)
        }
        Err(e) => internal(&e, id),
    }
}
