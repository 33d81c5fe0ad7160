//! The Python event loop as the engine uses it, on the loop thread: a future for an
//! awaitable that must park, and one `call_soon` per round to flush what handlers sent.

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

    /// A send on the loop thread queued a frame on `conn`: flush it from the loop thread
    /// once the ready handlers have run, so that their sends share one `writev` per socket
    /// and no other thread is woken for them.
    pub fn want_flush(&self, py: Python<'_>, conn: &Arc<ConnShared>) -> PyResult<()> {
        let first = {
            let mut to_flush = self.to_flush.lock();
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

    /// Write what handlers sent since the last flush.
    pub fn flush(&self) {
        let to_flush = std::mem::take(&mut *self.to_flush.lock());
        for conn in to_flush {
            conn.flush_from_loop();
        }
    }
}
