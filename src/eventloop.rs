//! The Python event loop as the engine uses it, on the loop thread: a future for an
//! awaitable that must park, and one `call_soon` per round to flush what handlers sent.
//!
//! A round starts when the loop hands the engine news (`poll`, `drain`, a timer) and ends
//! with the flush. Its first send goes out at once, so a lone reply costs no further turn
//! of the loop; the sends after it in the same round are batched into the flush, one
//! `writev` per socket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

use crate::connection::ConnShared;

#[derive(Default)]
pub struct LoopHooks {
    create_future: OnceLock<Py<PyAny>>,
    /// `loop.call_soon` and the callable that flushes (the server's `flush`).
    schedule_flush: OnceLock<(Py<PyAny>, Py<PyAny>)>,
    /// Sockets with frames sent from the loop thread since the last flush.
    to_flush: Mutex<Vec<Arc<ConnShared>>>,
    /// This round's first send was written at once; the rest wait for the flush.
    wrote_this_round: AtomicBool,
}

impl LoopHooks {
    /// Set once, when the server starts on its loop.
    pub fn set(
        &self,
        create_future: Py<PyAny>,
        call_soon: Py<PyAny>,
        flush: Py<PyAny>,
    ) -> PyResult<()> {
        if self.create_future.set(create_future).is_err() {
            return Err(PyOSError::new_err("the server was already started"));
        }
        let _ = self.schedule_flush.set((call_soon, flush));
        Ok(())
    }

    pub fn create_future<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let create = self
            .create_future
            .get()
            .ok_or_else(|| PyOSError::new_err("the server has not been started"))?;
        create.bind(py).call0()
    }

    /// A send on the loop thread queued a frame on `conn`: the round's first is written
    /// now; later ones are flushed from the loop thread once the ready handlers have run,
    /// so that their sends share one `writev` per socket and no other thread is woken for
    /// them.
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
        if first {
            if let Some((call_soon, flush)) = self.schedule_flush.get() {
                call_soon.call1(py, (flush,))?;
            }
        }
        Ok(())
    }

    /// The loop brought news: a new round begins.
    pub fn new_round(&self) {
        self.wrote_this_round.store(false, Ordering::Relaxed);
    }

    /// Write what handlers sent since the last flush; the round ends.
    pub fn flush(&self) {
        self.new_round();
        let to_flush = std::mem::take(&mut *self.to_flush.lock());
        for conn in to_flush {
            conn.flush_from_loop();
        }
    }
}
