//! Server settings, as the Python `Config` hands them to the engine.
//!
//! Names and defaults follow uvicorn's where uvicorn has the setting. Durations are stored
//! as `Option<Duration>`: `None` disables the feature (a ping interval of 0 or None).

use std::time::Duration;

use crate::forwarded::TrustedProxies;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// An inherited listening socket to serve on instead of binding `host:port`.
    pub fd: Option<i32>,
    pub backlog: i32,
    pub reuse_port: bool,
    /// Largest incoming message (and frame); bigger ones close the socket with 1009.
    pub ws_max_size: usize,
    pub ws_ping_interval: Option<Duration>,
    pub ws_ping_timeout: Option<Duration>,
    pub max_connections: Option<usize>,
    /// `None` allows every origin; otherwise the handshake's Origin must be listed ("*" = any).
    pub allowed_origins: Option<Vec<String>>,
    /// Bytes a socket's outbox may hold before `send_*` parks and broadcasts apply the
    /// slow-consumer policy.
    pub outbox_limit: usize,
    /// Bytes a socket's inbox holds before the engine stops reading that socket (a single
    /// message larger than this is still taken, alone).
    pub inbox_limit: usize,
    pub http_max_body: usize,
    /// How long after the accept the first request head may take to arrive in full.
    pub handshake_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request head.
    pub timeout_keep_alive: Duration,
    /// Largest request head (request line and headers) in bytes; bigger: 431.
    pub http_max_header_size: usize,
    /// Most headers in a request head; more: 431.
    pub http_max_headers: usize,
    /// Open WebSockets per client address at most; more are refused with 429.
    pub max_connections_per_ip: Option<usize>,
    /// The peers whose `X-Forwarded-For` names the client (`None`: proxy headers ignored).
    pub trusted_proxies: Option<TrustedProxies>,
    /// How long a closing handshake may take before the socket is dropped.
    pub close_timeout: Duration,
    /// `server: ferrosock` on every response the engine writes (HTTP, refusals, the 101).
    pub server_header: bool,
    /// hyper's `date` header on every response.
    pub date_header: bool,
    /// How long a socket over `outbox_limit` may go without any byte written before it is
    /// closed with 1013 (`slow.rs`).
    pub slow_consumer_timeout: Duration,
    /// Messages (data and control) and payload bytes a client may send per second; a
    /// route may set its own (`ratelimit::RateLimits`).
    pub ws_max_messages_per_second: Option<f64>,
    pub ws_max_bytes_per_second: Option<f64>,
    /// No data message from the client for this long closes the connection with 1001.
    pub ws_idle_timeout: Option<Duration>,
}

pub fn seconds(value: Option<f64>) -> Option<Duration> {
    value.filter(|s| *s > 0.0).map(Duration::from_secs_f64)
}
