//! `ClientCore`: the async Rust client behind `moechat.Client`, driven synchronously.
//!
//! Requests run as tasks on the shared runtime while the calling thread waits
//! without the GIL; pushed messages are taken from the client's `Incoming`
//! under their own lock, so one thread may `recv` while another sends.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType};

use super::inbox::Inbox;
use super::{call_limit, client_error, connect_settings, deadline, runtime, seconds, wait, SLICE};
use crate::client::{Client, Pushed, Sent};
use crate::protocol::reply::ChatMessage;
use crate::protocol::request::Peer;
use crate::protocol::validate::BROADCAST_PEER;
use crate::sync::lock;

/// `(msg_id, stored, recipients, duplicate)`; the Python face turns it into a `Receipt`.
pub(super) type ReceiptTuple = (u64, bool, Option<u64>, bool);

/// A received message, converted into a `moechat.Message` (the frozen dataclass of
/// `moechat/_types.py`) when it crosses into Python.
///
/// Built here rather than by the Python face from a tuple: every received message
/// passes through this, and setting the fields directly (as the dataclass's own
/// frozen `__init__` ends up doing) skips a Python-level call and the tuple.
pub(super) struct PyMessage(pub Pushed);

impl PyMessage {
    /// A message with owned strings (from `history`).
    pub(super) fn owned(m: ChatMessage) -> PyMessage {
        PyMessage(Pushed::Message(m))
    }
}

impl<'py> IntoPyObject<'py> for PyMessage {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        static MESSAGE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        static NEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let class = MESSAGE.import(py, "moechat._types", "Message")?;
        let new = NEW.get_or_try_init(py, || {
            Ok::<_, PyErr>(py.get_type::<PyAny>().getattr("__new__")?.unbind())
        })?;
        // object.__new__: an instance without running the dataclass's __init__.
        let m = new.bind(py).call1((class,))?;
        // Strings straight from the frame's bytes (or the owned message's) into
        // Python's own: no Rust String is made or freed for a pushed message.
        let p = &self.0;
        // As bytes: CPython checks UTF-8 as it decodes, so checking here again would be
        // a second pass over every string (the frame's parse already checked them).
        let (from, to, text) = p.utf8_strings();
        let kind = if to.is_some() {
            intern!(py, "direct")
        } else {
            intern!(py, "broadcast")
        };
        let set = |name: &Bound<'py, PyString>, value: Bound<'py, PyAny>| -> PyResult<()> {
            // object.__setattr__, as the dataclass's frozen __init__ itself does. Unlike
            // filling `__dict__`, it keeps the instance's attribute values inline
            // (CPython 3.11+), so no dict is built for each message.
            // SAFETY: all three pointers are live objects held by `Bound`s for the call.
            let rc = unsafe {
                pyo3::ffi::PyObject_GenericSetAttr(m.as_ptr(), name.as_ptr(), value.as_ptr())
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(PyErr::fetch(py))
            }
        };
        set(
            intern!(py, "msg_id"),
            p.msg_id().into_pyobject(py)?.into_any(),
        )?;
        set(intern!(py, "kind"), kind.clone().into_any())?;
        set(
            intern!(py, "sender"),
            PyString::from_bytes(py, from)?.into_any(),
        )?;
        let recipient = match to {
            Some(to) => PyString::from_bytes(py, to)?.into_any(),
            None => py.None().into_bound(py),
        };
        set(intern!(py, "recipient"), recipient)?;
        set(
            intern!(py, "text"),
            PyString::from_bytes(py, text)?.into_any(),
        )?;
        set(intern!(py, "ts"), p.ts().into_pyobject(py)?.into_any())?;
        Ok(m)
    }
}

pub(super) fn receipt_tuple(s: Sent) -> ReceiptTuple {
    (s.msg_id, s.stored, s.recipients, s.duplicate)
}

/// What one GIL-free wait for a message ended with.
enum Slice {
    Got(Pushed),
    Failed(crate::client::ClientError),
    Nothing,
}

/// A connection to a MoeChat server.
#[pyclass(frozen, module = "moechat._moechat")]
pub struct ClientCore {
    client: Client,
    incoming: Arc<Mutex<Inbox>>,
    timeout: Option<Duration>,
}

impl ClientCore {
    /// Runs `call` on a clone of the client, waiting without the GIL for at most the
    /// call's timeout (or the client's default).
    fn run<T, F, Fut>(&self, py: Python<'_>, timeout: Option<f64>, call: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::client::ClientError>> + Send + 'static,
    {
        let limit = self.limit(timeout)?;
        wait(py, call(self.client.clone()), limit, client_error)
    }

    /// The call's own timeout, or the client's default when `None` was passed.
    fn limit(&self, timeout: Option<f64>) -> PyResult<Option<Duration>> {
        call_limit(timeout, self.timeout)
    }
}

#[pymethods]
impl ClientCore {
    /// Connects to `host:port`; `timeout` (seconds) is the default for every call.
    #[new]
    #[pyo3(signature = (
        host, port, timeout = None, reconnect = true, on_disconnect = None, on_reconnect = None,
        tls = false, ca = None, server_name = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
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
    ) -> PyResult<ClientCore> {
        let (timeout, options) = connect_settings(
            timeout,
            reconnect,
            on_disconnect,
            on_reconnect,
            tls,
            ca,
            server_name,
        )?;
        let (client, incoming) = wait(
            py,
            async move { Client::connect_with(&host, port, options).await },
            timeout,
            client_error,
        )?;
        Ok(ClientCore {
            client,
            incoming: Arc::new(Mutex::new(Inbox::new(incoming))),
            timeout,
        })
    }

