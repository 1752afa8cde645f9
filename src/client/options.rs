//! How a client behaves: reconnection, TLS verification, and the events it reports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::ClientError;

/// What a reconnecting client reports to the application.
#[derive(Debug, Clone)]
pub enum ConnectionEvent {
    /// The connection broke; the client is reconnecting. Carries why it broke.
    Disconnected(ClientError),
    /// The session was resumed on a new connection.
    Reconnected,
}

/// Called with each [`ConnectionEvent`], from the client's background task.
pub type EventHook = Arc<dyn Fn(ConnectionEvent) + Send + Sync>;

/// How a [`Client`](super::Client) behaves when its connection breaks.
#[derive(Clone)]
pub struct ClientOptions {
    /// After a login: acks on, and reconnect and resume when the connection breaks.
    pub reconnect: bool,
    /// How long to keep trying to reconnect before giving up with the original error.
    pub reconnect_for: Duration,
    /// Told when the connection breaks and when it is back.
    pub on_event: Option<EventHook>,
    /// Speak TLS, verifying the server; `None` is plain TCP.
    pub tls: Option<TlsOptions>,
}

/// How a client verifies a TLS server. There is no way to turn verification off.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file of the CA certificates to trust instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// The name the certificate must be valid for, when it is not the host dialled.
    pub server_name: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            reconnect: true,
            reconnect_for: Duration::from_secs(30),
            on_event: None,
            tls: None,
        }
    }
}

impl ClientOptions {
    /// One connection, no reconnection: every break ends the client.
    pub fn no_reconnect() -> ClientOptions {
        ClientOptions {
            reconnect: false,
            ..ClientOptions::default()
        }
    }

    pub(super) fn emit(&self, event: ConnectionEvent) {
        if let Some(hook) = &self.on_event {
            hook(event);
        }
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("reconnect", &self.reconnect)
            .field("reconnect_for", &self.reconnect_for)
            .field("on_event", &self.on_event.is_some())
            .field("tls", &self.tls)
            .finish()
    }
}
