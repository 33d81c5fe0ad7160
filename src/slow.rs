//! Slow consumers: waiting for a socket whose outbox is over `outbox_limit`, for as long
//! as it makes progress.
//!
//! A sender that finds a member's outbox full waits for it to drain, as an
//! `await send_text` on a slow client waits in any ASGI server. The wait is bounded by
//! progress, not by its length: every write that moves bytes of that socket's outbox
//! restarts the clock (`ConnShared::progress_at`), and a socket that moves none for
//! `slow_consumer_timeout` is closed with 1013, its queued frames discarded so that the
//! close frame goes out at once. A reader that is slower than a burst but alive gets every
//! message; one that never reads is gone within the timeout.
//!
//! Two waiters use it: a registry's fan-out task (`wait_for_room`, async on the IO
//! threads, so a waiting fan-out holds no thread) and a handler's `send_*` parked past the
//! limit (`watch_send`, a task that only enforces the timeout: the send itself is woken by
//! the writer, as before).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::connection::{progress_instant, progress_now, ConnShared};

/// The close a socket gets when it made no progress for `slow_consumer_timeout`.
pub const SLOW_CODE: u16 = 1013;
pub const SLOW_REASON: &str = "slow consumer: no progress";

/// Close a socket that made no progress: 1013, its queue discarded (`close_now`).
pub fn close_stalled(conn: &Arc<ConnShared>) {
    conn.close_now(SLOW_CODE, SLOW_REASON);
}

/// How a wait for room ended.
pub enum Waited {
    /// The outbox has room for the frame.
    Room,
    /// The connection ended meanwhile (or was closing already).
    Ended,
    /// No progress for `slow_consumer_timeout`: the socket was closed with 1013.
    Closed,
}

/// When the socket is declared stalled: `slow_consumer_timeout` after its last progress,
/// or after `since` (when the wait began) if that is later.
fn deadline(conn: &ConnShared, since: u64) -> Instant {
    let last = conn.progress_at().max(since);
    progress_instant(last) + conn.buffers.slow_consumer_timeout
}

/// Wait until `conn`'s outbox can take `size` more bytes, the connection ends, or it
/// makes no progress for `slow_consumer_timeout` from `since` on (it is then closed).
pub async fn wait_for_room(conn: &Arc<ConnShared>, size: usize, since: u64) -> Waited {
    loop {
        if conn.is_closing() {
            return Waited::Ended;
        }
        // Listen before looking, so that a drain in between is not missed. Every waiter
        // is woken (several registries may wait for the same socket).
        let drained = conn.stall().room.notified();
        tokio::pin!(drained);
        drained.as_mut().enable();
        if conn.is_closing() {
            return Waited::Ended;
        }
        conn.want_room(size);
        if conn.has_room(size) {
            return Waited::Room;
        }
        let at = deadline(conn, since);
        if Instant::now() >= at {
            close_stalled(conn);
            return Waited::Closed;
        }
        tokio::select! {
            () = drained => {}
            () = tokio::time::sleep_until(at.into()) => {}
        }
    }
}

/// A handler's send has taken the outbox past its limit: close the socket if it then
/// makes no progress for `slow_consumer_timeout`. At most one watch per connection runs;
/// it ends once the outbox is back under half the limit (where the parked send resumes).
pub fn watch_send(conn: &Arc<ConnShared>) {
    if conn.stall().send_watch.swap(true, Ordering::AcqRel) {
        return;
    }
    let conn = conn.clone();
    let since = progress_now();
    crate::runtime::get().spawn(async move {
        loop {
            while !conn.is_closing() && !conn.outbox_under_half() {
                let at = deadline(&conn, since);
                if Instant::now() >= at {
                    close_stalled(&conn);
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
            }
            conn.stall().send_watch.store(false, Ordering::Release);
            // A send may have gone over the limit again as this watch was ending, and
            // found it still running: keep watching for it.
            if conn.is_closing()
                || conn.outbox_under_half()
                || conn.stall().send_watch.swap(true, Ordering::AcqRel)
            {
                return;
            }
        }
    });
}
