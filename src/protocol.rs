//! One WebSocket's protocol as a state machine: bytes and instants in, actions out.
//!
//! `Protocol` knows no socket, no thread, no Python and no owner. Its driver (`poller.rs`)
//! feeds it what the socket read and the time, tells it what the writer did, and carries
//! out what it asks: deliver a message, queue a control frame, close with a code, drop the
//! socket. The states are those of RFC 6455: open, then closing (a close frame was sent or
//! received), then closed (the driver drops the socket).
//!
//! A peer's violation is held back: reading stops at once, and the close (1002, 1007 or
//! 1009) goes out once the handler has taken every message that was complete before it and
//! asks for the next, so its replies go out first, or after a short grace.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::frame::{self, Decoder, OutFrame, Received, Text, Violation};
use crate::heartbeat::{Beat, Heartbeat};
use crate::ratelimit::{Pace, RateLimits, IDLE_CLOSE_CODE, IDLE_REASON, RATE_CLOSE_CODE};

/// How long a violation's close waits at most for the handler to answer what came before
/// it (never longer than `close_timeout`).
const FAIL_GRACE: Duration = Duration::from_secs(1);

/// The settings a connection's protocol runs by.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_size: usize,
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Option<Duration>,
    pub close_timeout: Duration,
    /// No data message from the peer for this long closes with 1001.
    pub idle_timeout: Option<Duration>,
}

