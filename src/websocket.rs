//! `Connection`: one WebSocket as Python's `ferrosock.WebSocket` drives it.
//!
//! It holds the handshake data and the app-side state machine (Starlette's
//! `application_state`), and turns each call into a `Done` or an `Op` awaitable. Runs on the
//! loop thread only; the IO side is reached through `ConnShared`.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

use crate::awaitable::{disconnect_error, done, Op, OpKind, FAIR_BATCH};
use crate::connection::ConnShared;
use crate::convert::{bytes_of, text_of};
use crate::eventloop::LoopHooks;
use crate::frame::OutFrame;
use crate::handshake::{address, Answer, Decision, Handshake, HeaderText};
use crate::stats::Refusal;

const CONNECTING: u8 = 0;
const CONNECTED: u8 = 1;
const DISCONNECTED: u8 = 2;
const RESPONSE: u8 = 3;

/// Python's `WebSocket` is a subclass: the per-message methods are this class's own, so a
/// handler's `websocket.receive_text()` calls into Rust with no Python frame and no bound
/// method in between, and a parked socket is one object. The engine makes each one
/// (`Server`'s `connection_class`); `__new__` only takes what the engine prepared.
#[pyclass(frozen, subclass, module = "ferrosock._engine")]
pub struct Connection {
    shared: Arc<ConnShared>,
    hooks: Arc<LoopHooks>,
    #[pyo3(get)]
    route_id: usize,
    // Boxed strings and slices rather than `String`s and `Vec`s: every parked socket
    // carries these, and none of them grows.
    path: Box<str>,
    query_string: Box<str>,
    tls: bool,
    headers: HeaderText,
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
    path_params: Box<[(String, String)]>,
    subprotocols: Box<[String]>,
    answer: Mutex<Option<Answer>>,
    app_state: AtomicU8,
    subprotocol: Mutex<Option<Box<str>>>,
    /// Operations finished without waiting since the last wait or fairness yield.
    streak: AtomicU32,
    /// The `Op` receives reuse while no await holds it (`Op::reuse`).
    receive: PyOnceLock<Py<Op>>,
}

impl Connection {
    pub fn new(shared: Arc<ConnShared>, handshake: Handshake, hooks: Arc<LoopHooks>) -> Self {
        Self {
            shared,
            hooks,
            route_id: handshake.route_id,
            path: handshake.path.into_boxed_str(),
            query_string: handshake.query_string.into_boxed_str(),
            tls: handshake.tls,
            headers: handshake.headers,
            client: handshake.client,
            server: handshake.server,
            path_params: handshake.path_params.into_boxed_slice(),
            subprotocols: handshake.subprotocols.into_boxed_slice(),
            answer: Mutex::new(Some(handshake.answer)),
            app_state: AtomicU8::new(CONNECTING),
            subprotocol: Mutex::new(None),
            streak: AtomicU32::new(0),
            receive: PyOnceLock::new(),
        }
    }

    /// Make the Python object for this connection: `class(*args)` when the server has a
    /// `connection_class` (its `__new__` takes `self` from here), a plain `Connection`
    /// otherwise.
    pub fn into_object(
        self,
        py: Python<'_>,
        class: Option<&(Py<PyType>, Py<PyTuple>)>,
    ) -> PyResult<Py<PyAny>> {
        let Some((class, args)) = class else {
            return Ok(Py::new(py, self)?.into_any());
        };
        PREPARED.with(|prepared| *prepared.borrow_mut() = Some(self));
        let made = class.bind(py).call1(args.bind(py));
        // Not taken when the class's `__new__` failed before reaching ours.
        PREPARED.with(|prepared| prepared.borrow_mut().take());
        Ok(made?.unbind())
    }

    pub fn shared(&self) -> &Arc<ConnShared> {
        &self.shared
    }

    fn state(&self) -> u8 {
        self.app_state.load(Ordering::Acquire)
    }

    fn require_accepted(&self) -> PyResult<()> {
        match self.state() {
            CONNECTED | DISCONNECTED => Ok(()),
            CONNECTING => Err(PyRuntimeError::new_err(
                "WebSocket is not connected. Need to call \"accept\" first.",
            )),
            _ => Err(PyRuntimeError::new_err(
                "the handshake was refused (closed before \"accept\"); \
                 this WebSocket can no longer receive or send",
            )),
        }
    }

