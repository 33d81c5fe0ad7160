//! The native broadcast registry behind `ferrosock.ConnectionManager`.
//!
//! Members are connections, optionally in rooms. Everything a registry is asked to send —
//! broadcasts and messages to one member — goes through one FIFO to a fan-out task on the
//! IO threads, so deliveries keep the order they were asked in. A broadcast is encoded
//! once; each member gets a clone of the same bytes, offered to its outbox. A member whose
//! outbox is full is, by policy: waited for ("wait", the default: the fan-out awaits room
//! in that outbox, and the socket is closed with 1013 only once it has taken no byte for
//! `slow_consumer_timeout`, see `slow.rs`), closed with 1013 at once ("close") or skipped
//! ("drop"). Under "wait" a slower member slows this registry's deliveries, as an
//! `await send_text` per member would, but no other registry's and no thread: the wait is
//! an async one. The FIFO is bounded by the manager's backlog limit: publishers wait
//! while it is over (`ConnectionManager._keep_up`, woken through an eventfd when the
//! fan-out is half caught up, and the backend's reader). Connections
//! leave every registry by themselves when they end.
//!
//! With a broadcast backend (`pubsub.rs`) every broadcast is also published once, and what
//! other processes publish goes through the same FIFO to the local members.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use tokio::sync::mpsc;

use crate::bridge::Bridge;
use crate::connection::{frame_size, progress_now, ConnShared, Membership, Offer};
use crate::convert::{bytes_of, text_of};
use crate::envelope::{Query, Target};
use crate::frame::OutFrame;
use crate::node;
use crate::pubsub::{self, LocalMembers, Notice, QueryError};
use crate::slow::{self, Waited};
use crate::stats::{self, counter};
use crate::websocket::Connection;

/// Room names travel in a 16-bit length field when a backend carries them.
const MAX_ROOM_NAME: usize = u16::MAX as usize;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumer {
    Wait,
    Close,
    Drop,
}

struct Member {
    conn: Arc<ConnShared>,
    rooms: HashSet<String>,
}

#[derive(Default)]
struct Members {
    by_id: HashMap<u64, Member>,
    rooms: HashMap<String, HashSet<u64>>,
}

impl Members {
    /// Call `f` with each member `target` names.
    fn each(&self, target: &Target, mut f: impl FnMut(&Arc<ConnShared>)) {
        match target {
            Target::All => self.by_id.values().for_each(|m| f(&m.conn)),
            Target::Room(room) => {
                if let Some(ids) = self.rooms.get(room) {
                    ids.iter()
                        .filter_map(|id| self.by_id.get(id))
                        .for_each(|m| f(&m.conn));
                }
            }
            Target::One(id) => {
                if let Some(member) = self.by_id.get(id) {
                    f(&member.conn);
                }
            }
        }
    }

    /// Remove a member; returns it and the rooms it left empty.
    fn remove(&mut self, id: u64) -> Option<(Member, Vec<String>)> {
        let member = self.by_id.remove(&id)?;
        let emptied = member
            .rooms
            .iter()
            .filter(|room| self.leave_room(id, room))
            .cloned()
            .collect();
        Some((member, emptied))
    }

    /// True when the room is empty afterwards (and gone).
    fn leave_room(&mut self, id: u64, room: &str) -> bool {
        if let Some(ids) = self.rooms.get_mut(room) {
            ids.remove(&id);
            if ids.is_empty() {
                self.rooms.remove(room);
                return true;
            }
        }
        false
    }
}

struct Delivery {
    frame: OutFrame,
    size: usize,
    target: Target,
    exclude: Option<u64>,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    dropped: AtomicU64,
    closed_slow: AtomicU64,
    broadcasts: AtomicU64,
}

pub struct RegistryInner {
    members: Mutex<Members>,
    /// Bytes handed to the fan-out task and not yet offered to the members.
    backlog: AtomicUsize,
    /// Publishers wait while `backlog` is over this.
    backlog_limit: usize,
    /// Publishers wait for the fan-out to be half caught up: told through this eventfd
    /// (made on first use, so that forked workers never share it).
    caught_up: OnceLock<Bridge<()>>,
    publishers_waiting: AtomicBool,
    policy: SlowConsumer,
    counters: Counters,
    backend: OnceLock<Arc<pubsub::Link>>,
    queue: mpsc::UnboundedSender<Delivery>,
    /// The fan-out task starts with the first delivery, not at construction: a registry
    /// made at import time must not start IO threads in a process that forks workers.
    fan_out: Mutex<Option<mpsc::UnboundedReceiver<Delivery>>>,
    started: std::sync::Once,
    this: Weak<RegistryInner>,
}

