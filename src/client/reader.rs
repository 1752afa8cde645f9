//! The reading task of a connection: pushes to the application (once each),
//! answers to their waiting requests, heartbeat pings answered, closing codes kept.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::dial::Reader;
use super::shared::Shared;
use super::ClientError;
use crate::protocol::code::{Code, Status};
use crate::protocol::codec::LineCodec;
use crate::protocol::envelope::{Envelope, Id};
use crate::protocol::reply::{encode_pong, ChatMessage, PushFrame};
use crate::sync::lock;

/// Largest frame the client accepts: a full history reply is far above the server's request limit.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

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

    pub(super) fn into_message(self) -> ChatMessage {
        match self {
            Pushed::Frame(f) => f.to_message(),
            Pushed::Message(m) => m,
        }
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

pub(super) async fn read_loop(
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
