//! A queue from other threads to the Python event loop's thread, with its eventfd.
//!
//! Producers push into one queue and write the eventfd only when the queue goes from empty
//! to non-empty, so a burst costs one wake-up. The loop watches the eventfd
//! (`loop.add_reader`) and its callback takes everything at once. The server's bridge
//! carries its events (`server.rs`), the poller's its nudges, a broadcast backend's its
//! notices. Nothing here takes the GIL.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use parking_lot::Mutex;

use crate::stats::{self, counter};

/// A queue of events for the loop thread and its eventfd.
pub struct Bridge<E> {
    queue: Mutex<Vec<E>>,
    eventfd: OwnedFd,
}

impl<E> Bridge<E> {
    pub fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            queue: Mutex::new(Vec::with_capacity(64)),
            // SAFETY: fd is a fresh descriptor we own.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Queue an event; wake the loop only if it was not already due to drain.
    pub fn push(&self, event: E) {
        let was_empty = {
            let mut queue = self.queue.lock();
            let was_empty = queue.is_empty();
            queue.push(event);
            was_empty
        };
        if was_empty {
            stats::bump(&counter::wakeups);
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a valid u64 to our own eventfd. EAGAIN can only
            // mean the counter is saturated, i.e. a wake-up is already pending.
            unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// Take every queued event. Reset the eventfd first: an event pushed after the take
    /// finds the queue empty and writes the eventfd again, so none is left unseen.
    pub fn take(&self, into: &mut Vec<E>) {
        let mut counter_value: u64 = 0;
        // SAFETY: reading 8 bytes into a valid u64 from our own non-blocking eventfd.
        unsafe { libc::read(self.fd(), (&mut counter_value as *mut u64).cast(), 8) };
        std::mem::swap(&mut *self.queue.lock(), into);
    }
}

pub const LOG_DEBUG: i32 = 10;
pub const LOG_INFO: i32 = 20;
pub const LOG_WARNING: i32 = 30;
pub const LOG_ERROR: i32 = 40;
