//! The process's tokio runtime: the IO threads.
//!
//! One runtime per process, made by the first server that starts (or the first registry),
//! with `io_threads` workers — by default as many as the CPUs this process may run on, so a
//! worker pinned to one core runs one IO thread beside the Python thread.

use std::sync::OnceLock;

use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

pub fn init(io_threads: Option<usize>) -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        let threads = io_threads
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("ferrosock-io")
            .enable_all()
            .build()
            .expect("cannot start the IO runtime")
    })
}

pub fn get() -> &'static Runtime {
    init(None)
}
