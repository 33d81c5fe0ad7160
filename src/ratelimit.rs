//! What keeps one client from flooding the server: per-connection rate limits, the idle
//! timeout, and the bound on the pongs the server owes.
//!
//! `Pace` is the IO task's per-connection state: two token buckets (messages and payload
//! bytes per second, each holding one second's worth) charged for every data message and
//! control frame the client sends, and the instant its last data message arrived. Time is
//! passed in; nothing here does IO, so it is tested without sockets. `OwedPong` lets the
//! outbox keep at most one unwritten pong: a newer ping replaces its payload
//! (RFC 6455 §5.5.3), so a ping flood from a client that never reads costs no memory.

use std::collections::HashMap;
use std::time::Duration;

use std::time::Instant;

use crate::config::ServerConfig;
use crate::frame::{OutFrame, Received, OP_PONG};

/// Close code of a tripped rate limit (policy violation) and of the idle timeout.
pub const RATE_CLOSE_CODE: u16 = 1008;
pub const IDLE_CLOSE_CODE: u16 = 1001;
pub const IDLE_REASON: &str = "idle timeout";
const MESSAGES_REASON: &str = "message rate limit exceeded";
const BYTES_REASON: &str = "byte rate limit exceeded";

/// The per-second limits of one route (or the server's), `None` for no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RateLimits {
    pub messages_per_second: Option<f64>,
    pub bytes_per_second: Option<f64>,
}

impl RateLimits {
    /// The limits a route set in the route table (`max_messages_per_second`,
    /// `max_bytes_per_second`); an unknown name or a value that is not positive is an error.
    pub fn from_route(options: &HashMap<String, f64>) -> Result<Self, String> {
        let mut limits = Self::default();
        for (name, value) in options {
            let slot = match name.as_str() {
                "max_messages_per_second" => &mut limits.messages_per_second,
                "max_bytes_per_second" => &mut limits.bytes_per_second,
                other => return Err(format!("unknown route limit {other:?}")),
            };
            if !(value.is_finite() && *value > 0.0) {
                return Err(format!("{name} must be a positive number, not {value}"));
            }
            *slot = Some(*value);
        }
        Ok(limits)
    }

    /// The server's limits (`ws_max_messages_per_second`, `ws_max_bytes_per_second`).
    pub fn server(config: &ServerConfig) -> Self {
        Self {
            messages_per_second: config.ws_max_messages_per_second,
            bytes_per_second: config.ws_max_bytes_per_second,
        }
    }

    /// Each limit the route sets replaces the server's.
    pub fn or(self, server: RateLimits) -> Self {
        Self {
            messages_per_second: self.messages_per_second.or(server.messages_per_second),
            bytes_per_second: self.bytes_per_second.or(server.bytes_per_second),
        }
    }
}

/// A token bucket holding one second's worth of `rate`: it starts full and refills
/// continuously.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        Self {
            rate,
            tokens: rate,
            at: now,
        }
    }

    /// Take `cost` tokens if the bucket holds them.
    fn take(&mut self, cost: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now.max(self.at);
        if self.tokens < cost {
            return false;
        }
        self.tokens -= cost;
        true
    }
}

/// The pace of what one client sends: its rate limits and its idle deadline.
pub struct Pace {
    /// Boxed: most routes set no rate limit, and every idle socket would carry the room.
    messages: Option<Box<Bucket>>,
    bytes: Option<Box<Bucket>>,
    idle_timeout: Option<Duration>,
    last_data: Instant,
    /// The limit that tripped: nothing more is admitted.
    tripped: Option<&'static str>,
    /// `take_trip` has reported it.
    trip_taken: bool,
}

impl Pace {
    pub fn new(limits: RateLimits, idle_timeout: Option<Duration>, now: Instant) -> Self {
        Self {
            messages: limits
                .messages_per_second
                .map(|rate| Box::new(Bucket::new(rate, now))),
            bytes: limits
                .bytes_per_second
                .map(|rate| Box::new(Bucket::new(rate, now))),
            idle_timeout,
            last_data: now,
            tripped: None,
            trip_taken: false,
        }
    }

    /// A limit or the idle timeout is on: frames are timed.
    fn is_timed(&self) -> bool {
        self.messages.is_some() || self.bytes.is_some() || self.idle_timeout.is_some()
    }

