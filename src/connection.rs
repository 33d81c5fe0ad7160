//! The state one WebSocket shares between its driver, the registries and the Python
//! `Connection`.
//!
//! The driver (`poller.rs`, on the loop thread) fills the bounded inbox; Python drains it.
//! Python and the registries fill the outbox; whoever queued writes it at once if the
//! socket takes it, and the driver writes the rest when the socket has room. `end` records
//! how the connection ended, exactly once, and from then on every receive and send sees
//! that close code. This module never takes the GIL: parked Python futures are stored here
//! but only touched by `Server.drain`, the driver and the awaitables, all on the loop
//! thread.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use pyo3::prelude::*;

use crate::bridge::LOG_DEBUG;
use crate::frame::{OutFrame, Text};
use crate::ratelimit::{self, OwedPong};
use crate::socket::Socket;
use crate::stats::{self, counter};

/// What a connection needs of the server it belongs to. The server implements it; the
/// connection knows nothing else of it.
pub trait Owner: Send + Sync {
    /// A receive (or, with `send`, a send) parked on `conn` may finish: have its future
    /// resolved on the loop thread. Called from any thread.
    fn wake(&self, conn: Arc<ConnShared>, send: bool);
    /// A line for Python's `logging` (level as in `logging`).
    fn log(&self, level: i32, message: String);
    /// Whether a line at `level` would be logged: check before formatting one on a path
    /// every connection takes.
    fn logs(&self, level: i32) -> bool;
    /// The connection ended: it is no longer one of the server's.
    fn forget(&self, id: u64);
}

/// Something a connection belongs to and leaves when it ends (a registry).
pub trait Membership: Send + Sync {
    fn forget(&self, id: u64);
}

/// The limits of a connection's queues.
#[derive(Clone, Copy, Debug)]
pub struct Buffers {
    /// Bytes the inbox holds before the driver stops reading (one larger message is taken
    /// alone).
    pub inbox_limit: usize,
    /// Bytes the outbox holds before sends park and broadcasts apply their policy.
    pub outbox_limit: usize,
    /// How long an outbox over its limit may go without a byte written before its socket
    /// is closed with 1013 (`slow.rs`).
    pub slow_consumer_timeout: Duration,
}

fn progress_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Now on the clock `progress_at` uses: nanoseconds since its epoch.
pub fn progress_now() -> u64 {
    progress_epoch().elapsed().as_nanos() as u64
}

/// The instant of a `progress_now` reading.
pub fn progress_instant(nanos: u64) -> Instant {
    progress_epoch() + Duration::from_nanos(nanos)
}

pub enum Incoming {
    Text(Text),
    Binary(Bytes),
}

impl Incoming {
    fn len(&self) -> usize {
        match self {
            Incoming::Text(text) => text.len(),
            Incoming::Binary(data) => data.len(),
        }
    }

    fn size(&self) -> usize {
        self.len().max(MESSAGE_FLOOR)
    }
}

/// Every message counts as at least this many bytes against the inbox and outbox limits,
/// so that a flood of empty messages is bounded too.
const MESSAGE_FLOOR: usize = 16;

/// Queue slots an inbox or outbox keeps once a burst has drained.
const IDLE_QUEUE_CAPACITY: usize = 16;

/// Queue `item`. A queue without a buffer gets room for one only (`push_back` would make
/// four): most sockets hold one message at a time, and idle ones are the many. A second
/// message means a burst: it gets `IDLE_QUEUE_CAPACITY` slots at once instead of growing
/// through 2, 4 and 8, a reallocation each.
fn push_back<T>(queue: &mut VecDeque<T>, item: T) {
    let capacity = queue.capacity();
    if queue.len() == capacity {
        let wanted = if capacity == 0 {
            1
        } else {
            IDLE_QUEUE_CAPACITY.max(2 * capacity)
        };
        queue.reserve_exact(wanted - queue.len());
    }
    queue.push_back(item);
}

/// Drop an empty queue's buffer.
fn release_if_empty<T>(queue: &mut VecDeque<T>) {
    if queue.is_empty() && queue.capacity() > 0 {
        *queue = VecDeque::new();
    }
}

/// Frames written per `writev` at most, and bytes: enough to amortise the syscall, small
/// enough that one busy socket does not hold its writer for long.
const BATCH_FRAMES: usize = 64;
const BATCH_BYTES: usize = 256 * 1024;

