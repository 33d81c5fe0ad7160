//! The Python event loop as the engine uses it, on the loop thread: the loop that parked
//! awaitables belong to, and the rounds in which handlers' sends are batched.
//!
//! A round starts when the loop hands the engine news (`poll`, `drain`, a timer). The
//! handlers whose receives it finishes run inside it (`Waiter::wake`), and it ends with
//! the flush of what they sent. Its first send goes out at once, so a lone reply costs no
//! further turn of the loop; the sends after it are batched into the flush, one `writev`
//! per socket. A send made outside a round (a handler the loop itself resumed) schedules
//! the flush with one `call_soon`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;

use crate::connection::ConnShared;
use crate::stats::Tally;

pub struct LoopHooks {
    /// The running loop (what a parked awaitable's `get_loop` answers).
    event_loop: OnceLock<Py<PyAny>>,
    /// `loop.call_soon` and the callable that flushes (the server's `flush`).
    schedule_flush: OnceLock<(Py<PyAny>, Py<PyAny>)>,
    /// Sockets with frames sent from the loop thread since the last flush.
    to_flush: Mutex<Vec<Arc<ConnShared>>>,
    /// This round's first send was written at once; the rest wait for the flush.
    wrote_this_round: AtomicBool,
    /// A round is running: its end flushes, no `call_soon` is needed.
    in_round: AtomicBool,
    /// What this loop's handlers did, counted (`stats::Tally`); drained by each flush.
    pub tally: Arc<Tally>,
}

impl Default for LoopHooks {
    fn default() -> Self {
        Self {
            event_loop: OnceLock::new(),
            schedule_flush: OnceLock::new(),
            to_flush: Mutex::new(Vec::new()),
            wrote_this_round: AtomicBool::new(false),
            in_round: AtomicBool::new(false),
            tally: Tally::registered(),
        }
    }
}

impl LoopHooks {
    /// Set once, when the server starts on its loop.
    pub fn set(&self, py: Python<'_>, event_loop: Py<PyAny>, flush: Py<PyAny>) -> PyResult<()> {
        let call_soon = event_loop.getattr(py, intern!(py, "call_soon"))?;
        if self.event_loop.set(event_loop).is_err() {
            return Err(PyOSError::new_err("the server was already started"));
        }
        let _ = self.schedule_flush.set((call_soon, flush));
        Ok(())
    }

    pub fn event_loop<'py>(&self, py: Python<'py>) -> PyResult<&Bound<'py, PyAny>> {
        self.event_loop
            .get()
            .map(|event_loop| event_loop.bind(py))
            .ok_or_else(|| PyOSError::new_err("the server has not been started"))
    }

    /// `loop.call_soon(callback, arg, context=context)`.
    pub fn call_soon(
        &self,
        py: Python<'_>,
        callback: &Py<PyAny>,
        arg: &Py<PyAny>,
        context: Option<&Py<PyAny>>,
    ) -> PyResult<()> {
        let Some((call_soon, _)) = self.schedule_flush.get() else {
            return Err(PyOSError::new_err("the server has not been started"));
        };
        let kwargs = pyo3::types::PyDict::new(py);
        if let Some(context) = context {
            kwargs.set_item(intern!(py, "context"), context)?;
        }
        call_soon.call(py, (callback, arg), Some(&kwargs))?;
        Ok(())
    }

    /// A send on the loop thread queued a frame on `conn`: the round's first is written
    /// now; later ones are flushed once the ready handlers have run, so that their sends
    /// share one `writev` per socket and no other thread is woken for them.
    pub fn want_flush(&self, py: Python<'_>, conn: &Arc<ConnShared>) -> PyResult<()> {
        let first = {
            let mut to_flush = self.to_flush.lock();
            if to_flush.is_empty() && !self.wrote_this_round.swap(true, Ordering::Relaxed) {
                drop(to_flush);
                conn.flush_from_loop();
                return Ok(());
            }
            to_flush.push(conn.clone());
            to_flush.len() == 1
        };
        if first && !self.in_round.load(Ordering::Relaxed) {
            if let Some((call_soon, flush)) = self.schedule_flush.get() {
                call_soon.call1(py, (flush,))?;
            }
        }
        Ok(())
    }

    /// The loop brought news: a round begins. `Round`'s drop ends it.
    pub fn round(&self) -> Round<'_> {
        self.wrote_this_round.store(false, Ordering::Relaxed);
        self.in_round.store(true, Ordering::Relaxed);
        Round(self)
    }

    /// Write what handlers sent since the last flush; the next send starts a new round.
    pub fn flush(&self) {
        self.wrote_this_round.store(false, Ordering::Relaxed);
        let mut to_flush = std::mem::take(&mut *self.to_flush.lock());
        for conn in to_flush.drain(..) {
            conn.flush_from_loop();
        }
        // Keep the list's buffer for the next round, unless a send made one meanwhile.
        let mut list = self.to_flush.lock();
        if list.is_empty() {
            *list = to_flush;
        }
        drop(list);
        self.tally.drain();
    }
}

/// A round in progress; dropping it flushes what the round's handlers sent.
pub struct Round<'a>(&'a LoopHooks);

impl Drop for Round<'_> {
    fn drop(&mut self) {
        self.0.in_round.store(false, Ordering::Relaxed);
        self.0.flush();
    }
}