impl Membership for RegistryInner {
    /// Called by a connection as it ends.
    fn forget(&self, id: u64) {
        let removed = self.members.lock().remove(id);
        if let Some((_, emptied)) = removed {
            self.rooms_closed(&emptied);
        }
    }
}

impl RegistryInner {
    fn rooms_closed(&self, rooms: &[String]) {
        if let Some(backend) = self.backend.get() {
            rooms.iter().for_each(|room| backend.room_closed(room));
        }
    }

    /// Hand a delivery to the fan-out task (started on first use).
    fn enqueue(&self, frame: OutFrame, target: Target, exclude: Option<u64>) {
        self.started.call_once(|| {
            if let Some(deliveries) = self.fan_out.lock().take() {
                crate::runtime::get().spawn(fan_out(self.this.clone(), deliveries));
            }
        });
        let size = frame_size(&frame);
        self.backlog.fetch_add(size, Ordering::AcqRel);
        // The fan-out task lives as long as the registry.
        let _ = self.queue.send(Delivery {
            frame,
            size,
            target,
            exclude,
        });
    }

    async fn deliver(&self, delivery: Delivery, to_write: &mut Vec<Arc<ConnShared>>) {
        let waiting = self.offer(
            &delivery.frame,
            delivery.size,
            &delivery.target,
            delivery.exclude,
            to_write,
        );
        if !waiting.is_empty() {
            // What the burst queued goes out first: a member waited for may be full of it.
            write_offered(to_write);
            self.wait_for(waiting, &delivery.frame, delivery.size).await;
        }
        self.release_backlog(delivery.size);
    }

    /// A delivery of `size` bytes is done with: publishers waiting on the backlog may go
    /// on once it is down to half its limit.
    fn release_backlog(&self, size: usize) {
        // SeqCst with the flag: `await_backlog` stores the flag, then reads the backlog.
        let left = self.backlog.fetch_sub(size, Ordering::SeqCst) - size;
        if left <= self.backlog_limit / 2
            && self.publishers_waiting.load(Ordering::SeqCst)
            && self.publishers_waiting.swap(false, Ordering::SeqCst)
        {
            if let Some(caught_up) = self.caught_up.get() {
                caught_up.push(());
            }
        }
    }

    /// Policy "wait": queue the frame to each member that was full, once it has room. The
    /// members' clocks all start now, so that several stalled members together hold the
    /// fan-out for one `slow_consumer_timeout`, not one each.
    async fn wait_for(&self, waiting: Vec<Arc<ConnShared>>, frame: &OutFrame, size: usize) {
        let since = progress_now();
        let mut delivered = 0;
        let mut closed = 0;
        for conn in waiting {
            loop {
                match slow::wait_for_room(&conn, size, since).await {
                    Waited::Room => {}
                    Waited::Ended => break,
                    Waited::Closed => {
                        closed += 1;
                        break;
                    }
                }
                // Another writer may have filled it again in between: then wait again.
                match conn.offer(frame.clone(), size) {
                    Offer::First => {
                        delivered += 1;
                        conn.write_now();
                        break;
                    }
                    Offer::Queued => {
                        delivered += 1;
                        break;
                    }
                    Offer::Full => {}
                    Offer::Ended => break,
                }
            }
        }
        self.count(frame, delivered, 0, closed);
    }

    fn count(&self, frame: &OutFrame, delivered: u64, dropped: u64, closed: u64) {
        self.count_bytes(
            delivered * frame.payload.len() as u64,
            delivered,
            dropped,
            closed,
        );
    }

    /// Count messages delivered (and `bytes` of payload with them), dropped, and members
    /// closed for being slow.
    fn count_bytes(&self, bytes: u64, delivered: u64, dropped: u64, closed: u64) {
        stats::add(&counter::messages_sent, delivered);
        stats::add(&counter::bytes_sent, bytes);
        let counters = &self.counters;
        counters.delivered.fetch_add(delivered, Ordering::Relaxed);
        counters.dropped.fetch_add(dropped, Ordering::Relaxed);
        counters.closed_slow.fetch_add(closed, Ordering::Relaxed);
    }

