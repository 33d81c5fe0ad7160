//! The IO of one accepted WebSocket: one future that owns the TCP socket, reads and
//! writes it, and keeps the heartbeat.
//!
//! Reading goes into a per-thread scratch buffer that the frame decoder consumes, so an
//! idle socket holds no read buffer; a large payload is read straight into its own
//! buffer. Messages go to the bounded inbox (reading stops while it is full, so TCP
//! pushes back). Writing goes through `ConnShared::write_queued`: up to 64 queued frames
//! per `writev`, headers and shared payloads side by side. When the peer breaks the
//! protocol, reading stops and the close is held until the handler has answered the
//! messages that came before the violation (or for a short grace). Nothing here takes
//! the GIL: Python learns about everything through `ConnShared` and the bridge.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::bridge::LOG_INFO;
use crate::connection::{ConnShared, Incoming};
use crate::frame::{self, Decoder, OutFrame, Received, Violation};
use crate::heartbeat::{self, Beat, Heartbeat};

/// How long a protocol error's close waits at most for the handler to answer the messages
/// that arrived complete before the error (never longer than `close_timeout`).
const FAIL_GRACE: Duration = Duration::from_secs(1);

/// Size of each IO thread's read buffer, shared by all its sockets.
const SCRATCH: usize = 64 * 1024;

