//! What one HTTP/1.1 connection may cost before it becomes a WebSocket: the size and
//! header count of a request head, how long its head may take, how long it may sit idle
//! between requests, and the lingering close after hyper refuses a head.
//!
//! hyper (1.12) runs `header_read_timeout` from the moment it starts waiting for a head:
//! when the connection is accepted, and again each time a kept-alive connection goes
//! idle after a response. `HeadTimer` is the timer hyper asks for that deadline; it keeps
//! hyper's (the accept + `handshake_timeout`) for the first head and answers now +
//! `timeout_keep_alive` for every later one, so one timer covers both limits. A connection
//! that sends nothing at all is closed at the first deadline like one that trickles.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use hyper::server::conn::http1::Builder;
use hyper_util::rt::TokioTimer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::ServerConfig;

/// How long a refused connection is read (and what it sends discarded) after hyper's
/// error response, so that closing it with unread bytes does not reset the connection
/// before the client has read the response.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

/// The deadline of each request head on one connection (see the module's text).
struct HeadTimer {
    keep_alive: Duration,
    served: Arc<AtomicBool>,
}

impl HeadTimer {
    fn deadline(&self, first_head: Instant) -> Instant {
        if self.served.load(Ordering::Relaxed) {
            Instant::now() + self.keep_alive
        } else {
            first_head
        }
    }
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        TokioTimer::new().sleep(duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        TokioTimer::new().sleep_until(self.deadline(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        TokioTimer::new().reset(sleep, self.deadline(new_deadline));
    }
}

/// Marks that a connection's first request head has arrived: later heads are keep-alive
/// waits.
#[derive(Clone)]
pub struct Served(Arc<AtomicBool>);

impl Served {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// hyper's HTTP/1.1 builder for one connection, with the server's limits: a head over
/// `http_max_header_size` bytes or with more than `http_max_headers` headers is answered
/// 431; the first head must be complete `handshake_timeout` after the accept, each later
/// one `timeout_keep_alive` after the previous response, else the connection is closed.
/// `first_head` is what is left of `handshake_timeout` when hyper takes the connection
/// over (the loop thread may have waited for its first bytes).
pub fn builder(config: &ServerConfig, first_head: Duration) -> (Builder, Served) {
    let served = Arc::new(AtomicBool::new(false));
    let mut builder = Builder::new();
    builder
        .keep_alive(true)
        .timer(HeadTimer {
            keep_alive: config.timeout_keep_alive,
            served: served.clone(),
        })
        .header_read_timeout(first_head)
        .max_header_size(config.http_max_header_size)
        .max_headers(config.http_max_headers);
    (builder, Served(served))
}

/// Whether hyper ended a connection with an error response of its own (400, 414, 431
/// for a head it could not take), after which the connection should linger.
pub fn answered_with_error(error: &hyper::Error) -> bool {
    error.is_parse()
}

/// Close a connection whose client may still be sending: stop writing (the response is
/// out), then read and discard until the client closes, for at most `LINGER`.
pub async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let _ = stream.shutdown().await;
    let mut scratch = [0u8; 4096];
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER, async {
        while left > 0 {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}
