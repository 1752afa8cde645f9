//! Reading what the server sends: each line is a push for the application, an
//! answer to a request, a heartbeat ping or a closing code. Pure: the connection task
//! (`handler`) acts on what this returns.

use super::ClientError;
use crate::protocol::code::{Code, Status};
use crate::protocol::envelope::{Envelope, Id};
use crate::protocol::reply::{ChatMessage, PushFrame};

/// Largest frame the client accepts: a full history reply is far above the server's request limit.
pub(super) const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

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

/// What one line from the server is.
pub(super) enum Inbound {
    /// A chat message for the application.
    Push(Pushed),
    /// An `r` or `e` frame carrying a request's id.
    Answer(u64, Envelope),
    /// The server's heartbeat ping: answer with a pong.
    Ping,
    /// An `r` or `e` frame with no request's id and a closing code: the reason the
    /// connection is about to end.
    Closing(ClientError),
    /// Nothing to act on (logged).
    Ignored,
}

/// Reads one line. The one reading of pushes: the canonical layout first (one
/// allocation for the whole message), then any other JSON spelling of it; an `m`
/// frame that neither accepts (one with an `id`, say) is not a push, and never an
/// answer either.
pub(super) fn classify(line: &[u8]) -> Inbound {
    if let Some(frame) = PushFrame::parse(line) {
        return Inbound::Push(Pushed::Frame(frame));
    }
    if let Some(m) = ChatMessage::parse_push_general(line) {
        return Inbound::Push(Pushed::Message(m));
    }
    let env = match Envelope::parse(line) {
        Ok(env) => env,
        Err(e) => {
            tracing::warn!("ignoring a frame from the server: {e}");
            return Inbound::Ignored;
        }
    };
    match env.status {
        Status::Response | Status::Error => {
            if let Some(id) = env.id.as_ref().and_then(Id::as_u64) {
                return Inbound::Answer(id, env);
            }
            unsolicited(env)
        }
        Status::Query if env.code == Code::Heartbeat.number() => Inbound::Ping,
        Status::Message => {
            tracing::warn!(
                "ignoring a message frame that is not a valid push: code {}",
                env.code
            );
            Inbound::Ignored
        }
        Status::Query => Inbound::Ignored,
    }
}

/// An `r` or `e` frame that answers no request: a closing code's reason, or noise.
pub(super) fn unsolicited(env: Envelope) -> Inbound {
    let reason = env
        .str_field("error")
        .unwrap_or("closed by the server")
        .to_string();
    if Code::from_number(env.code).is_some_and(Code::closes) {
        return Inbound::Closing(ClientError::Closed {
            code: Some(env.code),
            reason,
        });
    }
    tracing::warn!(
        "unsolicited frame from the server: code {} {reason}",
        env.code
    );
    Inbound::Ignored
}
