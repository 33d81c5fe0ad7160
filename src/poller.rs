//! The loop thread's own sockets: one epoll set per server, watched by the event loop.
//!
//! After the handshake, tokio hands the socket over (`Poller::adopt`). The poller's epoll
//! fd is registered once with the loop (`loop.add_reader(poll_fd, Server.poll)`); when it
//! is ready, `poll` reads every ready socket, feeds its `Protocol`, fills the inboxes and
//! resolves the parked receives right there, and writes what the sockets have room for:
//! one Python callback per batch of ready sockets, no thread woken per message. Sockets
//! are registered edge-triggered for reading and writing, once; a socket is read until it
//! is drained or its inbox is full (the inbox's reader wakes the poller again when it has
//! taken half).
//!
//! Other threads reach a socket's driver only to wake it (a close to write, stop): the
//! connection's waker lists it and writes the poller's eventfd, which sits in the same
//! epoll set. Heartbeats and closing deadlines live in one timer heap; at most one
//! `loop.call_later` is armed, for the earliest deadline.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use parking_lot::Mutex;
use pyo3::prelude::*;

use crate::bridge::{Bridge, LOG_INFO};
use crate::connection::{ConnShared, Incoming};
use crate::protocol::{Action, Limits, Protocol};
use crate::ratelimit::RateLimits;
use crate::socket::Socket;
use crate::waiter;

/// Size of the poller's read buffer, shared by all its sockets.
const SCRATCH: usize = 64 * 1024;

/// Events taken per `epoll_wait`; more stay ready and make the loop call again.
const EVENTS: usize = 256;

/// The epoll token of the poller's own eventfd (connection ids are never 0).
const WAKE_TOKEN: u64 = 0;

/// How a session's socket is watched: reading and writing, edge-triggered, once.
const SESSION_EVENTS: u32 =
    (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

/// The timer heap's entry for returning freed memory (no connection has this id).
const TRIM_TOKEN: u64 = 0;

/// How long after the last adopted socket the allocator's free memory is given back.
const TRIM_AFTER: Duration = Duration::from_millis(500);

/// A socket whose handshake is done, with what the HTTP layer read past it and the rate
/// limits of its route (or the server's).
struct Adoption {
    shared: Arc<ConnShared>,
    socket: Socket,
    read_ahead: Bytes,
    rates: RateLimits,
}

/// What other threads hand the poller.
enum Nudge {
    Adopt(Adoption),
    /// A connection's driver has something to do.
    Wake(u64),
}

pub struct Poller {
    epoll: OwnedFd,
    nudges: Bridge<Nudge>,
    limits: Limits,
    /// The loop's `call_later` and the server's `on_timer`.
    timer: OnceLock<(Py<PyAny>, Py<PyAny>)>,
    /// Loop-thread state; the lock is only ever taken there (uncontended).
    side: Mutex<LoopSide>,
    this: Weak<Poller>,
}

struct LoopSide {
    /// Boxed: the map's spare slots then cost a pointer each, not a whole session.
    sessions: HashMap<u64, Box<Session>>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The deadline the armed `call_later` fires for.
    armed: Option<Instant>,
    /// When the free-memory entry in `timers` is due, if there is one.
    trim_at: Option<Instant>,
    /// When the last socket was adopted.
    adopted_at: Option<Instant>,
    events: Vec<libc::epoll_event>,
    nudges: Vec<Nudge>,
    scratch: Box<[u8]>,
    /// Connections whose parked receive can now finish.
    to_resolve: Vec<Arc<ConnShared>>,
    actions: Vec<Action>,
}

/// One socket as the poller drives it.
struct Session {
    shared: Arc<ConnShared>,
    socket: Arc<Socket>,
    protocol: Protocol,
    /// Its read readiness was reported and it has not been drained since.
    readable: bool,
    /// The deadline this session has in the timer heap.
    timer_at: Option<Instant>,
    wake: Arc<SessionWake>,
}

/// A connection's waker: lists it once with the poller.
struct SessionWake {
    id: u64,
    listed: AtomicBool,
    poller: Weak<Poller>,
}

impl Wake for SessionWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.listed.swap(true, Ordering::AcqRel) {
            if let Some(poller) = self.poller.upgrade() {
                poller.nudges.push(Nudge::Wake(self.id));
            }
        }
    }
}

