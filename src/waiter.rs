//! What a parked awaitable hands its task: a `Waiter`, the engine's own future.
//!
//! asyncio's task accepts any object that speaks the future protocol
//! (`_asyncio_future_blocking`, `get_loop`, `add_done_callback`, `result`, `cancel`). A
//! loop future would cost its allocation, a `call_soon` handle when it is resolved and one
//! more turn of the loop before the task runs. A `Waiter` woken inside a round (`poll`,
//! `drain`, a timer: loop callbacks, where no task is running) calls the task's wake-up at
//! once, in the task's context, so the handler runs in the same callback that read its
//! message, and its reply joins the round's flush. Woken anywhere else (inside a task),
//! or cancelled, it schedules the callbacks with `call_soon`, as a future does.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
#[cfg(not(feature = "abi3"))]
use pyo3::ffi;
#[cfg(feature = "abi3")]
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::eventloop::LoopHooks;

const PENDING: u8 = 0;
const DONE: u8 = 1;
const CANCELLED: u8 = 2;

/// A task's wake-up and the context it runs in.
type Callback = (Py<PyAny>, Option<Py<PyAny>>);

#[derive(Default)]
struct Callbacks {
    cancel_message: Option<Py<PyAny>>,
    /// The task's (the only one, as a rule), kept without a `Vec`.
    first: Option<Callback>,
    more: Vec<Callback>,
}

impl Callbacks {
    fn push(&mut self, callback: Callback) {
        if self.first.is_none() {
            self.first = Some(callback);
        } else {
            self.more.push(callback);
        }
    }

    /// Every callback, in order; no allocation when there is only the task's.
    fn take(&mut self) -> impl Iterator<Item = Callback> {
        self.first
            .take()
            .into_iter()
            .chain(std::mem::take(&mut self.more))
    }
}

#[pyclass(frozen, module = "ferrosock._engine")]
pub struct Waiter {
    hooks: Arc<LoopHooks>,
    /// `PENDING`, `DONE` or `CANCELLED`; only the loop thread changes it.
    phase: AtomicU8,
    blocking: AtomicBool,
    callbacks: Mutex<Callbacks>,
}

impl Waiter {
    pub fn new(hooks: &Arc<LoopHooks>) -> Self {
        Self {
            hooks: hooks.clone(),
            phase: AtomicU8::new(PENDING),
            blocking: AtomicBool::new(true),
            callbacks: Mutex::new(Callbacks::default()),
        }
    }

    pub fn pending(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == PENDING
    }