    /// Charge one received frame or message; false once a limit is exceeded (then the
    /// frame and everything after it must be dropped, and the connection closed with
    /// `RATE_CLOSE_CODE` and `tripped()`'s reason). `clock` is asked for the time only
    /// when a limit or the idle timeout is on.
    pub fn admit(&mut self, received: &Received, clock: impl FnOnce() -> Instant) -> bool {
        if self.tripped.is_some() {
            return false;
        }
        if !self.is_timed() {
            return true;
        }
        let now = clock();
        let (bytes, data) = match received {
            Received::Text(text) => (text.len(), true),
            Received::Binary(data) => (data.len(), true),
            Received::Ping(payload) | Received::Pong(payload) => (payload.len(), false),
            Received::Close(_, reason) => (2 + reason.len(), false),
        };
        if self.messages.as_mut().is_some_and(|b| !b.take(1.0, now)) {
            self.tripped = Some(MESSAGES_REASON);
            return false;
        }
        if self
            .bytes
            .as_mut()
            .is_some_and(|b| !b.take(bytes as f64, now))
        {
            self.tripped = Some(BYTES_REASON);
            return false;
        }
        if data {
            self.last_data = self.last_data.max(now);
        }
        true
    }

    /// The reason of the limit that tripped, the first time it is asked for after the trip.
    pub fn take_trip(&mut self) -> Option<&'static str> {
        if self.trip_taken {
            return None;
        }
        self.trip_taken = self.tripped.is_some();
        self.tripped
    }

    /// When the connection is idle if no data message comes before.
    pub fn idle_deadline(&self) -> Option<Instant> {
        self.idle_timeout.map(|timeout| self.last_data + timeout)
    }

    /// No data message came for the idle timeout: true once, then the timeout is off.
    pub fn idle_expired(&mut self, now: Instant) -> bool {
        let expired = self.idle_deadline().is_some_and(|deadline| now >= deadline);
        if expired {
            self.idle_timeout = None;
        }
        expired
    }
}

/// Where the outbox's one unwritten pong is, counted in frames ever queued, so that it is
/// found without searching however long the queue is.
#[derive(Default)]
pub struct OwedPong {
    /// Frames taken off the front of the queue so far.
    removed: u64,
    /// The pong's position among all frames ever queued.
    at: Option<u64>,
}

impl OwedPong {
    /// The queue index of the owed pong, if it is still queued; the caller checks that
    /// none of it was written yet (`is_unwritten_pong`).
    pub fn index(&self, queue_len: usize) -> Option<usize> {
        let index = usize::try_from(self.at?.checked_sub(self.removed)?).ok()?;
        (index < queue_len).then_some(index)
    }

    /// A pong was queued at `index`.
    pub fn queued_at(&mut self, index: usize) {
        self.at = Some(self.removed + index as u64);
    }

    /// `count` frames left the front of the queue.
    pub fn removed(&mut self, count: usize) {
        self.removed += count as u64;
    }
}

