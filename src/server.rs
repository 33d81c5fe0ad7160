//! The listener, HTTP/1.1 and the WebSocket handshake; `Server` as Python sees it.
//!
//! Each TCP connection is served by hyper. A WebSocket upgrade on a known route is checked
//! (malformed → 400, Python never sees it), then queued to Python and held open until the
//! handler accepts (101, then the socket moves to the loop thread's `Poller`) or refuses
//! (403). HTTP requests are queued to Python and answered through a oneshot. `drain` runs
//! queued events on the loop thread; IO threads never take the GIL.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicI32, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::bridge::{Bridge, LOG_DEBUG, LOG_INFO, LOG_WARNING};
use crate::config::{ServerConfig, Settings};
use crate::connection::{Buffers, ConnShared, Owner};
use crate::eventloop::LoopHooks;
use crate::forwarded::TrustedProxies;
use crate::handshake::{self, has_token, Decision, Handshake, HeaderText};
use crate::http::{HttpRequest, PendingRequest, Reply};
use crate::http_limits;
use crate::listener::{Accepted, Ends, Listener, Prepared, Stream};
use crate::per_client::PerClient;
use crate::poller::{self, Poller};
use crate::protocol::Limits;
use crate::ratelimit::RateLimits;
use crate::router::{percent_decode, RouteSpec, Routes};
use crate::socket::Socket;
use crate::stats::{self, counter, Refusal};
use crate::tls::{self, TlsSettings};
use crate::websocket::Connection;

type Body = Full<Bytes>;

/// What the server's threads tell the loop thread (`Server.drain` runs them).
pub enum Event {
    /// A WebSocket handshake waiting for its handler to accept or refuse it.
    WebSocket(Arc<ConnShared>, Box<Handshake>),
    /// An HTTP request waiting for its response.
    Http(Box<PendingRequest>),
    /// A parked `receive_*` may now finish: a message arrived or the connection ended.
    WakeReceive(Arc<ConnShared>),
    /// A parked `send_*` may now finish: the outbox drained or the connection ended.
    WakeSend(Arc<ConnShared>),
    /// A line for Python's `logging` (level as in `logging`, e.g. 30 = WARNING).
    Log(i32, String),
}

/// What the IO side of one server shares: settings, routes, the bridge, the live sockets.
pub struct ServerState {
    pub config: ServerConfig,
    bridge: Bridge<Event>,
    routes: Routes,
    hooks: Arc<LoopHooks>,
    live: Mutex<HashMap<u64, Arc<ConnShared>>>,
    /// Open WebSockets per client address (`max_connections_per_ip`).
    per_client: PerClient,
    shutdown: CancellationToken,
    /// Reads and writes the upgraded sockets, on the loop thread.
    poller: Arc<Poller>,
    /// Set when the server speaks TLS (`ssl_certfile`): every connection does.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The lowest level `ferrosock.error` logs, as it was when the server started: lines
    /// below it are dropped here, never formatted or handed to Python.
    log_level: AtomicI32,
}

impl ServerState {
    fn log(&self, level: i32, message: String) {
        if self.logs(level) {
            self.bridge.push(Event::Log(level, message));
        }
    }

    fn logs(&self, level: i32) -> bool {
        level >= self.log_level.load(Ordering::Relaxed)
    }
}

impl Owner for ServerState {
    fn wake(&self, conn: Arc<ConnShared>, send: bool) {
        self.bridge.push(if send {
            Event::WakeSend(conn)
        } else {
            Event::WakeReceive(conn)
        });
    }

    fn log(&self, level: i32, message: String) {
        ServerState::log(self, level, message);
    }

    fn logs(&self, level: i32) -> bool {
        ServerState::logs(self, level)
    }

    fn forget(&self, id: u64) {
        self.live.lock().remove(&id);
        self.per_client.release(id);
    }
}

#[pyclass(frozen, module = "ferrosock._engine")]
pub struct Server {
    state: Arc<ServerState>,
    on_websocket: Py<PyAny>,
    on_http: Py<PyAny>,
    on_log: Py<PyAny>,
    port: AtomicU16,
    /// The drained batch's buffer, kept to reuse its allocation.
    batch: Mutex<Vec<Event>>,
}