    /// Offer one frame to the members `target` names, by the slow-consumer policy; returns
    /// the members to wait for (policy "wait"). The members whose outbox it was first in
    /// are added to `to_write`: the caller writes each of them once, after all it offered
    /// in a burst (`write_offered`).
    fn offer(
        &self,
        frame: &OutFrame,
        size: usize,
        target: &Target,
        exclude: Option<u64>,
        to_write: &mut Vec<Arc<ConnShared>>,
    ) -> Vec<Arc<ConnShared>> {
        self.offer_to(frame, size, to_write, |offer| {
            self.members.lock().each(target, |conn| {
                if Some(conn.id) != exclude {
                    offer(conn);
                }
            });
        })
    }

    /// `offer` to the members `each` hands over (with the members lock held, if it takes
    /// it: the slow members are closed after it returns).
    fn offer_to(
        &self,
        frame: &OutFrame,
        size: usize,
        to_write: &mut Vec<Arc<ConnShared>>,
        each: impl FnOnce(&mut dyn FnMut(&Arc<ConnShared>)),
    ) -> Vec<Arc<ConnShared>> {
        let mut slow: Vec<Arc<ConnShared>> = Vec::new();
        let mut delivered = 0;
        let mut dropped = 0;
        {
            let mut offer = |conn: &Arc<ConnShared>| {
                if !took(
                    conn.offer(frame.clone(), size),
                    conn,
                    &mut delivered,
                    to_write,
                ) {
                    match self.policy {
                        SlowConsumer::Drop => dropped += 1,
                        SlowConsumer::Close | SlowConsumer::Wait => slow.push(conn.clone()),
                    }
                }
            };
            each(&mut offer);
        }
        if self.policy == SlowConsumer::Wait {
            self.count(frame, delivered, dropped, 0);
            return slow;
        }
        self.count(frame, delivered, dropped, slow.len() as u64);
        // Closing takes the members lock (the connection leaves): outside the lock above.
        for conn in slow {
            conn.close(1013, "slow consumer: outbox full");
        }
        Vec::new()
    }
}

impl RegistryInner {
    /// Deliver a burst: each run of two or more small messages for the same members goes
    /// to them as one frame of the messages' bytes back to back (`deliver_run`), the rest
    /// one by one.
    async fn deliver_burst(&self, burst: &mut Vec<Delivery>, to_write: &mut Vec<Arc<ConnShared>>) {
        let mut deliveries = burst.drain(..).peekable();
        let mut run = Vec::new();
        while let Some(first) = deliveries.next() {
            let mut wire_len = first.frame.wire_len();
            let runs = !matches!(first.target, Target::One(_)) && wire_len <= RUN_FRAME_MAX;
            run.push(first);
            while let Some(next) = deliveries.next_if(|next| {
                runs && next.target == run[0].target
                    && next.exclude == run[0].exclude
                    && next.frame.wire_len() <= RUN_FRAME_MAX
                    && wire_len + next.frame.wire_len() <= RUN_BYTES_MAX
            }) {
                wire_len += next.frame.wire_len();
                run.push(next);
            }
            if run.len() == 1 {
                self.deliver(run.pop().expect("one"), to_write).await;
            } else {
                self.deliver_run(&run, wire_len, to_write).await;
                run.clear();
            }
        }
    }

    /// Offer `run`'s messages to their members as one frame. A member whose outbox cannot
    /// take them all gets them one by one instead, each by the slow-consumer policy, as if
    /// they had come apart.
    async fn deliver_run(
        &self,
        run: &[Delivery],
        wire_len: usize,
        to_write: &mut Vec<Arc<ConnShared>>,
    ) {
        let mut wire = Vec::with_capacity(wire_len);
        run.iter().for_each(|d| d.frame.encode_into(&mut wire));
        let whole = OutFrame::encoded(wire.into());
        let size: usize = run.iter().map(|d| d.size).sum();
        let payload: u64 = run.iter().map(|d| d.frame.payload.len() as u64).sum();
        let (target, exclude) = (&run[0].target, run[0].exclude);
        let mut taken = 0;
        let mut apart = Vec::new();
        self.members.lock().each(target, |conn| {
            if Some(conn.id) == exclude {
                return;
            }
            if !took(
                conn.offer_whole(whole.clone(), size),
                conn,
                &mut taken,
                to_write,
            ) {
                apart.push(conn.clone());
            }
        });
        self.count_bytes(taken * payload, taken * run.len() as u64, 0, 0);
        for delivery in run {
            if !apart.is_empty() {
                let (frame, size) = (&delivery.frame, delivery.size);
                let waiting = self.offer_to(frame, size, to_write, |offer| {
                    apart.iter().for_each(offer);
                });
                if !waiting.is_empty() {
                    write_offered(to_write);
                    self.wait_for(waiting, frame, size).await;
                }
            }
            self.release_backlog(delivery.size);
        }
    }
}

