//! Awaitables written in Rust, so that `await ws.receive_text()` costs no event-loop hop
//! when a message is already waiting.
//!
//! `Done` is one shared object whose first step ends the await (StopIteration, no value).
//! `Op` tries its operation on its first step; only when it must wait does it make a
//! `Waiter` (`waiter.rs`), store it on the connection and yield it to the task. The poller
//! (or `Server.drain`, for progress made on another thread) wakes it, and the task steps
//! the `Op` again.
//!
//! Both also fill CPython's `am_send` slot (`install_send`), which `await` asks first: an
//! operation that finishes at once hands its result back through it, and no StopIteration
//! is made, raised and caught per message. `__next__` stays for everything else that
//! iterates an awaitable by hand.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
#[cfg(not(feature = "abi3"))]
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyString, PyType};

use crate::connection::{lost, CloseInfo, ConnShared, Incoming, Received};
use crate::eventloop::LoopHooks;
use crate::frame::Text;
use crate::stats::{self, counter};
use crate::waiter::Waiter;

/// A connection that always finds its operation ready yields to the loop once every this
/// many completions, so one busy socket cannot starve the others.
pub const FAIR_BATCH: u32 = 64;

#[pyclass(frozen, module = "ferrosock._engine")]
pub struct Done;

#[pymethods]
impl Done {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    fn __next__(&self) -> Option<Py<PyAny>> {
        None
    }
}

/// What one step of an awaitable came to.
enum Step {
    /// Hand this to the task (a future to wait for, or `None` for a bare yield).
    Yield(Py<PyAny>),
    /// The await is over, with this value (`None` for none).
    Return(Py<PyAny>),
}

pub fn done(py: Python<'_>) -> PyResult<Py<PyAny>> {
    static DONE: PyOnceLock<Py<Done>> = PyOnceLock::new();
    Ok(DONE
        .get_or_try_init(py, || Py::new(py, Done))?
        .clone_ref(py)
        .into_any())
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpKind {
    Receive,
    ReceiveText,
    ReceiveBytes,
    /// A send that found the outbox over its limit: wait until it drains (or, after
    /// `slow_consumer_timeout` without progress, the socket is closed and it raises).
    SendDrain,
    /// Nothing to wait for; only the fairness yield.
    Yield,
}

impl OpKind {
    fn from_u8(kind: u8) -> Self {
        match kind {
            0 => OpKind::Receive,
            1 => OpKind::ReceiveText,
            2 => OpKind::ReceiveBytes,
            3 => OpKind::SendDrain,
            _ => OpKind::Yield,
        }
    }
}

#[pyclass(frozen, module = "ferrosock._engine")]
pub struct Op {
    conn: Arc<ConnShared>,
    hooks: Arc<LoopHooks>,
    /// An `OpKind`; set again when the connection reuses this `Op` (`reuse`).
    kind: AtomicU8,
    yield_first: AtomicBool,
    parked: AtomicBool,
}

impl Op {
    pub fn new(
        conn: Arc<ConnShared>,
        hooks: &Arc<LoopHooks>,
        kind: OpKind,
        yield_first: bool,
    ) -> Self {
        Self {
            conn,
            hooks: hooks.clone(),
            kind: AtomicU8::new(kind as u8),
            yield_first: AtomicBool::new(yield_first),
            parked: AtomicBool::new(false),
        }
    }

    fn kind(&self) -> OpKind {
        OpKind::from_u8(self.kind.load(Ordering::Relaxed))
    }

    /// `op` again, as a new `kind` of operation, if nothing but `op` itself refers to it
    /// (the await that used it is over); `None` if it is still held. A connection keeps
    /// its receive's `Op` this way instead of allocating one per message.
    pub fn reuse(py: Python<'_>, op: &Py<Op>, kind: OpKind, yield_first: bool) -> Option<Py<Op>> {
        // SAFETY: a live object; with the thread attached its count cannot change under us.
        if unsafe { pyo3::ffi::Py_REFCNT(op.as_ptr()) } != 1 {
            return None;
        }
        let this = op.get();
        this.kind.store(kind as u8, Ordering::Relaxed);
        this.yield_first.store(yield_first, Ordering::Relaxed);
        this.parked.store(false, Ordering::Relaxed);
        Some(op.clone_ref(py))
    }

    fn finished(&self) {
        if !self.parked.load(Ordering::Relaxed) {
            self.hooks.tally.fast_completion();
        }
    }

    /// Make a `Waiter`, remember it on the connection, and hand it to the task.
    fn park(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let waiter = Py::new(py, Waiter::new(&self.hooks))?;
        {
            let mut waiters = self.conn.waiters.lock();
            let slot = if self.kind() == OpKind::SendDrain {
                &mut waiters.send
            } else {
                &mut waiters.receive
            };
            if slot.as_ref().is_some_and(|previous| {
                previous
                    .bind(py)
                    .cast::<Waiter>()
                    .is_ok_and(|previous| previous.get().pending())
            }) {
                return Err(PyRuntimeError::new_err(
                    "another coroutine is already waiting on this WebSocket; \
                     receive (and send) from one task at a time",
                ));
            }
            *slot = Some(waiter.clone_ref(py).into_any());
        }
        self.parked.store(true, Ordering::Relaxed);
        stats::bump(&counter::futures_created);
        Ok(waiter.into_any())
    }
}

#[pymethods]
impl Op {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.step(py)? {
            Step::Yield(value) => Ok(Some(value)),
            Step::Return(value) if value.is_none(py) => Ok(None),
            Step::Return(value) => Err(PyStopIteration::new_err((value,))),
        }
    }
}

