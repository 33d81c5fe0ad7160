//! ferrosock's engine: the Rust half of the `ferrosock` package, importable as
//! `ferrosock._engine`. This file only registers the Python module; each concern lives in
//! its own module (see the list below and `docs/architecture.md`).

mod awaitable;
mod bridge;
mod config;
mod connection;
mod envelope;
mod frame;
mod heartbeat;
mod http;
mod node;
mod pubsub;
mod registry;
mod router;
mod runtime;
mod server;
mod stats;
mod stream;
mod websocket;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Process-wide bridge counters (see `stats.rs`).
#[pyfunction(name = "stats")]
fn engine_stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let dict = PyDict::new(py);
    for (name, value) in stats::snapshot() {
        dict.set_item(name, value)?;
    }
    Ok(dict)
}

#[pymodule]
fn _engine(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<server::Server>()?;
    module.add_class::<websocket::Connection>()?;
    module.add_class::<http::HttpRequest>()?;
    module.add_class::<registry::Registry>()?;
    module.add_class::<awaitable::Op>()?;
    module.add_class::<awaitable::Done>()?;
    module.add_function(wrap_pyfunction!(engine_stats, module)?)?;
    Ok(())
}
