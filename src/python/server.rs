//! `ServerCore`: the Rust server behind `moechat.Server`.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use tokio::task::JoinHandle;

use super::{runtime, seconds, server_error, wait};
use crate::config::{self, ConfigError, ServerConfig};
use crate::server::{Server, ServerError, ServerHandle};
use crate::sync::lock;

enum State {
    /// Configured; nothing opened yet.
    Idle,
    /// Store open and port bound (after `add_user` before `start`), not serving.
    Bound(Server, ServerHandle),
    /// Serving.
    Running {
        handle: ServerHandle,
        join: JoinHandle<Result<(), ServerError>>,
    },
}

/// A MoeChat server run on the shared runtime.
#[pyclass(frozen, module = "moechat._moechat")]
pub struct ServerCore {
    config: ServerConfig,
    state: Mutex<State>,
}

impl ServerCore {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The handle, binding first if nothing is open yet.
    fn ensure_bound(&self, py: Python<'_>) -> PyResult<ServerHandle> {
        if let Some(h) = self.handle() {
            return Ok(h);
        }
        let config = self.config.clone();
        let server = wait(
            py,
            async move { Server::bind(config).await },
            None,
            server_error,
        )?;
        let handle = server.handle();
        let mut state = self.state();
        match &*state {
            State::Idle => {
                *state = State::Bound(server, handle.clone());
                Ok(handle)
            }
            // Another thread bound it meanwhile; ours is dropped unused.
            State::Bound(_, h) | State::Running { handle: h, .. } => Ok(h.clone()),
        }
    }

    fn handle(&self) -> Option<ServerHandle> {
        match &*self.state() {
            State::Idle => None,
            State::Bound(_, h) | State::Running { handle: h, .. } => Some(h.clone()),
        }
    }
}

impl Drop for ServerCore {
    /// A server object that Python collects without `stop()` must not keep serving
    /// from the shared runtime: tell it to shut down (it finishes on its own).
    fn drop(&mut self) {
        if let State::Running { handle, .. } = &*self.state() {
            handle.shutdown();
        }
    }
}

/// The server's defaults, from `config`'s tables: `moechat.Server`'s keyword
/// defaults read them, so they are written once.
#[pyclass(frozen, get_all, module = "moechat._moechat")]
pub(super) struct Defaults {
    host: String,
    port: u16,
    db: String,
    heartbeat: f64,
    registration: bool,
    max_frame_bytes: u64,
    max_text_bytes: u64,
    max_connections: u64,
    outbound_queue: u64,
    session_ttl: f64,
    rate_limit: f64,
    rate_burst: u64,
    login_rate: u64,
    account_failures: u64,
    hash_queue: u64,
    hash_wait: f64,
}

impl Defaults {
    /// Read off [`ServerConfig::ephemeral`]: the library's defaults, with any free port
    /// and an in-memory store (a server inside a Python program is most often a test's
    /// or a tool's; the command line keeps 3541 and `./moechat.db`).
    pub(super) fn new() -> Defaults {
        let d = ServerConfig::ephemeral();
        Defaults {
            host: d.host.clone(),
            port: d.port,
            db: d.db.clone(),
            heartbeat: d.heartbeat.as_secs_f64(),
            registration: d.registration_open,
            max_frame_bytes: d.max_frame_bytes as u64,
            max_text_bytes: d.max_text_bytes as u64,
            max_connections: d.max_connections as u64,
            outbound_queue: d.outbound_queue as u64,
            session_ttl: d.session_ttl.as_secs_f64(),
            rate_limit: d.rate_limit,
            rate_burst: d.rate_burst.into(),
            login_rate: d.login_rate.into(),
            account_failures: d.account_failures.into(),
            hash_queue: d.hash_queue as u64,
            hash_wait: d.hash_wait.as_secs_f64(),
        }
    }
}

