//! Process-wide counters, read from Python with `ferrosock._engine.stats()` and, with the
//! close codes, the refused handshakes by reason and the ping round-trip histogram,
//! `ferrosock._engine.metrics()`.
//!
//! They exist so that tests and benchmarks can show what the fast path does (how often an
//! awaitable had to park on a loop future, how many eventfd wake-ups were written, how many
//! events each drain handled) and so that a server can be watched (`app.metrics()`, the
//! Prometheus page): connections, messages and bytes each way, how connections ended.
//! Relaxed atomics: counters, not synchronisation; never a Python call per event. What a
//! handler does per message is counted in its loop's `Tally` first, with plain loads and
//! stores, and added here in bulk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        #[allow(non_upper_case_globals)]
        pub mod counter {
            use super::AtomicU64;
            $(pub static $name: AtomicU64 = AtomicU64::new(0);)*
        }

        /// Every counter with its name, in declaration order (the loops' tallies added
        /// in first).
        pub fn snapshot() -> Vec<(&'static str, u64)> {
            Tally::drain_all();
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
    bytes_received,
    bytes_sent,
    http_requests,
    handshakes_accepted,
);

/// One event loop's share of the per-message counters. Only a thread holding the GIL
/// touches it, so adding is a load and a store, not an atomic read-modify-write (which
/// costs as much as the rest of the counting); `drain` hands it to the process-wide
/// counters at the end of each round, and every `snapshot` drains all tallies first.
pub struct Tally {
    messages_sent: AtomicU64,
    bytes_sent: AtomicU64,
    fast_completions: AtomicU64,
}

/// Every live tally, for `snapshot`.
static TALLIES: Mutex<Vec<Weak<Tally>>> = Mutex::new(Vec::new());

impl Tally {
    /// A tally `snapshot` will drain.
    pub fn registered() -> Arc<Self> {
        let tally = Arc::new(Self {
            messages_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            fast_completions: AtomicU64::new(0),
        });
        let mut tallies = TALLIES.lock().unwrap_or_else(|e| e.into_inner());
        tallies.retain(|t| t.strong_count() > 0);
        tallies.push(Arc::downgrade(&tally));
        tally
    }

    /// A data message of `bytes` queued by a handler.
    #[inline]
    pub fn sent(&self, bytes: usize) {
        add_local(&self.messages_sent, 1);
        add_local(&self.bytes_sent, bytes as u64);
    }

    /// An awaitable finished without waiting.
    #[inline]
    pub fn fast_completion(&self) {
        add_local(&self.fast_completions, 1);
    }

    /// Add what was counted here to the process-wide counters.
    pub fn drain(&self) {
        for (local, global) in [
            (&self.messages_sent, &counter::messages_sent),
            (&self.bytes_sent, &counter::bytes_sent),
            (&self.fast_completions, &counter::fast_completions),
        ] {
            if local.load(Ordering::Relaxed) > 0 {
                add(global, local.swap(0, Ordering::Relaxed));
            }
        }
    }

    fn drain_all() {
        let tallies = TALLIES.lock().unwrap_or_else(|e| e.into_inner());
        tallies
            .iter()
            .filter_map(Weak::upgrade)
            .for_each(|t| t.drain());
    }
}

/// `counter += n` by its one writer.
#[inline]
fn add_local(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

#[inline]
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[inline]
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Close codes counted one by one: RFC 6455's 1000–1015; 3000–4999 go in two buckets.
const FIRST_CODE: u16 = 1000;
const LAST_CODE: u16 = 1015;
const CODE_SLOTS: usize = (LAST_CODE - FIRST_CODE + 1) as usize;
static CLOSE_CODES: [AtomicU64; CODE_SLOTS + 3] = [const { AtomicU64::new(0) }; CODE_SLOTS + 3];
const SLOT_3XXX: usize = CODE_SLOTS;
const SLOT_4XXX: usize = CODE_SLOTS + 1;
const SLOT_OTHER: usize = CODE_SLOTS + 2;

/// A connection ended with `code` (the code its handler sees).
pub fn record_close(code: u16) {
    let slot = match code {
        FIRST_CODE..=LAST_CODE => usize::from(code - FIRST_CODE),
        3000..=3999 => SLOT_3XXX,
        4000..=4999 => SLOT_4XXX,
        _ => SLOT_OTHER,
    };
    bump(&CLOSE_CODES[slot]);
}

/// Every close code seen, as its label ("1000", …, "3xxx", "4xxx", "other") and count.
pub fn close_codes() -> Vec<(String, u64)> {
    CLOSE_CODES
        .iter()
        .enumerate()
        .map(|(slot, count)| {
            let label = match slot {
                SLOT_3XXX => "3xxx".to_owned(),
                SLOT_4XXX => "4xxx".to_owned(),
                SLOT_OTHER => "other".to_owned(),
                _ => (FIRST_CODE + slot as u16).to_string(),
            };
            (label, count.load(Ordering::Relaxed))
        })
        .filter(|(_, count)| *count > 0)
        .collect()
}

/// Why a WebSocket handshake was answered with an HTTP response instead of the 101.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed handshake (400), checked by the engine.
    BadRequest,
    /// Origin not in `allowed_origins` (403).
    ForbiddenOrigin,
    /// No WebSocket route at the path (403).
    NotFound,
    /// `max_connections` open already (503).
    OverCapacity,
    /// `max_connections_per_ip` open already from this client (429).
    OverClientLimit,
    /// The handler closed before accepting (403).
    AppRefused,
    /// The handler sent a response of its own (`send_denial_response`).
    DenialResponse,
    /// The handler failed before accepting (500), or went away without deciding.
    Error,
    /// The server was shutting down (503).
    Shutdown,
}