/// A message bigger than this is never put in a run: copying it once more into the run's
/// frame would cost more than the slices it saves.
const RUN_FRAME_MAX: usize = 4096;
/// A run's frame holds at most this many bytes.
const RUN_BYTES_MAX: usize = 64 * 1024;

/// Count an offer `conn` took in `delivered`, listing `conn` in `to_write` if nothing was
/// queued ahead of it; false if its outbox was full (the caller's policy decides).
fn took(
    offer: Offer,
    conn: &Arc<ConnShared>,
    delivered: &mut u64,
    to_write: &mut Vec<Arc<ConnShared>>,
) -> bool {
    match offer {
        Offer::First => {
            *delivered += 1;
            to_write.push(conn.clone());
        }
        Offer::Queued => *delivered += 1,
        Offer::Ended => {}
        Offer::Full => return false,
    }
    true
}

/// Write the members a burst of offers reached, one `writev` each for all it queued.
fn write_offered(to_write: &mut Vec<Arc<ConnShared>>) {
    for conn in to_write.drain(..) {
        conn.write_now();
    }
}

impl LocalMembers for RegistryInner {
    fn deliver_remote(&self, frame: OutFrame, target: &Target, exclude: Option<u64>) {
        self.enqueue(frame, target.clone(), exclude);
    }

    fn backlog_full(&self) -> bool {
        self.backlog.load(Ordering::Acquire) > self.backlog_limit
    }

    fn answer(&self, query: Query, room: Option<&str>) -> Vec<u64> {
        let members = self.members.lock();
        match (query, room) {
            (Query::Count, None) => vec![members.by_id.len() as u64],
            (Query::Count, Some(room)) => {
                vec![members.rooms.get(room).map_or(0, |ids| ids.len() as u64)]
            }
            (Query::Members, None) => members.by_id.keys().copied().collect(),
            (Query::Members, Some(room)) => members
                .rooms
                .get(room)
                .map(|ids| ids.iter().copied().collect())
                .unwrap_or_default(),
        }
    }
}

/// Deliveries offered before the members are written: a burst of broadcasts costs one
/// `writev` per member, not one per message, and the first message waits for at most
/// this many others.
const BURST: usize = 64;

async fn fan_out(registry: Weak<RegistryInner>, mut queue: mpsc::UnboundedReceiver<Delivery>) {
    let mut to_write = Vec::new();
    let mut burst = Vec::new();
    while let Some(delivery) = queue.recv().await {
        let Some(registry) = registry.upgrade() else {
            return;
        };
        // Deliver whatever else is already queued with it before writing and yielding.
        burst.push(delivery);
        while burst.len() < BURST {
            match queue.try_recv() {
                Ok(delivery) => burst.push(delivery),
                Err(_) => break,
            }
        }
        registry.deliver_burst(&mut burst, &mut to_write).await;
        write_offered(&mut to_write);
    }
}

#[pyclass(frozen, module = "ferrosock._engine")]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

impl Registry {
    fn weak(&self) -> Weak<RegistryInner> {
        Arc::downgrade(&self.inner)
    }

    fn membership(&self) -> Weak<dyn Membership> {
        self.weak()
    }

    fn add_member(&self, conn: &Connection) -> bool {
        let shared = conn.shared();
        let mut members = self.inner.members.lock();
        if members.by_id.contains_key(&shared.id) {
            return true;
        }
        if !shared.joined(self.membership()) {
            return false;
        }
        members.by_id.insert(
            shared.id,
            Member {
                conn: shared.clone(),
                rooms: HashSet::new(),
            },
        );
        true
    }

