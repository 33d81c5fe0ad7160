//! The listener, HTTP/1.1 and the WebSocket handshake; `Server` as Python sees it.
//!
//! The loop thread accepts (`Gate`). A connection that opens with a WebSocket upgrade is
//! answered there: the handshake is checked (malformed → 400, Python never sees it), the
//! handler runs at once, and its answer is written on the same thread (`LoopAnswer`); the
//! accepted socket is a `Poller` session from then on. Every other connection (HTTP, TLS,
//! a head in pieces) is served by hyper on the IO threads: its upgrades are queued to
//! Python (`Event::WebSocket`) and held until the handler answers, its HTTP requests are
//! queued and answered through a oneshot. `drain` runs queued events on the loop thread;
//! IO threads never take the GIL.

use std::collections::HashMap;
use std::convert::Infallible;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicI32, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyTuple, PyType};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::bridge::{Bridge, LOG_DEBUG, LOG_INFO, LOG_WARNING};
use crate::config::{ServerConfig, Settings};
use crate::connection::{Buffers, ConnShared, Owner};
use crate::eventloop::LoopHooks;
use crate::forwarded::TrustedProxies;
use crate::gate::{Arrival, Gate};
use crate::handshake::{self, has_token, Answer, Answerer, Decision, Handshake, HeaderText};
use crate::http::{HttpRequest, PendingRequest, Reply};
use crate::http1::{HttpAnswer, Stamp};
use crate::http_limits;
use crate::listener::{Ends, Listener, Stream};
use crate::per_client::PerClient;
use crate::poller::Poller;
use crate::protocol::Limits;
use crate::ratelimit::RateLimits;
use crate::router::{percent_decode, Found, RouteSpec, Routes};
use crate::socket::Socket;
use crate::stats::{self, counter, Refusal};
use crate::tls::{self, TlsSettings};
use crate::waiter;
use crate::websocket::Connection;

type Body = Full<Bytes>;

/// The readiness the poller reports for the gate, and what the gate finds.
type GateBuffers = (Vec<(u64, u32)>, Vec<Arrival>);

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
    /// Accepts, and answers the upgrades that come first on a connection, on the loop thread.
    gate: Gate,
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

    fn stamp(&self) -> Stamp {
        Stamp {
            server_header: self.config.server_header,
            date_header: self.config.date_header,
        }
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
    /// What each WebSocket's Python object is made as (`Connection::into_object`).
    connection_class: Option<(Py<PyType>, Py<PyTuple>)>,
    on_http: Py<PyAny>,
    on_log: Py<PyAny>,
    port: AtomicU16,
    /// The drained batch's buffer, kept to reuse its allocation.
    batch: Mutex<Vec<Event>>,
    /// What the poller reported for the gate, and what the gate found: reused buffers.
    gate_ready: Mutex<GateBuffers>,
}

#[pymethods]
impl Server {
    #[new]
    // `config` is the Python `Config`: its fields are read by name (`config::Settings`,
    // `tls::TlsSettings`), so the defaults live in one place.
    #[pyo3(signature = (routes, on_websocket, on_http, on_log, config, connection_class=None, connection_args=None))]
    fn new(
        routes: Vec<RouteSpec>,
        on_websocket: Py<PyAny>,
        on_http: Py<PyAny>,
        on_log: Py<PyAny>,
        config: &Bound<'_, PyAny>,
        connection_class: Option<Bound<'_, PyType>>,
        connection_args: Option<Bound<'_, PyTuple>>,
    ) -> PyResult<Self> {
        let py = config.py();
        let connection_class = match connection_class {
            Some(class) if !class.is_subclass_of::<Connection>()? => {
                return Err(PyTypeError::new_err(
                    "connection_class must be a subclass of Connection",
                ));
            }
            Some(class) => {
                let args = connection_args.unwrap_or_else(|| PyTuple::empty(py));
                Some((class.unbind(), args.unbind()))
            }
            None => None,
        };
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
        let gate = Gate::new(
            poller.clone(),
            config.handshake_timeout,
            config.http_max_header_size,
            config.http_max_headers,
            tls.is_some(),
        )?;
        let state = ServerState {
            per_client: PerClient::new(config.max_connections_per_ip),
            config,
            bridge: Bridge::new()?,
            routes,
            hooks: Arc::new(LoopHooks::default()),
            live: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            poller,
            gate,
            tls,
            log_level: AtomicI32::new(LOG_DEBUG),
        };
        Ok(Self {
            state: Arc::new(state),
            on_websocket,
            connection_class,
            on_http,
            on_log,
            port: AtomicU16::new(port),
            batch: Mutex::new(Vec::new()),
            gate_ready: Mutex::new((Vec::new(), Vec::new())),
        })
    }

