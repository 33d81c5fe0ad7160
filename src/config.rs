//! Server settings, read from the Python `Config` object itself.
//!
//! The engine is handed the `Config` and takes each field it uses by its attribute name
//! (`Settings`), so a setting's name, default and checks live only in `config.py`. Names
//! follow uvicorn's where uvicorn has the setting. Durations are stored as
//! `Option<Duration>`: `None` disables the feature (a ping interval of 0 or None).

use std::time::Duration;

use pyo3::FromPyObject;

use crate::forwarded::TrustedProxies;

/// The fields of Python's `Config` the engine reads, by attribute name (the `ssl_*` ones
/// are `tls::TlsSettings`).
#[derive(FromPyObject)]
pub struct Settings {
    host: String,
    port: u16,
    fd: Option<i32>,
    backlog: i32,
    reuse_port: bool,
    io_threads: Option<usize>,
    ws_max_size: usize,
    ws_ping_interval: Option<f64>,
    ws_ping_timeout: Option<f64>,
    max_connections: Option<usize>,
    allowed_origins: Option<Vec<String>>,
    outbox_limit: usize,
    inbox_limit: usize,
    http_max_body: usize,
    close_timeout: f64,
    slow_consumer_timeout: f64,
    handshake_timeout: f64,
    timeout_keep_alive: f64,
    http_max_header_size: usize,
    http_max_headers: usize,
    max_connections_per_ip: Option<usize>,
    proxy_headers: bool,
    forwarded_allow_ips: String,
    server_header: bool,
    date_header: bool,
    ws_max_messages_per_second: Option<f64>,
    ws_max_bytes_per_second: Option<f64>,
    ws_idle_timeout: Option<f64>,
}

impl Settings {
    /// The engine's form of the settings; the error names a setting `config.py` could not
    /// check (the proxy list).
    pub fn server_config(self) -> Result<ServerConfig, String> {
        let trusted_proxies = self
            .proxy_headers
            .then(|| TrustedProxies::parse(&self.forwarded_allow_ips))
            .transpose()?;
        Ok(ServerConfig {
            host: self.host,
            port: self.port,
            fd: self.fd,
            backlog: self.backlog,
            reuse_port: self.reuse_port,
            io_threads: self.io_threads.filter(|n| *n > 0),
            ws_max_size: self.ws_max_size,
            ws_ping_interval: seconds(self.ws_ping_interval),
            ws_ping_timeout: seconds(self.ws_ping_timeout),
            max_connections: self.max_connections,
            allowed_origins: self.allowed_origins,
            outbox_limit: self.outbox_limit.max(1),
            inbox_limit: self.inbox_limit.max(1),
            http_max_body: self.http_max_body,
            close_timeout: at_least_10ms(self.close_timeout),
            slow_consumer_timeout: at_least_10ms(self.slow_consumer_timeout),
            handshake_timeout: at_least_10ms(self.handshake_timeout),
            timeout_keep_alive: at_least_10ms(self.timeout_keep_alive),
            http_max_header_size: self.http_max_header_size,
            http_max_headers: self.http_max_headers.max(1),
            max_connections_per_ip: self.max_connections_per_ip,
            trusted_proxies,
            server_header: self.server_header,
            date_header: self.date_header,
            ws_max_messages_per_second: self.ws_max_messages_per_second,
            ws_max_bytes_per_second: self.ws_max_bytes_per_second,
            ws_idle_timeout: seconds(self.ws_idle_timeout),
        })
    }
}

fn at_least_10ms(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.max(0.01))
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// An inherited listening socket to serve on instead of binding `host:port`.
    pub fd: Option<i32>,
    pub backlog: i32,
    pub reuse_port: bool,
    /// The IO runtime's threads (`None`: as many as the CPUs this process may run on).
    pub io_threads: Option<usize>,
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