    fn submit(&self, frame: OutFrame, target: Target, exclude: Option<&Connection>) {
        let exclude = exclude.map(|c| c.shared().id);
        if let Some(backend) = self.inner.backend.get() {
            backend.publish(&target, exclude, &frame);
        }
        self.submit_local(frame, target, exclude);
    }

    fn submit_local(&self, frame: OutFrame, target: Target, exclude: Option<u64>) {
        if !matches!(target, Target::One(_)) {
            self.inner
                .counters
                .broadcasts
                .fetch_add(1, Ordering::Relaxed);
        }
        self.inner.enqueue(frame, target, exclude);
    }

    /// Send to one member, here or (with a backend) on the process its id names. True
    /// when it is a member here or was handed to the backend.
    fn send_to(&self, conn_id: u64, frame: impl FnOnce() -> PyResult<OutFrame>) -> PyResult<bool> {
        if node::is_local(conn_id) {
            let known = self.inner.members.lock().by_id.contains_key(&conn_id);
            if known {
                self.submit_local(frame()?, Target::One(conn_id), None);
            }
            return Ok(known);
        }
        match self.inner.backend.get() {
            Some(backend) => {
                backend.publish(&Target::One(conn_id), None, &frame()?);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn backend(&self) -> PyResult<&Arc<pubsub::Link>> {
        self.inner
            .backend
            .get()
            .ok_or_else(|| PyRuntimeError::new_err("this manager has no broadcast backend"))
    }

    fn target(room: Option<String>) -> Target {
        room.map_or(Target::All, Target::Room)
    }
}

#[pymethods]
impl Registry {
    #[new]
    #[pyo3(signature = (*, slow_consumer, backlog_limit))]
    fn new(slow_consumer: &str, backlog_limit: usize) -> PyResult<Self> {
        let policy = match slow_consumer {
            "wait" => SlowConsumer::Wait,
            "close" => SlowConsumer::Close,
            "drop" => SlowConsumer::Drop,
            other => {
                return Err(PyValueError::new_err(format!(
                    "slow_consumer must be \"wait\", \"close\" or \"drop\", not {other:?}"
                )))
            }
        };
        let (queue, deliveries) = mpsc::unbounded_channel();
        let inner = Arc::new_cyclic(|this| RegistryInner {
            members: Mutex::new(Members::default()),
            backlog: AtomicUsize::new(0),
            backlog_limit,
            caught_up: OnceLock::new(),
            publishers_waiting: AtomicBool::new(false),
            policy,
            counters: Counters::default(),
            backend: OnceLock::new(),
            queue,
            fan_out: Mutex::new(Some(deliveries)),
            started: std::sync::Once::new(),
            this: this.clone(),
        });
        Ok(Self { inner })
    }

    fn add(&self, conn: &Connection) -> bool {
        self.add_member(conn)
    }

    fn remove(&self, conn: &Connection) {
        let id = conn.shared().id;
        let removed = self.inner.members.lock().remove(id);
        if let Some((_, emptied)) = removed {
            conn.shared().left(&self.membership());
            self.inner.rooms_closed(&emptied);
        }
    }

    fn join(&self, conn: &Connection, room: String) -> PyResult<bool> {
        if room.len() > MAX_ROOM_NAME {
            return Err(PyValueError::new_err(format!(
                "a room name may have at most {MAX_ROOM_NAME} bytes, not {}",
                room.len()
            )));
        }
        if !self.add_member(conn) {
            return Ok(false);
        }
        let id = conn.shared().id;
        let opened = {
            let mut members = self.inner.members.lock();
            let Some(member) = members.by_id.get_mut(&id) else {
                return Ok(true);
            };
            member.rooms.insert(room.clone());
            let ids = members.rooms.entry(room.clone()).or_default();
            ids.insert(id);
            ids.len() == 1
        };
        if opened {
            if let Some(backend) = self.inner.backend.get() {
                backend.room_opened(&room);
            }
        }
        Ok(true)
    }

    fn leave(&self, conn: &Connection, room: &str) {
        let id = conn.shared().id;
        let emptied = {
            let mut members = self.inner.members.lock();
            match members.by_id.get_mut(&id) {
                Some(member) => member.rooms.remove(room) && members.leave_room(id, room),
                None => false,
            }
        };
        if emptied {
            self.inner.rooms_closed(&[room.to_owned()]);
        }
    }

    #[pyo3(signature = (data, room=None, exclude=None))]
    fn broadcast_text(
        &self,
        data: &Bound<'_, PyString>,
        room: Option<String>,
        exclude: Option<&Connection>,
    ) -> PyResult<()> {
        self.submit(OutFrame::text(text_of(data)?), Self::target(room), exclude);
        Ok(())
    }

    #[pyo3(signature = (data, room=None, exclude=None))]
    fn broadcast_bytes(
        &self,
        data: &Bound<'_, PyAny>,
        room: Option<String>,
        exclude: Option<&Connection>,
    ) -> PyResult<()> {
        let frame = OutFrame::binary(bytes_of(data)?);
        self.submit(frame, Self::target(room), exclude);
        Ok(())
    }

    fn send_text_to(&self, conn_id: u64, data: &Bound<'_, PyString>) -> PyResult<bool> {
        self.send_to(conn_id, || Ok(OutFrame::text(text_of(data)?)))
    }

    fn send_bytes_to(&self, conn_id: u64, data: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.send_to(conn_id, || Ok(OutFrame::binary(bytes_of(data)?)))
    }

    /// Carry this manager's messages across processes through Redis at `url`. Checks the
    /// settings and returns the address as logs show it; nothing connects before
    /// `start_backend`. Once per registry.
    #[pyo3(signature = (url, *, channel_prefix, name, publish_limit, presence_timeout))]
    fn set_backend(
        &self,
        url: String,
        channel_prefix: String,
        name: String,
        publish_limit: usize,
        presence_timeout: f64,
    ) -> PyResult<String> {
        if !(presence_timeout.is_finite() && presence_timeout > 0.0) {
            return Err(PyValueError::new_err(format!(
                "broadcast_presence_timeout must be a positive number of seconds, not {presence_timeout}"
            )));
        }
        let link = pubsub::Link::new(pubsub::Settings {
            url,
            channel_prefix,
            name,
            publish_limit,
            presence_timeout: Duration::from_secs_f64(presence_timeout),
        })
        .map_err(|e| PyValueError::new_err(format!("broadcast_backend: {e}")))?;
        let address = link.address.clone();
        self.inner
            .backend
            .set(Arc::new(link))
            .map_err(|_| PyRuntimeError::new_err("this manager already has a backend"))?;
        Ok(address)
    }

    /// Check a backend URL without keeping it: its address as logs show it, or ValueError.
    #[staticmethod]
    fn backend_address(url: String) -> PyResult<String> {
        pubsub::Link::new(pubsub::Settings {
            url,
            channel_prefix: String::new(),
            name: String::new(),
            publish_limit: 0,
            presence_timeout: Duration::from_secs(1),
        })
        .map(|link| link.address)
        .map_err(|e| PyValueError::new_err(format!("broadcast_backend: {e}")))
    }

    /// Start connecting (once) and return the eventfd that says `backend_drain` has news.
    fn start_backend(&self) -> PyResult<i32> {
        let backend = self.backend()?;
        let local: Weak<dyn LocalMembers> = self.weak();
        for room in self.inner.members.lock().rooms.keys() {
            backend.room_opened(room);
        }
        backend.start(local);
        Ok(backend.notices.fd())
    }

    /// What the backend has to say: `("log", level, message)`, `("reconnected",)`,
    /// `("answer", query_id, values)`, and `("timeout", query_id, reason)` or
    /// `("unavailable", query_id, reason)` for a query that got no full answer.
    fn backend_drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut notices = Vec::new();
        self.backend()?.notices.take(&mut notices);
        let list = PyList::empty(py);
        for notice in notices {
            let item = match notice {
                Notice::Log(level, message) => PyTuple::new(
                    py,
                    [
                        "log".into_pyobject(py)?.into_any(),
                        level.into_pyobject(py)?.into_any(),
                        message.into_pyobject(py)?.into_any(),
                    ],
                )?,
                Notice::Reconnected => PyTuple::new(py, ["reconnected"])?,
                Notice::Answer(id, Ok(values)) => PyTuple::new(
                    py,
                    [
                        "answer".into_pyobject(py)?.into_any(),
                        id.into_pyobject(py)?.into_any(),
                        values.into_pyobject(py)?.into_any(),
                    ],
                )?,
                Notice::Answer(id, Err(error)) => {
                    let (kind, reason) = match error {
                        QueryError::Timeout(reason) => ("timeout", reason),
                        QueryError::Unavailable(reason) => ("unavailable", reason),
                    };
                    PyTuple::new(
                        py,
                        [
                            kind.into_pyobject(py)?.into_any(),
                            id.into_pyobject(py)?.into_any(),
                            reason.into_pyobject(py)?.into_any(),
                        ],
                    )?
                }
            };
            list.append(item)?;
        }
        Ok(list)
    }

    /// Ask every process for its members' count (or ids), of `room` or of everyone.
    /// Returns the query's id; the answer comes through `backend_drain`.
    #[pyo3(signature = (members, room=None))]
    fn cluster_query(&self, members: bool, room: Option<String>) -> PyResult<u64> {
        let query = if members {
            Query::Members
        } else {
            Query::Count
        };
        Ok(self.backend()?.query(query, room))
    }

    /// `"connecting"`, `"connected"` or `"down"`; None without a backend.
    #[getter]
    fn backend_state(&self) -> Option<&'static str> {
        self.inner.backend.get().map(|b| b.state().name())
    }

    /// Bytes waiting for the fan-out task: `ConnectionManager` makes publishers wait
    /// while this is over its limit, so the queue stays bounded.
    fn backlog(&self) -> usize {
        self.inner.backlog.load(Ordering::Acquire)
    }

    /// The eventfd that becomes readable when the fan-out is half caught up after
    /// `await_backlog` asked for it (`backlog_drain` resets it).
    fn backlog_fd(&self) -> PyResult<i32> {
        if let Some(caught_up) = self.inner.caught_up.get() {
            return Ok(caught_up.fd());
        }
        let bridge = Bridge::new()?;
        Ok(self.inner.caught_up.get_or_init(|| bridge).fd())
    }

    /// A publisher is about to wait: true if the backlog is still over half the limit,
    /// and then `backlog_fd` is signalled once it is not.
    fn await_backlog(&self) -> bool {
        let inner = &self.inner;
        inner.publishers_waiting.store(true, Ordering::SeqCst);
        inner.backlog.load(Ordering::SeqCst) > inner.backlog_limit / 2
    }

    fn backlog_drain(&self) {
        if let Some(caught_up) = self.inner.caught_up.get() {
            caught_up.take(&mut Vec::new());
        }
    }

    fn __len__(&self) -> usize {
        self.inner.members.lock().by_id.len()
    }

    fn __contains__(&self, conn: &Connection) -> bool {
        self.inner
            .members
            .lock()
            .by_id
            .contains_key(&conn.shared().id)
    }

    fn rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = self.inner.members.lock().rooms.keys().cloned().collect();
        rooms.sort();
        rooms
    }

