//! The pure-Rust reference server: the two benchmark endpoints, `/echo` and `/chat`,
//! built from the crates the ferrosock engine uses (tokio, hyper 1, tokio-tungstenite)
//! and with no Python anywhere. Its figures are the limit the Python bridge is measured
//! against, so it does what a careful engine would do and nothing more:
//!
//! - hyper parses the handshake; `hyper::upgrade::on` hands the socket to tungstenite;
//! - echo feeds every message that is already buffered and flushes once per batch;
//! - broadcast encodes a message once (`Utf8Bytes` is a shared `Bytes`) and offers it to
//!   each member's bounded outbox with `try_send`; a writer task per member drains it;
//! - small read buffers, because idle connections are measured too.
//!
//! Usage: `reference [--host 127.0.0.1] [--port 8000] [--threads 1] [--read-buffer 4096]`.
//! One thread (the default) runs a current-thread runtime, which is what a server pinned
//! to one CPU wants.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Messages a chat member may have queued before it counts as a slow consumer.
const OUTBOX_CAPACITY: usize = 1024;
const LISTEN_BACKLOG: u32 = 4096;

struct Settings {
    host: String,
    port: u16,
    threads: usize,
    read_buffer: usize,
}

fn parse_args() -> Settings {
    let mut settings = Settings {
        host: "127.0.0.1".into(),
        port: 8000,
        threads: 1,
        read_buffer: 4096,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--host" => settings.host = value(),
            "--port" => settings.port = value().parse().unwrap_or_else(|_| usage("bad --port")),
            "--threads" => {
                settings.threads = value().parse().unwrap_or_else(|_| usage("bad --threads"))
            }
            "--read-buffer" => {
                settings.read_buffer = value()
                    .parse()
                    .unwrap_or_else(|_| usage("bad --read-buffer"))
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    settings
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("reference: {problem}");
    }
    eprintln!("usage: reference [--host H] [--port P] [--threads N] [--read-buffer BYTES]");
    std::process::exit(2);
}

/// The chat room: every member's outbox, by connection id.
#[derive(Default)]
struct Room {
    next_id: AtomicU64,
    members: Mutex<HashMap<u64, mpsc::Sender<Message>>>,
}

impl Room {
    fn join(&self, outbox: mpsc::Sender<Message>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.members.lock().unwrap().insert(id, outbox);
        id
    }

    fn leave(&self, id: u64) {
        self.members.lock().unwrap().remove(&id);
    }

    /// Offers one message to every member without waiting on any of them; a member
    /// whose outbox is full misses it (the load generator reports any gap).
    fn broadcast(&self, message: &Message) {
        for outbox in self.members.lock().unwrap().values() {
            let _ = outbox.try_send(message.clone());
        }
    }
}

struct Server {
    room: Room,
    ws_config: WebSocketConfig,
}

fn main() {
    let settings = parse_args();
    let runtime = if settings.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    runtime.block_on(serve(settings));
}

async fn serve(settings: Settings) {
    let address: SocketAddr = format!("{}:{}", settings.host, settings.port)
        .parse()
        .unwrap_or_else(|_| usage("bad --host/--port"));
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(address).expect("bind");
    let listener: TcpListener = socket.listen(LISTEN_BACKLOG).expect("listen");
    eprintln!("reference: listening on {address}");

    let server = Arc::new(Server {
        room: Room::default(),
        ws_config: WebSocketConfig::default().read_buffer_size(settings.read_buffer),
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                eprintln!("reference: accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| upgrade(request, server.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

#[derive(Clone, Copy)]
enum Endpoint {
    Echo,
    Chat,
}

fn plain(status: StatusCode) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    response
}

fn header_has_token(
    request: &Request<Incoming>,
    name: hyper::header::HeaderName,
    token: &str,
) -> bool {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|part| part.trim().eq_ignore_ascii_case(token))
}

async fn upgrade(
    request: Request<Incoming>,
    server: Arc<Server>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let endpoint = match request.uri().path() {
        "/echo" => Endpoint::Echo,
        "/chat" => Endpoint::Chat,
        _ => return Ok(plain(StatusCode::NOT_FOUND)),
    };
    let key = request.headers().get(SEC_WEBSOCKET_KEY).cloned();
    let version_ok = request
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|value| value == "13");
    let (Some(key), true, true, true) = (
        key,
        version_ok,
        header_has_token(&request, CONNECTION, "upgrade"),
        header_has_token(&request, UPGRADE, "websocket"),
    ) else {
        return Ok(plain(StatusCode::BAD_REQUEST));
    };

    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(request).await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(server.ws_config),
        )
        .await;
        match endpoint {
            Endpoint::Echo => echo(ws).await,
            Endpoint::Chat => chat(ws, &server.room).await,
        }
    });

    let mut response = plain(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    Ok(response)
}

/// Echoes every data message, flushing once per batch of messages that were
/// already buffered. Control frames are answered by tungstenite itself.
async fn echo(mut ws: Ws) {
    while let Some(Ok(message)) = ws.next().await {
        if !queue_echo(&mut ws, message).await {
            break;
        }
        // Drain what is already buffered without waiting, then write once.
        while let Some(next) = ws.next().now_or_never() {
            match next {
                Some(Ok(message)) => {
                    if !queue_echo(&mut ws, message).await {
                        break;
                    }
                }
                _ => break,
            }
        }
        if ws.flush().await.is_err() {
            break;
        }
    }
    // Sends the queued reply to a client's close frame, if any.
    let _ = ws.flush().await;
}

async fn queue_echo(ws: &mut Ws, message: Message) -> bool {
    match message {
        Message::Text(_) | Message::Binary(_) => ws.feed(message).await.is_ok(),
        Message::Close(_) => {
            let _ = ws.flush().await;
            false
        }
        _ => true,
    }
}

/// The FastAPI documentation's chat: every message a member sends goes to every
/// member, the sender included.
async fn chat(ws: Ws, room: &Room) {
    let (mut sink, mut stream) = ws.split();
    let (outbox, mut outbox_reader) = mpsc::channel::<Message>(OUTBOX_CAPACITY);
    let id = room.join(outbox);

    let writer = tokio::spawn(async move {
        while let Some(message) = outbox_reader.recv().await {
            if sink.feed(message).await.is_err() {
                return;
            }
            while let Ok(message) = outbox_reader.try_recv() {
                if sink.feed(message).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });

    while let Some(Ok(message)) = stream.next().await {
        match message {
            Message::Text(_) | Message::Binary(_) => room.broadcast(&message),
            Message::Close(_) => break,
            _ => {}
        }
    }
    room.leave(id);
    // Leaving dropped the room's handle on the outbox; the writer drains and ends.
    let _ = writer.await;
}