#[pymethods]
impl Server {
    #[new]
    // `config` is the Python `Config`: its fields are read by name (`config::Settings`,
    // `tls::TlsSettings`), so the defaults live in one place.
    fn new(
        routes: Vec<RouteSpec>,
        on_websocket: Py<PyAny>,
        on_http: Py<PyAny>,
        on_log: Py<PyAny>,
        config: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let tls = config
            .extract::<TlsSettings>()?
            .server_config()
            .map_err(PyValueError::new_err)?
            .map(tokio_rustls::TlsAcceptor::from);
        let routes = Routes::build(routes).map_err(PyValueError::new_err)?;
        let config = config
            .extract::<Settings>()?
            .server_config()
            .map_err(PyValueError::new_err)?;
        let poller = Poller::new(Limits {
            max_size: config.ws_max_size,
            ping_interval: config.ws_ping_interval,
            ping_timeout: config.ws_ping_timeout,
            close_timeout: config.close_timeout,
            idle_timeout: config.ws_idle_timeout,
        })?;
        let port = config.port;
        let state = ServerState {
            per_client: PerClient::new(config.max_connections_per_ip),
            config,
            bridge: Bridge::new()?,
            routes,
            hooks: Arc::new(LoopHooks::default()),
            live: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            poller,
            tls,
            log_level: AtomicI32::new(LOG_DEBUG),
        };
        Ok(Self {
            state: Arc::new(state),
            on_websocket,
            on_http,
            on_log,
            port: AtomicU16::new(port),
            batch: Mutex::new(Vec::new()),
        })
    }

    /// Start listening; `create_future`, `call_soon` and `call_later` are the event
    /// loop's, `log_level` the lowest level `on_log` is to be called for.
    fn start(
        slf: &Bound<'_, Self>,
        create_future: Py<PyAny>,
        call_soon: Py<PyAny>,
        call_later: Py<PyAny>,
        log_level: i32,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.state.log_level.store(log_level, Ordering::Relaxed);
        let flush = slf.getattr("flush")?.unbind();
        this.state.hooks.set(create_future, call_soon, flush)?;
        let on_timer = slf.getattr("on_timer")?.unbind();
        this.state.poller.set_timer(call_later, on_timer);
        this.listen(py)
    }

    /// Serve the sockets that are ready (the loop calls it when `poll_fd` is readable).
    fn poll(&self, py: Python<'_>) -> PyResult<()> {
        self.state.hooks.new_round();
        self.state.poller.poll(py)
    }

    /// Run the heartbeats and closing deadlines that are due (armed with `call_later`).
    fn on_timer(&self, py: Python<'_>) -> PyResult<()> {
        self.state.hooks.new_round();
        self.state.poller.on_timer(py)
    }

    #[getter]
    fn poll_fd(&self) -> i32 {
        self.state.poller.fd()
    }

    /// Drop every socket still open: the loop that drives them is going away.
    fn stop(&self) {
        self.state.poller.stop_all();
    }

    /// Write what handlers sent since the last flush (scheduled by the engine).
    fn flush(&self) {
        self.state.hooks.flush();
    }

    #[getter]
    fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }

    #[getter]
    fn ready_fd(&self) -> i32 {
        self.state.bridge.fd()
    }

    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        stats::bump(&counter::drains);
        self.state.hooks.new_round();
        let mut batch = std::mem::take(&mut *self.batch.lock());
        self.state.bridge.take(&mut batch);
        stats::add(&counter::events, batch.len() as u64);
        for event in batch.drain(..) {
            if let Err(error) = self.run(py, event) {
                error.display(py);
            }
        }
        *self.batch.lock() = batch;
        Ok(())
    }

    #[pyo3(signature = (code=1001, reason="server shutdown"))]
    fn shutdown(&self, code: u16, reason: &str) {
        self.state.shutdown.cancel();
        let live: Vec<Arc<ConnShared>> = self.state.live.lock().values().cloned().collect();
        // What is still queued would hold the close back, behind a reader that may be
        // slow or gone; the sockets are dropped once the handlers are done anyway.
        for conn in live {
            conn.close_now(code, reason);
        }
    }

    fn connection_count(&self) -> usize {
        self.state.live.lock().len()
    }
}

