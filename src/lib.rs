//! ferrosock's engine: the Rust half of the `ferrosock` package, importable as
//! `ferrosock._engine`. This file only registers the Python module; each concern lives in
//! its own module (see the list below and `docs/architecture.md`).

mod awaitable;
mod bridge;
mod config;
mod connection;
mod convert;
mod envelope;
mod eventloop;
mod forwarded;
mod frame;
#[cfg(test)]
mod fuzz_tests;
mod gate;
mod handshake;
mod heartbeat;
mod http;
mod http1;
mod http_limits;
mod listener;
mod node;
mod per_client;
mod poller;
mod protocol;
mod pubsub;
mod ratelimit;
mod registry;
mod router;
mod runtime;
mod server;
mod slow;
mod socket;
mod stats;
mod tls;
mod waiter;
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

/// Everything `stats()` has, plus `close_codes` ({label: count}), `handshakes_refused`
/// ({reason: count}, every reason) and `ping_rtt`
/// (`bounds_us`, per-bucket `counts` with one past the last bound, `sum_us`).
#[pyfunction(name = "metrics")]
fn engine_metrics(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let dict = engine_stats(py)?;
    let codes = PyDict::new(py);
    for (label, count) in stats::close_codes() {
        codes.set_item(label, count)?;
    }
    dict.set_item("close_codes", codes)?;
    let refused = PyDict::new(py);
    for (reason, count) in stats::refusals() {
        refused.set_item(reason, count)?;
    }
    dict.set_item("handshakes_refused", refused)?;
    let (counts, sum_us) = stats::rtt_histogram();
    let rtt = PyDict::new(py);
    rtt.set_item("bounds_us", stats::RTT_BOUNDS_US.to_vec())?;
    rtt.set_item("counts", counts)?;
    rtt.set_item("sum_us", sum_us)?;
    dict.set_item("ping_rtt", rtt)?;
    Ok(dict)
}

#[pymodule]
fn _engine(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<server::Server>()?;
    module.add_class::<websocket::Connection>()?;
    module.add_class::<http::HttpRequest>()?;
    module.add_class::<forwarded::TrustedProxies>()?;
    module.add_class::<registry::Registry>()?;
    module.add_class::<awaitable::Op>()?;
    module.add_class::<awaitable::Done>()?;
    module.add_class::<waiter::Waiter>()?;
    awaitable::install_send(module.py());
    module.add_function(wrap_pyfunction!(engine_stats, module)?)?;
    module.add_function(wrap_pyfunction!(engine_metrics, module)?)?;
    module.add_function(wrap_pyfunction!(server::check_tls, module)?)?;
    Ok(())
}
