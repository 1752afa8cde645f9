//! The MoeChat wire protocol, version 1 (`PROTOCOL.md`): pure data, no I/O.
//!
//! - [`code`]: status letters and the named code table;
//! - [`codec`]: newline framing with the frame-size limit;
//! - [`envelope`]: the JSON envelope, parsed (62/63) and encoded;
//! - [`fast`]: a shortcut for the two commonest frames, equal to the full parse;
//! - [`request`]: typed client requests and their argument rules;
//! - [`reply`]: typed replies and pushes shared by server and client;
//! - [`validate`]: names, passwords, text and nonces.

pub mod code;
pub mod codec;
pub mod envelope;
pub mod fast;
pub mod reply;
pub mod request;
pub mod validate;

pub use code::{Code, Status};
pub use codec::{CodecError, LineCodec};
pub use envelope::{encode, encode_code, encode_error, Envelope, EnvelopeError, Id};
pub use reply::{ChatMessage, LoginOk, Receipt};
pub use request::{Credential, Login, Peer, Rejection, Request, RequestKind};