    /// True when this operation should first yield to the loop (rule: fairness).
    /// A load and a store, not an atomic increment: only the thread holding the GIL
    /// counts, and a lost count would only move a yield.
    fn fairness_yield(&self) -> bool {
        let streak = self.streak.load(Ordering::Relaxed) + 1;
        let due = streak >= FAIR_BATCH;
        self.streak
            .store(if due { 0 } else { streak }, Ordering::Relaxed);
        due
    }

    fn receive_op(&self, py: Python<'_>, kind: OpKind) -> PyResult<Py<PyAny>> {
        self.require_accepted()?;
        if self.shared.disconnect_delivered() {
            return Err(PyRuntimeError::new_err(
                "Cannot call \"receive\" once a disconnect message has been received.",
            ));
        }
        let yield_first = self.fairness_yield();
        let new_op = || {
            Py::new(
                py,
                Op::new(self.shared.clone(), &self.hooks, kind, yield_first),
            )
        };
        let kept = self.receive.get_or_try_init(py, new_op)?;
        let op = match Op::reuse(py, kept, kind, yield_first) {
            Some(op) => op,
            // Its last await still holds it (or someone kept the awaitable): a fresh one.
            None => new_op()?,
        };
        Ok(op.into_any())
    }

    fn send(&self, py: Python<'_>, frame: OutFrame) -> PyResult<Py<PyAny>> {
        self.require_accepted()?;
        let bytes = frame.payload.len();
        let queued = self.shared.enqueue(frame);
        if queued.is_ok() {
            self.hooks.tally.sent(bytes);
            if self.shared.needs_flush() {
                self.hooks.want_flush(py, &self.shared)?;
            }
        }
        match queued {
            Err(info) => Err(disconnect_error(py, &info)),
            Ok(queued) if queued > self.shared.buffers.outbox_limit => {
                crate::slow::watch_send(&self.shared);
                let op = Op::new(self.shared.clone(), &self.hooks, OpKind::SendDrain, false);
                Ok(Py::new(py, op)?.into_any())
            }
            Ok(_) if self.fairness_yield() => {
                let op = Op::new(self.shared.clone(), &self.hooks, OpKind::Yield, true);
                Ok(Py::new(py, op)?.into_any())
            }
            Ok(_) => {
                self.hooks.tally.fast_completion();
                done(py)
            }
        }
    }

    /// Answer the handshake with an HTTP response instead of the upgrade.
    fn refuse(
        &self,
        status: u16,
        headers: Vec<(String, String)>,
        body: Option<Bytes>,
        why: Refusal,
    ) {
        self.app_state.store(RESPONSE, Ordering::Release);
        self.decide(Decision::Respond {
            status,
            headers,
            body,
            why,
        });
        self.shared.end(1006, "handshake refused");
    }

    fn decide(&self, decision: Decision) -> bool {
        // Taken out first: an answer carried out here may run Python (the poller's
        // timer), which may come back to this connection.
        let answer = self.answer.lock().take();
        answer.is_some_and(|answer| answer.send(decision))
    }
}

