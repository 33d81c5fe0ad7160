//! The loop thread's door: it accepts on the listening socket and reads what each new
//! connection sends first, in the poller's epoll set.
//!
//! A connection whose first bytes are the complete head of a WebSocket upgrade is answered
//! on this thread: the head is taken off the socket (`Arrival::Upgrade`), the server runs
//! the handler, and the handler's answer is written here (`accept`, `refuse`); an accepted
//! socket becomes one of the poller's sessions without leaving the epoll set. Everything
//! else — a plain HTTP request, a head that comes in pieces, a malformed one, any TLS
//! connection — is handed over untouched (`Arrival::HandOver`) for hyper to serve on the
//! IO threads: the head was only peeked at. A connection that sends nothing is closed at
//! `handshake_timeout`, as hyper closes one that never finishes its head.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Request;
use parking_lot::Mutex;

use crate::http1::{self, Head};
use crate::listener::{Ends, Listener};
use crate::poller::Poller;
use crate::socket::Socket;

/// The epoll token of the listening socket.
pub const LISTEN_TOKEN: u64 = u64::MAX;
/// The epoll token of the gate's timer (connection ids stay below 2^53).
pub const TIMER_TOKEN: u64 = u64::MAX - 1;

/// Connections accepted per readiness report; more wait for the next round.
const ACCEPT_BATCH: usize = 64;

/// How long accepting pauses after it failed (out of descriptors, usually).
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// What the gate found, for the server to act on.
pub enum Arrival {
    /// The head of a WebSocket upgrade, taken off the socket, which waits here for the
    /// handler's answer under `id`.
    Upgrade {
        id: u64,
        request: Box<Request<()>>,
        ends: Ends,
    },
    /// A connection for hyper, as it was sent; its first head may take `left` more.
    HandOver {
        fd: OwnedFd,
        ends: Ends,
        unix: bool,
        left: Duration,
    },
    /// Accepting failed; it resumes after a pause.
    AcceptFailed(io::Error),
}

pub struct Gate {
    poller: Arc<Poller>,
    handshake_timeout: Duration,
    max_header_size: usize,
    max_headers: usize,
    /// Under TLS every connection is hyper's (the TLS handshake runs on the IO threads).
    hand_over_all: bool,
    side: Mutex<GateSide>,
}

struct GateSide {
    listener: Option<Listener>,
    /// The listener's address when it is bound to one (see `Listener::fixed_local`).
    local: Option<SocketAddr>,
    /// The listener is in the epoll set (not paused or stopped).
    watched: bool,
    /// When a paused listener is watched again.
    resume_at: Option<Instant>,
    /// Accepted, nothing read yet.
    fresh: HashMap<u64, Fresh>,
    /// Their deadlines, in accept order (so in deadline order); stale entries are skipped.
    deadlines: VecDeque<(Instant, u64)>,
    /// Upgrades whose handler has not answered yet.
    deciding: HashMap<u64, OwnedFd>,
    timer: OwnedFd,
    /// What the timer is set for.
    armed: Option<Instant>,
    /// Peeked heads land here.
    head: Box<[u8]>,
}

struct Fresh {
    fd: OwnedFd,
    ends: Ends,
    deadline: Instant,
}

impl Gate {
    pub fn new(
        poller: Arc<Poller>,
        handshake_timeout: Duration,
        max_header_size: usize,
        max_headers: usize,
        hand_over_all: bool,
    ) -> io::Result<Self> {
        // SAFETY: timerfd_create returns a new descriptor or -1.
        let timer = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if timer < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let timer = unsafe { OwnedFd::from_raw_fd(timer) };
        poller.watch(timer.as_raw_fd(), TIMER_TOKEN, libc::EPOLLIN as u32)?;
        Ok(Self {
            poller,
            handshake_timeout,
            max_header_size,
            max_headers,
            hand_over_all,
            side: Mutex::new(GateSide {
                listener: None,
                local: None,
                watched: false,
                resume_at: None,
                fresh: HashMap::new(),
                deadlines: VecDeque::new(),
                deciding: HashMap::new(),
                timer,
                armed: None,
                // One byte past the limit tells a head over it from one at it.
                head: vec![0; max_header_size + 1].into_boxed_slice(),
            }),
        })
    }

    /// Start accepting on `listener`.
    pub fn listen(&self, listener: Listener) -> io::Result<()> {
        let mut side = self.side.lock();
        side.local = listener.fixed_local();
        side.listener = Some(listener);
        self.watch_listener(&mut side)
    }