thread_local! {
    static SCRATCH_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Run the connection until it ends; `read_ahead` is what the HTTP layer read past the
/// handshake.
pub async fn run(shared: Arc<ConnShared>, tcp: TcpStream, read_ahead: Bytes) {
    let tcp = Arc::new(tcp);
    shared.attach_socket(Some(tcp.clone()));
    let mut io = Io::new(shared.clone(), tcp);
    if !read_ahead.is_empty() {
        io.decode(&read_ahead);
    }
    // It may be a view of hyper's whole read buffer: let that go before the socket idles.
    drop(read_ahead);
    io.await;
    // The socket is dropped here; a connection that has not ended yet was lost.
    shared.attach_socket(None);
    shared.end(1006, "connection lost");
}

/// A violation of the peer's, whose close waits until the handler has answered what came
/// before it.
struct Failure {
    code: u16,
    reason: &'static str,
    deadline: Instant,
}

enum ReadState {
    Open,
    /// The peer sent its close, broke the protocol or went away: nothing more to read.
    Done,
}

struct Io {
    shared: Arc<ConnShared>,
    tcp: Arc<TcpStream>,
    decoder: Decoder,
    reading: ReadState,
    /// A close frame went out: after it, nothing else is written.
    close_sent: bool,
    /// The connection ends once the close frame is written (peer's close answered, or a
    /// protocol error).
    finish_after_close: bool,
    /// The peer broke the protocol; the close goes out once the handler caught up.
    failure: Option<Failure>,
    heartbeat: Heartbeat,
    /// When a closing handshake started: the socket is dropped `close_timeout` later.
    closing_deadline: Option<Instant>,
    /// A write has been pending since: bounded by the heartbeat's write deadline.
    write_blocked: bool,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
}

impl Io {
    fn new(shared: Arc<ConnShared>, tcp: Arc<TcpStream>) -> Self {
        let heartbeat = Heartbeat::new(&shared.server.config);
        let decoder = Decoder::new(shared.server.config.ws_max_size);
        Self {
            shared,
            tcp,
            decoder,
            reading: ReadState::Open,
            close_sent: false,
            finish_after_close: false,
            failure: None,
            heartbeat,
            closing_deadline: None,
            write_blocked: false,
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            timer_at: None,
        }
    }

    /// Decode bytes read from the socket; a violation closes the connection.
    fn decode(&mut self, data: &[u8]) {
        let shared = &self.shared;
        let mut closed_by_peer = false;
        let result = self.decoder.feed(data, &mut |received| {
            handle(shared, received, &mut closed_by_peer)
        });
        self.after_decode(result, closed_by_peer);
    }

    fn after_decode(&mut self, result: Result<(), Violation>, closed_by_peer: bool) {
        if closed_by_peer {
            self.reading = ReadState::Done;
            if self.close_sent {
                // Our close was answered: the closing handshake is complete.
                self.shared.stop();
            } else {
                self.finish_after_close = true;
            }
        }
        if let Err(violation) = result {
            let (code, reason) = violation.close();
            self.shared.server.bridge.log(
                LOG_INFO,
                format!(
                    "closing connection {} with {code}: {reason}",
                    self.shared.id
                ),
            );
            // Nothing after the violation is read. What came complete before it is in the
            // inbox: the close waits for the handler's answers to it (`fail_when_caught_up`).
            self.reading = ReadState::Done;
            self.finish_after_close = true;
            let grace = FAIL_GRACE.min(self.shared.server.config.close_timeout);
            self.failure = Some(Failure {
                code,
                reason,
                deadline: Instant::now() + grace,
            });
            self.fail_when_caught_up();
        }
    }

    /// Send a pending violation's close once the handler has taken every message and
    /// parked on the next receive (so its replies are queued before the close), or once
    /// the grace is over.
    fn fail_when_caught_up(&mut self) {
        let Some(failure) = &self.failure else {
            return;
        };
        if Instant::now() >= failure.deadline || self.shared.receiver_caught_up() {
            self.shared.close(failure.code, failure.reason);
            self.failure = None;
        }
    }

    /// Read until the socket has nothing more or the inbox is full.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if !matches!(self.reading, ReadState::Open) || self.shared.inbox_is_full() {
                return Poll::Pending;
            }
            match self.tcp.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => {
                    self.reading = ReadState::Done;
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(())) => {}
            }
            let missing = self.decoder.direct_missing();
            let read = if let Some(buffer) = self.decoder.direct_buffer() {
                // Never past the frame's end: what follows belongs to the next frame.
                let read = self.tcp.try_read_buf(&mut (&mut *buffer).limit(missing));
                if matches!(read, Ok(n) if n > 0) {
                    let shared = &self.shared;
                    let mut closed_by_peer = false;
                    let result = self
                        .decoder
                        .feed_direct(&mut |received| handle(shared, received, &mut closed_by_peer));
                    self.after_decode(result, closed_by_peer);
                }
                read
            } else {
                SCRATCH_BUFFER.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    let read = read_drained(&self.tcp, &mut scratch);
                    if let Ok(n) = read {
                        self.decode(&scratch[..n]);
                    }
                    read
                })
            };
            match read {
                // The readiness was stale; polling it again registers for the next.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Ok(0) | Err(_) => {
                    // The peer closed TCP or the socket failed.
                    self.reading = ReadState::Done;
                    return Poll::Ready(());
                }
                Ok(_) => {}
            }
        }
    }

    /// Write queued frames until the outbox is empty or the socket is full.
    /// `Ready(())` means the socket failed.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while !self.close_sent {
            match self.shared.write_queued(true) {
                Ok(written) => {
                    if written.close_sent {
                        self.close_sent = true;
                        if self.finish_after_close {
                            self.shared.stop();
                        }
                    }
                    if !written.more {
                        self.write_blocked = false;
                        return Poll::Pending;
                    }
                }
                // Full: wait for room (polling readiness registers for it).
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    match self.tcp.poll_write_ready(cx) {
                        Poll::Pending => {
                            self.write_blocked = true;
                            return Poll::Pending;
                        }
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(_)) => return Poll::Ready(()),
                    }
                }
                Err(_) => return Poll::Ready(()),
            }
        }
        Poll::Pending
    }

    /// The heartbeat, the write deadline and the closing deadline.
    fn poll_timers(&mut self, cx: &mut Context<'_>) {
        // Each round moves a deadline forward; a few rounds always settle.
        for _ in 0..4 {
            let mut next = self.heartbeat.next_check();
            if self.write_blocked {
                next = earliest(next, self.heartbeat.write_deadline());
            }
            next = earliest(next, self.closing_deadline);
            next = earliest(next, self.failure.as_ref().map(|failure| failure.deadline));
            if next != self.timer_at {
                self.timer_at = next;
                if let Some(at) = next {
                    self.timer.as_mut().reset(at);
                }
            }
            if self.timer_at.is_none() || self.timer.as_mut().poll(cx).is_pending() {
                return;
            }
            let now = Instant::now();
            self.fail_when_caught_up();
            if self.closing_deadline.is_some_and(|at| now >= at) {
                self.shared.stop();
                return;
            }
            if self.write_blocked && self.heartbeat.write_deadline().is_some_and(|at| now >= at) {
                // A write stuck this long: the peer is gone.
                self.shared.end(1011, "keepalive ping timeout");
                self.shared.stop();
                return;
            }
            match self.heartbeat.check(&self.shared) {
                Beat::Ping(payload) => self
                    .shared
                    .enqueue_control(OutFrame::new(frame::OP_PING, payload.into())),
                Beat::TimedOut => {
                    // The close frame's write must not inherit the expired deadline.
                    self.heartbeat.disable();
                    self.shared.close(1011, "keepalive ping timeout");
                }
                Beat::Idle => {}
            }
            // The timer fired: it must be set again (or cleared) before returning.
            self.timer_at = None;
        }
    }
}