#[pymethods]
impl ServerCore {
    #[new]
    #[pyo3(signature = (
        host, port, db, *, heartbeat, registration, max_frame_bytes, max_text_bytes,
        max_connections, outbound_queue, session_ttl, rate_limit, rate_burst, login_rate, account_failures,
        hash_workers, hash_queue, hash_wait, tls_cert, tls_key, http, http_origins
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        host: String,
        port: u16,
        db: String,
        heartbeat: f64,
        registration: bool,
        max_frame_bytes: i128,
        max_text_bytes: i128,
        max_connections: i128,
        outbound_queue: i128,
        session_ttl: f64,
        rate_limit: f64,
        rate_burst: i128,
        login_rate: i128,
        account_failures: i128,
        hash_workers: Option<i128>,
        hash_queue: i128,
        hash_wait: f64,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        http: Option<String>,
        http_origins: Vec<String>,
    ) -> PyResult<ServerCore> {
        // Python ints arrive as i128, so that `-1` or `2**64` get the setting's own
        // sentence rather than an `OverflowError` about a machine type.
        let build = || -> Result<ServerConfig, ConfigError> {
            let defaults = ServerConfig::default();
            let config = ServerConfig {
                host,
                port,
                db,
                heartbeat: config::HEARTBEAT.duration(heartbeat)?,
                registration_open: registration,
                max_frame_bytes: config::MAX_FRAME_BYTES.from_int(max_frame_bytes)?,
                max_text_bytes: config::MAX_TEXT_BYTES.from_int(max_text_bytes)?,
                max_connections: config::MAX_CONNECTIONS.from_int(max_connections)?,
                outbound_queue: config::OUTBOUND_QUEUE.from_int(outbound_queue)?,
                session_ttl: config::SESSION_TTL.duration(session_ttl)?,
                rate_limit,
                rate_burst: config::RATE_BURST.from_int(rate_burst)?,
                login_rate: config::LOGIN_RATE.from_int(login_rate)?,
                account_failures: config::ACCOUNT_FAILURES.from_int(account_failures)?,
                hash_workers: match hash_workers {
                    Some(n) => config::HASH_WORKERS.from_int(n)?,
                    None => defaults.hash_workers,
                },
                hash_queue: config::HASH_QUEUE.from_int(hash_queue)?,
                hash_wait: config::HASH_WAIT.duration(hash_wait)?,
                tls_cert,
                tls_key,
                http: match http {
                    Some(h) => config::HttpListen::parse(&h)?,
                    None => None,
                },
                http_origins,
                ..defaults
            };
            config.validate()?;
            Ok(config)
        };
        let config = build().map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(ServerCore {
            config,
            state: Mutex::new(State::Idle),
        })
    }

    /// Creates a user in the server's store.
    fn add_user(&self, py: Python<'_>, name: String, password: String) -> PyResult<()> {
        let handle = self.ensure_bound(py)?;
        wait(
            py,
            async move { handle.add_user(&name, &password).await },
            None,
            server_error,
        )
    }

    /// Starts serving; returns once the port is listening.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        self.ensure_bound(py)?;
        let mut state = self.state();
        match std::mem::replace(&mut *state, State::Idle) {
            State::Bound(server, handle) => {
                let join = runtime().spawn(server.run());
                *state = State::Running { handle, join };
                Ok(())
            }
            running @ State::Running { .. } => {
                *state = running;
                Err(PyRuntimeError::new_err("the server is already running"))
            }
            State::Idle => Err(PyRuntimeError::new_err("the server could not be bound")),
        }
    }

    /// `(host, port)` once bound, else `(host, configured port)`.
    #[getter]
    fn address(&self) -> (String, u16) {
        match self.handle() {
            Some(h) => {
                let a = h.local_addr();
                (a.ip().to_string(), a.port())
            }
            None => (self.config.host.clone(), self.config.port),
        }
    }

    /// The HTTP listener's `(host, port)` (the real port once bound), or `None` if off.
    #[getter]
    fn http_address(&self) -> Option<(String, u16)> {
        match self.handle() {
            Some(h) => h.http_addr().map(|a| (a.ip().to_string(), a.port())),
            None => self.config.http.as_ref().map(|h| (h.host.clone(), h.port)),
        }
    }

    /// Whether the server is serving.
    #[getter]
    fn running(&self) -> bool {
        match &*self.state() {
            State::Running { join, .. } => !join.is_finished(),
            _ => false,
        }
    }

    /// Online users, sorted.
    fn online_users(&self) -> Vec<String> {
        self.handle().map(|h| h.online_users()).unwrap_or_default()
    }

    /// Graceful stop: every client gets `e`/65; idempotent. Waits at most `timeout`
    /// seconds, then raises `TimeoutError` with the server still stopping (a later
    /// `stop` waits again); a server that ended abnormally raises `MoeChatError`.
    #[pyo3(signature = (timeout = 10.0))]
    fn stop(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let limit = seconds(timeout, "timeout")?;
        let previous = std::mem::replace(&mut *self.state(), State::Idle);
        let (handle, join) = match previous {
            State::Idle => return Ok(()),
            State::Bound(server, _) => {
                drop(server);
                return Ok(());
            }
            State::Running { handle, join } => (handle, join),
        };
        handle.shutdown();
        let deadline = super::deadline(limit);
        while !join.is_finished() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                *self.state() = State::Running { handle, join };
                return Err(PyTimeoutError::new_err(format!(
                    "the server did not stop within {} s; it goes on stopping",
                    timeout.unwrap_or_default()
                )));
            }
            py.detach(|| std::thread::sleep(super::SLICE.min(Duration::from_millis(10))));
            if let Err(e) = py.check_signals() {
                *self.state() = State::Running { handle, join };
                return Err(e);
            }
        }
        let ended = wait(
            py,
            async move {
                join.await
                    .map_err(|e| ServerError::Stopped(e.to_string()))?
            },
            None,
            server_error,
        );
        ended
    }

    /// Blocks until the server stops, with Ctrl-C raising `KeyboardInterrupt`.
    fn wait_stopped(&self, py: Python<'_>) -> PyResult<()> {
        loop {
            if !self.running() {
                return Ok(());
            }
            py.detach(|| std::thread::sleep(super::SLICE));
            py.check_signals()?;
        }
    }
}