    /// Stop accepting and close what has not sent a head yet (the server shuts down).
    pub fn stop_listening(&self) {
        let mut side = self.side.lock();
        self.unwatch_listener(&mut side);
        side.listener = None;
        side.resume_at = None;
        let fresh = std::mem::take(&mut side.fresh);
        for (_, fresh) in fresh {
            self.poller.unwatch(fresh.fd.as_raw_fd());
        }
        side.deadlines.clear();
    }

    /// The upgrades still waiting for their handler's answer.
    pub fn deciding(&self) -> Vec<u64> {
        self.side.lock().deciding.keys().copied().collect()
    }

    /// Drop everything (the loop is going away).
    pub fn stop(&self) {
        self.stop_listening();
        let deciding = std::mem::take(&mut self.side.lock().deciding);
        for (_, fd) in deciding {
            self.poller.unwatch(fd.as_raw_fd());
        }
    }

    /// Act on the readiness the poller reported for the gate's descriptors (tokens it does
    /// not own: `ready` may hold some that are no longer anyone's).
    pub fn serve(&self, ready: &[(u64, u32)], arrivals: &mut Vec<Arrival>) {
        let mut side = self.side.lock();
        let side = &mut *side;
        let now = Instant::now();
        for &(token, _) in ready {
            match token {
                LISTEN_TOKEN => self.take_connections(side, now, arrivals),
                TIMER_TOKEN => self.on_timer(side, now),
                id => {
                    if side.fresh.contains_key(&id) {
                        self.read_head(side, id, now, arrivals);
                    }
                }
            }
        }
        self.arm(side, now);
    }

    /// Write the 101 of upgrade `id`; the socket, still in the epoll set, is the
    /// poller's from here on. `Err` when the client is gone.
    pub fn accept(&self, id: u64, response: &[u8]) -> io::Result<Socket> {
        let fd = self
            .side
            .lock()
            .deciding
            .remove(&id)
            .ok_or(io::ErrorKind::NotConnected)?;
        match write_all(fd.as_raw_fd(), response) {
            Ok(()) => Socket::new(fd),
            Err(error) => {
                self.poller.unwatch(fd.as_raw_fd());
                Err(error)
            }
        }
    }

