//! The native broadcast registry behind `ferrosock.ConnectionManager`.
//!
//! Members are connections, optionally in rooms. Everything a registry is asked to send —
//! broadcasts and messages to one member — goes through one FIFO to a fan-out task on the
//! IO threads, so deliveries keep the order they were asked in and the caller never waits.
//! A broadcast is encoded once; each member gets a clone of the same bytes, offered to its
//! outbox without waiting. A member whose outbox is full is closed with 1013 or skipped,
//! by policy: a slow or dead member never delays the others. Connections leave every
//! registry by themselves when they end.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use tokio::sync::mpsc;

use crate::connection::{frame_size, ConnShared, Offer};
use crate::frame::OutFrame;
use crate::websocket::{bytes_of, text_of, Connection};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumer {
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
    fn remove(&mut self, id: u64) -> Option<Member> {
        let member = self.by_id.remove(&id)?;
        for room in &member.rooms {
            self.leave_room(id, room);
        }
        Some(member)
    }

    fn leave_room(&mut self, id: u64, room: &str) {
        if let Some(ids) = self.rooms.get_mut(room) {
            ids.remove(&id);
            if ids.is_empty() {
                self.rooms.remove(room);
            }
        }
    }
}

enum Target {
    All,
    Room(String),
    One(u64),
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
    policy: SlowConsumer,
    counters: Counters,
}

impl RegistryInner {
    /// Called by a connection as it ends.
    pub fn forget(&self, id: u64) {
        self.members.lock().remove(id);
    }

    fn deliver(&self, delivery: Delivery) {
        let size = delivery.size;
        let mut slow: Vec<Arc<ConnShared>> = Vec::new();
        let mut delivered = 0;
        let mut dropped = 0;
        {
            let members = self.members.lock();
            let mut offer = |conn: &Arc<ConnShared>| {
                if Some(conn.id) == delivery.exclude {
                    return;
                }
                match conn.offer(delivery.frame.clone(), size) {
                    Offer::Queued => delivered += 1,
                    Offer::Ended => {}
                    Offer::Full => match self.policy {
                        SlowConsumer::Drop => dropped += 1,
                        SlowConsumer::Close => slow.push(conn.clone()),
                    },
                }
            };
            match &delivery.target {
                Target::All => members.by_id.values().for_each(|m| offer(&m.conn)),
                Target::Room(room) => {
                    if let Some(ids) = members.rooms.get(room) {
                        ids.iter()
                            .filter_map(|id| members.by_id.get(id))
                            .for_each(|m| offer(&m.conn));
                    }
                }
                Target::One(id) => {
                    if let Some(member) = members.by_id.get(id) {
                        offer(&member.conn);
                    }
                }
            }
        }
        let counters = &self.counters;
        counters.delivered.fetch_add(delivered, Ordering::Relaxed);
        counters.dropped.fetch_add(dropped, Ordering::Relaxed);
        counters
            .closed_slow
            .fetch_add(slow.len() as u64, Ordering::Relaxed);
        // Closing takes the members lock (the connection leaves): outside the lock above.
        for conn in slow {
            conn.close(1013, "slow consumer: outbox full");
        }
        self.backlog.fetch_sub(size, Ordering::AcqRel);
    }
}

async fn fan_out(registry: Weak<RegistryInner>, mut queue: mpsc::UnboundedReceiver<Delivery>) {
    while let Some(delivery) = queue.recv().await {
        let Some(registry) = registry.upgrade() else {
            return;
        };
        registry.deliver(delivery);
        // Deliver whatever else is already queued before yielding to other tasks.
        while let Ok(delivery) = queue.try_recv() {
            registry.deliver(delivery);
        }
    }
}

#[pyclass(frozen, module = "ferrosock._engine")]
pub struct Registry {
    inner: Arc<RegistryInner>,
    queue: mpsc::UnboundedSender<Delivery>,
    /// The fan-out task starts with the first delivery, not at construction: a registry
    /// made at import time must not start IO threads in a process that forks workers.
    fan_out: Mutex<Option<mpsc::UnboundedReceiver<Delivery>>>,
    started: std::sync::Once,
}