/// A queued frame and the bytes it counts for against the outbox limit (0 for a close).
struct Outgoing {
    frame: OutFrame,
    size: usize,
}

/// What one `write_queued` did.
pub struct Written {
    /// The close frame went out: nothing after it is ever written.
    pub close_sent: bool,
    /// Frames are still queued.
    pub more: bool,
    /// Something was handed to the socket.
    pub wrote: bool,
}

/// How the connection ended: the close code and reason the handler sees.
#[derive(Clone, Debug)]
pub struct CloseInfo {
    pub code: u16,
    pub reason: String,
}

pub enum Received {
    Message(Incoming),
    Ended(CloseInfo),
    /// Nothing yet; the driver resolves the parked future when something arrives.
    Empty,
}

/// Frames waiting for the socket, and the socket.
///
/// Whoever holds the lock writes the front of the queue, without blocking: the loop
/// thread for frames handlers sent (one `writev` per socket after the ready handlers have
/// run), a registry's fan-out thread for what it offered, the driver for control frames,
/// closes and whatever the socket could not take before. The lock keeps the writers in
/// order.
struct Outbox {
    queue: VecDeque<Outgoing>,
    /// The socket, while the driver has it; `None` before and after.
    socket: Option<Arc<Socket>>,
    /// Where the one pong owed to the peer waits, if one does.
    owed_pong: OwedPong,
    /// The peer broke the protocol and the driver holds its close (`protocol.rs`): a
    /// close asked for meanwhile, by the handler or anyone, sends this code instead, since
    /// the violation came first.
    held_failure: Option<(u16, &'static str)>,
}

struct Inbox {
    queue: VecDeque<Incoming>,
    /// Bytes of the queued messages (each counted as at least `MESSAGE_FLOOR`).
    bytes: usize,
    /// Python may see the end: set by `end` after the connection left its registries.
    ended: bool,
    receiver_waiting: bool,
}

/// Python futures of awaitables parked on this connection (loop thread only).
#[derive(Default)]
pub struct Waiters {
    pub receive: Option<Py<PyAny>>,
    pub send: Option<Py<PyAny>>,
}

pub struct ConnShared {
    pub id: u64,
    owner: Arc<dyn Owner>,
    pub buffers: Buffers,
    inbox: Mutex<Inbox>,
    outbox: Mutex<Outbox>,
    outbox_bytes: AtomicUsize,
    /// Wakes the connection's driver: a close to write, room in the inbox, or stop. Set
    /// once, when the driver takes the socket; a wake before that is not needed, since the
    /// driver looks at everything when it starts.
    io_waker: OnceLock<std::task::Waker>,
    /// On the server's list of sockets to flush from the loop thread.
    flush_listed: AtomicBool,
    sender_waiting: AtomicBool,
    /// The driver holds back a close until the handler has taken every message and asks
    /// for the next: wake it when the handler parks on an empty inbox.
    io_awaits_receiver: AtomicBool,
    /// How the connection ended; set once, by the first `end` (boxed: a live socket
    /// carries one pointer for it).
    closed: OnceLock<Box<CloseInfo>>,
    /// The end is visible to Python (receive, send, states); set after `closed`.
    ended: AtomicBool,
    /// The handler has been told of the end (a disconnect message or exception); a
    /// receive after that is a misuse.
    disconnect_delivered: AtomicBool,
    /// Set to drop the socket at once (the driver sees it when woken).
    stopped: AtomicBool,
    pub waiters: Mutex<Waiters>,
    /// Last ping round-trip in microseconds; 0 until a pong came back.
    pub latency_us: AtomicU64,
    memberships: Mutex<Vec<Weak<dyn Membership>>>,
    /// When a write last moved bytes of the outbox (`progress_now`): a socket over its
    /// limit that makes no progress for `slow_consumer_timeout` is closed (`slow.rs`).
    progress_at: AtomicU64,
    /// Made the first time a writer waits for this outbox: most sockets never fill theirs.
    stall: OnceLock<Box<Stall>>,
}

/// What waits on a full outbox (`slow.rs`).
pub struct Stall {
    /// A fan-out waits for room: notified once the outbox is under this many bytes
    /// (stored plus one; 0 when nobody waits).
    room_wanted: AtomicUsize,
    pub room: tokio::sync::Notify,
    /// A task watches a send parked past the outbox limit (`slow::watch_send`).
    pub send_watch: AtomicBool,
}

impl ConnShared {
    pub fn new(id: u64, owner: Arc<dyn Owner>, buffers: Buffers) -> Arc<Self> {
        Arc::new(Self {
            id,
            owner,
            buffers,
            inbox: Mutex::new(Inbox {
                queue: VecDeque::new(),
                bytes: 0,
                ended: false,
                receiver_waiting: false,
            }),
            outbox: Mutex::new(Outbox {
                queue: VecDeque::new(),
                socket: None,
                owed_pong: OwedPong::default(),
                held_failure: None,
            }),
            outbox_bytes: AtomicUsize::new(0),
            io_waker: OnceLock::new(),
            flush_listed: AtomicBool::new(false),
            sender_waiting: AtomicBool::new(false),
            io_awaits_receiver: AtomicBool::new(false),
            closed: OnceLock::new(),
            ended: AtomicBool::new(false),
            disconnect_delivered: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            waiters: Mutex::new(Waiters::default()),
            latency_us: AtomicU64::new(0),
            memberships: Mutex::new(Vec::new()),
            progress_at: AtomicU64::new(0),
            stall: OnceLock::new(),
        })
    }

