//! The PyO3 layer (cargo feature `python`): thin wrappers that expose the Rust
//! server, client and CLI to the `moechat` Python package as `moechat._moechat`.
//!
//! No chat logic lives here. Blocking calls run on the one shared tokio runtime
//! with the GIL released, in short slices with `check_signals` between them so
//! Ctrl-C interrupts them; errors become the exception classes defined in
//! `moechat._errors`, so the hierarchy is plain Python and easy to catch.

mod aio;
mod client;
mod inbox;
mod server;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pyo3::exceptions::{
    PyConnectionError, PyConnectionRefusedError, PyOSError, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;

use std::sync::Arc;

use crate::client::{ClientError, ClientOptions, ConnectionEvent, EventHook, TlsOptions};
use crate::protocol::code::Code;
use crate::server::accounts::AccountError;
use crate::server::ServerError;
use crate::store::StoreError;

/// How long one GIL-free wait lasts before signals are checked again.
const SLICE: Duration = Duration::from_millis(50);

fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// Runs `fut` on the shared runtime and waits for it without the GIL, staying
/// interruptible; `timeout` raises the built-in `TimeoutError`.
fn wait<T, E>(
    py: Python<'_>,
    fut: impl Future<Output = Result<T, E>> + Send + 'static,
    timeout: Option<Duration>,
    to_py: impl Fn(Python<'_>, E) -> PyErr,
) -> PyResult<T>
where
    T: Send + 'static,
    E: Send + 'static,
{
    let rt = runtime();
    let mut handle = rt.spawn(fut);
    let deadline = deadline(timeout);
    loop {
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
            None => SLICE,
        };
        let joined =
            py.detach(|| rt.block_on(async { tokio::time::timeout(slice, &mut handle).await }));
        if let Ok(result) = joined {
            return match result {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(to_py(py, e)),
                Err(join) => Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                    "task failed: {join}"
                ))),
            };
        }
        if let Err(e) = py.check_signals() {
            handle.abort();
            return Err(e);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            handle.abort();
            return Err(PyTimeoutError::new_err("the operation timed out"));
        }
    }
}

/// Seconds from Python (`None` = no limit) as a duration; negative or NaN is a `ValueError`.
fn seconds(value: Option<f64>, what: &str) -> PyResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Duration::try_from_secs_f64(s)
            .map(Some)
            .map_err(|_| PyValueError::new_err(format!("{what} of {s} seconds is too large"))),
        Some(s) => Err(PyValueError::new_err(format!(
            "{what} must be a non-negative number of seconds, not {s}"
        ))),
    }
}

/// When a wait of `limit` from now ends; `None` for no limit, and for one so far off
/// that the clock cannot name it (which waits as long as no limit does).
fn deadline(limit: Option<Duration>) -> Option<Instant> {
    limit.and_then(|t| Instant::now().checked_add(t))
}

/// A call's timeout: its own when given, else the client's default.
fn call_limit(timeout: Option<f64>, default: Option<Duration>) -> PyResult<Option<Duration>> {
    match timeout {
        Some(_) => seconds(timeout, "timeout"),
        None => Ok(default),
    }
}

/// An instance of a `moechat._errors` class, as a Python exception.
fn moechat_error(py: Python<'_>, class: &str, reason: &str, code: Option<u8>) -> PyErr {
    let made = py
        .import("moechat._errors")
        .and_then(|m| m.getattr(class))
        .and_then(|cls| cls.call1((reason, code)));
    match made {
        Ok(obj) => PyErr::from_value(obj),
        Err(e) => e,
    }
}

fn client_error(py: Python<'_>, e: ClientError) -> PyErr {
    match e {
        ClientError::Connect {
            kind: std::io::ErrorKind::ConnectionRefused,
            ..
        } => PyConnectionRefusedError::new_err(e.to_string()),
        ClientError::Connect { .. } => PyConnectionError::new_err(e.to_string()),
        ClientError::Server { code, ref message } => {
            let class = match Code::from_number(code) {
                Some(
                    Code::BadCredentials
                    | Code::LoginMalformed
                    | Code::TooManyAttempts
                    | Code::AlreadyLoggedIn
                    | Code::Busy,
                ) => "LoginError",
                Some(
                    Code::UnknownRequest
                    | Code::NotLoggedIn
                    | Code::BadArguments
                    | Code::NameTaken
                    | Code::RegistrationClosed,
                ) => "QueryError",
                Some(
                    Code::MessageNotLoggedIn
                    | Code::NoSuchUser
                    | Code::MalformedMessage
                    | Code::BadText
                    | Code::RateLimited
                    | Code::QuotaFull,
                ) => "SendError",
                _ => "ProtocolError",
            };
            moechat_error(py, class, message, Some(code))
        }
        ClientError::Closed { code, ref reason } => {
            moechat_error(py, "ConnectionClosed", reason, code)
        }
        ClientError::Protocol(ref reason) => moechat_error(py, "ProtocolError", reason, None),
        ClientError::Tls { .. } => moechat_error(py, "TLSError", &e.to_string(), None),
    }
}

