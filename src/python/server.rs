//! `ServerCore`: the Rust server behind `moechat.Server`.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use tokio::task::JoinHandle;

use super::{runtime, seconds, server_error, wait};
use crate::config::ServerConfig;
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

#[pymethods]
impl ServerCore {
    #[new]
    #[pyo3(signature = (
        host, port, db, heartbeat, registration, max_frame_bytes, max_text_bytes,
        max_connections, session_ttl = 86_400.0, rate_limit = 0.0, rate_burst = 100,
        login_rate = 120, tls_cert = None, tls_key = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        host: String,
        port: u16,
        db: String,
        heartbeat: f64,
        registration: bool,
        max_frame_bytes: usize,
        max_text_bytes: usize,
        max_connections: usize,
        session_ttl: f64,
        rate_limit: f64,
        rate_burst: u32,
        login_rate: u32,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
    ) -> PyResult<ServerCore> {
        let heartbeat = seconds(Some(heartbeat), "heartbeat")?.unwrap_or(Duration::ZERO);
        let session_ttl = seconds(Some(session_ttl), "session_ttl")?.unwrap_or(Duration::ZERO);
        let config = ServerConfig {
            host,
            port,
            db,
            heartbeat,
            registration_open: registration,
            max_frame_bytes,
            max_text_bytes,
            max_connections,
            session_ttl,
            rate_limit,
            rate_burst,
            login_rate,
            tls_cert,
            tls_key,
            ..ServerConfig::default()
        };
        config.validate().map_err(PyValueError::new_err)?;
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

    /// Graceful stop: every client gets `e`/65; idempotent. Waits at most `timeout` seconds.
    #[pyo3(signature = (timeout = 5.0))]
    fn stop(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = seconds(timeout, "timeout")?;
        let previous = std::mem::replace(&mut *self.state(), State::Idle);
        match previous {
            State::Idle => Ok(()),
            State::Bound(server, _) => {
                drop(server);
                Ok(())
            }
            State::Running { handle, join } => {
                handle.shutdown();
                let finished = wait(
                    py,
                    async move { join.await.map_err(|e| ServerError::Config(e.to_string()))? },
                    timeout,
                    server_error,
                );
                match finished {
                    Err(e) if e.is_instance_of::<pyo3::exceptions::PyTimeoutError>(py) => Ok(()),
                    other => other,
                }
            }
        }
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