    fn members(&self, room: &str) -> Vec<u64> {
        let members = self.inner.members.lock();
        let mut ids: Vec<u64> = members
            .rooms
            .get(room)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let counters = &self.inner.counters;
        let dict = PyDict::new(py);
        dict.set_item("members", self.__len__())?;
        dict.set_item("broadcasts", counters.broadcasts.load(Ordering::Relaxed))?;
        dict.set_item("delivered", counters.delivered.load(Ordering::Relaxed))?;
        dict.set_item("dropped", counters.dropped.load(Ordering::Relaxed))?;
        dict.set_item("closed_slow", counters.closed_slow.load(Ordering::Relaxed))?;
        dict.set_item("backlog", self.backlog())?;
        if let Some(backend) = self.inner.backend.get() {
            let c = &backend.counters;
            dict.set_item("published", c.published.load(Ordering::Relaxed))?;
            dict.set_item("received", c.received.load(Ordering::Relaxed))?;
            dict.set_item("publish_dropped", c.publish_dropped.load(Ordering::Relaxed))?;
            dict.set_item("reconnects", c.reconnects.load(Ordering::Relaxed))?;
            dict.set_item("malformed", c.malformed.load(Ordering::Relaxed))?;
            dict.set_item("publish_queue", backend.queued_bytes())?;
            dict.set_item("backend_state", backend.state().name())?;
        }
        Ok(dict)
    }
}

impl Drop for Registry {
    /// The backend's task holds its link: stop it with the registry.
    fn drop(&mut self) {
        if let Some(backend) = self.inner.backend.get() {
            backend.stop();
        }
    }
}
