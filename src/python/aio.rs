//! `AsyncClientCore`: the async Rust client behind `moechat.AsyncClient`.
//!
//! Each method returns an asyncio awaitable made by `future_into_py`; the Rust
//! future runs on the same shared runtime as the blocking API, and cancelling
//! the awaitable drops it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyTimeoutError;
use pyo3::prelude::*;
use pyo3_async_runtimes::tokio::future_into_py;

use super::client::{receipt_tuple, PyMessage};
use super::inbox::Inbox;
use super::{call_limit, client_error, connect_settings, seconds};
use crate::client::{Client, ClientError};
use crate::protocol::request::Peer;
use crate::protocol::validate::BROADCAST_PEER;

/// A connection to a MoeChat server, for asyncio.
#[pyclass(frozen, module = "moechat._moechat")]
pub struct AsyncClientCore {
    client: Client,
    /// One receiver at a time: the lock is the receiver's place in line, held only
    /// while it waits for the next push, and guards nothing else.
    incoming: Arc<tokio::sync::Mutex<Inbox>>,
    timeout: Option<Duration>,
}

/// Runs `fut` within `limit`, turning its failure into the matching Python exception.
async fn bounded<T>(
    limit: Option<Duration>,
    fut: impl std::future::Future<Output = Result<T, ClientError>>,
) -> PyResult<T> {
    let result = match limit {
        Some(l) => match tokio::time::timeout(l, fut).await {
            Ok(r) => r,
            Err(_) => return Err(PyTimeoutError::new_err("the operation timed out")),
        },
        None => fut.await,
    };
    result.map_err(python_error)
}

/// The Python exception for `e`, made on a runtime thread; a plain `ConnectionError`
/// if the interpreter is shutting down and the moechat classes cannot be reached.
fn python_error(e: ClientError) -> PyErr {
    let text = e.to_string();
    Python::try_attach(|py| client_error(py, e))
        .unwrap_or_else(|| pyo3::exceptions::PyConnectionError::new_err(text))
}

impl AsyncClientCore {
    fn limit(&self, timeout: Option<f64>) -> PyResult<Option<Duration>> {
        call_limit(timeout, self.timeout)
    }

    /// `call` on a clone of the client, as an asyncio awaitable bounded by the call's
    /// timeout (or the client's default).
    fn run<'py, T, F, Fut>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
        call: F,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        T: for<'a> IntoPyObject<'a> + Send + 'static,
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>> + Send + 'static,
    {
        let limit = self.limit(timeout)?;
        let fut = call(self.client.clone());
        future_into_py(py, async move { bounded(limit, fut).await })
    }
}

#[pymethods]
impl AsyncClientCore {
    /// Connects; the awaitable yields an `AsyncClientCore`.
    #[staticmethod]
    #[pyo3(signature = (
        host, port, timeout = None, reconnect = true, on_disconnect = None, on_reconnect = None,
        tls = false, ca = None, server_name = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn connect(
        py: Python<'_>,
        host: String,
        port: u16,
        timeout: Option<f64>,
        reconnect: bool,
        on_disconnect: Option<Py<PyAny>>,
        on_reconnect: Option<Py<PyAny>>,
        tls: bool,
        ca: Option<PathBuf>,
        server_name: Option<String>,
    ) -> PyResult<Bound<'_, PyAny>> {
        let (timeout, options) = connect_settings(
            timeout,
            reconnect,
            on_disconnect,
            on_reconnect,
            tls,
            ca,
            server_name,
        )?;
        future_into_py(py, async move {
            let (client, incoming) =
                bounded(timeout, Client::connect_with(&host, port, options)).await?;
            Ok(AsyncClientCore {
                client,
                incoming: Arc::new(tokio::sync::Mutex::new(Inbox::new(incoming))),
                timeout,
            })
        })
    }

    #[pyo3(signature = (user, password, timeout = None))]
    fn login<'py>(
        &self,
        py: Python<'py>,
        user: String,
        password: String,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, timeout, move |c| async move {
            Ok(c.login(&user, &password).await?.session)
        })
    }

    #[pyo3(signature = (user, password, timeout = None))]
    fn register<'py>(
        &self,
        py: Python<'py>,
        user: String,
        password: String,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, timeout, move |c| async move {
            c.register(&user, &password).await
        })
    }

    #[pyo3(signature = (timeout = None))]
    fn users<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, timeout, move |c| async move { c.users().await })
    }

    #[pyo3(signature = (to, text, timeout = None))]
    fn send<'py>(
        &self,
        py: Python<'py>,
        to: String,
        text: String,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, timeout, move |c| async move {
            Ok(receipt_tuple(c.send(&to, &text).await?))
        })
    }

    #[pyo3(signature = (text, timeout = None))]
    fn broadcast<'py>(
        &self,
        py: Python<'py>,
        text: String,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, timeout, move |c| async move {
            Ok(receipt_tuple(c.broadcast(&text).await?))
        })
    }

    #[pyo3(signature = (with_, limit = 50, before = None, timeout = None))]
    fn history<'py>(
        &self,
        py: Python<'py>,
        with_: String,
        limit: u32,
        before: Option<u64>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let peer = if with_ == BROADCAST_PEER {
            Peer::Broadcasts
        } else {
            Peer::User(with_)
        };
        self.run(py, timeout, move |c| async move {
            let messages = c.history(peer, limit, before).await?;
            Ok(messages
                .into_iter()
                .map(PyMessage::owned)
                .collect::<Vec<_>>())
        })
    }

    #[pyo3(signature = (timeout = None))]
    fn ping<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, timeout, move |c| async move {
            Ok(c.ping().await?.as_secs_f64())
        })
    }

    #[pyo3(signature = (timeout = None))]
    fn logout<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, timeout, move |c| async move { c.logout().await })
    }

    /// The next pushed message, or `None` once `timeout` seconds pass (`None` waits forever).
    #[pyo3(signature = (timeout = None))]
    fn recv<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let limit = seconds(timeout, "timeout")?;
        let incoming = self.incoming.clone();
        future_into_py(py, async move {
            let mut inbox = incoming.lock().await;
            let filled = match limit {
                Some(l) => match tokio::time::timeout(l, inbox.fill()).await {
                    Ok(r) => r,
                    Err(_) => return Ok(None),
                },
                None => inbox.fill().await,
            };
            match filled {
                Ok(()) => Ok(inbox.pop().map(PyMessage)),
                Err(e) => Err(python_error(e)),
            }
        })
    }

    /// A message already fetched, without awaiting (`None` if there is none, or if
    /// another `recv` is waiting): `AsyncClient.recv` tries this before it awaits.
    fn try_recv(&self) -> Option<PyMessage> {
        let mut inbox = self.incoming.try_lock().ok()?;
        inbox.pop().map(PyMessage)
    }

    fn close(&self) {
        self.client.close();
    }

    #[getter]
    fn closed(&self) -> bool {
        self.client.is_closed()
    }
}