fn server_error(py: Python<'_>, e: ServerError) -> PyErr {
    match e {
        ServerError::Config(msg) => PyValueError::new_err(msg.to_string()),
        ServerError::Bind { .. } => PyOSError::new_err(e.to_string()),
        ServerError::Account(AccountError::InvalidName(_) | AccountError::InvalidPassword) => {
            PyValueError::new_err(e.to_string())
        }
        ServerError::Account(AccountError::Store(StoreError::UserExists(_))) => {
            moechat_error(py, "UserExistsError", &e.to_string(), None)
        }
        ServerError::Tls(_) => moechat_error(py, "TLSError", &e.to_string(), None),
        other => moechat_error(py, "MoeChatError", &other.to_string(), None),
    }
}

/// How a Python client connects: `tls`, with its `ca` file and `server_name` override.
struct Transport {
    tls: bool,
    ca: Option<PathBuf>,
    server_name: Option<String>,
}

/// A client constructor's arguments (the same for `ClientCore` and `AsyncClientCore`)
/// as the client's default call timeout and its options.
#[allow(clippy::too_many_arguments)]
fn connect_settings(
    timeout: Option<f64>,
    reconnect: bool,
    on_disconnect: Option<Py<PyAny>>,
    on_reconnect: Option<Py<PyAny>>,
    tls: bool,
    ca: Option<PathBuf>,
    server_name: Option<String>,
) -> PyResult<(Option<Duration>, ClientOptions)> {
    let timeout = seconds(timeout, "timeout")?;
    let transport = Transport {
        tls,
        ca,
        server_name,
    };
    let options = client_options(reconnect, on_disconnect, on_reconnect, transport)?;
    Ok((timeout, options))
}

impl Transport {
    /// The TLS options, or `ValueError` when `ca`/`server_name` are given without `tls`.
    fn options(self) -> PyResult<Option<TlsOptions>> {
        if !self.tls {
            if self.ca.is_some() || self.server_name.is_some() {
                return Err(PyValueError::new_err(
                    "ca and server_name apply only with tls=True",
                ));
            }
            return Ok(None);
        }
        Ok(Some(TlsOptions {
            ca: self.ca,
            server_name: self.server_name,
        }))
    }
}

/// Client options from the Python arguments: `on_disconnect(error)` and `on_reconnect()`
/// are called on a blocking-pool thread with the GIL, never on a runtime worker.
fn client_options(
    reconnect: bool,
    on_disconnect: Option<Py<PyAny>>,
    on_reconnect: Option<Py<PyAny>>,
    transport: Transport,
) -> PyResult<ClientOptions> {
    let tls = transport.options()?;
    let hooks = Arc::new((on_disconnect, on_reconnect));
    let on_event: EventHook = Arc::new(move |event: ConnectionEvent| {
        let wanted = match event {
            ConnectionEvent::Disconnected(_) => hooks.0.is_some(),
            ConnectionEvent::Reconnected => hooks.1.is_some(),
        };
        if !wanted {
            return;
        }
        let hooks = hooks.clone();
        tokio::task::spawn_blocking(move || {
            // A connection may break while the interpreter shuts down (a script that
            // exits without closing its client): then there is no one left to tell.
            let _ = Python::try_attach(|py| {
                let called = match (&event, &hooks.0, &hooks.1) {
                    (ConnectionEvent::Disconnected(e), Some(cb), _) => {
                        let err = client_error(py, e.clone());
                        cb.call1(py, (err.value(py).clone(),)).map(drop)
                    }
                    (ConnectionEvent::Reconnected, _, Some(cb)) => cb.call0(py).map(drop),
                    _ => Ok(()),
                };
                if let Err(e) = called {
                    // A failing callback must not stop the client: report it like Python does.
                    e.write_unraisable(py, None);
                }
            });
        });
    });
    Ok(ClientOptions {
        reconnect,
        on_event: Some(on_event),
        tls,
        ..ClientOptions::default()
    })
}

/// Runs the `moechat-server` command line with `argv` (program name first); returns the exit code.
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(|| crate::cli::run(argv))
}

#[pymodule(name = "_moechat")]
fn moechat_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_class::<server::ServerCore>()?;
    m.add_class::<server::Defaults>()?;
    m.add("DEFAULTS", server::Defaults::new())?;
    m.add_class::<client::ClientCore>()?;
    m.add_class::<aio::AsyncClientCore>()?;
    Ok(())
}
