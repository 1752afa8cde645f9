//! What a client call can fail with.

use crate::protocol::code::Code;

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