/// What the driver is asked to do.
#[derive(Debug)]
pub enum Action {
    /// A data message for the handler.
    Text(Text),
    Binary(Bytes),
    /// A control frame to queue (a pong or a ping).
    Send(OutFrame),
    /// End the connection with this code and queue its close frame (no-op if it already
    /// ended: the first end wins).
    Close(u16, String),
    /// The peer broke the protocol; its close is held. The driver logs it and makes it
    /// the code of any close asked for before the held one goes out.
    Violated(u16, &'static str),
    /// A pong came back for our ping after this many microseconds.
    RoundTrip(u64),
    /// End the connection with this code without a closing handshake.
    Lost(u16, &'static str),
    /// Drop the socket now.
    Stop,
}

/// A violation whose close waits until the handler has answered what came before it.
struct Failure {
    code: u16,
    reason: &'static str,
    deadline: Instant,
}

pub struct Protocol {
    /// Of its `Limits`, the one the protocol reads after it is made (the rest went into
    /// the decoder, the heartbeat and the pace).
    close_timeout: Duration,
    decoder: Decoder,
    /// Still reading: false once the peer sent its close, broke the protocol or went away.
    reading: bool,
    /// A close frame went out: after it, nothing else is written.
    close_sent: bool,
    /// The closing handshake started (ours or the peer's); `close_timeout` runs from then.
    closing_deadline: Option<Instant>,
    /// The socket is dropped once our close frame is written (the peer's close answered, or
    /// a violation).
    finish_after_close: bool,
    /// Boxed: rarely there, and every idle socket would carry its room.
    failure: Option<Box<Failure>>,
    heartbeat: Heartbeat,
    /// The peer's rate limits and idle deadline.
    pace: Pace,
    /// A write has been pending since the socket filled: bounded by the heartbeat.
    write_blocked: bool,
}

impl Protocol {
    pub fn new(limits: Limits, rates: RateLimits, now: Instant) -> Self {
        Self {
            close_timeout: limits.close_timeout,
            decoder: Decoder::new(limits.max_size),
            reading: true,
            close_sent: false,
            closing_deadline: None,
            finish_after_close: false,
            failure: None,
            heartbeat: Heartbeat::new(limits.ping_interval, limits.ping_timeout, now),
            pace: Pace::new(rates, limits.idle_timeout, now),
            write_blocked: false,
        }
    }

    /// Whether the driver should read the socket.
    pub fn wants_read(&self) -> bool {
        self.reading
    }

    /// Whether the driver should write: nothing is written after our close frame.
    pub fn wants_write(&self) -> bool {
        !self.close_sent
    }

    /// Whether a violation's close is held, waiting for the handler to catch up.
    pub fn holds_failure(&self) -> bool {
        self.failure.is_some()
    }

    /// Bytes the peer sent.
    pub fn receive(&mut self, data: &[u8], now: Instant, out: &mut impl FnMut(Action)) {
        if !self.reading {
            return;
        }
        let mut closed_by_peer = false;
        let closing = self.closing_deadline.is_some();
        let (heartbeat, pace) = (&mut self.heartbeat, &mut self.pace);
        let result = self.decoder.feed(data, &mut |received| {
            route(
                received,
                now,
                heartbeat,
                pace,
                &mut closed_by_peer,
                closing,
                out,
            )
        });
        self.after_receive(result, closed_by_peer, now, out);
    }

    /// The partial payload's own buffer, when a large payload is still arriving: the
    /// driver reads into its spare capacity (at most `direct_missing` bytes) and then calls
    /// `received_direct`.
    pub fn direct_buffer(&mut self) -> Option<&mut BytesMut> {
        self.decoder.direct_buffer()
    }

    pub fn direct_missing(&self) -> usize {
        self.decoder.direct_missing()
    }

    /// Account for bytes read into `direct_buffer`.
    pub fn received_direct(&mut self, now: Instant, out: &mut impl FnMut(Action)) {
        let mut closed_by_peer = false;
        let closing = self.closing_deadline.is_some();
        let (heartbeat, pace) = (&mut self.heartbeat, &mut self.pace);
        let result = self.decoder.feed_direct(&mut |received| {
            route(
                received,
                now,
                heartbeat,
                pace,
                &mut closed_by_peer,
                closing,
                out,
            )
        });
        self.after_receive(result, closed_by_peer, now, out);
    }

    fn after_receive(
        &mut self,
        result: Result<(), Violation>,
        closed_by_peer: bool,
        now: Instant,
        out: &mut impl FnMut(Action),
    ) {
        if closed_by_peer {
            self.reading = false;
            self.start_closing(now);
            if self.close_sent {
                // Our close was answered: the closing handshake is complete.
                out(Action::Stop);
            } else {
                self.finish_after_close = true;
            }
        }
        // A rate limit that just tripped fails the connection as a violation does, except
        // that reading goes on (dropping everything) until the peer answers the close: a
        // socket dropped with unread input is reset, and the reset would lose the close.
        let tripped = self
            .pace
            .take_trip()
            .map(|reason| (RATE_CLOSE_CODE, reason));
        let violation = result.err().map(Violation::close);
        if let Some((code, reason)) = tripped.or(violation) {
            out(Action::Violated(code, reason));
            if violation.is_some() {
                self.reading = false;
                self.finish_after_close = true;
            }
            self.failure.get_or_insert_with(|| {
                Box::new(Failure {
                    code,
                    reason,
                    deadline: now + FAIL_GRACE.min(self.close_timeout),
                })
            });
        }
    }

    /// The socket reached its end (EOF or an error) while reading.
    pub fn peer_gone(&mut self, out: &mut impl FnMut(Action)) {
        self.reading = false;
        if !self.close_sent {
            out(Action::Lost(1006, "connection lost"));
        }
        out(Action::Stop);
    }

    /// The socket failed while writing.
    pub fn write_failed(&mut self, out: &mut impl FnMut(Action)) {
        out(Action::Lost(1006, "connection lost"));
        out(Action::Stop);
    }

    /// The connection began closing (a close frame is queued, ours or the answer to the
    /// peer's): from now on it has `close_timeout` to finish, and pings stop.
    pub fn start_closing(&mut self, now: Instant) {
        if self.closing_deadline.is_none() {
            self.closing_deadline = Some(now + self.close_timeout);
            self.heartbeat.disable();
        }
    }

    #[cfg(test)]
    fn is_closing(&self) -> bool {
        self.closing_deadline.is_some()
    }

    /// What the writer did: our close frame went out, or the socket is full.
    pub fn close_written(&mut self, out: &mut impl FnMut(Action)) {
        self.close_sent = true;
        self.write_blocked = false;
        if self.finish_after_close {
            out(Action::Stop);
        }
    }

    pub fn set_write_blocked(&mut self, blocked: bool) {
        self.write_blocked = blocked;
    }

    /// Run what is due at `now`. `caught_up` says whether the handler has taken every
    /// message and parked on the next receive; it is asked only while a failure is held.
    pub fn tick(
        &mut self,
        now: Instant,
        caught_up: impl FnOnce() -> bool,
        out: &mut impl FnMut(Action),
    ) {
        if let Some(failure) = &self.failure {
            if now >= failure.deadline || caught_up() {
                out(Action::Close(failure.code, failure.reason.to_owned()));
                self.failure = None;
                self.start_closing(now);
            }
        }
        if self.closing_deadline.is_some_and(|at| now >= at) {
            out(Action::Stop);
            return;
        }
        if self.pace.idle_expired(now) {
            out(Action::Close(IDLE_CLOSE_CODE, IDLE_REASON.to_owned()));
            self.start_closing(now);
        }
        if self.write_blocked && self.heartbeat.write_deadline().is_some_and(|at| now >= at) {
            // A write stuck this long: the peer is gone.
            out(Action::Lost(1011, "keepalive ping timeout"));
            out(Action::Stop);
            return;
        }
        match self.heartbeat.check(now) {
            Beat::Ping(payload) => out(Action::Send(OutFrame::new(frame::OP_PING, payload))),
            Beat::TimedOut => {
                out(Action::Close(1011, "keepalive ping timeout".to_owned()));
                // The close frame's write must not inherit the expired deadline.
                self.start_closing(now);
            }
            Beat::Idle => {}
        }
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.heartbeat.next_check();
        if self.write_blocked {
            next = earliest(next, self.heartbeat.write_deadline());
        }
        next = earliest(next, self.closing_deadline);
        if self.closing_deadline.is_none() {
            next = earliest(next, self.pace.idle_deadline());
        }
        earliest(next, self.failure.as_ref().map(|failure| failure.deadline))
    }
}

/// What one decoded message or control frame asks for.
fn route(
    received: Received,
    now: Instant,
    heartbeat: &mut Heartbeat,
    pace: &mut Pace,
    closed_by_peer: &mut bool,
    closing: bool,
    out: &mut impl FnMut(Action),
) {
    if !pace.admit(&received, || now) {
        // Over a rate limit: nothing is taken from now on (`after_receive`), but the
        // peer's close still completes the closing handshake.
        *closed_by_peer |= matches!(received, Received::Close(..));
        return;
    }
    match received {
        Received::Text(text) => out(Action::Text(text)),
        Received::Binary(data) => out(Action::Binary(data)),
        Received::Ping(payload) => {
            if !closing && !*closed_by_peer {
                out(Action::Send(OutFrame::new(frame::OP_PONG, payload)));
            }
        }
        Received::Pong(payload) => {
            if let Some(micros) = heartbeat.pong(&payload, now) {
                out(Action::RoundTrip(micros));
            }
        }
        Received::Close(code, reason) => {
            *closed_by_peer = true;
            // Answer with the same code, unless a close of ours is already on its way.
            out(Action::Close(code, reason));
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_size: 1 << 20,
            ping_interval: Some(Duration::from_secs(10)),
            ping_timeout: Some(Duration::from_secs(5)),
            close_timeout: Duration::from_secs(2),
            idle_timeout: None,
        }
    }

    /// A client frame: masked, as RFC 6455 requires of clients.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn run(protocol: &mut Protocol, data: &[u8], now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        protocol.receive(data, now, &mut |a| actions.push(a));
        actions
    }

    fn tick(protocol: &mut Protocol, now: Instant, caught_up: bool) -> Vec<Action> {
        let mut actions = Vec::new();
        protocol.tick(now, || caught_up, &mut |a| actions.push(a));
        actions
    }

    #[test]
    fn a_text_message_is_delivered() {
        let now = Instant::now();
        let mut p = Protocol::new(limits(), RateLimits::default(), now);
        let actions = run(&mut p, &client_frame(true, frame::OP_TEXT, b"hello"), now);
        assert!(matches!(&actions[..], [Action::Text(t)] if t.as_str() == "hello"));
        assert!(p.wants_read());
    }

    #[test]
    fn a_message_split_anywhere_is_delivered_once() {
        let now = Instant::now();
        let bytes = client_frame(true, frame::OP_BINARY, &[7; 300]);
        for cut in 1..bytes.len() {
            let mut p = Protocol::new(limits(), RateLimits::default(), now);
            let mut actions = run(&mut p, &bytes[..cut], now);
            actions.extend(run(&mut p, &bytes[cut..], now));
            assert!(
                matches!(&actions[..], [Action::Binary(b)] if b.len() == 300),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn a_ping_is_answered_with_a_pong_of_the_same_payload() {
        let now = Instant::now();
        let mut p = Protocol::new(limits(), RateLimits::default(), now);
        let actions = run(&mut p, &client_frame(true, frame::OP_PING, b"abc"), now);
        match &actions[..] {
            [Action::Send(pong)] => {
                assert_eq!(pong.head()[0] & 0x0F, frame::OP_PONG);
                assert_eq!(&pong.payload[..], b"abc");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_peers_close_is_echoed_and_the_socket_dropped_once_it_is_written() {
        let now = Instant::now();
        let mut p = Protocol::new(limits(), RateLimits::default(), now);
        let mut payload = 4000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let actions = run(&mut p, &client_frame(true, frame::OP_CLOSE, &payload), now);
        assert!(matches!(&actions[..], [Action::Close(4000, r)] if r == "bye"));
        assert!(!p.wants_read());
        assert!(p.is_closing());
        let mut after = Vec::new();
        p.close_written(&mut |a| after.push(a));
        assert!(matches!(&after[..], [Action::Stop]));
        assert!(!p.wants_write());
    }

    #[test]
    fn a_ping_after_the_peers_close_gets_no_pong() {
        let now = Instant::now();
        let mut p = Protocol::new(limits(), RateLimits::default(), now);
        let mut bytes = client_frame(true, frame::OP_CLOSE, &1000u16.to_be_bytes());
        bytes.extend(client_frame(true, frame::OP_PING, b"late"));
        let actions = run(&mut p, &bytes, now);
        assert!(matches!(&actions[..], [Action::Close(1000, _)]));
    }

    #[test]
    fn our_close_answered_by_the_peer_stops() {
        let now = Instant::now();
        let mut p = Protocol::new(limits(), RateLimits::default(), now);
        p.start_closing(now);
        p.close_written(&mut |_| panic!("nothing to do yet"));
        let actions = run(
            &mut p,
            &client_frame(true, frame::OP_CLOSE, &1000u16.to_be_bytes()),
            now,
        );
        assert!(matches!(
            &actions[..],
            [Action::Close(1000, _), Action::Stop]
        ));
    }

    #[test]
    fn a_closing_handshake_that_takes_too_long_drops_the_socket() {
        let now = Instant::now();
        let mut p = Protocol::new(limits(), RateLimits::default(), now);
        p.start_closing(now);
        assert_eq!(p.next_deadline(), Some(now + Duration::from_secs(2)));
        assert!(tick(&mut p, now + Duration::from_secs(1), false).is_empty());
        assert!(matches!(
            &tick(&mut p, now + Duration::from_secs(2), false)[..],
            [Action::Stop]
        ));
    }

    #[test]
    fn a_violation_waits_for_the_handler_then_closes() {
        let now = Instant::now();
        let mut p = Protocol::new(limits(), RateLimits::default(), now);
        let mut bytes = client_frame(true, frame::OP_TEXT, b"first");
        bytes.extend([0x83, 0x80, 0, 0, 0, 0]); // reserved opcode 3
        let actions = run(&mut p, &bytes, now);
        assert!(matches!(
            &actions[..],
            [Action::Text(_), Action::Violated(1002, _)]
        ));
        assert!(!p.wants_read());
        assert!(p.holds_failure());
        // The handler has not taken "first" yet: nothing.
        assert!(tick(&mut p, now, false).is_empty());
        // It has, and parked on the next receive: the close goes out.
        let actions = tick(&mut p, now, true);
        assert!(matches!(&actions[..], [Action::Close(1002, _)]));
        let mut after = Vec::new();
        p.close_written(&mut |a| after.push(a));
        assert!(matches!(&after[..], [Action::Stop]));
    }

    #[test]
    fn a_held_violation_closes_after_the_grace_anyway() {
        let now = Instant::now();
        let mut p = Protocol::new(limits(), RateLimits::default(), now);
        run(&mut p, &[0x81, 0x05, b'h', b'e', b'l', b'l', b'o'], now); // unmasked
        let grace = p.next_deadline().unwrap();
        assert!(grace <= now + FAIL_GRACE);
        assert!(matches!(
            &tick(&mut p, grace, false)[..],
            [Action::Close(1002, _)]
        ));
    }

    #[test]
    fn invalid_utf8_closes_with_1007_and_oversize_with_1009() {
        let now = Instant::now();
        let mut p = Protocol::new(limits(), RateLimits::default(), now);
        let actions = run(&mut p, &client_frame(false, frame::OP_TEXT, &[0xff]), now);
        assert!(matches!(&actions[..], [Action::Violated(1007, _)]));
        let mut small = limits();
        small.max_size = 10;
        let mut p = Protocol::new(small, RateLimits::default(), now);
        let actions = run(&mut p, &client_frame(true, frame::OP_BINARY, &[0; 11]), now);
        assert!(matches!(&actions[..], [Action::Violated(1009, _)]));
    }

    #[test]
    fn pings_are_sent_on_schedule_and_an_unanswered_one_closes_with_1011() {
        let now = Instant::now();
        let mut p = Protocol::new(limits(), RateLimits::default(), now);
        assert_eq!(p.next_deadline(), Some(now + Duration::from_secs(10)));
        let at = now + Duration::from_secs(10);
        let ping = tick(&mut p, at, false);
        assert!(matches!(&ping[..], [Action::Send(f)] if f.head()[0] & 0x0F == frame::OP_PING));
        assert_eq!(p.next_deadline(), Some(at + Duration::from_secs(5)));
        let late = tick(&mut p, at + Duration::from_secs(5), false);
        assert!(matches!(&late[..], [Action::Close(1011, _)]));
        assert!(p.is_closing());
    }

    #[test]
    fn a_pong_answers_the_ping_and_measures_the_round_trip() {
        let now = Instant::now();
        let mut p = Protocol::new(limits(), RateLimits::default(), now);
        let at = now + Duration::from_secs(10);
        let Action::Send(ping) = tick(&mut p, at, false).pop().unwrap() else {
            panic!("no ping");
        };
        let back = at + Duration::from_millis(3);
        let actions = run(
            &mut p,
            &client_frame(true, frame::OP_PONG, &ping.payload),
            back,
        );
        assert!(matches!(&actions[..], [Action::RoundTrip(us)] if (2900..=3100).contains(us)));
        // Answered: no timeout, the next ping is due on schedule.
        assert!(tick(&mut p, at + Duration::from_secs(5), false).is_empty());
        assert_eq!(p.next_deadline(), Some(at + Duration::from_secs(10)));
    }

    #[test]
    fn a_write_stuck_past_the_ping_timeout_loses_the_connection() {
        let now = Instant::now();
        let mut p = Protocol::new(limits(), RateLimits::default(), now);
        p.set_write_blocked(true);
        let deadline = p.next_deadline().unwrap();
        assert_eq!(deadline, now + Duration::from_secs(10));
        let at = now + Duration::from_secs(15);
        let actions = tick(&mut p, at, false);
        assert!(matches!(
            &actions[..],
            [Action::Lost(1011, _), Action::Stop]
        ));
    }

    #[test]
    fn eof_without_a_close_is_1006() {
        let now = Instant::now();
        let mut p = Protocol::new(limits(), RateLimits::default(), now);
        let mut actions = Vec::new();
        p.peer_gone(&mut |a| actions.push(a));
        assert!(matches!(
            &actions[..],
            [Action::Lost(1006, _), Action::Stop]
        ));
    }
}