impl Op {
    fn step(&self, py: Python<'_>) -> PyResult<Step> {
        if self.yield_first.swap(false, Ordering::Relaxed) {
            stats::bump(&counter::yields);
            // A bare yield: asyncio's task reschedules itself with call_soon.
            return Ok(Step::Yield(py.None()));
        }
        let kind = self.kind();
        match kind {
            OpKind::Yield => {
                self.finished();
                Ok(Step::Return(py.None()))
            }
            OpKind::SendDrain => {
                if self.conn.send_may_continue() {
                    // Ended while it waited (the peer went away, or it was closed for
                    // making no progress): the send fails as on a closed socket.
                    if let Some(info) = self.conn.is_ended().then(|| self.conn.close_info()) {
                        return Err(disconnect_error(py, &info.unwrap_or_else(lost)));
                    }
                    self.finished();
                    Ok(Step::Return(py.None()))
                } else {
                    self.park(py).map(Step::Yield)
                }
            }
            OpKind::Receive | OpKind::ReceiveText | OpKind::ReceiveBytes => {
                match self.conn.try_receive() {
                    Received::Message(message) => {
                        self.finished();
                        Ok(Step::Return(convert(py, kind, message)?))
                    }
                    Received::Ended(info) => {
                        self.conn.note_disconnect_delivered();
                        if kind == OpKind::Receive {
                            Ok(Step::Return(disconnect_message(py, &info)?))
                        } else {
                            Err(disconnect_error(py, &info))
                        }
                    }
                    Received::Empty => self.park(py).map(Step::Yield),
                }
            }
        }
    }
}

/// Fill the `am_send` slot of `Op` and `Done` (see the module's comment), and make their
/// `am_await` a plain C function that returns the object itself: pyo3's own runs through
/// its trampoline (thread-local bookkeeping and an unwind guard) twice per message, for an
/// await that does nothing. The stable ABI cannot reach a type's slots: there, awaits end
/// with StopIteration as before.
#[cfg(not(feature = "abi3"))]
pub fn install_send(py: Python<'_>) {
    // SAFETY: both are heap types that pyo3 made with an `am_await` slot, so their
    // `tp_as_async` points to the type's own, writable methods; CPython caches neither
    // slot, and this runs once, at import, before either type is used.
    unsafe {
        for (class, send) in [
            (py.get_type::<Op>(), op_send as ffi::sendfunc),
            (py.get_type::<Done>(), done_send as ffi::sendfunc),
        ] {
            let methods = (*class.as_type_ptr()).tp_as_async;
            if !methods.is_null() {
                (*methods).am_send = Some(send);
                (*methods).am_await = Some(await_itself);
            }
        }
    }
}

/// `am_await` of `Op` and `Done`: the object is its own iterator (a new reference).
#[cfg(not(feature = "abi3"))]
unsafe extern "C" fn await_itself(object: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a slot with the thread attached and a live object.
    unsafe { ffi::Py_INCREF(object) };
    object
}