    /// Start listening on the running `event_loop`; `log_level` is the lowest level
    /// `on_log` is to be called for.
    fn start(slf: &Bound<'_, Self>, event_loop: Py<PyAny>, log_level: i32) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.state.log_level.store(log_level, Ordering::Relaxed);
        let flush = slf.getattr("flush")?.unbind();
        let call_later = event_loop.getattr(py, "call_later")?;
        this.state.hooks.set(py, event_loop, flush)?;
        let on_timer = slf.getattr("on_timer")?.unbind();
        this.state.poller.set_timer(call_later, on_timer);
        this.listen(py)
    }

    /// Serve the sockets that are ready (the loop calls it when `poll_fd` is readable).
    fn poll(&self, py: Python<'_>) -> PyResult<()> {
        let _round = self.state.hooks.round();
        let (mut ready, mut arrivals) = std::mem::take(&mut *self.gate_ready.lock());
        let polled = self.state.poller.poll(py, &mut ready);
        if !ready.is_empty() {
            self.state.gate.serve(&ready, &mut arrivals);
            ready.clear();
            for arrival in arrivals.drain(..) {
                if let Err(error) = self.arrive(py, arrival) {
                    error.display(py);
                }
            }
        }
        *self.gate_ready.lock() = (ready, arrivals);
        polled
    }

    /// Run the heartbeats and closing deadlines that are due (armed with `call_later`).
    fn on_timer(&self, py: Python<'_>) -> PyResult<()> {
        let _round = self.state.hooks.round();
        self.state.poller.on_timer(py)
    }

    #[getter]
    fn poll_fd(&self) -> i32 {
        self.state.poller.fd()
    }