impl Poller {
    pub fn new(limits: Limits) -> io::Result<Arc<Self>> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let nudges = Bridge::new()?;
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: WAKE_TOKEN,
        };
        // SAFETY: both descriptors are valid; `event` outlives the call.
        if unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, nudges.fd(), &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new_cyclic(|this| Self {
            epoll,
            nudges,
            limits,
            timer: OnceLock::new(),
            side: Mutex::new(LoopSide {
                sessions: HashMap::new(),
                timers: BinaryHeap::new(),
                armed: None,
                trim_at: None,
                adopted_at: None,
                events: Vec::with_capacity(EVENTS),
                nudges: Vec::new(),
                scratch: vec![0; SCRATCH].into_boxed_slice(),
                to_resolve: Vec::new(),
                actions: Vec::new(),
            }),
            this: this.clone(),
        }))
    }

    /// The descriptor the loop watches: readable when a socket or a nudge is ready.
    pub fn fd(&self) -> i32 {
        self.epoll.as_raw_fd()
    }

    /// Set once the loop is known: how to arm the timer.
    pub fn set_timer(&self, call_later: Py<PyAny>, on_timer: Py<PyAny>) {
        let _ = self.timer.set((call_later, on_timer));
    }

    /// Add `fd` to the epoll set under `token` (the gate's listener, timer and fresh
    /// connections: `poll` hands their readiness back to its caller).
    pub fn watch(&self, fd: i32, token: u64, events: u32) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: both descriptors are valid; `event` outlives the call.
        if unsafe { libc::epoll_ctl(self.fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Add a connection's socket as a session's is watched, before it is one: `adopt_here`
    /// then keeps the registration.
    pub fn watch_socket(&self, fd: i32, id: u64) -> io::Result<()> {
        self.watch(fd, id, SESSION_EVENTS)
    }

    pub fn unwatch(&self, fd: i32) {
        // SAFETY: both descriptors are valid; a null event is allowed for DEL.
        unsafe { libc::epoll_ctl(self.fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }

    /// Take over a socket upgraded on the loop thread, already watched (`watch_socket`).
    pub fn adopt_here(
        &self,
        py: Python<'_>,
        shared: Arc<ConnShared>,
        socket: Socket,
        rates: RateLimits,
    ) -> PyResult<()> {
        let mut guard = self.side.lock();
        let side = &mut *guard;
        let adoption = Adoption {
            shared,
            socket,
            read_ahead: Bytes::new(),
            rates,
        };
        self.start(side, adoption, Instant::now(), true);
        let armed = self.finish_round(py, side);
        let ready = std::mem::take(&mut side.to_resolve);
        drop(guard);
        // Inside the handler's task (its accept): the woken tasks run later.
        self.wake(py, ready, false).and(armed)
    }

    /// Take over an upgraded socket (from any thread).
    /// `rates` are its route's rate limits (or the server's).
    pub fn adopt(
        &self,
        shared: Arc<ConnShared>,
        socket: Socket,
        read_ahead: Bytes,
        rates: RateLimits,
    ) {
        self.nudges.push(Nudge::Adopt(Adoption {
            shared,
            socket,
            read_ahead,
            rates,
        }));
    }

    /// The loop's reader callback: serve every ready socket and nudge. The readiness of
    /// descriptors that are not sessions (`watch`) goes to `others`.
    pub fn poll(&self, py: Python<'_>, others: &mut Vec<(u64, u32)>) -> PyResult<()> {
        let mut guard = self.side.lock();
        let side = &mut *guard;
        side.events.clear();
        // SAFETY: the buffer has room for EVENTS entries; timeout 0 never blocks.
        let n = unsafe {
            libc::epoll_wait(
                self.fd(),
                side.events.as_mut_ptr(),
                EVENTS as libc::c_int,
                0,
            )
        };
        if n > 0 {
            // SAFETY: epoll_wait initialised the first n entries.
            unsafe { side.events.set_len(n as usize) };
        }
        let now = Instant::now();
        for index in 0..side.events.len() {
            let libc::epoll_event { events, u64: token } = side.events[index];
            if token == WAKE_TOKEN {
                self.nudges.take(&mut side.nudges);
                let mut nudges = std::mem::take(&mut side.nudges);
                for nudge in nudges.drain(..) {
                    match nudge {
                        Nudge::Adopt(adoption) => self.start(side, adoption, now, false),
                        Nudge::Wake(id) => {
                            if let Some(session) = side.sessions.get(&id) {
                                session.wake.listed.store(false, Ordering::Release);
                                self.serve(side, id, now);
                            }
                        }
                    }
                }
                side.nudges = nudges;
                continue;
            }
            let Some(session) = side.sessions.get_mut(&token) else {
                // Not a session: the gate's (or one dropped earlier in this batch).
                others.push((token, events));
                continue;
            };
            let hangup =
                (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
            if events & hangup != 0 {
                session.readable = true;
            }
            self.serve(side, token, now);
        }
        let armed = self.finish_round(py, side);
        let ready = std::mem::take(&mut side.to_resolve);
        drop(guard);
        self.wake(py, ready, true).and(armed)
    }

    /// `call_later`'s callback: run the sessions whose deadline has come.
    pub fn on_timer(&self, py: Python<'_>) -> PyResult<()> {
        let mut guard = self.side.lock();
        let side = &mut *guard;
        side.armed = None;
        let now = Instant::now();
        while let Some(&Reverse((at, id))) = side.timers.peek() {
            if at > now {
                break;
            }
            side.timers.pop();
            if id == TRIM_TOKEN {
                if side.trim_at == Some(at) {
                    side.trim_at = None;
                    self.trim_when_quiet(side, now);
                }
                continue;
            }
            // An entry for a deadline since moved is stale: the session has another.
            if side
                .sessions
                .get(&id)
                .is_some_and(|s| s.timer_at == Some(at))
            {
                side.sessions.get_mut(&id).expect("checked").timer_at = None;
                self.serve(side, id, now);
            }
        }
        let armed = self.finish_round(py, side);
        let ready = std::mem::take(&mut side.to_resolve);
        drop(guard);
        self.wake(py, ready, true).and(armed)
    }

    /// Wake the receives parked on `ready` (see `waiter::wake` for `now`), with the loop
    /// side unlocked: the tasks woken may call back into the engine. An error is reported
    /// once every receive was woken.
    fn wake(&self, py: Python<'_>, mut ready: Vec<Arc<ConnShared>>, now: bool) -> PyResult<()> {
        let mut result = Ok(());
        for conn in ready.drain(..) {
            let waiter = conn.waiters.lock().receive.take();
            if let Err(error) = waiter::wake(py, waiter, now) {
                if result.is_ok() {
                    result = Err(error);
                }
            }
        }
        // Keep the buffer for the next round.
        let mut side = self.side.lock();
        if side.to_resolve.is_empty() {
            side.to_resolve = ready;
        }
        result
    }

    /// Drop every socket (the loop is going away); their connections end with 1006.
    pub fn stop_all(&self) {
        let sessions = std::mem::take(&mut self.side.lock().sessions);
        for (_, session) in sessions {
            self.forget_socket(&session);
        }
    }

    fn start(&self, side: &mut LoopSide, adoption: Adoption, now: Instant, watched: bool) {
        let Adoption {
            shared,
            socket,
            read_ahead,
            rates,
        } = adoption;
        let id = shared.id;
        if !watched && self.watch_socket(socket.fd(), id).is_err() {
            shared.end(1006, "the socket could not be watched");
            return;
        }
        let wake = Arc::new(SessionWake {
            id,
            listed: AtomicBool::new(false),
            poller: self.this.clone(),
        });
        let socket = Arc::new(socket);
        shared.attach_socket(Some(socket.clone()), Some(Waker::from(wake.clone())));
        let mut session = Box::new(Session {
            shared,
            socket,
            protocol: Protocol::new(self.limits, rates, now),
            readable: true,
            timer_at: None,
            wake,
        });
        if !read_ahead.is_empty() {
            session
                .protocol
                .receive(&read_ahead, now, &mut |action| side.actions.push(action));
        }
        side.sessions.insert(id, session);
        side.adopted_at = Some(now);
        if side.trim_at.is_none() {
            let due = now + TRIM_AFTER;
            side.trim_at = Some(due);
            side.timers.push(Reverse((due, TRIM_TOKEN)));
        }
        if self.apply(side, id, now) {
            self.serve(side, id, now);
        }
    }

    /// Do everything the session can do now: its timers, reading, writing.
    fn serve(&self, side: &mut LoopSide, id: u64, now: Instant) {
        let LoopSide {
            sessions,
            scratch,
            actions,
            to_resolve,
            ..
        } = side;
        let Some(session) = sessions.get_mut(&id) else {
            return;
        };
        let alive = session.run(now, scratch, actions, to_resolve);
        if !alive {
            self.drop_session(side, id);
            return;
        }
        self.schedule(side, id);
    }

    /// Carry out the actions `start` collected.
    fn apply(&self, side: &mut LoopSide, id: u64, now: Instant) -> bool {
        let LoopSide {
            sessions,
            actions,
            to_resolve,
            ..
        } = side;
        let session = sessions.get_mut(&id).expect("just started");
        if session.carry_out(actions, to_resolve, now) {
            return true;
        }
        self.drop_session(side, id);
        false
    }

    /// Put the session's next deadline in the heap if it moved.
    fn schedule(&self, side: &mut LoopSide, id: u64) {
        let session = side.sessions.get_mut(&id).expect("served");
        let next = session.protocol.next_deadline();
        if next != session.timer_at {
            session.timer_at = next;
            if let Some(at) = next {
                side.timers.push(Reverse((at, id)));
            }
        }
    }

    /// Once no socket has been adopted for `TRIM_AFTER`, give the allocator's free memory
    /// back to the system; until then, look again when that much time has passed since
    /// the last one. Each handshake leaves freed buffers behind (hyper's, on the IO
    /// threads), which glibc keeps resident: after a burst of handshakes that was about
    /// 1.7 MiB for 1 000 idle connections, more than their own state.
    fn trim_when_quiet(&self, side: &mut LoopSide, now: Instant) {
        let Some(adopted_at) = side.adopted_at else {
            return;
        };
        let due = adopted_at + TRIM_AFTER;
        if now < due {
            side.trim_at = Some(due);
            side.timers.push(Reverse((due, TRIM_TOKEN)));
            return;
        }
        side.adopted_at = None;
        release_free_memory();
    }

    fn drop_session(&self, side: &mut LoopSide, id: u64) {
        if let Some(session) = side.sessions.remove(&id) {
            self.forget_socket(&session);
        }
    }

    fn forget_socket(&self, session: &Session) {
        self.unwatch(session.socket.fd());
        session.shared.attach_socket(None, None);
        // A connection that has not ended yet was lost.
        session.shared.end(1006, "connection lost");
    }

    /// After a round: arm the timer for the earliest deadline (the receives that can
    /// finish are woken once the loop side is unlocked).
    fn finish_round(&self, py: Python<'_>, side: &mut LoopSide) -> PyResult<()> {
        // Drop stale heap entries from the top, then arm for the first live one.
        while let Some(&Reverse((at, id))) = side.timers.peek() {
            let live = if id == TRIM_TOKEN {
                side.trim_at == Some(at)
            } else {
                side.sessions
                    .get(&id)
                    .is_some_and(|s| s.timer_at == Some(at))
            };
            if live {
                break;
            }
            side.timers.pop();
        }
        let Some(&Reverse((at, _))) = side.timers.peek() else {
            return Ok(());
        };
        if side.armed.is_some_and(|armed| armed <= at) {
            return Ok(());
        }
        if let Some((call_later, on_timer)) = self.timer.get() {
            let delay = at.saturating_duration_since(Instant::now()).as_secs_f64();
            call_later.call1(py, (delay, on_timer))?;
            side.armed = Some(at);
        }
        Ok(())
    }
}

/// Return the allocator's free pages to the system (glibc: `malloc_trim`, which also
/// releases free pages inside its heaps, not only at their top).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop_all();
    }
}

impl Session {
    /// Timers, reading, writing; false once the socket is to be dropped.
    fn run(
        &mut self,
        now: Instant,
        scratch: &mut [u8],
        actions: &mut Vec<Action>,
        to_resolve: &mut Vec<Arc<ConnShared>>,
    ) -> bool {
        if self.shared.is_stopped() {
            return false;
        }
        if self.shared.is_closing() {
            self.protocol.start_closing(now);
        }
        if !self.tick(now, actions, to_resolve) || !self.read(now, scratch, actions, to_resolve) {
            return false;
        }
        // A violation just read: its close goes at once if the handler has caught up, and
        // otherwise the handler's next wait on an empty inbox wakes the driver.
        if self.protocol.holds_failure() && !self.tick(now, actions, to_resolve) {
            return false;
        }
        self.write(actions);
        self.carry_out(actions, to_resolve, now)
    }

    /// Run what is due: timers, and a held violation's close.
    fn tick(
        &mut self,
        now: Instant,
        actions: &mut Vec<Action>,
        to_resolve: &mut Vec<Arc<ConnShared>>,
    ) -> bool {
        if !self.protocol.holds_failure() && self.protocol.next_deadline().is_none_or(|at| at > now)
        {
            return true;
        }
        let shared = &self.shared;
        self.protocol
            .tick(now, || shared.receiver_caught_up(), &mut |a| {
                actions.push(a)
            });
        self.carry_out(actions, to_resolve, now)
    }

    /// Read until the socket is drained or the inbox is full, delivering as it goes.
    fn read(
        &mut self,
        now: Instant,
        scratch: &mut [u8],
        actions: &mut Vec<Action>,
        to_resolve: &mut Vec<Arc<ConnShared>>,
    ) -> bool {
        while self.readable && self.protocol.wants_read() && !self.shared.inbox_is_full() {
            let missing = self.protocol.direct_missing();
            let (read, asked) = if let Some(buffer) = self.protocol.direct_buffer() {
                // Never past the frame's end: what follows belongs to the next frame.
                let room = buffer.spare_capacity_mut();
                let asked = missing.min(room.len());
                // SAFETY: `recv` writes at most `asked` bytes into the spare capacity.
                let spare =
                    unsafe { std::slice::from_raw_parts_mut(room.as_mut_ptr().cast(), asked) };
                let read = self.socket.recv(spare);
                if let Ok(n) = read {
                    // SAFETY: `recv` initialised the first n bytes.
                    unsafe { buffer.advance_mut(n) };
                    if n > 0 {
                        self.protocol
                            .received_direct(now, &mut |action| actions.push(action));
                    }
                }
                (read, asked)
            } else {
                let read = self.socket.recv(scratch);
                if let Ok(n) = read {
                    self.protocol
                        .receive(&scratch[..n], now, &mut |action| actions.push(action));
                }
                (read, scratch.len())
            };
            match read {
                Ok(0) => self.protocol.peer_gone(&mut |action| actions.push(action)),
                // A short read drained the socket: the next edge says when there is more.
                Ok(n) if n < asked && self.socket.short_read_drains() => self.readable = false,
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.protocol.peer_gone(&mut |action| actions.push(action)),
            }
            // Deliver before reading on: the inbox limit counts what was delivered.
            if !self.carry_out(actions, to_resolve, now) {
                return false;
            }
        }
        true
    }

    /// Write queued frames until the outbox is empty or the socket is full.
    fn write(&mut self, actions: &mut Vec<Action>) {
        while self.protocol.wants_write() {
            match self.shared.write_queued(true) {
                Ok(written) => {
                    if written.close_sent {
                        self.protocol
                            .close_written(&mut |action| actions.push(action));
                    }
                    if !written.more {
                        self.protocol.set_write_blocked(false);
                        return;
                    }
                }
                // Full: the next writable edge says when there is room.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.protocol.set_write_blocked(true);
                    return;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.protocol
                        .write_failed(&mut |action| actions.push(action));
                    return;
                }
            }
        }
    }

    /// Carry out the protocol's actions; false if the socket is to be dropped.
    fn carry_out(
        &mut self,
        actions: &mut Vec<Action>,
        to_resolve: &mut Vec<Arc<ConnShared>>,
        now: Instant,
    ) -> bool {
        let shared = &self.shared;
        let mut alive = true;
        let mut actions = actions.drain(..).peekable();
        while let Some(action) = actions.next() {
            match action {
                Action::Text(_) | Action::Binary(_) => {
                    // This message and the ones right behind it go in together.
                    let first = std::iter::once(action);
                    let rest = std::iter::from_fn(|| actions.next_if(is_message));
                    if shared.deliver(first.chain(rest).filter_map(into_message)) {
                        to_resolve.push(shared.clone());
                    }
                }
                Action::Send(frame) => shared.enqueue_control(frame),
                Action::Close(code, reason) => {
                    shared.close(code, &reason);
                    self.protocol.start_closing(now);
                }
                Action::Violated(code, reason) => {
                    shared.hold_failure(code, reason);
                    shared.log(
                        LOG_INFO,
                        format!("closing connection {} with {code}: {reason}", shared.id),
                    );
                }
                Action::RoundTrip(micros) => {
                    shared.latency_us.store(micros, Ordering::Relaxed);
                    crate::stats::record_rtt(micros);
                }
                Action::Lost(code, reason) => {
                    shared.end(code, reason);
                }
                Action::Stop => alive = false,
            }
        }
        alive
    }
}

/// A data message for the handler.
fn is_message(action: &Action) -> bool {
    matches!(action, Action::Text(_) | Action::Binary(_))
}

fn into_message(action: Action) -> Option<Incoming> {
    match action {
        Action::Text(text) => Some(Incoming::Text(text)),
        Action::Binary(data) => Some(Incoming::Binary(data)),
        _ => None,
    }
}
