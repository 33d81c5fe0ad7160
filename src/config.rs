//! Server settings, as the Python `Config` hands them to the engine.
//!
//! Names and defaults follow uvicorn's where uvicorn has the setting. Durations are stored
//! as `Option<Duration>`: `None` disables the feature (a ping interval of 0 or None).

use std::time::Duration;

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
    /// How long a closing handshake may take before the socket is dropped.
    pub close_timeout: Duration,
    /// `server: ferrosock` on every response the engine writes (HTTP, refusals, the 101).
    pub server_header: bool,
    /// hyper's `date` header on every response.
    pub date_header: bool,
}

pub fn seconds(value: Option<f64>) -> Option<Duration> {
    value.filter(|s| *s > 0.0).map(Duration::from_secs_f64)
}
