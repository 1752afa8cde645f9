//! A connection (lines in, bytes out), and getting one back after a break:
//! reconnecting with backoff and resuming the session with its token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::FramedRead;

use super::dial::{Dialer, Reader, Writer};
use super::reader::{classify, Inbound, MAX_REPLY_BYTES};
use super::ClientError;
use crate::protocol::code::Code;
use crate::protocol::codec::LineCodec;
use crate::protocol::envelope::{Envelope, Id};
use crate::protocol::reply::encode_pong;
use crate::protocol::request::{Credential, Login, Request};

/// First and longest pause between reconnection attempts.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long one resume login may take before the attempt counts as failed.
const RESUME_TIMEOUT: Duration = Duration::from_secs(10);

/// A live connection: the server's lines, and the socket to write to.
pub(super) struct Connection {
    pub(super) lines: FramedRead<Reader, LineCodec>,
    pub(super) wr: Writer,
}

impl Connection {
    /// Dials a new connection.
    pub(super) async fn open(dialer: &Dialer) -> Result<Connection, ClientError> {
        let (rd, wr) = dialer.dial().await?;
        Ok(Connection {
            lines: FramedRead::new(rd, LineCodec::new(MAX_REPLY_BYTES)),
            wr,
        })
    }

    /// Sends `frame` and waits for the answer carrying `id`, answering pings meanwhile.
    /// Lines after the answer (pushes of the catch-up) stay buffered for the task.
    async fn ask(&mut self, frame: &[u8], id: u64) -> Result<Envelope, ClientError> {
        let broken = |reason: String| ClientError::Closed { code: None, reason };
        self.wr
            .write_all(frame)
            .await
            .map_err(|e| broken(e.to_string()))?;
        loop {
            let line = match self.lines.next().await {
                Some(Ok(line)) => line,
                Some(Err(e)) => return Err(broken(e.to_string())),
                None => return Err(broken("the server closed the connection".into())),
            };
            match classify(&line) {
                Inbound::Answer(got, env) if got == id => return Ok(env),
                Inbound::Ping => {
                    let pong = encode_pong();
                    self.wr
                        .write_all(&pong)
                        .await
                        .map_err(|e| broken(e.to_string()))?;
                }
                Inbound::Closing(e) => return Err(e),
                _ => {}
            }
        }
    }
}

/// The session to resume: whose, and its token.
#[derive(Debug, Clone)]
pub(super) struct Session {
    pub(super) user: String,
    pub(super) token: String,
}

/// Reconnects with backoff and resumes `session` on a new connection. Gives up with
/// `cause` after `reconnect_for`, and at once if the server refuses the token (it
/// expired, or was logged out elsewhere): then nothing is left to resume.
pub(super) async fn resume(
    dialer: Arc<Dialer>,
    session: Session,
    id: u64,
    cause: ClientError,
    reconnect_for: Duration,
) -> Result<Connection, ClientError> {
    // A `reconnect_for` too long for the clock to add means "keep trying".
    let deadline = Instant::now().checked_add(reconnect_for);
    let frame = Request::Login(Login {
        user: session.user,
        credential: Credential::Session(session.token),
        acks: true,
    })
    .encode(Some(&Id::UInt(id)));
    let mut delay = BACKOFF_FIRST;
    loop {
        tokio::time::sleep(delay).await;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(cause);
        }
        delay = (delay * 2).min(BACKOFF_MAX);
        let Ok(mut conn) = Connection::open(&dialer).await else {
            continue;
        };
        match tokio::time::timeout(RESUME_TIMEOUT, conn.ask(&frame, id)).await {
            Ok(Ok(env)) if env.code == Code::LoginOk.number() => return Ok(conn),
            Ok(Ok(env)) if env.code == Code::BadCredentials.number() => {
                return Err(ClientError::Closed {
                    code: cause.code(),
                    reason: "the session could not be resumed".into(),
                });
            }
            // No answer in time, a busy or capped server, or the connection broke
            // again: try again.
            _ => {}
        }
    }
}
