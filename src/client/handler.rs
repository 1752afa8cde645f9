//! The connection task: one task owns everything about the connection. It reads the
//! server's lines, writes requests, acks and pongs from one buffer, matches answers
//! to the requests waiting for them, hands pushes to the application once each, and
//! when the connection breaks, reconnects and resumes while new requests wait.
//!
//! No lock: the application's handles reach it through a bounded command channel,
//! and report what the application has finished with through [`Shared`]'s counters
//! (read here when an ack is written). With one owner there is no ordering between
//! tasks to get right: a resume that installs a new connection and a request that
//! arrives meanwhile are two steps of the same loop.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::dial::Dialer;
use super::reader::{classify, unsolicited, Inbound, Pushed};
use super::reconnect::{resume, Connection, Session};
use super::shared::Shared;
use super::{ClientError, ClientOptions, ConnectionEvent};
use crate::protocol::code::Code;
use crate::protocol::envelope::Envelope;
use crate::protocol::reply::{encode_ack, encode_pong};

/// Bytes waiting for the socket before the task stops taking requests (the
/// application's sends then wait in the command channel, which is bounded too).
const OUT_LIMIT: usize = 256 * 1024;
/// How long an ack with nothing to travel with waits, so that it covers more. A crash
/// within it means a few more redeliveries, never a loss.
const ACK_DELAY: Duration = Duration::from_millis(5);
/// Lines or requests taken in one turn of the loop once the first is there: fewer
/// turns of `select!` under load, and still a turn for everything else soon.
const BATCH: usize = 64;
/// How long the final ack and the goodbye may take when the client closes.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a request is, where the answer matters to the task itself.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// Nothing to remember.
    Plain,
    /// A password login: its answer's session is the one to resume.
    Login,
    /// A logout: no reconnection after it, and "logged out" is why the client ends.
    Logout,
}

/// From a handle to the task.
pub(super) struct Command {
    pub(super) id: u64,
    /// The request, encoded with `id`.
    pub(super) frame: Bytes,
    pub(super) kind: Kind,
    pub(super) reply: oneshot::Sender<Envelope>,
}

/// A request waiting for its answer; the frame is kept to send it again after a resume.
struct Waiter {
    frame: Bytes,
    kind: Kind,
    reply: oneshot::Sender<Envelope>,
}

/// A reconnection in progress.
type Attempt = Pin<Box<dyn Future<Output = Result<Connection, ClientError>> + Send>>;

/// The connection's state, owned by [`Handler::run`].
pub(super) struct Handler {
    pub(super) shared: Arc<Shared>,
    pub(super) options: ClientOptions,
    pub(super) dialer: Arc<Dialer>,
    pub(super) commands: mpsc::Receiver<Command>,
    /// Where pushes go (sends fail once the application dropped its `Incoming`).
    pub(super) incoming: mpsc::Sender<Pushed>,
}

/// What [`Handler::run`] keeps between steps.
struct State {
    /// Waiting for answers, by id (sent again in this order after a resume).
    pending: BTreeMap<u64, Waiter>,
    session: Option<Session>,
    logged_out: bool,
    /// Highest direct `msg_id` handed on: redeliveries at or below it are dropped.
    last_direct: u64,
    /// Highest `msg_id` acknowledged to the server.
    acked: u64,
    /// Bytes for the socket, in order.
    out: BytesMut,
    /// The socket refused a write: write no more, read on to learn why it closed.
    write_broken: bool,
    /// A push the application has no room for yet: reading stops until it has.
    stalled: Option<Pushed>,
    /// When a lone ack is to be written.
    ack_at: Option<Instant>,
    /// A closing code the server sent on this connection, the reason it ends.
    closing: Option<ClientError>,
}

enum Link {
    Up(Connection),
    Down(Attempt),
}

impl Handler {
    /// Serves `first` and its successors until the client ends.
    pub(super) async fn run(mut self, first: Connection) {
        let mut st = State {
            pending: BTreeMap::new(),
            session: None,
            logged_out: false,
            last_direct: 0,
            acked: 0,
            out: BytesMut::new(),
            write_broken: false,
            stalled: None,
            ack_at: None,
            closing: None,
        };
        let mut link = Link::Up(first);
        let end = loop {
            let step = match &mut link {
                Link::Up(conn) => self.serve(conn, &mut st).await,
                Link::Down(attempt) => self.wait_for(attempt, &mut st).await,
            };
            match step {
                Step::Continue => {}
                Step::Lost(err) => match self.reconnection(&mut st, err) {
                    Ok(attempt) => link = Link::Down(attempt),
                    Err(err) => break err,
                },
                Step::Resumed(conn) => {
                    self.resumed(&mut st);
                    link = Link::Up(conn);
                }
                Step::Stop => {
                    if let Link::Up(conn) = &mut link {
                        self.goodbye(conn, &mut st).await;
                    }
                    break ClientError::Closed {
                        code: None,
                        reason: "closed by the client".into(),
                    };
                }
                Step::End(err) => break err,
            }
        };
        // The reason first: requests still waiting, and `Incoming`, end with it.
        self.shared.end(end);
    }