    /// Answer upgrade `id` with `response` instead, and close it; false if it was gone.
    pub fn refuse(&self, id: u64, response: &[u8]) -> bool {
        let Some(fd) = self.side.lock().deciding.remove(&id) else {
            return false;
        };
        let written = write_all(fd.as_raw_fd(), response).is_ok();
        // SAFETY: shutdown on a descriptor we own; the close that follows sends the FIN.
        unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) };
        self.poller.unwatch(fd.as_raw_fd());
        written
    }

    fn take_connections(&self, side: &mut GateSide, now: Instant, arrivals: &mut Vec<Arrival>) {
        let first_new = side.deadlines.len();
        self.accept_batch(side, now, arrivals);
        // A client sends its head right behind the connect: it is often here already,
        // and reading it now saves the loop a turn.
        for index in first_new..side.deadlines.len() {
            let id = side.deadlines[index].1;
            if side.fresh.contains_key(&id) {
                self.read_head(side, id, now, arrivals);
            }
        }
    }

    fn accept_batch(&self, side: &mut GateSide, now: Instant, arrivals: &mut Vec<Arrival>) {
        let Some(listener) = &side.listener else {
            return;
        };
        for _ in 0..ACCEPT_BATCH {
            let (fd, ends) = match listener.accept(side.local) {
                Ok(accepted) => accepted,
                Err(error) => match error.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
                    _ => {
                        // Out of descriptors or similar: say so, pause, keep serving.
                        self.unwatch_listener(side);
                        side.resume_at = Some(now + ACCEPT_PAUSE);
                        arrivals.push(Arrival::AcceptFailed(error));
                        return;
                    }
                },
            };
            if self.hand_over_all {
                arrivals.push(Arrival::HandOver {
                    fd,
                    ends,
                    unix: listener.is_unix(),
                    left: self.handshake_timeout,
                });
                continue;
            }
            let id = crate::node::next_id();
            if self.poller.watch_socket(fd.as_raw_fd(), id).is_err() {
                continue; // dropped: the client sees its connection closed
            }
            let deadline = now + self.handshake_timeout;
            side.deadlines.push_back((deadline, id));
            side.fresh.insert(id, Fresh { fd, ends, deadline });
        }
    }

    /// Peek at what connection `id` sent: an upgrade's complete head is taken and the
    /// upgrade goes to the server; anything else goes to hyper as it is.
    fn read_head(&self, side: &mut GateSide, id: u64, now: Instant, arrivals: &mut Vec<Arrival>) {
        let fresh = &side.fresh[&id];
        let raw = fresh.fd.as_raw_fd();
        let buffer = &mut side.head;
        // SAFETY: `buffer` is valid for its length; MSG_PEEK leaves the bytes queued.
        let n = unsafe {
            libc::recv(
                raw,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                libc::MSG_PEEK,
            )
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            if matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) {
                return;
            }
        }
        if n <= 0 {
            // Closed (or reset) before it said anything.
            let fresh = side.fresh.remove(&id).expect("looked up");
            self.poller.unwatch(fresh.fd.as_raw_fd());
            return;
        }
        let head = http1::parse(
            &buffer[..n as usize],
            self.max_header_size,
            self.max_headers,
        );
        let fresh = side.fresh.remove(&id).expect("looked up");
        match head {
            Head::Upgrade { request, len } => {
                // SAFETY: as above; the head's bytes are queued, so this takes exactly them.
                let taken = unsafe { libc::recv(raw, buffer.as_mut_ptr().cast(), len, 0) };
                if taken != len as isize {
                    self.poller.unwatch(raw);
                    return;
                }
                side.deciding.insert(id, fresh.fd);
                arrivals.push(Arrival::Upgrade {
                    id,
                    request,
                    ends: fresh.ends,
                });
            }
            Head::Partial | Head::Other => {
                self.poller.unwatch(raw);
                arrivals.push(Arrival::HandOver {
                    fd: fresh.fd,
                    ends: fresh.ends,
                    unix: side.listener.as_ref().is_some_and(Listener::is_unix),
                    left: fresh.deadline.saturating_duration_since(now),
                });
            }
        }
    }

    fn on_timer(&self, side: &mut GateSide, now: Instant) {
        let mut expirations = [0u8; 8];
        // SAFETY: reading a timerfd's 8-byte count into a buffer of that size.
        unsafe { libc::read(side.timer.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
        side.armed = None;
        while let Some(&(deadline, id)) = side.deadlines.front() {
            if deadline > now {
                break;
            }
            side.deadlines.pop_front();
            if side.fresh.get(&id).is_some_and(|f| f.deadline == deadline) {
                // Closed without a response, as hyper closes a head that never ends.
                let fresh = side.fresh.remove(&id).expect("looked up");
                self.poller.unwatch(fresh.fd.as_raw_fd());
            }
        }
        if side.resume_at.is_some_and(|at| at <= now) {
            side.resume_at = None;
            let _ = self.watch_listener(side);
        }
    }

    /// Set the timer for the earliest deadline, unless it is already set for one before.
    fn arm(&self, side: &mut GateSide, now: Instant) {
        while let Some(&(deadline, id)) = side.deadlines.front() {
            if side.fresh.get(&id).is_some_and(|f| f.deadline == deadline) {
                break;
            }
            side.deadlines.pop_front();
        }
        let next = side.deadlines.front().map(|&(at, _)| at);
        let Some(at) = [next, side.resume_at].into_iter().flatten().min() else {
            return;
        };
        if side.armed.is_some_and(|armed| armed <= at) {
            return;
        }
        // At least a nanosecond: zero would disarm it.
        let delay = at
            .saturating_duration_since(now)
            .max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: delay.as_secs() as libc::time_t,
                tv_nsec: delay.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: a timerfd we own and a valid itimerspec.
        if unsafe { libc::timerfd_settime(side.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) }
            == 0
        {
            side.armed = Some(at);
        }
    }

    fn watch_listener(&self, side: &mut GateSide) -> io::Result<()> {
        let Some(listener) = &side.listener else {
            return Ok(());
        };
        if !side.watched {
            // Level-triggered (what is not accepted now is reported again); with workers
            // sharing the socket, one of them is woken per connection, not all.
            self.poller.watch(
                listener.fd(),
                LISTEN_TOKEN,
                (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
            )?;
            side.watched = true;
        }
        Ok(())
    }

    fn unwatch_listener(&self, side: &mut GateSide) {
        if let (true, Some(listener)) = (side.watched, &side.listener) {
            self.poller.unwatch(listener.fd());
            side.watched = false;
        }
    }
}

/// Write all of `bytes` to a fresh connection's socket, which has room for a response
/// head; a short write counts as a failure.
fn write_all(fd: RawFd, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: `bytes` is valid for its length; MSG_NOSIGNAL: no SIGPIPE if the peer left.
    let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
    match n {
        n if n < 0 => Err(io::Error::last_os_error()),
        n if n as usize == bytes.len() => Ok(()),
        _ => Err(io::ErrorKind::WriteZero.into()),
    }
}