    /// A receive has reported the end to the handler.
    pub fn note_disconnect_delivered(&self) {
        self.disconnect_delivered.store(true, Ordering::Release);
    }

    pub fn disconnect_delivered(&self) -> bool {
        self.disconnect_delivered.load(Ordering::Acquire)
    }

    /// The end is visible to the handler: receives and sends report it.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// The connection is ending: registries stop offering it messages.
    pub fn is_closing(&self) -> bool {
        self.closed.get().is_some()
    }

    pub fn close_info(&self) -> Option<CloseInfo> {
        self.closed.get().map(|info| CloseInfo::clone(info))
    }

    // ---- inbox: the driver → Python ----

    pub fn inbox_is_full(&self) -> bool {
        self.inbox.lock().bytes >= self.buffers.inbox_limit
    }

    /// Called by the driver with the data messages one read decoded, in order: one lock
    /// and one count for them all. Returns whether a receive is parked on them (the
    /// driver then resolves its future).
    pub fn deliver(&self, messages: impl Iterator<Item = Incoming>) -> bool {
        let mut inbox = self.inbox.lock();
        let (mut count, mut bytes) = (0, 0);
        for message in messages {
            count += 1;
            bytes += message.len() as u64;
            inbox.bytes += message.size();
            push_back(&mut inbox.queue, message);
        }
        let parked = count > 0 && std::mem::take(&mut inbox.receiver_waiting);
        drop(inbox);
        stats::add(&counter::messages_received, count);
        stats::add(&counter::bytes_received, bytes);
        parked
    }

    /// Called by Python: the next message, the end, or `Empty` (and then the caller parks).
    pub fn try_receive(&self) -> Received {
        let mut inbox = self.inbox.lock();
        if let Some(message) = inbox.queue.pop_front() {
            // Wake a reader waiting on a full inbox only once it is half empty, so that it
            // refills in bulk: one cross-thread wake-up per half inbox, not per message.
            let low_water = self.buffers.inbox_limit / 2;
            let before = inbox.bytes;
            inbox.bytes -= message.size();
            let reader_may_refill = before > low_water && inbox.bytes <= low_water;
            if inbox.queue.is_empty() && inbox.queue.capacity() > IDLE_QUEUE_CAPACITY {
                // A burst is over: give its memory back, idle sockets stay small.
                inbox.queue.shrink_to(IDLE_QUEUE_CAPACITY);
            }
            drop(inbox);
            if reader_may_refill {
                self.wake_io();
            }
            return Received::Message(message);
        }
        if inbox.ended {
            return Received::Ended(self.close_info().unwrap_or_else(lost));
        }
        inbox.receiver_waiting = true;
        // The handler parks: the socket may stay idle for long, so it keeps no queue
        // memory (the next message allocates a few slots again).
        release_if_empty(&mut inbox.queue);
        drop(inbox);
        if let Some(mut outbox) = self.outbox.try_lock() {
            release_if_empty(&mut outbox.queue);
        }
        if self.io_awaits_receiver.load(Ordering::Acquire) {
            self.wake_io();
        }
        Received::Empty
    }