thread_local! {
    /// The connection `into_object` is making, for `__new__` to take.
    static PREPARED: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

#[pymethods]
impl Connection {
    /// Made by the engine only: a `connection_class`'s construction takes the connection
    /// the engine prepared; its arguments are for the subclass's `__init__`.
    #[new]
    #[pyo3(signature = (*_args))]
    fn py_new(_args: &Bound<'_, PyTuple>) -> PyResult<Self> {
        PREPARED
            .with(|prepared| prepared.borrow_mut().take())
            .ok_or_else(|| PyTypeError::new_err("Connection objects are made by the server"))
    }

    #[getter]
    fn id(&self) -> u64 {
        self.shared.id
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    #[getter]
    fn query_string(&self) -> &str {
        &self.query_string
    }

    #[getter]
    fn subprotocols(&self) -> Vec<&str> {
        self.subprotocols.iter().map(String::as_str).collect()
    }

    #[getter]
    fn scheme(&self) -> &'static str {
        if self.tls {
            "wss"
        } else {
            "ws"
        }
    }

    #[getter]
    fn raw_headers(&self) -> Vec<(&str, &str)> {
        self.headers.pairs()
    }

    #[getter]
    fn raw_client(&self) -> Option<(String, u16)> {
        self.client.map(address)
    }

    #[getter]
    fn server(&self) -> Option<(String, u16)> {
        self.server.map(address)
    }

    #[getter]
    fn raw_path_params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, value) in self.path_params.iter() {
            dict.set_item(name, value)?;
        }
        Ok(dict)
    }

    #[getter]
    fn subprotocol(&self) -> Option<String> {
        self.subprotocol.lock().as_deref().map(str::to_owned)
    }

    /// As Starlette's: a refused handshake (close before accept, a denial response) is
    /// DISCONNECTED once its response is on its way.
    #[getter]
    fn application_state_value(&self) -> u8 {
        match self.state() {
            RESPONSE => DISCONNECTED,
            state => state,
        }
    }

    /// The handshake was answered with an HTTP response instead of the upgrade.
    #[getter]
    fn refused(&self) -> bool {
        self.state() == RESPONSE
    }

    #[getter]
    fn client_state_value(&self) -> u8 {
        match self.state() {
            CONNECTING => CONNECTING,
            RESPONSE => DISCONNECTED,
            _ if self.shared.is_ended() => DISCONNECTED,
            _ => CONNECTED,
        }
    }

    #[getter]
    fn latency(&self) -> Option<f64> {
        match self.shared.latency_us.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(micros as f64 / 1e6),
        }
    }

    #[getter]
    fn close_code(&self) -> Option<u16> {
        self.shared.close_info().map(|info| info.code)
    }

    #[pyo3(signature = (subprotocol=None, headers=None))]
    fn accept(
        &self,
        py: Python<'_>,
        subprotocol: Option<String>,
        headers: Option<Vec<(String, String)>>,
    ) -> PyResult<Py<PyAny>> {
        match self.state() {
            CONNECTING => {}
            CONNECTED => {
                return Err(PyRuntimeError::new_err(
                    "WebSocket is already accepted; call \"accept\" once per connection",
                ))
            }
            _ => {
                return Err(PyRuntimeError::new_err(
                    "cannot call \"accept\" after the WebSocket was closed",
                ))
            }
        }
        self.app_state.store(CONNECTED, Ordering::Release);
        *self.subprotocol.lock() = subprotocol.as_deref().map(Box::from);
        let accepted = self.decide(Decision::Accept {
            subprotocol,
            headers: headers.unwrap_or_default(),
        });
        if !accepted {
            self.shared.end(
                1006,
                "the client went away before the handshake was accepted",
            );
        }
        done(py)
    }

    #[pyo3(signature = (status=403, headers=None, body=None))]
    fn reject(
        &self,
        status: u16,
        headers: Option<Vec<(String, String)>>,
        body: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if self.state() != CONNECTING {
            return Err(PyRuntimeError::new_err(
                "cannot refuse the handshake: the WebSocket was already accepted or closed",
            ));
        }
        if !(100..=999).contains(&status) || status == 101 {
            return Err(PyValueError::new_err(format!(
                "{status} is not an HTTP status to refuse a handshake with"
            )));
        }
        let body = body.map(bytes_of).transpose()?;
        // The app's denial responses carry a body, if only an empty one; the server's
        // own 500 for a handler that failed before accepting carries none.
        let why = if body.is_some() {
            Refusal::DenialResponse
        } else {
            Refusal::Error
        };
        self.refuse(status, headers.unwrap_or_default(), body, why);
        Ok(())
    }

    fn receive(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.receive_op(py, OpKind::Receive)
    }

    fn receive_text(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.receive_op(py, OpKind::ReceiveText)
    }

    fn receive_bytes(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.receive_op(py, OpKind::ReceiveBytes)
    }

    fn send_text(&self, py: Python<'_>, data: &Bound<'_, PyString>) -> PyResult<Py<PyAny>> {
        self.send(py, OutFrame::text(text_of(data)?))
    }

    fn send_bytes(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.send(py, OutFrame::binary(bytes_of(data)?))
    }

    #[pyo3(signature = (code=1000, reason=None))]
    fn close(&self, py: Python<'_>, code: u16, reason: Option<&str>) -> PyResult<Py<PyAny>> {
        match self.state() {
            CONNECTING => self.refuse(403, Vec::new(), None, Refusal::AppRefused),
            CONNECTED => {
                self.app_state.store(DISCONNECTED, Ordering::Release);
                self.shared.close(code, reason.unwrap_or(""));
            }
            _ => {
                return Err(PyRuntimeError::new_err(
                    "Cannot call \"send\" once a close message has been sent.",
                ))
            }
        }
        done(py)
    }

    fn __repr__(&self) -> String {
        format!("<Connection {} {}>", self.shared.id, self.path)
    }
}
