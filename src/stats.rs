//! Process-wide counters of the bridge, read from Python with `ferrosock._engine.stats()`.
//!
//! They exist so that tests and benchmarks can show what the fast path does: how often an
//! awaitable had to park on a loop future, how many eventfd wake-ups were written, how many
//! events each drain handled. Relaxed atomics: counters, not synchronisation.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        #[allow(non_upper_case_globals)]
        pub mod counter {
            use super::AtomicU64;
            $(pub static $name: AtomicU64 = AtomicU64::new(0);)*
        }

        /// Every counter with its name, in declaration order.
        pub fn snapshot() -> Vec<(&'static str, u64)> {
            vec![$((stringify!($name), counter::$name.load(Ordering::Relaxed))),*]
        }
    };
}

counters!(
    futures_created,
    fast_completions,
    yields,
    wakeups,
    drains,
    events,
    connections_opened,
    connections_closed,
    messages_received,
    messages_sent,
    http_requests,
    handshakes_rejected,
);

#[inline]
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[inline]
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