    /// Called by the driver: has the handler taken every delivered message and parked on
    /// the next receive? Until it has, the replies to those messages may still come. If
    /// not, the driver is woken when it parks.
    pub fn receiver_caught_up(&self) -> bool {
        self.io_awaits_receiver.store(true, Ordering::Release);
        let inbox = self.inbox.lock();
        inbox.queue.is_empty() && inbox.receiver_waiting
    }

    // ---- outbox: Python, registries and the driver → the socket ----

    /// Queue a frame; returns the bytes now queued, and whether the queue was empty
    /// before it. Counted before a writer can see it, so that its `written` never runs
    /// first.
    fn push(&self, frame: OutFrame) -> (usize, bool) {
        let size = frame_size(&frame);
        let queued = self.outbox_bytes.fetch_add(size, Ordering::AcqRel) + size;
        let mut outbox = self.outbox.lock();
        let was_empty = outbox.queue.is_empty();
        push_back(&mut outbox.queue, Outgoing { frame, size });
        (queued, was_empty)
    }

    /// Queue a frame sent on the loop thread: the caller counts it and has
    /// the server flush it (`flush_from_loop`) once the ready handlers have run. Returns
    /// the bytes now queued.
    pub fn enqueue(&self, frame: OutFrame) -> Result<usize, CloseInfo> {
        if self.is_ended() {
            return Err(self.close_info().unwrap_or_else(lost));
        }
        Ok(self.push(frame).0)
    }

    /// Whether this socket still has to be put on the server's flush list.
    pub fn needs_flush(&self) -> bool {
        // Looked at first: once listed, the sends after the first cost no atomic swap.
        !self.flush_listed.load(Ordering::Acquire)
            && !self.flush_listed.swap(true, Ordering::AcqRel)
    }

    /// Called on the loop thread: write what handlers queued.
    pub fn flush_from_loop(self: &Arc<Self>) {
        self.flush_listed.store(false, Ordering::Release);
        self.write_now();
    }

