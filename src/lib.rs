//! MoeChat: a chat server and client speaking the MoeChat wire protocol
//! (newline-delimited JSON frames with `status`, `status_code` and `info`).
//!
//! # Layout
//! - [`protocol`]: the wire contract as pure data: codes, framing, envelope,
//!   typed requests and replies. No I/O.
//! - [`server`]: the tokio server: accept loop and limits, one connection task
//!   per client, the session state machine, the hub (presence, takeover,
//!   fan-out, slow consumers) and accounts (argon2id).
//! - [`store`]: users, the message log and delivery cursors, behind the
//!   [`store::Store`] trait; [`store::SqliteStore`] is the embedded default.
//! - [`client`]: the async Rust client.
//! - [`config`]: server settings and their defaults.
//! - [`metrics`]: the counters behind `/metrics`, lock-free on the message path.
//! - `web`: the HTTP listener: the chat page, WebSocket at `/ws`, `/metrics`,
//!   `/healthz`. A WebSocket is served by the same connection task as TCP.
//! - [`tls`]: certificates and keys from PEM files, for the server and the client.
//! - [`cli`]: the `moechat-server` command line, callable from other front ends.
//! - `python` (cargo feature `python`): the PyO3 bindings behind the `moechat`
//!   Python package; thin wrappers over the modules above.

pub mod cli;
pub mod client;
pub mod config;
pub mod metrics;
pub mod protocol;
// PyO3's macros expand to unsafe code: the one module where the workspace's
// `unsafe_code = "deny"` is lifted.
#[cfg(feature = "python")]
#[allow(unsafe_code)]
mod python;
mod random;
pub mod server;
pub mod store;
mod sync;
pub mod tls;
mod web;

pub use client::{Client, ClientError, ClientOptions, ConnectionEvent, Incoming, Sent};
pub use config::ServerConfig;
pub use protocol::{ChatMessage, Code, Peer};
pub use server::{Server, ServerError, ServerHandle};
