//! This process's identity in a cluster: its node tag and the connection ids made from it.
//!
//! A connection id is `tag << 32 | counter`: a 21-bit node tag, random per process, above a
//! 32-bit counter. Ids from different processes or hosts therefore never collide, the tag
//! of an id names the process that holds the socket (a broadcast backend routes
//! `send_to(id)` by it), and every id stays below 2⁵³, so a JavaScript client holds it
//! exactly as a number. With a backend the tag is claimed in Redis; a process that finds
//! its tag taken moves to a new one for new connections and keeps answering for the old.
//!
//! Worker processes are forked: the tag belongs to a process id and is drawn again in a
//! child, so workers never share one. Nothing here knows about Redis or Python.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

const TAG_BITS: u32 = 21;
const COUNTER_BITS: u32 = 32;
const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;

struct Identity {
    pid: u32,
    /// Newest last; ids made with any of them belong to this process.
    tags: Vec<u32>,
    /// Random per process: tells this process's own messages apart when Redis echoes them.
    instance: u64,
}

static IDENTITY: Mutex<Option<Identity>> = Mutex::new(None);
/// The tag new ids are made with, and the pid it was drawn for: read on every new
/// connection without taking the lock.
static CURRENT: AtomicU64 = AtomicU64::new(0);
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Random bits from the kernel (`getrandom(2)`), falling back to the clock and the pid.
pub fn random_u64() -> u64 {
    let mut value: u64 = 0;
    // SAFETY: writes at most 8 bytes into a valid u64.
    let got = unsafe { libc::getrandom((&mut value as *mut u64).cast(), 8, 0) };
    if got == 8 {
        return value;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 40)
}

fn random_tag(avoid: &[u32]) -> u32 {
    loop {
        let tag = (random_u64() & ((1 << TAG_BITS) - 1)) as u32;
        if tag != 0 && !avoid.contains(&tag) {
            return tag;
        }
    }
}

fn with_identity<T>(f: impl FnOnce(&mut Identity) -> T) -> T {
    let pid = std::process::id();
    let mut guard = IDENTITY.lock();
    let identity = match guard.as_mut() {
        Some(identity) if identity.pid == pid => identity,
        _ => {
            COUNTER.store(0, Ordering::Relaxed);
            guard.insert(Identity {
                pid,
                tags: vec![random_tag(&[])],
                instance: random_u64(),
            })
        }
    };
    let result = f(identity);
    let tag = *identity.tags.last().expect("a process always has a tag");
    CURRENT.store(u64::from(pid) << 32 | u64::from(tag), Ordering::Release);
    result
}

/// The tag new ids are made with.
pub fn tag() -> u32 {
    let current = CURRENT.load(Ordering::Acquire);
    if (current >> 32) as u32 == std::process::id() {
        return current as u32;
    }
    with_identity(|identity| *identity.tags.last().expect("a process always has a tag"))
}

/// A new connection id, unique across the cluster.
pub fn next_id() -> u64 {
    let tag = tag();
    let count = u64::from(COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_add(1));
    u64::from(tag) << COUNTER_BITS | (count & COUNTER_MASK)
}

/// The node tag an id was made with.
pub fn tag_of(id: u64) -> u32 {
    (id >> COUNTER_BITS) as u32
}

/// Every tag this process's ids carry (more than one only after a collision).
pub fn tags() -> Vec<u32> {
    with_identity(|identity| identity.tags.clone())
}

/// True when the id belongs to a connection of this process.
pub fn is_local(id: u64) -> bool {
    let owner = tag_of(id);
    owner == tag() || tags().contains(&owner)
}

/// This process's random instance number.
pub fn instance() -> u64 {
    with_identity(|identity| identity.instance)
}

/// Another process holds `tag`: draw a new one for the ids made from now on. Returns it.
pub fn abandon(tag: u32) -> u32 {
    with_identity(|identity| {
        if identity.tags.last() == Some(&tag) {
            let fresh = random_tag(&identity.tags);
            identity.tags.push(fresh);
        }
        *identity.tags.last().expect("a process always has a tag")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_tag_and_fit_in_a_double() {
        let a = next_id();
        let b = next_id();
        assert_ne!(a, b);
        assert_eq!(tag_of(a), tag_of(b));
        assert!(tag_of(a) != 0);
        assert!(a < 1 << 53 && b < 1 << 53);
        assert!(is_local(a));
        let foreign = (1..).find(|t| !tags().contains(t)).unwrap();
        assert!(!is_local(u64::from(foreign) << 32 | 5));
    }

    #[test]
    fn abandoning_a_tag_keeps_old_ids_local() {
        let old = next_id();
        let fresh = abandon(tag_of(old));
        let new = next_id();
        assert_eq!(tag_of(new), fresh);
        assert_ne!(tag_of(old), fresh);
        assert!(is_local(old) && is_local(new));
    }
}