    /// Write what is queued from this thread, as far as the socket takes it. What a full
    /// socket leaves is written by the driver when the socket has room (its readiness
    /// says so, no wake-up needed); a close frame, or a failed socket, is the driver's
    /// business, so it is woken for those.
    pub fn write_now(self: &Arc<Self>) {
        loop {
            match self.write_queued(false) {
                Ok(Written { more: false, .. }) => return,
                // Partly written: once more, so that a full socket is seen as full.
                Ok(Written {
                    more: true,
                    wrote: true,
                    ..
                }) => {}
                Ok(_) => break,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        self.wake_io();
    }

    /// Queue a control frame of the driver's own (pong, ping): never refused, but at most
    /// one pong is owed (`queue_pong`); the driver writes it.
    pub fn enqueue_control(&self, frame: OutFrame) {
        if ratelimit::is_unwritten_pong(&frame) {
            self.queue_pong(frame);
        } else {
            self.push(frame);
        }
    }

    /// Queue a pong. Once the outbox is over its limit (a peer that does not read), put it
    /// in place of the one still unwritten instead (RFC 6455 §5.5.3 lets the newest ping
    /// alone be answered): a ping flood costs at most `outbox_limit`, while a peer that
    /// reads gets a pong for every ping. The replaced pong keeps the size it was counted
    /// at, so the outbox's count stays exact.
    fn queue_pong(&self, frame: OutFrame) {
        let size = frame_size(&frame);
        let backed_up =
            self.outbox_bytes.load(Ordering::Acquire) + size > self.buffers.outbox_limit;
        let mut outbox = self.outbox.lock();
        let Outbox {
            queue, owed_pong, ..
        } = &mut *outbox;
        let owed = owed_pong.index(queue.len()).map(|i| &mut queue[i].frame);
        if let Some(owed) = owed.filter(|owed| backed_up && ratelimit::is_unwritten_pong(owed)) {
            *owed = frame;
            return;
        }
        self.outbox_bytes.fetch_add(size, Ordering::AcqRel);
        owed_pong.queued_at(queue.len());
        push_back(queue, Outgoing { frame, size });
    }

    /// Queue a frame only if it fits under the outbox limit (fan-out uses this; it counts
    /// the messages sent once per broadcast, not here per member). `Offer::First` means
    /// nothing was queued before it: the caller writes it (`write_now`), once for all it
    /// offered in a burst.
    pub fn offer(self: &Arc<Self>, frame: OutFrame, size: usize) -> Offer {
        self.offer_within(frame, size, false)
    }

    /// `offer`, but `Full` whenever the frame would take the outbox over its limit, even
    /// an empty one: for a burst of messages offered as one, which a member takes whole
    /// or is offered one by one.
    pub fn offer_whole(self: &Arc<Self>, frame: OutFrame, size: usize) -> Offer {
        self.offer_within(frame, size, true)
    }

    fn offer_within(self: &Arc<Self>, frame: OutFrame, size: usize, whole: bool) -> Offer {
        if self.is_closing() {
            return Offer::Ended;
        }
        let limit = self.buffers.outbox_limit;
        let queued = self.outbox_bytes.load(Ordering::Acquire);
        if queued + size > limit && (queued > 0 || whole) {
            return Offer::Full;
        }
        if self.push(frame).1 {
            // Nothing was ahead of it: the caller writes it, no thread woken. Frames
            // ahead of it are being written by whoever queued them, or wait for the
            // socket to have room; this one goes with them.
            return Offer::First;
        }
        Offer::Queued
    }

    /// Write the front of the queue with one non-blocking `writev` (up to `BATCH_FRAMES`
    /// frames and `BATCH_BYTES`), drop the frames written and trim a partly written one.
    /// `through_close` lets the write include a close frame (the driver's); otherwise it
    /// stops before one. `WouldBlock` means the socket is full; without a socket (before
    /// or after the driver has it) nothing is written.
    pub fn write_queued(self: &Arc<Self>, through_close: bool) -> io::Result<Written> {
        let mut outbox = self.outbox.lock();
        let Outbox {
            queue,
            socket,
            owed_pong,
            ..
        } = &mut *outbox;
        let Some(socket) = socket else {
            return Ok(Written {
                close_sent: false,
                more: !queue.is_empty(),
                wrote: false,
            });
        };
        // Left uninitialised: filling 128 slices before each write was a fifth of this
        // function's time in a broadcast, which writes one frame per member.
        let mut slices = [const { MaybeUninit::<IoSlice<'_>>::uninit() }; 2 * BATCH_FRAMES];
        let mut count = 0;
        let mut bytes = 0;
        for Outgoing { frame, .. } in queue.iter() {
            let stop = frame.is_close() && !through_close;
            if stop || count == slices.len() || bytes >= BATCH_BYTES {
                break;
            }
            slices[count].write(IoSlice::new(frame.head()));
            slices[count + 1].write(IoSlice::new(&frame.payload));
            count += 2;
            bytes += frame.wire_len();
        }
        let mut close_sent = false;
        let mut freed = 0;
        if count == 0 {
            // Nothing new: what TLS still holds of earlier frames goes first.
            socket.flush()?;
        } else {
            // SAFETY: the first `count` slots were written above; `MaybeUninit<IoSlice>`
            // has `IoSlice`'s layout.
            let filled =
                unsafe { std::slice::from_raw_parts(slices.as_ptr().cast::<IoSlice<'_>>(), count) };
            let mut n = socket.writev(filled)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.progress_at.store(progress_now(), Ordering::Release);
            while let Some(Outgoing { frame, size }) = queue.front_mut() {
                let len = frame.wire_len();
                if n < len {
                    if n > 0 {
                        *frame = frame.after(n);
                    }
                    break;
                }
                n -= len;
                freed += *size;
                if frame.is_close() {
                    // Nothing is sent after a close frame.
                    close_sent = true;
                    owed_pong.removed(queue.len());
                    queue.clear();
                    break;
                }
                queue.pop_front();
                owed_pong.removed(1);
            }
        }
        if queue.is_empty() && queue.capacity() > IDLE_QUEUE_CAPACITY {
            queue.shrink_to(IDLE_QUEUE_CAPACITY);
        }
        let more = !queue.is_empty() || socket.has_pending();
        drop(outbox);
        if freed > 0 {
            self.written(freed);
        }
        Ok(Written {
            close_sent,
            more,
            wrote: count > 0,
        })
    }

    /// Called by the driver as it takes the socket (`Some`, with the waker that reaches
    /// it) and as it drops it (`None`): only in between may the socket be written.
    pub fn attach_socket(&self, socket: Option<Arc<Socket>>, waker: Option<std::task::Waker>) {
        if let Some(waker) = waker {
            let _ = self.io_waker.set(waker);
        }
        self.outbox.lock().socket = socket;
    }

    /// A line for Python's `logging`, through the connection's server.
    pub fn log(&self, level: i32, message: String) {
        self.owner.log(level, message);
    }

    fn wake_io(&self) {
        if let Some(waker) = self.io_waker.get() {
            waker.wake_by_ref();
        }
    }

    pub fn outbox_over_limit(&self) -> bool {
        self.outbox_bytes.load(Ordering::Acquire) > self.buffers.outbox_limit
    }

    /// Called by Python before parking a send: is there room now? If not, ask for a wake-up.
    pub fn send_may_continue(&self) -> bool {
        if self.is_ended() {
            return true;
        }
        self.sender_waiting.store(true, Ordering::SeqCst);
        if !self.outbox_over_limit() || self.is_ended() {
            self.sender_waiting.store(false, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// Called by a writer after bytes left for the socket.
    pub fn written(self: &Arc<Self>, size: usize) {
        let left = self.outbox_bytes.fetch_sub(size, Ordering::AcqRel) - size;
        if let Some(stall) = self.stall.get() {
            if left < stall.room_wanted.load(Ordering::Acquire)
                && stall.room_wanted.swap(0, Ordering::AcqRel) != 0
            {
                stall.room.notify_waiters();
            }
        }
        if left <= self.buffers.outbox_limit / 2
            && self.sender_waiting.load(Ordering::SeqCst)
            && self.sender_waiting.swap(false, Ordering::SeqCst)
        {
            self.owner.wake(self.clone(), true);
        }
    }

    // ---- slow consumers (`slow.rs`) ----

    pub fn progress_at(&self) -> u64 {
        self.progress_at.load(Ordering::Acquire)
    }

    /// The state of writers waiting for this outbox, made on first use. A waiter that
    /// listens on `room` checks `is_closing` afterwards (`end` may not have seen it).
    pub fn stall(&self) -> &Stall {
        let stall = self.stall.get_or_init(|| {
            Box::new(Stall {
                room_wanted: AtomicUsize::new(0),
                room: tokio::sync::Notify::new(),
                send_watch: AtomicBool::new(false),
            })
        });
        // Pairs with the fence in `end`: either `end` finds this, or the waiter's next
        // `is_closing` sees the end.
        fence(Ordering::SeqCst);
        stall
    }

    /// Whether `offer` would queue `size` more bytes now.
    pub fn has_room(&self, size: usize) -> bool {
        let queued = self.outbox_bytes.load(Ordering::Acquire);
        queued == 0 || queued + size <= self.buffers.outbox_limit
    }

    /// Notify `room` once the outbox has drained far enough for `size` more bytes, and to
    /// half the limit at least, so that a waiting fan-out resumes in bulk. With several
    /// waiters the first to be satisfied wakes all; the others ask again.
    pub fn want_room(&self, size: usize) {
        let limit = self.buffers.outbox_limit;
        let below = limit.saturating_sub(size).min(limit / 2);
        self.stall()
            .room_wanted
            .fetch_max(below + 1, Ordering::AcqRel);
    }

    /// A parked send resumes from here on.
    pub fn outbox_under_half(&self) -> bool {
        self.outbox_bytes.load(Ordering::Acquire) <= self.buffers.outbox_limit / 2
    }

    /// Close without first writing what is queued: the queued frames are discarded (all
    /// but one already partly written, which must be finished) so that the close frame is
    /// next on the wire. For a socket that is not reading, and at shutdown.
    pub fn close_now(self: &Arc<Self>, code: u16, reason: &str) {
        let (code, reason) = self.closing_code(code, reason);
        if !self.end(code, reason) {
            return;
        }
        let freed = {
            let mut outbox = self.outbox.lock();
            let started = outbox.queue.front().is_some_and(|o| o.frame.is_started());
            let keep = usize::from(started);
            let mut freed = 0;
            while outbox.queue.len() > keep {
                freed += outbox.queue.pop_back().map_or(0, |o| o.size);
            }
            outbox.queue.push_back(Outgoing {
                frame: OutFrame::close(code, reason),
                size: 0,
            });
            freed
        };
        if freed > 0 {
            self.written(freed);
        }
        self.wake_io();
    }

    /// Ask the driver to send a close frame; the connection counts as ended from now on.
    /// The driver drops the socket if the closing handshake takes over `close_timeout`.
    pub fn close(self: &Arc<Self>, code: u16, reason: &str) {
        let (code, reason) = self.closing_code(code, reason);
        if self.end(code, reason) {
            self.outbox.lock().queue.push_back(Outgoing {
                frame: OutFrame::close(code, reason),
                size: 0,
            });
            self.wake_io();
        }
    }

    /// The peer broke the protocol; the driver sends its close once the handler has caught
    /// up, and any close asked for before that becomes this one.
    pub fn hold_failure(&self, code: u16, reason: &'static str) {
        self.outbox
            .lock()
            .held_failure
            .get_or_insert((code, reason));
    }

    /// The code and reason a close asked for now goes out with.
    fn closing_code<'a>(&self, code: u16, reason: &'a str) -> (u16, &'a str) {
        self.outbox.lock().held_failure.unwrap_or((code, reason))
    }

    /// Drop the socket now, without a closing handshake.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wake_io();
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Record the end of the connection. Returns true for the one call that ended it.
    ///
    /// The order matters: claim the end (registries stop offering messages), leave every
    /// registry, and only then let the handler see it — code in `except WebSocketDisconnect`
    /// must find the socket already gone from its managers.
    pub fn end(self: &Arc<Self>, code: u16, reason: &str) -> bool {
        let claimed = self.closed.set(Box::new(CloseInfo {
            code,
            reason: reason.to_owned(),
        }));
        if claimed.is_err() {
            return false;
        }
        // Take the list first: a registry locks its members, then a connection's memberships.
        let registries = std::mem::take(&mut *self.memberships.lock());
        for registry in registries {
            if let Some(registry) = registry.upgrade() {
                registry.forget(self.id);
            }
        }
        self.owner.forget(self.id);
        let (wake_receiver, wake_sender) = {
            let mut inbox = self.inbox.lock();
            inbox.ended = true;
            self.ended.store(true, Ordering::Release);
            (
                std::mem::take(&mut inbox.receiver_waiting),
                self.sender_waiting.swap(false, Ordering::SeqCst),
            )
        };
        stats::bump(&counter::connections_closed);
        stats::record_close(code);
        if wake_receiver {
            self.owner.wake(self.clone(), false);
        }
        if wake_sender {
            self.owner.wake(self.clone(), true);
        }
        // A fan-out waiting for room in this outbox stops waiting.
        fence(Ordering::SeqCst);
        if let Some(stall) = self.stall.get() {
            stall.room.notify_waiters();
        }
        if self.owner.logs(LOG_DEBUG) {
            self.owner.log(
                LOG_DEBUG,
                format!("connection {} ended with {code} {reason}", self.id),
            );
        }
        true
    }

    // ---- registries ----

    /// Remember a registry this connection belongs to, so that `end` can leave it.
    /// Returns false if the connection has already ended.
    pub fn joined(&self, registry: Weak<dyn Membership>) -> bool {
        let mut memberships = self.memberships.lock();
        if self.is_closing() {
            return false;
        }
        if !memberships.iter().any(|r| r.ptr_eq(&registry)) {
            // Most sockets belong to one registry: room for that one only.
            memberships.reserve_exact(1);
            memberships.push(registry);
        }
        true
    }

    pub fn left(&self, registry: &Weak<dyn Membership>) {
        self.memberships.lock().retain(|r| !r.ptr_eq(registry));
    }
}

pub fn lost() -> CloseInfo {
    CloseInfo {
        code: 1006,
        reason: String::new(),
    }
}

pub enum Offer {
    /// Queued first: the offerer writes it.
    First,
    Queued,
    Full,
    Ended,
}

/// Bytes a frame counts for against the outbox limit.
pub fn frame_size(frame: &OutFrame) -> usize {
    frame.payload.len().max(MESSAGE_FLOOR)
}