impl Server {
    fn listen(&self, py: Python<'_>) -> PyResult<()> {
        let listener = match self.state.config.fd {
            Some(fd) => Prepared::inherited(fd)?,
            None => Prepared::tcp(&self.state.config)?,
        };
        self.port.store(listener.port()?, Ordering::Relaxed);
        let runtime = crate::runtime::init(self.state.config.io_threads);
        let state = self.state.clone();
        py.detach(|| {
            runtime.spawn(async move {
                match listener.into_tokio() {
                    Ok(listener) => accept_loop(listener, state).await,
                    Err(error) => state.log(LOG_WARNING, format!("cannot listen: {error}")),
                }
            })
        });
        Ok(())
    }

    fn run(&self, py: Python<'_>, event: Event) -> PyResult<()> {
        match event {
            Event::WakeReceive(conn) => resolve(py, conn.waiters.lock().receive.take()),
            Event::WakeSend(conn) => resolve(py, conn.waiters.lock().send.take()),
            Event::WebSocket(shared, handshake) => {
                let route_id = handshake.route_id;
                let hooks = self.state.hooks.clone();
                let conn = Py::new(py, Connection::new(shared, *handshake, hooks))?;
                self.on_websocket.call1(py, (route_id, conn))?;
                Ok(())
            }
            Event::Http(request) => {
                let route_id = request.route_id;
                let request = Py::new(py, HttpRequest::from(*request))?;
                self.on_http.call1(py, (route_id, request))?;
                Ok(())
            }
            Event::Log(level, message) => {
                self.on_log.call1(py, (level, message))?;
                Ok(())
            }
        }
    }
}

fn resolve(py: Python<'_>, future: Option<Py<PyAny>>) -> PyResult<()> {
    future.map_or(Ok(()), |future| poller::resolve(py, future))
}