#[cfg(feature = "abi3")]
pub fn install_send(_py: Python<'_>) {}

#[cfg(not(feature = "abi3"))]
unsafe extern "C" fn op_send(
    op: *mut ffi::PyObject,
    _sent: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    // SAFETY: CPython calls a slot with the thread attached, and `op` is an `Op`: the slot
    // is only installed on that type (a subclass is impossible, it is final).
    let py = unsafe { Python::assume_attached() };
    let op = unsafe { Bound::from_borrowed_ptr(py, op).cast_into_unchecked::<Op>() };
    let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op.get().step(py)))
        .unwrap_or_else(|_| Err(PyRuntimeError::new_err("ferrosock: an await panicked")));
    let (status, value) = match step {
        Ok(Step::Yield(value)) => (ffi::PySendResult::PYGEN_NEXT, value.into_ptr()),
        Ok(Step::Return(value)) => (ffi::PySendResult::PYGEN_RETURN, value.into_ptr()),
        Err(error) => {
            error.restore(py);
            (ffi::PySendResult::PYGEN_ERROR, std::ptr::null_mut())
        }
    };
    // SAFETY: CPython hands a place for the result.
    unsafe { *result = value };
    status
}

#[cfg(not(feature = "abi3"))]
unsafe extern "C" fn done_send(
    _done: *mut ffi::PyObject,
    _sent: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    // SAFETY: as in `op_send`; the result is a new reference to None.
    unsafe { *result = Python::assume_attached().None().into_ptr() };
    ffi::PySendResult::PYGEN_RETURN
}

fn convert(py: Python<'_>, kind: OpKind, message: Incoming) -> PyResult<Py<PyAny>> {
    Ok(match (kind, message) {
        (OpKind::ReceiveText, Incoming::Text(text)) => python_str(py, &text)?,
        (OpKind::ReceiveBytes, Incoming::Binary(data)) => {
            PyBytes::new(py, &data).into_any().unbind()
        }
        (OpKind::Receive, message) => {
            let dict = PyDict::new(py);
            dict.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
            match message {
                Incoming::Text(text) => {
                    dict.set_item(intern!(py, "text"), python_str(py, &text)?)?
                }
                Incoming::Binary(data) => {
                    dict.set_item(intern!(py, "bytes"), PyBytes::new(py, &data))?
                }
            }
            dict.into_any().unbind()
        }
        (OpKind::ReceiveText, Incoming::Binary(_)) => {
            return Err(PyRuntimeError::new_err(
                "expected a text message but a binary one arrived; \
                 use receive_bytes() or receive() for binary messages",
            ))
        }
        (_, Incoming::Text(_)) => {
            return Err(PyRuntimeError::new_err(
                "expected a binary message but a text one arrived; \
                 use receive_text() or receive() for text messages",
            ))
        }
        _ => unreachable!("convert is only called for receive operations"),
    })
}

/// A Python `str` of a received text. ASCII text is copied straight into a new compact
/// string: it was checked already, so CPython need not decode it again.
#[cfg(not(feature = "abi3"))]
fn python_str(py: Python<'_>, text: &Text) -> PyResult<Py<PyAny>> {
    if !text.is_ascii() {
        return Ok(PyString::new(py, text.as_str()).into_any().unbind());
    }
    let bytes = text.as_str().as_bytes();
    // SAFETY: `PyUnicode_New` with maxchar 127 makes a compact ASCII string whose data
    // holds `len` one-byte characters (and its terminator); every byte written is ASCII.
    unsafe {
        let string = Bound::from_owned_ptr_or_err(
            py,
            ffi::PyUnicode_New(bytes.len() as ffi::Py_ssize_t, 127),
        )?;
        let data = ffi::PyUnicode_DATA(string.as_ptr()).cast::<u8>();
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len());
        Ok(string.unbind())
    }
}

/// A Python `str` of a received text. The stable ABI has no compact-string constructor, so
/// CPython decodes the text again.
#[cfg(feature = "abi3")]
fn python_str(py: Python<'_>, text: &Text) -> PyResult<Py<PyAny>> {
    Ok(PyString::new(py, text.as_str()).into_any().unbind())
}

fn disconnect_message(py: Python<'_>, info: &CloseInfo) -> PyResult<Py<PyAny>> {
    let dict = PyDict::new(py);
    dict.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
    dict.set_item(intern!(py, "code"), info.code)?;
    dict.set_item(intern!(py, "reason"), info.reason.as_str())?;
    Ok(dict.into_any().unbind())
}

/// `ferrosock.exceptions.WebSocketDisconnect(code, reason)`.
pub fn disconnect_error(py: Python<'_>, info: &CloseInfo) -> PyErr {
    static DISCONNECT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    match DISCONNECT.import(py, "ferrosock.exceptions", "WebSocketDisconnect") {
        Ok(class) => PyErr::from_type(class.clone(), (info.code, info.reason.clone())),
        Err(error) => error,
    }
}