impl Refusal {
    pub const ALL: [Refusal; 9] = [
        Refusal::BadRequest,
        Refusal::ForbiddenOrigin,
        Refusal::NotFound,
        Refusal::OverCapacity,
        Refusal::OverClientLimit,
        Refusal::AppRefused,
        Refusal::DenialResponse,
        Refusal::Error,
        Refusal::Shutdown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::BadRequest => "bad_request",
            Refusal::ForbiddenOrigin => "forbidden_origin",
            Refusal::NotFound => "not_found",
            Refusal::OverCapacity => "over_capacity",
            Refusal::OverClientLimit => "over_client_limit",
            Refusal::AppRefused => "app_refused",
            Refusal::DenialResponse => "denial_response",
            Refusal::Error => "error",
            Refusal::Shutdown => "shutdown",
        }
    }
}

static REFUSALS: [AtomicU64; Refusal::ALL.len()] =
    [const { AtomicU64::new(0) }; Refusal::ALL.len()];

/// A handshake was refused for `why`.
pub fn record_refusal(why: Refusal) {
    bump(&REFUSALS[why as usize]);
}

/// Refused handshakes by reason label, every reason listed (zeros too).
pub fn refusals() -> Vec<(&'static str, u64)> {
    Refusal::ALL
        .iter()
        .map(|why| (why.label(), REFUSALS[*why as usize].load(Ordering::Relaxed)))
        .collect()
}

/// Upper bounds, in microseconds, of the ping round-trip histogram's buckets.
pub const RTT_BOUNDS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];
static RTT_BUCKETS: [AtomicU64; RTT_BOUNDS_US.len() + 1] =
    [const { AtomicU64::new(0) }; RTT_BOUNDS_US.len() + 1];
static RTT_SUM_US: AtomicU64 = AtomicU64::new(0);

/// A pong came back `micros` after its ping.
pub fn record_rtt(micros: u64) {
    let bucket = RTT_BOUNDS_US
        .iter()
        .position(|bound| micros <= *bound)
        .unwrap_or(RTT_BOUNDS_US.len());
    bump(&RTT_BUCKETS[bucket]);
    add(&RTT_SUM_US, micros);
}

/// The histogram: per-bucket counts (not cumulative; the last one past every bound) and
/// the sum of all round trips in microseconds.
pub fn rtt_histogram() -> (Vec<u64>, u64) {
    let counts = RTT_BUCKETS
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    (counts, RTT_SUM_US.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_and_round_trips_land_in_their_slots() {
        record_close(1000);
        record_close(1000);
        record_close(4001);
        record_close(2);
        let codes = close_codes();
        assert!(codes.iter().any(|(l, n)| l == "1000" && *n >= 2));
        assert!(codes.iter().any(|(l, n)| l == "4xxx" && *n >= 1));
        assert!(codes.iter().any(|(l, n)| l == "other" && *n >= 1));
        record_rtt(90);
        record_rtt(5_000_000);
        let (counts, sum) = rtt_histogram();
        assert!(counts[0] >= 1 && counts[RTT_BOUNDS_US.len()] >= 1);
        assert!(sum >= 5_000_090);
    }

    #[test]
    fn refusals_are_counted_under_their_own_label() {
        let count = |label| refusals().into_iter().find(|(l, _)| *l == label).unwrap().1;
        let before = count("over_capacity");
        record_refusal(Refusal::OverCapacity);
        assert_eq!(count("over_capacity"), before + 1);
        assert_eq!(refusals().len(), Refusal::ALL.len());
        for (slot, why) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*why as usize, slot, "ALL is in declaration order");
        }
    }
}