    #[pyo3(signature = (user, password, timeout = None))]
    fn login(
        &self,
        py: Python<'_>,
        user: String,
        password: String,
        timeout: Option<f64>,
    ) -> PyResult<String> {
        let info = self.run(py, timeout, move |c| async move {
            c.login(&user, &password).await
        })?;
        Ok(info.session)
    }

    #[pyo3(signature = (user, password, timeout = None))]
    fn register(
        &self,
        py: Python<'_>,
        user: String,
        password: String,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        self.run(py, timeout, move |c| async move {
            c.register(&user, &password).await
        })
    }

    #[pyo3(signature = (timeout = None))]
    fn users(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Vec<String>> {
        self.run(py, timeout, move |c| async move { c.users().await })
    }

    #[pyo3(signature = (to, text, timeout = None))]
    fn send(
        &self,
        py: Python<'_>,
        to: String,
        text: String,
        timeout: Option<f64>,
    ) -> PyResult<ReceiptTuple> {
        let sent = self.run(
            py,
            timeout,
            move |c| async move { c.send(&to, &text).await },
        )?;
        Ok(receipt_tuple(sent))
    }

    #[pyo3(signature = (text, timeout = None))]
    fn broadcast(
        &self,
        py: Python<'_>,
        text: String,
        timeout: Option<f64>,
    ) -> PyResult<ReceiptTuple> {
        let sent = self.run(
            py,
            timeout,
            move |c| async move { c.broadcast(&text).await },
        )?;
        Ok(receipt_tuple(sent))
    }

    #[pyo3(signature = (with_, limit = 50, before = None, timeout = None))]
    fn history(
        &self,
        py: Python<'_>,
        with_: String,
        limit: u32,
        before: Option<u64>,
        timeout: Option<f64>,
    ) -> PyResult<Vec<PyMessage>> {
        let peer = if with_ == BROADCAST_PEER {
            Peer::Broadcasts
        } else {
            Peer::User(with_)
        };
        let messages = self.run(py, timeout, move |c| async move {
            c.history(peer, limit, before).await
        })?;
        Ok(messages.into_iter().map(PyMessage::owned).collect())
    }

    #[pyo3(signature = (timeout = None))]
    fn ping(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<f64> {
        let rtt = self.run(py, timeout, move |c| async move { c.ping().await })?;
        Ok(rtt.as_secs_f64())
    }

    #[pyo3(signature = (timeout = None))]
    fn logout(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        self.run(py, timeout, move |c| async move { c.logout().await })
    }

    /// The next pushed message, or `None` once `timeout` seconds pass (`None` waits forever).
    /// Raises `ConnectionClosed` when the connection has ended and nothing is left.
    #[pyo3(signature = (timeout = None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<PyMessage>> {
        let limit = seconds(timeout, "timeout")?;
        // A message already fetched is handed out without releasing the GIL (or reading
        // the clock); a lock held by a receiver on another thread sends this one down
        // the slow path below.
        if let Ok(mut inbox) = self.incoming.try_lock() {
            if let Some(m) = inbox.pop() {
                return Ok(Some(PyMessage(m)));
            }
        }
        let deadline = deadline(limit);
        let rt = runtime();
        loop {
            let slice = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
                None => SLICE,
            };
            // Inbox::fill is cancel-safe: a slice that times out loses nothing. The lock
            // is the receiver's place in line (one `recv` at a time), taken without the
            // GIL and held only for one slice; senders never touch it.
            let got = py.detach(|| {
                let mut inbox = lock(&self.incoming);
                if let Some(m) = inbox.pop() {
                    return Slice::Got(m);
                }
                match rt.block_on(async { tokio::time::timeout(slice, inbox.fill()).await }) {
                    Ok(Ok(())) => inbox.pop().map_or(Slice::Nothing, Slice::Got),
                    Ok(Err(e)) => Slice::Failed(e),
                    Err(_) => Slice::Nothing,
                }
            });
            match got {
                Slice::Got(m) => return Ok(Some(PyMessage(m))),
                Slice::Failed(e) => return Err(client_error(py, e)),
                Slice::Nothing => {}
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    /// Closes the connection; idempotent.
    fn close(&self) {
        self.client.close();
    }

    #[getter]
    fn closed(&self) -> bool {
        self.client.is_closed()
    }
}