async fn accept_loop(listener: Listener, state: Arc<ServerState>) {
    loop {
        let accepted = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((Accepted::Tcp(stream), ends)) => {
                tokio::spawn(serve_connection(stream, ends, state.clone()));
            }
            Ok((Accepted::Unix(stream), ends)) => {
                tokio::spawn(serve_connection(stream, ends, state.clone()));
            }
            Err(error) => {
                // Out of file descriptors or similar: say so, back off, keep serving.
                state.log(LOG_WARNING, format!("accept failed: {error}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection<S: Stream>(stream: S, ends: Ends, state: Arc<ServerState>) {
    match &state.tls {
        None => serve_http(stream, ends, state).await,
        Some(acceptor) => {
            // The TLS handshake counts against the time the request head may take.
            let deadline = state.config.handshake_timeout;
            match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_http(tls, ends, state).await,
                Ok(Err(error)) => {
                    state.log(LOG_DEBUG, format!("{ends}: TLS handshake failed: {error}"))
                }
                Err(_) => state.log(LOG_DEBUG, format!("{ends}: TLS handshake timed out")),
            }
        }
    }
}

/// HTTP/1.1 over the accepted connection, plain or TLS.
async fn serve_http<S>(io: S, ends: Ends, state: Arc<ServerState>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service_state = state.clone();
    let (mut builder, served) = http_limits::builder(&state.config);
    let service = hyper::service::service_fn(move |request| {
        served.mark();
        handle(request, service_state.clone(), ends)
    });
    let mut connection = builder
        .auto_date_header(state.config.date_header)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let ended = tokio::select! {
        ended = &mut connection => ended,
        _ = state.shutdown.cancelled() => {
            std::pin::Pin::new(&mut connection).graceful_shutdown();
            let _ = tokio::time::timeout(state.config.close_timeout, connection).await;
            return;
        }
    };
    if let Err(error) = ended {
        if http_limits::answered_with_error(&error) {
            if let Some(parts) = connection.into_parts() {
                http_limits::linger(parts.io.into_inner()).await;
            }
        }
    }
}

/// Check the `ssl_*` settings of a `Config` at start, before anything binds or forks.
#[pyfunction]
pub fn check_tls(config: TlsSettings) -> PyResult<()> {
    config
        .server_config()
        .map(drop)
        .map_err(PyValueError::new_err)
}

/// The socket hyper upgraded, as the stream it accepted (its TLS session taken over too),
/// with what hyper read past the handshake.
fn take_socket(upgraded: hyper::upgrade::Upgraded) -> std::io::Result<(Socket, Bytes)> {
    take_as::<TcpStream>(upgraded)
        .or_else(take_as::<UnixStream>)
        .unwrap_or_else(|_| Err(std::io::ErrorKind::Unsupported.into()))
}

/// `take_socket` when the stream is an `S`, plain or under TLS; else `upgraded` back.
fn take_as<S: Stream>(
    upgraded: hyper::upgrade::Upgraded,
) -> Result<std::io::Result<(Socket, Bytes)>, hyper::upgrade::Upgraded> {
    let upgraded = match upgraded.downcast::<TokioIo<S>>() {
        Ok(parts) => {
            let socket = parts.io.into_inner().into_fd().and_then(Socket::new);
            return Ok(socket.map(|socket| (socket, parts.read_buf)));
        }
        Err(upgraded) => upgraded,
    };
    let parts = upgraded.downcast::<TokioIo<tokio_rustls::server::TlsStream<S>>>()?;
    let (stream, session) = parts.io.into_inner().into_inner();
    let socket = stream
        .into_fd()
        .and_then(|fd| Socket::with_tls(fd, tls::Session::new(session)));
    Ok(socket.map(|socket| (socket, parts.read_buf)))
}

fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<ServerState>,
    ends: Ends,
) -> Result<Response<Body>, Infallible> {
    let path = percent_decode(request.uri().path()).into_owned();
    let wants_websocket = has_token(request.headers(), header::UPGRADE, "websocket");
    let found = state.routes.find(&path);
    let mut response = if wants_websocket {
        match found
            .as_ref()
            .and_then(|f| f.endpoints.websocket.map(|id| (id, f)))
        {
            Some((route_id, found)) => {
                let route = Route {
                    id: route_id,
                    params: found.params.clone(),
                    limits: found.endpoints.websocket_limits,
                };
                websocket_handshake(request, &state, route, path, ends).await
            }
            None => {
                stats::record_refusal(Refusal::NotFound);
                log_request(&state, ends, "GET", &path, 403, "no WebSocket route");
                text_response(StatusCode::FORBIDDEN, "Forbidden")
            }
        }
    } else {
        let method = request.method().as_str().to_owned();
        match found {
            None => text_response(StatusCode::NOT_FOUND, "Not Found"),
            Some(found) => match found.endpoints.http_route(&method) {
                Some(route_id) => {
                    let params = found.params;
                    http_request(request, &state, route_id, path, params, ends).await
                }
                None if found.endpoints.http.is_empty() => {
                    text_response(StatusCode::NOT_FOUND, "Not Found")
                }
                None => {
                    let mut response =
                        text_response(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
                    if let Ok(allow) = HeaderValue::from_str(&found.endpoints.allowed_methods()) {
                        response.headers_mut().insert(header::ALLOW, allow);
                    }
                    response
                }
            },
        }
    };
    if state.config.server_header {
        response
            .headers_mut()
            .entry(header::SERVER)
            .or_insert(HeaderValue::from_static("ferrosock"));
    }
    Ok(response)
}

fn log_request(state: &ServerState, ends: Ends, method: &str, path: &str, status: u16, why: &str) {
    if !state.logs(LOG_INFO) {
        return;
    }
    state.log(
        LOG_INFO,
        format!("{ends} - \"{method} {path} HTTP/1.1\" {status} ({why})"),
    );
}

/// The WebSocket route a handshake matched.
struct Route {
    id: usize,
    params: Vec<(String, String)>,
    limits: RateLimits,
}

#[allow(clippy::too_many_arguments)]
async fn websocket_handshake(
    mut request: Request<Incoming>,
    state: &Arc<ServerState>,
    route: Route,
    path: String,
    ends: Ends,
) -> Response<Body> {
    if let Some(problem) = handshake::problem(&request) {
        stats::record_refusal(Refusal::BadRequest);
        log_request(state, ends, "GET", &path, 400, problem);
        let mut response = text_response(StatusCode::BAD_REQUEST, "Bad Request");
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    if !handshake::origin_allowed(state.config.allowed_origins.as_deref(), request.headers()) {
        stats::record_refusal(Refusal::ForbiddenOrigin);
        log_request(state, ends, "GET", &path, 403, "origin not allowed");
        return text_response(StatusCode::FORBIDDEN, "Forbidden");
    }
    if state
        .config
        .max_connections
        .is_some_and(|max| state.live.lock().len() >= max)
    {
        stats::record_refusal(Refusal::OverCapacity);
        log_request(state, ends, "GET", &path, 503, "max_connections reached");
        return text_response(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    }
    let id = crate::node::next_id();
    let trusted = state.config.trusted_proxies.as_ref();
    let client = TrustedProxies::client_of(trusted, ends.peer.map(|p| p.ip()), request.headers());
    if !state.per_client.admit(id, client) {
        stats::record_refusal(Refusal::OverClientLimit);
        log_request(
            state,
            ends,
            "GET",
            &path,
            429,
            "max_connections_per_ip reached",
        );
        return text_response(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
    }
    let key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map_or(Vec::new(), |k| k.as_bytes().to_vec());
    let buffers = Buffers {
        inbox_limit: state.config.inbox_limit,
        outbox_limit: state.config.outbox_limit,
        slow_consumer_timeout: state.config.slow_consumer_timeout,
    };
    let shared = ConnShared::new(id, state.clone(), buffers);
    let (decision_tx, decision_rx) = oneshot::channel();
    let limits = route.limits.or(RateLimits::server(&state.config));
    let handshake = Handshake {
        route_id: route.id,
        path,
        query_string: request.uri().query().unwrap_or("").to_owned(),
        scheme: if state.tls.is_some() { "wss" } else { "ws" },
        headers: HeaderText::new(request.headers()),
        client: ends.peer,
        server: ends.local,
        path_params: route.params,
        subprotocols: handshake::subprotocols(request.headers()),
        decision: decision_tx,
    };
    stats::bump(&counter::connections_opened);
    state.live.lock().insert(shared.id, shared.clone());
    state
        .bridge
        .push(Event::WebSocket(shared.clone(), Box::new(handshake)));
    let upgrade = hyper::upgrade::on(&mut request);
    let decision = tokio::select! {
        decision = decision_rx => decision.unwrap_or(Decision::refuse(403, Refusal::Error)),
        _ = state.shutdown.cancelled() => Decision::refuse(503, Refusal::Shutdown),
    };
    match decision {
        Decision::Respond {
            status,
            headers,
            body,
            why,
        } => {
            stats::record_refusal(why);
            shared.end(1006, "handshake refused");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            let mut response = match body {
                Some(body) => {
                    let mut response = Response::new(Full::new(body));
                    *response.status_mut() = status;
                    response
                }
                None => text_response(status, status.canonical_reason().unwrap_or("")),
            };
            handshake::append_headers(response.headers_mut(), headers);
            response
        }
        Decision::Accept {
            subprotocol,
            headers,
        } => {
            stats::bump(&counter::handshakes_accepted);
            let connection = shared.clone();
            let poller = state.poller.clone();
            tokio::spawn(async move {
                // The socket comes back from hyper as the TCP stream it accepted, with
                // whatever hyper read past the handshake.
                let socket = match upgrade.await {
                    Ok(upgraded) => take_socket(upgraded),
                    Err(error) => Err(std::io::Error::other(error)),
                };
                match socket {
                    // From here on the loop thread reads and writes it.
                    Ok((socket, read_ahead)) => {
                        poller.adopt(connection, socket, read_ahead, limits)
                    }
                    Err(_) => {
                        connection.end(1006, "the upgrade failed");
                    }
                }
            });
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            handshake::accept_headers(response.headers_mut(), &key, subprotocol, headers);
            response
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn http_request(
    request: Request<Incoming>,
    state: &Arc<ServerState>,
    route_id: usize,
    path: String,
    path_params: Vec<(String, String)>,
    ends: Ends,
) -> Response<Body> {
    stats::bump(&counter::http_requests);
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, state.config.http_max_body)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return text_response(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large"),
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    let pending = PendingRequest {
        route_id,
        method: parts.method.as_str().to_owned(),
        path,
        query_string: parts.uri.query().unwrap_or("").to_owned(),
        headers: HeaderText::new(&parts.headers),
        client: ends.peer,
        server: ends.local,
        path_params,
        body,
        reply: reply_tx,
        scheme: if state.tls.is_some() { "https" } else { "http" },
    };
    state.bridge.push(Event::Http(Box::new(pending)));
    match reply_rx.await {
        Ok(Reply {
            status,
            headers,
            body,
        }) => {
            let mut response = Response::new(Full::new(body));
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            handshake::append_headers(response.headers_mut(), headers);
            response
        }
        Err(_) => text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
    }
}
