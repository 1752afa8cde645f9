//! Server settings and their defaults, in one place.
//!
//! The CLI, the Python `Server` and tests all build a [`ServerConfig`]; nothing
//! else in the crate hard-codes a limit.

use std::path::PathBuf;
use std::time::Duration;

/// The seed's port.
pub const DEFAULT_PORT: u16 = 3541;
/// Loopback: exposing the server is a deliberate choice (`--host 0.0.0.0`).
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The store file used when none is named.
pub const DEFAULT_DB: &str = "./moechat.db";
/// The special database path that keeps everything in memory.
pub const MEMORY_DB: &str = ":memory:";

/// Everything a server needs to know before it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// SQLite file, or `:memory:`.
    pub db: String,
    /// Silence after which the server pings a client; twice this closes it (`e`/66).
    pub heartbeat: Duration,
    /// Whether `register` is open to anyone.
    pub registration_open: bool,
    /// Longest accepted line, bytes (`e`/61 past it).
    pub max_frame_bytes: usize,
    /// Longest message text, bytes (`e`/73 past it).
    pub max_text_bytes: usize,
    /// Connections served at once (`e`/68 past it).
    pub max_connections: usize,
    /// Failed logins allowed on one connection; the last one is answered `r`/22.
    pub max_failed_logins: u32,
    /// Frames queued to one connection before it counts as a slow consumer (`e`/67).
    pub outbound_queue: usize,
    /// Message frames a connection may send per second (`e`/74 past it); 0 = no limit.
    pub rate_limit: f64,
    /// Message frames a connection may send at once before the rate applies.
    pub rate_burst: u32,
    /// Login attempts allowed from one source address per minute (`r`/22 past it); 0 = no cap.
    pub login_rate: u32,
    /// How long a session token stays valid for resuming (`login` with `session`).
    pub session_ttl: Duration,
    /// How long a graceful stop waits for connections to say goodbye.
    pub shutdown_grace: Duration,
    /// TLS: the certificate chain (PEM, leaf first); with `tls_key`, every connection speaks TLS.
    pub tls_cert: Option<PathBuf>,
    /// TLS: the private key of the certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT,
            db: DEFAULT_DB.to_string(),
            heartbeat: Duration::from_secs(60),
            registration_open: true,
            max_frame_bytes: 65_536,
            max_text_bytes: 8_192,
            max_connections: 10_000,
            max_failed_logins: 5,
            outbound_queue: 4_096,
            rate_limit: 0.0,
            rate_burst: 100,
            login_rate: 120,
            session_ttl: Duration::from_secs(86_400),
            shutdown_grace: Duration::from_secs(5),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl ServerConfig {
    /// Defaults suited to tests: any free port, an in-memory store.
    pub fn ephemeral() -> ServerConfig {
        ServerConfig {
            port: 0,
            db: MEMORY_DB.to_string(),
            ..ServerConfig::default()
        }
    }

    /// Checks the values that a flag or a caller could get wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat.is_zero() {
            return Err("heartbeat must be more than 0 seconds".into());
        }
        if self.max_frame_bytes < 64 {
            return Err("max-frame-bytes must be at least 64".into());
        }
        if self.max_text_bytes == 0 {
            return Err("max-text-bytes must be at least 1".into());
        }
        if self.max_connections == 0 {
            return Err("max-connections must be at least 1".into());
        }
        if self.max_failed_logins == 0 {
            return Err("max-failed-logins must be at least 1".into());
        }
        if !self.rate_limit.is_finite() || self.rate_limit < 0.0 {
            return Err(
                "rate-limit must be 0 (off) or a positive number of messages a second".into(),
            );
        }
        if self.session_ttl.is_zero() {
            return Err("session-ttl must be more than 0 seconds".into());
        }
        if self.outbound_queue == 0 {
            return Err("the outbound queue must hold at least 1 frame".into());
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err("tls-cert needs tls-key as well".into()),
            (None, Some(_)) => return Err("tls-key needs tls-cert as well".into()),
            _ => {}
        }
        Ok(())
    }
}