impl Registry {
    fn weak(&self) -> Weak<RegistryInner> {
        Arc::downgrade(&self.inner)
    }

    fn add_member(&self, conn: &Connection) -> bool {
        let shared = conn.shared();
        let mut members = self.inner.members.lock();
        if members.by_id.contains_key(&shared.id) {
            return true;
        }
        if !shared.joined(self.weak()) {
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
        if !matches!(target, Target::One(_)) {
            self.inner
                .counters
                .broadcasts
                .fetch_add(1, Ordering::Relaxed);
        }
        self.started.call_once(|| {
            if let Some(deliveries) = self.fan_out.lock().take() {
                crate::runtime::get().spawn(fan_out(self.weak(), deliveries));
            }
        });
        let size = frame_size(&frame);
        self.inner.backlog.fetch_add(size, Ordering::AcqRel);
        // The fan-out task lives as long as the registry.
        let _ = self.queue.send(Delivery {
            frame,
            size,
            target,
            exclude: exclude.map(|c| c.shared().id),
        });
    }

    fn target(room: Option<String>) -> Target {
        room.map_or(Target::All, Target::Room)
    }
}

#[pymethods]
impl Registry {
    #[new]
    #[pyo3(signature = (*, slow_consumer="close"))]
    fn new(slow_consumer: &str) -> PyResult<Self> {
        let policy = match slow_consumer {
            "close" => SlowConsumer::Close,
            "drop" => SlowConsumer::Drop,
            other => {
                return Err(PyValueError::new_err(format!(
                    "slow_consumer must be \"close\" or \"drop\", not {other:?}"
                )))
            }
        };
        let inner = Arc::new(RegistryInner {
            members: Mutex::new(Members::default()),
            backlog: AtomicUsize::new(0),
            policy,
            counters: Counters::default(),
        });
        let (queue, deliveries) = mpsc::unbounded_channel();
        Ok(Self {
            inner,
            queue,
            fan_out: Mutex::new(Some(deliveries)),
            started: std::sync::Once::new(),
        })
    }

    fn add(&self, conn: &Connection) -> bool {
        self.add_member(conn)
    }

    fn remove(&self, conn: &Connection) {
        let id = conn.shared().id;
        if self.inner.members.lock().remove(id).is_some() {
            conn.shared().left(&self.weak());
        }
    }

    fn join(&self, conn: &Connection, room: String) -> bool {
        if !self.add_member(conn) {
            return false;
        }
        let id = conn.shared().id;
        let mut members = self.inner.members.lock();
        if let Some(member) = members.by_id.get_mut(&id) {
            member.rooms.insert(room.clone());
            members.rooms.entry(room).or_default().insert(id);
        }
        true
    }

    fn leave(&self, conn: &Connection, room: &str) {
        let id = conn.shared().id;
        let mut members = self.inner.members.lock();
        if let Some(member) = members.by_id.get_mut(&id) {
            member.rooms.remove(room);
            members.leave_room(id, room);
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
        let known = self.inner.members.lock().by_id.contains_key(&conn_id);
        if known {
            self.submit(OutFrame::text(text_of(data)?), Target::One(conn_id), None);
        }
        Ok(known)
    }

    fn send_bytes_to(&self, conn_id: u64, data: &Bound<'_, PyAny>) -> PyResult<bool> {
        let known = self.inner.members.lock().by_id.contains_key(&conn_id);
        if known {
            self.submit(
                OutFrame::binary(bytes_of(data)?),
                Target::One(conn_id),
                None,
            );
        }
        Ok(known)
    }

    /// Bytes waiting for the fan-out task: `ConnectionManager` makes publishers wait
    /// while this is over its limit, so the queue stays bounded.
    fn backlog(&self) -> usize {
        self.inner.backlog.load(Ordering::Acquire)
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
        Ok(dict)
    }
}
