//! Keepalive pings as pure timer logic: instants in, decisions out, no IO and no Python.
//!
//! Every `ws_ping_interval` the connection sends a ping whose payload is its send time,
//! and a pong carrying it back gives the round-trip. A ping unanswered for
//! `ws_ping_timeout` ends the connection with 1011 "keepalive ping timeout".

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_nanos() as u64
}

pub enum Beat {
    Ping(Bytes),
    TimedOut,
    Idle,
}

pub struct Heartbeat {
    interval: Option<Duration>,
    timeout: Option<Duration>,
    next_ping: Instant,
    /// The outstanding ping: when it was sent.
    awaiting: Option<Instant>,
}

impl Heartbeat {
    pub fn new(interval: Option<Duration>, timeout: Option<Duration>, now: Instant) -> Self {
        // Fix the epoch before the first ping, so that no ping is sent at time zero.
        epoch();
        Self {
            interval,
            timeout,
            next_ping: now + interval.unwrap_or(Duration::ZERO),
            awaiting: None,
        }
    }

    /// When `check` next has something to do; `None` when heartbeats are off.
    pub fn next_check(&self) -> Option<Instant> {
        self.interval?;
        Some(match (self.awaiting, self.timeout) {
            (Some(sent), Some(timeout)) => (sent + timeout).min(self.next_ping.max(sent)),
            _ => self.next_ping,
        })
    }

    /// A write blocked past this instant means the peer is gone.
    pub fn write_deadline(&self) -> Option<Instant> {
        let timeout = self.timeout?;
        self.interval?;
        Some(match self.awaiting {
            Some(sent) => sent + timeout,
            None => self.next_ping + timeout,
        })
    }

    /// Stop pinging and stop bounding writes: the connection is closing.
    pub fn disable(&mut self) {
        self.interval = None;
        self.awaiting = None;
    }

    /// A pong arrived at `now`: the outstanding ping is answered. Returns the round trip in
    /// microseconds when the pong carries one of our send times.
    pub fn pong(&mut self, payload: &[u8], now: Instant) -> Option<u64> {
        self.awaiting = None;
        let sent = u64::from_be_bytes(<[u8; 8]>::try_from(payload).ok()?);
        let now = nanos_since_epoch(now);
        (sent <= now).then(|| ((now - sent) / 1000).max(1))
    }

    pub fn check(&mut self, now: Instant) -> Beat {
        if let Some(sent) = self.awaiting {
            if self.timeout.is_some_and(|timeout| now >= sent + timeout) {
                return Beat::TimedOut;
            }
        }
        let Some(interval) = self.interval else {
            return Beat::Idle;
        };
        if now < self.next_ping {
            return Beat::Idle;
        }
        self.next_ping = now + interval;
        if self.awaiting.is_some() {
            return Beat::Idle;
        }
        self.awaiting = Some(now);
        Beat::Ping(Bytes::copy_from_slice(
            &nanos_since_epoch(now).to_be_bytes(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(interval: Option<u64>, timeout: Option<u64>) -> Heartbeat {
        Heartbeat::new(
            interval.map(Duration::from_secs),
            timeout.map(Duration::from_secs),
            Instant::now(),
        )
    }

    #[test]
    fn disabled_heartbeat_never_wakes() {
        let beat = beat(None, Some(20));
        assert!(beat.next_check().is_none());
        assert!(beat.write_deadline().is_none());
    }

    #[test]
    fn a_disabled_heartbeat_no_longer_bounds_the_closing_write() {
        let mut beat = beat(Some(10), Some(5));
        beat.awaiting = Some(Instant::now() - Duration::from_secs(60));
        beat.disable();
        assert!(beat.write_deadline().is_none());
        assert!(beat.next_check().is_none());
    }

    #[test]
    fn write_deadline_follows_the_outstanding_ping() {
        let mut beat = beat(Some(10), Some(5));
        let idle_deadline = beat.write_deadline().unwrap();
        assert!(idle_deadline >= beat.next_ping + Duration::from_secs(5));
        let sent = Instant::now();
        beat.awaiting = Some(sent);
        assert_eq!(beat.write_deadline(), Some(sent + Duration::from_secs(5)));
    }

    #[test]
    fn a_pong_without_our_payload_still_answers_the_ping() {
        let mut beat = beat(Some(10), Some(5));
        let now = Instant::now();
        beat.awaiting = Some(now);
        assert_eq!(beat.pong(b"unsolicited", now), None);
        assert!(matches!(
            beat.check(now + Duration::from_secs(6)),
            Beat::Idle
        ));
    }
}