/// A pong none of whose bytes were written yet (a partly written frame has no header).
pub fn is_unwritten_pong(frame: &OutFrame) -> bool {
    frame.head().first().is_some_and(|b| b & 0x0F == OP_PONG)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn binary(len: usize) -> Received {
        Received::Binary(Bytes::from(vec![0; len]))
    }

    fn limits(messages: Option<f64>, bytes: Option<f64>) -> RateLimits {
        RateLimits {
            messages_per_second: messages,
            bytes_per_second: bytes,
        }
    }

    #[test]
    fn a_bucket_holds_one_second_and_refills_at_its_rate() {
        let start = Instant::now();
        let mut pace = Pace::new(limits(Some(5.0), None), None, start);
        for _ in 0..5 {
            assert!(pace.admit(&binary(1), || start));
        }
        assert!(!pace.admit(&binary(1), || start));
        assert_eq!(pace.tripped, Some(MESSAGES_REASON));
        assert_eq!(pace.take_trip(), Some(MESSAGES_REASON));
        assert_eq!(pace.take_trip(), None);
        assert_eq!(pace.tripped, Some(MESSAGES_REASON));
        // Tripped stays tripped, even after the bucket would have refilled.
        assert!(!pace.admit(&binary(1), || start + Duration::from_secs(10)));

        let mut pace = Pace::new(limits(Some(5.0), None), None, start);
        for i in 0..50u64 {
            // 5 per second exactly: never trips.
            assert!(pace.admit(&binary(1), || start + Duration::from_millis(200 * i)));
        }
    }

    #[test]
    fn an_idle_second_refills_no_more_than_one_second() {
        let start = Instant::now();
        let mut pace = Pace::new(limits(Some(3.0), None), None, start);
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(pace.admit(&binary(1), || later));
        }
        assert!(!pace.admit(&binary(1), || later));
    }

    #[test]
    fn bytes_count_payloads_of_data_and_control_frames() {
        let start = Instant::now();
        let mut pace = Pace::new(limits(None, Some(100.0)), None, start);
        assert!(pace.admit(&binary(60), || start));
        assert!(pace.admit(&Received::Ping(Bytes::from(vec![0; 30])), || start));
        assert!(!pace.admit(&Received::Pong(Bytes::from(vec![0; 20])), || start));
        assert_eq!(pace.tripped, Some(BYTES_REASON));

        // Half a second later, half the bucket is back.
        let mut pace = Pace::new(limits(None, Some(100.0)), None, start);
        assert!(pace.admit(&binary(100), || start));
        let half = start + Duration::from_millis(500);
        assert!(pace.admit(&binary(50), || half));
        assert!(!pace.admit(&binary(1), || half));
    }

    #[test]
    fn a_message_bigger_than_a_second_of_bytes_trips() {
        let start = Instant::now();
        let mut pace = Pace::new(limits(None, Some(10.0)), None, start);
        assert!(!pace.admit(&binary(11), || start));
    }

    #[test]
    fn control_frames_count_as_messages() {
        let start = Instant::now();
        let mut pace = Pace::new(limits(Some(2.0), None), None, start);
        assert!(pace.admit(&Received::Ping(Bytes::new()), || start));
        assert!(pace.admit(&Received::Pong(Bytes::new()), || start));
        assert!(!pace.admit(&Received::Ping(Bytes::new()), || start));
    }

    #[test]
    fn only_data_messages_hold_off_the_idle_timeout() {
        let start = Instant::now();
        let timeout = Duration::from_secs(10);
        let mut pace = Pace::new(RateLimits::default(), Some(timeout), start);
        assert_eq!(pace.idle_deadline(), Some(start + timeout));
        let later = start + Duration::from_secs(7);
        assert!(pace.admit(&Received::Ping(Bytes::new()), || later));
        assert_eq!(pace.idle_deadline(), Some(start + timeout));
        assert!(pace.admit(&binary(1), || later));
        assert_eq!(pace.idle_deadline(), Some(later + timeout));
        assert!(!pace.idle_expired(start + timeout));
        assert!(pace.idle_expired(later + timeout));
        // It fires once.
        assert!(!pace.idle_expired(later + timeout * 2));
        assert_eq!(pace.idle_deadline(), None);
    }

    #[test]
    fn no_limits_admit_everything_and_need_no_clock() {
        let start = Instant::now();
        let mut pace = Pace::new(RateLimits::default(), None, start);
        assert!(pace.idle_deadline().is_none());
        for _ in 0..10_000 {
            assert!(pace.admit(&binary(1 << 16), || panic!("no clock without limits")));
        }
    }

    #[test]
    fn route_limits_replace_the_servers_one_by_one() {
        let server = limits(Some(100.0), Some(1e6));
        let options = HashMap::from([("max_messages_per_second".to_owned(), 5.0)]);
        let route = RateLimits::from_route(&options).unwrap();
        assert_eq!(route.or(server), limits(Some(5.0), Some(1e6)));
        assert_eq!(RateLimits::default().or(server), server);
        let unknown = HashMap::from([("max_frames".to_owned(), 5.0)]);
        assert!(RateLimits::from_route(&unknown).is_err());
        let zero = HashMap::from([("max_bytes_per_second".to_owned(), 0.0)]);
        assert!(RateLimits::from_route(&zero).is_err());
    }

    #[test]
    fn the_owed_pong_is_found_while_it_waits_and_not_after() {
        let mut owed = OwedPong::default();
        assert_eq!(owed.index(1), None);
        // [data, data, pong]
        owed.queued_at(2);
        assert_eq!(owed.index(3), Some(2));
        owed.removed(2);
        // [pong, data]
        assert_eq!(owed.index(2), Some(0));
        owed.removed(1);
        assert_eq!(owed.index(1), None);
        assert_eq!(owed.index(0), None);
    }

    #[test]
    fn a_partly_written_pong_is_not_unwritten() {
        let pong = OutFrame::new(OP_PONG, Bytes::from_static(b"abc"));
        assert!(is_unwritten_pong(&pong));
        assert!(!is_unwritten_pong(&pong.after(1)));
        assert!(!is_unwritten_pong(&OutFrame::text(Bytes::from_static(
            b"x"
        ))));
    }
}