    /// Serves a live connection until a step other than [`Step::Continue`]. The
    /// stop and nudge waits are made once and kept across turns of the loop: each is
    /// a registration with a lock, not something to redo for every line.
    async fn serve(&mut self, conn: &mut Connection, st: &mut State) -> Step {
        let Connection { lines, wr } = conn;
        let shared = self.shared.clone();
        let stopped = shared.stop.cancelled();
        tokio::pin!(stopped);
        let nudged = shared.nudge.notified();
        tokio::pin!(nudged);
        // One timer, moved to each lone ack's deadline, not one made per turn.
        let ack_timer = tokio::time::sleep_until(st.ack_at.unwrap_or_else(Instant::now));
        tokio::pin!(ack_timer);
        loop {
            let writing = !st.out.is_empty() && !st.write_broken;
            let taking = st.out.len() < OUT_LIMIT || st.write_broken;
            let ack_due = st.ack_at.is_some();
            let step = tokio::select! {
                biased;
                _ = &mut stopped => Step::Stop,
                written = wr.write_buf(&mut st.out), if writing => {
                    if !matches!(written, Ok(n) if n > 0) {
                        st.write_broken = true;
                        st.out.clear();
                    }
                    Step::Continue
                }
                // Owned: a permit borrowing the sender would hold `self` across the arms.
                permit = self.incoming.clone().reserve_owned(), if st.stalled.is_some() => {
                    if let (Ok(permit), Some(m)) = (permit, st.stalled.take()) {
                        permit.send(m);
                    } else {
                        st.stalled = None; // the application is gone: drop it
                    }
                    Step::Continue
                }
                line = lines.next(), if st.stalled.is_none() => {
                    // Then the lines already read, without a turn of the loop for each.
                    let mut line = line;
                    let mut taken = 0;
                    loop {
                        match line {
                            Some(Ok(l)) => self.inbound(&l, st),
                            Some(Err(e)) => {
                                return Step::Lost(ClientError::Closed { code: None, reason: e.to_string() });
                            }
                            None => {
                                return Step::Lost(st.closing.take().unwrap_or(ClientError::Closed {
                                    code: None,
                                    reason: "the server closed the connection".into(),
                                }));
                            }
                        }
                        taken += 1;
                        if st.stalled.is_some() || taken == BATCH {
                            break;
                        }
                        match lines.next().now_or_never() {
                            Some(next) => line = next,
                            None => break,
                        }
                    }
                    Step::Continue
                }
                command = self.commands.recv(), if taking => match command {
                    Some(c) => {
                        self.command(c, st, true);
                        for _ in 0..BATCH {
                            if st.out.len() >= OUT_LIMIT {
                                break;
                            }
                            match self.commands.try_recv() {
                                Ok(c) => self.command(c, st, true),
                                Err(_) => break,
                            }
                        }
                        Step::Continue
                    }
                    None => Step::Stop, // every handle is gone
                },
                () = &mut nudged => {
                    nudged.set(shared.nudge.notified());
                    if st.out.is_empty() {
                        // Only an ack to send: wait a moment so that it covers more.
                        if st.ack_at.is_none() {
                            let at = Instant::now() + ACK_DELAY;
                            st.ack_at = Some(at);
                            ack_timer.as_mut().reset(at);
                        }
                    } else {
                        ack_now(&self.shared, st);
                    }
                    Step::Continue
                }
                () = &mut ack_timer, if ack_due => {
                    st.ack_at = None;
                    ack_now(&self.shared, st);
                    Step::Continue
                }
            };
            if !matches!(step, Step::Continue) {
                return step;
            }
        }
    }

    /// One step while reconnecting: requests wait, unsent, for the new connection.
    async fn wait_for(&mut self, attempt: &mut Attempt, st: &mut State) -> Step {
        tokio::select! {
            biased;
            _ = self.shared.stop.cancelled() => Step::Stop,
            done = attempt => match done {
                Ok(conn) => Step::Resumed(conn),
                Err(err) => Step::End(err),
            },
            command = self.commands.recv() => match command {
                Some(c) => {
                    self.command(c, st, false);
                    Step::Continue
                }
                None => Step::Stop,
            },
        }
    }

    /// A request from a handle: remembered, and written when the connection is up.
    fn command(&mut self, c: Command, st: &mut State, up: bool) {
        if matches!(c.kind, Kind::Logout) {
            st.logged_out = true;
            // What the application finished with is acknowledged before it leaves.
            ack_now(&self.shared, st);
        }
        if up && !st.write_broken {
            st.out.extend_from_slice(&c.frame);
        }
        st.pending.insert(
            c.id,
            Waiter {
                frame: c.frame,
                kind: c.kind,
                reply: c.reply,
            },
        );
    }

