//! Keepalive pings, run inside each connection's IO task: no Python per ping.
//!
//! Every `ws_ping_interval` the IO task sends a ping whose payload is the send time, and
//! records the pong's round-trip as the connection's latency. A ping unanswered for `ws_ping_timeout` ends the connection with
//! 1011 "keepalive ping timeout".

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::ServerConfig;
use crate::connection::ConnShared;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_nanos() as u64
}

/// Called by the IO task for every pong.
pub fn pong(shared: &ConnShared, payload: &[u8]) {
    let now = nanos_since_epoch(Instant::now());
    if let Ok(sent) = <[u8; 8]>::try_from(payload) {
        let sent = u64::from_be_bytes(sent);
        if sent <= now {
            let micros = ((now - sent) / 1000).max(1);
            shared.latency_us.store(micros, Ordering::Relaxed);
            crate::stats::record_rtt(micros);
        }
    }
    shared.last_pong_at.store(now, Ordering::Release);
}

pub enum Beat {
    Ping(Vec<u8>),
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
    pub fn new(config: &ServerConfig) -> Self {
        // Fix the epoch before the first ping, so that no ping is sent at time zero.
        epoch();
        let interval = config.ws_ping_interval;
        Self {
            interval,
            timeout: config.ws_ping_timeout,
            next_ping: Instant::now() + interval.unwrap_or(Duration::ZERO),
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

    pub fn check(&mut self, shared: &ConnShared) -> Beat {
        let now = Instant::now();
        if let Some(sent) = self.awaiting {
            if shared.last_pong_at.load(Ordering::Acquire) > nanos_since_epoch(sent) {
                self.awaiting = None;
            } else if self.timeout.is_some_and(|timeout| now >= sent + timeout) {
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
        Beat::Ping(nanos_since_epoch(now).to_be_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(interval: Option<f64>, timeout: Option<f64>) -> ServerConfig {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 0,
            fd: None,
            backlog: 16,
            reuse_port: false,
            ws_max_size: 1 << 20,
            ws_ping_interval: crate::config::seconds(interval),
            ws_ping_timeout: crate::config::seconds(timeout),
            max_connections: None,
            allowed_origins: None,
            outbox_limit: 1 << 20,
            inbox_limit: 256 * 1024,
            http_max_body: 1 << 20,
            close_timeout: Duration::from_secs(1),
            server_header: true,
            date_header: true,
        }
    }

    #[test]
    fn disabled_heartbeat_never_wakes() {
        let beat = Heartbeat::new(&config(None, Some(20.0)));
        assert!(beat.next_check().is_none());
        assert!(beat.write_deadline().is_none());
    }

    #[test]
    fn a_disabled_heartbeat_no_longer_bounds_the_closing_write() {
        let mut beat = Heartbeat::new(&config(Some(10.0), Some(5.0)));
        beat.awaiting = Some(Instant::now() - Duration::from_secs(60));
        beat.disable();
        assert!(beat.write_deadline().is_none());
        assert!(beat.next_check().is_none());
    }

    #[test]
    fn write_deadline_follows_the_outstanding_ping() {
        let mut beat = Heartbeat::new(&config(Some(10.0), Some(5.0)));
        let idle_deadline = beat.write_deadline().unwrap();
        assert!(idle_deadline >= beat.next_ping + Duration::from_secs(5));
        let sent = Instant::now();
        beat.awaiting = Some(sent);
        assert_eq!(beat.write_deadline(), Some(sent + Duration::from_secs(5)));
    }
}