impl Future for Io {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let io = self.get_mut();
        io.shared.register_io(cx.waker());
        if io.shared.is_stopped() {
            return Poll::Ready(());
        }
        io.fail_when_caught_up();
        if io.poll_read(cx).is_ready() {
            // The peer went away: answering is no longer possible.
            if !io.close_sent {
                io.shared.end(1006, "connection lost");
            }
            return Poll::Ready(());
        }
        if io.poll_write(cx).is_ready() {
            io.shared.end(1006, "connection lost");
            return Poll::Ready(());
        }
        if io.shared.is_closing() && io.closing_deadline.is_none() {
            io.closing_deadline = Some(Instant::now() + io.shared.server.config.close_timeout);
            io.heartbeat.disable();
        }
        io.poll_timers(cx);
        // Writing or a timer may have stopped the connection. A frame a timer queued (a
        // ping, a close) woke this task through the outbox: it is written next poll.
        if io.shared.is_stopped() {
            Poll::Ready(())
        } else {
            Poll::Pending
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

/// Read into `buf`. A short read means the socket is drained: its read readiness is
/// cleared right away, as tokio's own `poll_read` does, instead of being learned from one
/// more `recv` that fails. `try_io` clears only the readiness it saw before the read, so
/// data that arrives meanwhile is not missed.
fn read_drained(tcp: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let fd = tcp.as_raw_fd();
    let mut got = 0;
    let result = tcp.try_io(Interest::READABLE, || {
        // SAFETY: `buf` is valid for `buf.len()` bytes and `fd` is this stream's socket.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        got = n as usize;
        if got > 0 && got < buf.len() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(got)
    });
    match result {
        Err(error) if error.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}

/// What one decoded message or control frame does to the connection.
fn handle(shared: &Arc<ConnShared>, received: Received, closed_by_peer: &mut bool) {
    match received {
        Received::Text(text) => shared.deliver(Incoming::Text(text)),
        Received::Binary(data) => shared.deliver(Incoming::Binary(data)),
        Received::Ping(payload) => {
            if !shared.is_closing() {
                shared.enqueue_control(OutFrame::new(frame::OP_PONG, payload));
            }
        }
        Received::Pong(payload) => heartbeat::pong(shared, &payload),
        Received::Close(code, reason) => {
            *closed_by_peer = true;
            // Answer with the same code, unless a close of ours is already on its way.
            shared.close(code, &reason);
        }
    }
}