    /// Drop every socket still open: the loop that drives them is going away.
    fn stop(&self) {
        self.state.gate.stop();
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
        let _round = self.state.hooks.round();
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
        self.state.gate.stop_listening();
        let unavailable = refusal_answer(503, Vec::new(), None).to_bytes(self.state.stamp());
        for id in self.state.gate.deciding() {
            stats::record_refusal(Refusal::Shutdown);
            self.state.gate.refuse(id, &unavailable);
        }
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
            Some(fd) => Listener::inherited(fd)?,
            None => Listener::tcp(&self.state.config)?,
        };
        self.port.store(listener.port()?, Ordering::Relaxed);
        // hyper's connections and the TLS handshakes run there.
        py.detach(|| crate::runtime::init(self.state.config.io_threads));
        self.state.gate.listen(listener)?;
        Ok(())
    }

    /// Act on what the gate found.
    fn arrive(&self, py: Python<'_>, arrival: Arrival) -> PyResult<()> {
        match arrival {
            Arrival::Upgrade { id, request, ends } => self.upgrade_here(py, id, request, ends),
            Arrival::HandOver {
                fd,
                ends,
                unix,
                left,
            } => {
                let state = self.state.clone();
                crate::runtime::get().spawn(serve_accepted(fd, ends, unix, left, state));
                Ok(())
            }
            Arrival::AcceptFailed(error) => {
                self.state
                    .log(LOG_WARNING, format!("accept failed: {error}"));
                Ok(())
            }
        }
    }

    /// A WebSocket upgrade read on the loop thread: checked, then its handler started; the
    /// handler's answer is written on this thread too (`LoopAnswer`).
    fn upgrade_here(
        &self,
        py: Python<'_>,
        id: u64,
        request: Box<Request<()>>,
        ends: Ends,
    ) -> PyResult<()> {
        let state = &self.state;
        let path = percent_decode(request.uri().path()).into_owned();
        let admitted = websocket_route(state, state.routes.find(&path), &path, ends)
            .and_then(|route| Ok((admit(state, &request, &route, &path, ends, id)?, route)));
        let (admitted, route) = match admitted {
            Ok(admitted) => admitted,
            Err(answer) => {
                state.gate.refuse(id, &answer.to_bytes(state.stamp()));
                return Ok(());
            }
        };
        let route_id = route.id;
        let answer = Answer::Here(Box::new(LoopAnswer {
            state: state.clone(),
            shared: admitted.shared.clone(),
            key: admitted.key,
            limits: admitted.limits,
            answered: false,
        }));
        let handshake = handshake_of(state, &request, route, path, ends, answer);
        let conn = Connection::new(admitted.shared, handshake, state.hooks.clone())
            .into_object(py, self.connection_class.as_ref())?;
        self.on_websocket.call1(py, (route_id, conn))?;
        Ok(())
    }

    fn run(&self, py: Python<'_>, event: Event) -> PyResult<()> {
        match event {
            Event::WakeReceive(conn) => {
                let waiter = conn.waiters.lock().receive.take();
                waiter::wake(py, waiter, true)
            }
            Event::WakeSend(conn) => {
                let waiter = conn.waiters.lock().send.take();
                waiter::wake(py, waiter, true)
            }
            Event::WebSocket(shared, handshake) => {
                let route_id = handshake.route_id;
                let hooks = self.state.hooks.clone();
                let conn = Connection::new(shared, *handshake, hooks)
                    .into_object(py, self.connection_class.as_ref())?;
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

/// Serve a connection the gate handed over (on an IO thread); its first request head may
/// take `left` more.
async fn serve_accepted(
    fd: OwnedFd,
    ends: Ends,
    unix: bool,
    left: Duration,
    state: Arc<ServerState>,
) {
    let served = if unix {
        UnixStream::from_std(fd.into())
            .map(|stream| serve_connection(stream, ends, left, state.clone()).boxed())
    } else {
        TcpStream::from_std(fd.into())
            .map(|stream| serve_connection(stream, ends, left, state.clone()).boxed())
    };
    match served {
        Ok(serving) => serving.await,
        Err(error) => state.log(LOG_WARNING, format!("{ends}: cannot serve: {error}")),
    }
}

async fn serve_connection<S: Stream>(
    stream: S,
    ends: Ends,
    left: Duration,
    state: Arc<ServerState>,
) {
    match &state.tls {
        None => serve_http(stream, ends, left, state).await,
        Some(acceptor) => {
            // The TLS handshake counts against the time the request head may take.
            let deadline = state.config.handshake_timeout;
            match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_http(tls, ends, state.config.handshake_timeout, state).await,
                Ok(Err(error)) => {
                    state.log(LOG_DEBUG, format!("{ends}: TLS handshake failed: {error}"))
                }
                Err(_) => state.log(LOG_DEBUG, format!("{ends}: TLS handshake timed out")),
            }
        }
    }
}

/// HTTP/1.1 over the accepted connection, plain or TLS; its first head may take `left`.
async fn serve_http<S>(io: S, ends: Ends, left: Duration, state: Arc<ServerState>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service_state = state.clone();
    let (mut builder, served) = http_limits::builder(&state.config, left);
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
    HttpAnswer::text(status, text).into_response()
}

/// The response that refuses a handshake: the app's body, or the status's reason as text.
fn refusal_answer(status: u16, headers: Vec<(String, String)>, body: Option<Bytes>) -> HttpAnswer {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    let mut answer = match body {
        Some(body) => HttpAnswer {
            status,
            headers: header::HeaderMap::new(),
            body,
        },
        None => HttpAnswer::text(status, status.canonical_reason().unwrap_or("")),
    };
    handshake::append_headers(&mut answer.headers, headers);
    answer
}

/// The 101 that accepts a handshake.
fn accept_answer(
    key: &[u8],
    subprotocol: Option<String>,
    extra: Vec<(String, String)>,
) -> HttpAnswer {
    let mut headers = header::HeaderMap::new();
    handshake::accept_headers(&mut headers, key, subprotocol, extra);
    HttpAnswer {
        status: StatusCode::SWITCHING_PROTOCOLS,
        headers,
        body: Bytes::new(),
    }
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
        match websocket_route(&state, found, &path, ends) {
            Ok(route) => websocket_handshake(request, &state, route, path, ends).await,
            Err(answer) => answer.into_response(),
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

/// The WebSocket route `path` names, or the 403 for a path that has none.
fn websocket_route(
    state: &ServerState,
    found: Option<Found<'_>>,
    path: &str,
    ends: Ends,
) -> Result<Route, Box<HttpAnswer>> {
    match found.and_then(|f| f.endpoints.websocket.map(|id| (id, f))) {
        Some((id, found)) => Ok(Route {
            id,
            limits: found.endpoints.websocket_limits,
            params: found.params,
        }),
        None => {
            stats::record_refusal(Refusal::NotFound);
            log_request(state, ends, "GET", path, 403, "no WebSocket route");
            Err(Box::new(HttpAnswer::text(
                StatusCode::FORBIDDEN,
                "Forbidden",
            )))
        }
    }
}

/// A handshake that passed the checks: its connection, counted as live.
struct Admitted {
    shared: Arc<ConnShared>,
    key: Vec<u8>,
    limits: RateLimits,
}

/// Check a handshake (RFC 6455, Origin, `max_connections`, `max_connections_per_ip`) and
/// make its connection `id`; or the response that refuses it.
fn admit<B>(
    state: &Arc<ServerState>,
    request: &Request<B>,
    route: &Route,
    path: &str,
    ends: Ends,
    id: u64,
) -> Result<Admitted, Box<HttpAnswer>> {
    if let Some(problem) = handshake::problem(request) {
        stats::record_refusal(Refusal::BadRequest);
        log_request(state, ends, "GET", path, 400, problem);
        let mut answer = HttpAnswer::text(StatusCode::BAD_REQUEST, "Bad Request");
        answer.headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(Box::new(answer));
    }
    if !handshake::origin_allowed(state.config.allowed_origins.as_deref(), request.headers()) {
        stats::record_refusal(Refusal::ForbiddenOrigin);
        log_request(state, ends, "GET", path, 403, "origin not allowed");
        return Err(Box::new(HttpAnswer::text(
            StatusCode::FORBIDDEN,
            "Forbidden",
        )));
    }
    if state
        .config
        .max_connections
        .is_some_and(|max| state.live.lock().len() >= max)
    {
        stats::record_refusal(Refusal::OverCapacity);
        log_request(state, ends, "GET", path, 503, "max_connections reached");
        return Err(Box::new(HttpAnswer::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable",
        )));
    }
    let trusted = state.config.trusted_proxies.as_ref();
    let client = TrustedProxies::client_of(trusted, ends.peer.map(|p| p.ip()), request.headers());
    if !state.per_client.admit(id, client) {
        stats::record_refusal(Refusal::OverClientLimit);
        log_request(
            state,
            ends,
            "GET",
            path,
            429,
            "max_connections_per_ip reached",
        );
        return Err(Box::new(HttpAnswer::text(
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests",
        )));
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
    stats::bump(&counter::connections_opened);
    state.live.lock().insert(shared.id, shared.clone());
    Ok(Admitted {
        shared,
        key,
        limits: route.limits.or(RateLimits::server(&state.config)),
    })
}

/// What the handler is handed of an admitted handshake.
fn handshake_of<B>(
    state: &ServerState,
    request: &Request<B>,
    route: Route,
    path: String,
    ends: Ends,
    answer: Answer,
) -> Handshake {
    Handshake {
        route_id: route.id,
        path,
        query_string: request.uri().query().unwrap_or("").to_owned(),
        tls: state.tls.is_some(),
        headers: HeaderText::new(request.headers()),
        client: ends.peer,
        server: ends.local,
        path_params: route.params,
        subprotocols: handshake::subprotocols(request.headers()),
        answer,
    }
}

/// A handshake hyper serves: the handler's answer comes back through a oneshot.
async fn websocket_handshake(
    mut request: Request<Incoming>,
    state: &Arc<ServerState>,
    route: Route,
    path: String,
    ends: Ends,
) -> Response<Body> {
    let id = crate::node::next_id();
    let Admitted {
        shared,
        key,
        limits,
    } = match admit(state, &request, &route, &path, ends, id) {
        Ok(admitted) => admitted,
        Err(answer) => return answer.into_response(),
    };
    let (decision_tx, decision_rx) = oneshot::channel();
    let handshake = handshake_of(
        state,
        &request,
        route,
        path,
        ends,
        Answer::Later(decision_tx),
    );
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
            refusal_answer(status, headers, body).into_response()
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
            accept_answer(&key, subprotocol, headers).into_response()
        }
    }
}

/// The handler's answer to a handshake read on the loop thread, written there.
struct LoopAnswer {
    state: Arc<ServerState>,
    shared: Arc<ConnShared>,
    key: Vec<u8>,
    limits: RateLimits,
    answered: bool,
}

impl Answerer for LoopAnswer {
    fn answer(mut self: Box<Self>, decision: Decision) -> bool {
        self.answered = true;
        self.carry_out(decision)
    }
}

impl Drop for LoopAnswer {
    fn drop(&mut self) {
        if !self.answered {
            self.carry_out(Decision::refuse(403, Refusal::Error));
        }
    }
}

impl LoopAnswer {
    fn carry_out(&self, decision: Decision) -> bool {
        let (state, id) = (&self.state, self.shared.id);
        match decision {
            Decision::Respond {
                status,
                headers,
                body,
                why,
            } => {
                stats::record_refusal(why);
                self.shared.end(1006, "handshake refused");
                let answer = refusal_answer(status, headers, body);
                state.gate.refuse(id, &answer.to_bytes(state.stamp()))
            }
            Decision::Accept {
                subprotocol,
                headers,
            } => {
                stats::bump(&counter::handshakes_accepted);
                let answer = accept_answer(&self.key, subprotocol, headers);
                let Ok(socket) = state.gate.accept(id, &answer.to_bytes(state.stamp())) else {
                    return false;
                };
                Python::attach(|py| {
                    let shared = self.shared.clone();
                    if let Err(error) = state.poller.adopt_here(py, shared, socket, self.limits) {
                        error.display(py);
                    }
                });
                true
            }
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
