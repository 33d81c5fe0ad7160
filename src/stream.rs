//! The IO of one accepted WebSocket: a reader and a writer, joined in one tokio task.
//!
//! The reader moves frames into the bounded inbox (and stops reading while it is full, so
//! TCP pushes back), turns protocol errors into close codes, and records pongs. The writer
//! drains the outbox, several frames per flush, and keeps the heartbeat. Neither ever takes
//! the GIL: Python learns about everything through `ConnShared` and the bridge.

use std::sync::Arc;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::bridge::LOG_INFO;
use crate::connection::{ConnShared, Incoming, Outgoing};
use crate::heartbeat::{self, Beat, Heartbeat};
use tokio::time::Instant;

pub type WsStream = WebSocketStream<TokioIo<Upgraded>>;
type Sink = SplitSink<WsStream, Message>;

/// Frames written per flush at most, and bytes: enough to amortise the syscall, small
/// enough that one busy socket does not hold the writer for long.
const BATCH_MESSAGES: usize = 64;
const BATCH_BYTES: usize = 256 * 1024;

pub async fn run(shared: Arc<ConnShared>, ws: WsStream, outbox: mpsc::UnboundedReceiver<Outgoing>) {
    let (sink, stream) = ws.split();
    let reader_done = CancellationToken::new();
    tokio::join!(
        read_loop(shared.clone(), stream, reader_done.clone()),
        write_loop(shared.clone(), sink, outbox, reader_done),
    );
    // Both halves are dropped here: the socket closes.
    shared.end(1006, "connection lost");
}

/// How a read error closes the connection: the code and reason sent to the peer.
fn error_close(error: &WsError) -> Option<(u16, &'static str)> {
    match error {
        WsError::Utf8(_) => Some((1007, "invalid UTF-8 in text message")),
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => Some((1009, "message too big")),
        WsError::Capacity(_) => Some((1009, "message too big")),
        // The peer dropped the TCP connection without a close frame: nothing to answer.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) | WsError::AttackAttempt => Some((1002, "protocol error")),
        // The socket itself failed or already closed: nothing can be sent.
        _ => None,
    }
}

async fn read_loop(
    shared: Arc<ConnShared>,
    mut stream: SplitStream<WsStream>,
    done: CancellationToken,
) {
    let stop = shared.stop.clone();
    // Made once: a fresh `cancelled()` per message would register with the token each time.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        while shared.inbox_is_full() {
            let space = shared.inbox_space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            if !shared.inbox_is_full() {
                break;
            }
            tokio::select! {
                _ = space => {}
                _ = &mut stopped => return done.cancel(),
            }
        }
        let next = tokio::select! {
            biased;
            _ = &mut stopped => return done.cancel(),
            next = stream.next() => next,
        };
        match next {
            Some(Ok(Message::Text(text))) => shared.deliver(Incoming::Text(text)),
            Some(Ok(Message::Binary(data))) => shared.deliver(Incoming::Binary(data)),
            Some(Ok(Message::Pong(payload))) => heartbeat::pong(&shared, &payload),
            Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                // tungstenite queued the reply; reading on flushes it and then ends.
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                shared.end(code, &reason);
            }
            Some(Err(error)) => {
                match error_close(&error) {
                    Some((code, reason)) => {
                        shared.server.bridge.log(
                            LOG_INFO,
                            format!("closing connection {} with {code}: {error}", shared.id),
                        );
                        // The writer sends the close frame, then sees `done`.
                        shared.close(code, reason);
                    }
                    None => {
                        shared.end(1006, "connection lost");
                        stop.cancel();
                    }
                }
                return done.cancel();
            }
            None => {
                shared.end(1006, "connection lost");
                stop.cancel();
                return done.cancel();
            }
        }
    }
}

enum Written {
    Open,
    CloseSent,
}

async fn write_loop(
    shared: Arc<ConnShared>,
    mut sink: Sink,
    mut outbox: mpsc::UnboundedReceiver<Outgoing>,
    reader_done: CancellationToken,
) {
    let stop = shared.stop.clone();
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    let mut heartbeat = Heartbeat::new(&shared.server.config);
    // Two timers made once and moved only when their deadline changes: a new timer per
    // message would cost a timer-wheel insert and removal each time.
    let mut check = Timer::new();
    let mut write_deadline = Timer::new();
    loop {
        check.set(heartbeat.next_check());
        let command = tokio::select! {
            biased;
            _ = &mut stopped => return,
            command = outbox.recv() => match command {
                Some(command) => command,
                None => return,
            },
            _ = check.wait() => {
                match heartbeat.check(&shared) {
                    Beat::Ping(payload) => Outgoing::Message(Message::Ping(payload.into()), 0),
                    Beat::TimedOut => {
                        // The close frame's write must not inherit the expired deadline.
                        heartbeat.disable();
                        shared.close(1011, "keepalive ping timeout");
                        continue;
                    }
                    Beat::Idle => continue,
                }
            }
        };
        write_deadline.set(heartbeat.write_deadline());
        let written = tokio::select! {
            biased;
            _ = &mut stopped => return,
            _ = write_deadline.wait() => {
                shared.end(1011, "keepalive ping timeout");
                stop.cancel();
                return;
            }
            written = write_batch(&shared, &mut sink, &mut outbox, command) => written,
        };
        match written {
            Ok(Written::Open) => {}
            Ok(Written::CloseSent) => {
                tokio::select! {
                    _ = &mut stopped => {}
                    _ = reader_done.cancelled() => {}
                }
                return;
            }
            Err(_) => {
                shared.end(1006, "connection lost");
                stop.cancel();
                return;
            }
        }
    }
}

/// A timer that is moved, not remade, when its deadline changes; `None` never fires.
struct Timer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    deadline: Option<Instant>,
}

impl Timer {
    fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            deadline: None,
        }
    }

    fn set(&mut self, deadline: Option<Instant>) {
        if deadline != self.deadline {
            self.deadline = deadline;
            if let Some(at) = deadline {
                self.sleep.as_mut().reset(at);
            }
        }
    }

    async fn wait(&mut self) {
        match self.deadline {
            Some(_) => (&mut self.sleep).await,
            None => std::future::pending().await,
        }
    }
}

/// Write `first` and whatever else is already queued, then flush once.
async fn write_batch(
    shared: &Arc<ConnShared>,
    sink: &mut Sink,
    outbox: &mut mpsc::UnboundedReceiver<Outgoing>,
    first: Outgoing,
) -> Result<Written, WsError> {
    let mut command = first;
    let mut messages = 0;
    let mut bytes = 0;
    let outcome = loop {
        match command {
            Outgoing::Message(message, size) => {
                sink.feed(message).await?;
                messages += 1;
                bytes += size;
            }
            Outgoing::Close(code, reason) => {
                sink.feed(close_message(code, &reason)).await?;
                break Written::CloseSent;
            }
        }
        if messages >= BATCH_MESSAGES || bytes >= BATCH_BYTES {
            break Written::Open;
        }
        match outbox.try_recv() {
            Ok(next) => command = next,
            Err(_) => break Written::Open,
        }
    };
    sink.flush().await?;
    if bytes > 0 {
        shared.written(bytes);
    }
    Ok(outcome)
}

fn close_message(code: u16, reason: &str) -> Message {
    // A close reason may hold 123 bytes; cut on a character boundary.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason[..end].into(),
    }))
}