    /// One line from the server.
    fn inbound(&mut self, line: &[u8], st: &mut State) {
        match classify(line) {
            Inbound::Push(m) => self.push(m, st),
            Inbound::Answer(id, env) => match st.pending.remove(&id) {
                Some(w) => self.answer(w, env, st),
                None => {
                    if let Inbound::Closing(e) = unsolicited(env) {
                        st.closing = Some(e);
                    }
                }
            },
            Inbound::Ping => {
                if !st.write_broken {
                    st.out.extend_from_slice(&encode_pong());
                }
            }
            Inbound::Closing(e) => st.closing = Some(e),
            Inbound::Ignored => {}
        }
    }

    fn answer(&mut self, w: Waiter, env: Envelope, st: &mut State) {
        match w.kind {
            Kind::Login if self.options.reconnect && env.code == Code::LoginOk.number() => {
                if let (Some(user), Some(token)) = (env.str_field("user"), env.str_field("session"))
                {
                    st.session = Some(Session {
                        user: user.to_string(),
                        token: token.to_string(),
                    });
                }
            }
            Kind::Logout if env.code == Code::QueryOk.number() => {
                self.shared.set_close_reason(ClientError::Closed {
                    code: None,
                    reason: "logged out".into(),
                });
            }
            _ => {}
        }
        let _ = w.reply.send(env);
    }

    /// Hands a push to the application, unless it is a repeat. Direct messages arrive
    /// in `msg_id` order on a connection, and after a resume the server starts again
    /// from the last ack, so older ones are repeats.
    fn push(&mut self, m: Pushed, st: &mut State) {
        if m.is_direct() {
            if st.last_direct >= m.msg_id() {
                return;
            }
            st.last_direct = m.msg_id();
        }
        // Room in the queue is the usual case; a full one means the application is
        // slow: stop reading and let the server judge.
        if let Err(mpsc::error::TrySendError::Full(m)) = self.incoming.try_send(m) {
            st.stalled = Some(m);
        }
    }

    /// The connection broke with `err`: a reconnection to wait for, or the end.
    fn reconnection(&mut self, st: &mut State, err: ClientError) -> Result<Attempt, ClientError> {
        let final_code = matches!(
            err.named_code(),
            Some(Code::TakenOver | Code::TooManyAttempts | Code::FrameTooLong)
        );
        let session = match &st.session {
            Some(s)
                if self.options.reconnect
                    && !final_code
                    && !st.logged_out
                    && !self.shared.stop.is_cancelled() =>
            {
                s.clone()
            }
            _ => return Err(err),
        };
        self.options
            .emit(ConnectionEvent::Disconnected(err.clone()));
        Ok(Box::pin(resume(
            self.dialer.clone(),
            session,
            self.shared.next_id(),
            err,
            self.options.reconnect_for,
        )))
    }

    /// A new connection resumed the session: repeat the last ack, send again every
    /// request still waiting (each send carries a nonce, so a repeat is answered, not
    /// stored twice), in the order they were made.
    fn resumed(&mut self, st: &mut State) {
        st.out.clear();
        st.write_broken = false;
        st.closing = None;
        st.ack_at = None;
        self.shared.ack_wanted.store(false, Ordering::SeqCst);
        let done = self.shared.done.load(Ordering::SeqCst).max(st.acked);
        if done > 0 {
            st.out.extend_from_slice(&encode_ack(done));
            st.acked = done;
        }
        // A request whose caller gave up (a timeout) is not sent again.
        st.pending.retain(|_, w| !w.reply.is_closed());
        for w in st.pending.values() {
            st.out.extend_from_slice(&w.frame);
        }
        self.options.emit(ConnectionEvent::Reconnected);
    }

    /// The client is closing: what is queued, and the final ack, still go out, briefly.
    async fn goodbye(&mut self, conn: &mut Connection, st: &mut State) {
        ack_now(&self.shared, st);
        if st.write_broken {
            return;
        }
        let out = std::mem::take(&mut st.out);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            let _ = conn.wr.write_all(&out).await;
            let _ = conn.wr.shutdown().await;
        })
        .await;
    }
}

/// What one step of the loop leads to.
enum Step {
    Continue,
    Lost(ClientError),
    Resumed(Connection),
    Stop,
    End(ClientError),
}

/// Writes an ack for everything the application has finished with, if that is more
/// than was acknowledged.
fn ack_now(shared: &Shared, st: &mut State) {
    // Cleared before `done` is read: a `done` raised after this sets it again and
    // wakes the task (SeqCst, like `Shared::ack_taken`).
    shared.ack_wanted.store(false, Ordering::SeqCst);
    st.ack_at = None;
    let done = shared.done.load(Ordering::SeqCst);
    if done > st.acked && !st.write_broken {
        st.out.extend_from_slice(&encode_ack(done));
        st.acked = done;
    }
}