    /// Settle `slf` unless it was cancelled; `now` runs its callbacks at once (only where
    /// no task is running: a loop callback), else they are scheduled. An error a callback
    /// raises is reported after the others have run.
    fn settle(slf: &Bound<'_, Self>, phase: u8, now: bool) -> PyResult<()> {
        let this = slf.get();
        if this
            .phase
            .compare_exchange(PENDING, phase, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return Ok(());
        }
        let callbacks = this.callbacks.lock().take();
        let py = slf.py();
        let arg = slf.clone().into_any().unbind();
        let mut first_error = None;
        for (callback, context) in callbacks {
            let ran = match now.then(|| run_in(py, context.as_ref(), &callback, &arg)) {
                Some(Some(ran)) => ran,
                // Not now, or the context is in use: as a loop future would.
                _ => this.hooks.call_soon(py, &callback, &arg, context.as_ref()),
            };
            if let Err(error) = ran {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// `callback(arg)` in `context` (if any); `None` if the context is entered already (a task
/// can only run in its own context when that is not the one running).
fn run_in(
    py: Python<'_>,
    context: Option<&Py<PyAny>>,
    callback: &Py<PyAny>,
    arg: &Py<PyAny>,
) -> Option<PyResult<()>> {
    let Some(context) = context else {
        return Some(callback.call1(py, (arg,)).map(drop));
    };
    // SAFETY: `context` is a live object; Enter checks it is a Context and fails (with an
    // exception set) if it is not, or is entered already. Exit pairs with a successful
    // Enter, on the same thread, before anything else can enter it.
    #[cfg(not(feature = "abi3"))]
    unsafe {
        if ffi::PyContext_Enter(context.as_ptr()) != 0 {
            drop(PyErr::take(py));
            return None;
        }
        let ran = callback.call1(py, (arg,)).map(drop);
        if ffi::PyContext_Exit(context.as_ptr()) != 0 {
            return Some(Err(PyErr::fetch(py)));
        }
        Some(ran)
    }
    // The stable ABI has no `PyContext_Enter`: through `Context.run`.
    #[cfg(feature = "abi3")]
    Some(
        context
            .call_method1(py, intern!(py, "run"), (callback, arg))
            .map(drop),
    )
}

/// Finish a parked awaitable's waiter, unless its task was cancelled meanwhile. `now`:
/// the caller is a loop callback (a round), where the task may run at once.
pub fn wake(py: Python<'_>, waiter: Option<Py<PyAny>>, now: bool) -> PyResult<()> {
    let Some(waiter) = waiter else {
        return Ok(());
    };
    let waiter = waiter.into_bound(py).cast_into::<Waiter>()?;
    Waiter::settle(&waiter, DONE, now)
}

fn cancelled_error(py: Python<'_>, message: Option<&Py<PyAny>>) -> PyErr {
    static CANCELLED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    match CANCELLED.import(py, "asyncio", "CancelledError") {
        Ok(class) => match message {
            Some(message) => PyErr::from_type(class.clone(), (message.clone_ref(py),)),
            None => PyErr::from_type(class.clone(), ()),
        },
        Err(error) => error,
    }
}

fn invalid_state(py: Python<'_>, what: &'static str) -> PyErr {
    static INVALID: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    match INVALID.import(py, "asyncio", "InvalidStateError") {
        Ok(class) => PyErr::from_type(class.clone(), what),
        Err(error) => error,
    }
}

#[pymethods]
impl Waiter {
    #[getter(_asyncio_future_blocking)]
    fn blocking(&self) -> bool {
        self.blocking.load(Ordering::Relaxed)
    }

    #[setter(_asyncio_future_blocking)]
    fn set_blocking(&self, value: bool) {
        self.blocking.store(value, Ordering::Relaxed);
    }

    fn get_loop(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.hooks.event_loop(py).map(|l| l.clone().unbind())
    }

    fn done(&self) -> bool {
        !self.pending()
    }

    fn cancelled(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == CANCELLED
    }

    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.outcome(py, "Result is not ready.")
    }

    fn exception(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.outcome(py, "Exception is not set.")
    }

    #[pyo3(signature = (callback, *, context=None))]
    fn add_done_callback(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let this = slf.get();
        if this.pending() {
            this.callbacks.lock().push((callback, context));
            return Ok(());
        }
        let arg = slf.clone().into_any().unbind();
        this.hooks
            .call_soon(slf.py(), &callback, &arg, context.as_ref())
    }

    fn remove_done_callback(&self, py: Python<'_>, callback: Py<PyAny>) -> PyResult<usize> {
        // Compared unlocked: `==` may run Python.
        let all: Vec<Callback> = self.callbacks.lock().take().collect();
        let before = all.len();
        let mut kept = Vec::with_capacity(before);
        let mut error = None;
        for (registered, context) in all {
            match registered.bind(py).eq(&callback) {
                Ok(true) => {}
                Ok(false) => kept.push((registered, context)),
                Err(failed) => {
                    kept.push((registered, context));
                    error.get_or_insert(failed);
                }
            }
        }
        let removed = before - kept.len();
        let mut callbacks = self.callbacks.lock();
        let added: Vec<Callback> = callbacks.take().collect();
        for callback in kept.into_iter().chain(added) {
            callbacks.push(callback);
        }
        error.map_or(Ok(removed), Err)
    }

    /// Cancel the wait (the task was cancelled): its callbacks are scheduled, and
    /// `result()` raises CancelledError.
    #[pyo3(signature = (msg=None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        if !slf.get().pending() {
            return Ok(false);
        }
        slf.get().callbacks.lock().cancel_message = msg;
        Waiter::settle(slf, CANCELLED, false)?;
        Ok(true)
    }

    fn __repr__(&self) -> &'static str {
        match self.phase.load(Ordering::Relaxed) {
            PENDING => "<ferrosock Waiter pending>",
            CANCELLED => "<ferrosock Waiter cancelled>",
            _ => "<ferrosock Waiter finished>",
        }
    }
}

impl Waiter {
    /// What `result()` and `exception()` answer: None once woken, CancelledError once
    /// cancelled, InvalidStateError (with `pending`) before either.
    fn outcome(&self, py: Python<'_>, pending: &'static str) -> PyResult<Py<PyAny>> {
        match self.phase.load(Ordering::Relaxed) {
            DONE => Ok(py.None()),
            CANCELLED => Err(cancelled_error(
                py,
                self.callbacks.lock().cancel_message.as_ref(),
            )),
            _ => Err(invalid_state(py, pending)),
        }
    }
}
