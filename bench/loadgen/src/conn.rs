//! One client connection: TCP connect from a chosen loopback source address, a real
//! RFC 6455 opening handshake (the server's Sec-WebSocket-Accept is checked), then a
//! byte buffer feeding the frame parser.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::frame::{self, Event, FrameReader};

/// Where to connect and what to ask for.
#[derive(Clone)]
pub struct Target {
    /// Connection `i` goes to `addresses[i % len]`: one server, or several sharing a broker.
    pub addresses: Vec<SocketAddr>,
    pub path: String,
    /// Local addresses to spread connections over (127.0.0.x); empty means "let the
    /// kernel choose", i.e. 127.0.0.1.
    pub sources: Vec<Ipv4Addr>,
    pub read_buffer: usize,
}

pub struct Conn {
    pub stream: TcpStream,
    pub reader: FrameReader,
    buffer: Box<[u8]>,
    /// Bytes that arrived with the handshake response, not yet parsed.
    leftover: Vec<u8>,
    pub out: Vec<u8>,
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

fn handshake_key(counter: u64) -> String {
    // 16 bytes of varying content, base64: any 16-byte value is a valid key.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = [0u8; 16];
    let mixed = counter.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5DEE_CE66_D1CE_4E5B;
    bytes[..8].copy_from_slice(&mixed.to_le_bytes());
    bytes[8..].copy_from_slice(&counter.to_be_bytes());
    let mut key = String::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | *b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            key.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    while key.len() < 24 {
        key.push('=');
    }
    key
}

async fn connect_tcp(target: &Target, index: usize) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if !target.sources.is_empty() {
        let source = target.sources[index % target.sources.len()];
        // Pick the port at connect() time, by the full 4-tuple, so thousands of
        // connections per source address do not run out of ports at bind().
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a correctly sized int.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    }
    let stream = socket.connect(target.address(index)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn find_header_end(data: &[u8]) -> Option<usize> {
    data.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

impl Target {
    /// The address connection `index` goes to.
    pub fn address(&self, index: usize) -> SocketAddr {
        self.addresses[index % self.addresses.len()]
    }

    /// Which of the addresses connection `index` goes to.
    pub fn server_of(&self, index: usize) -> usize {
        index % self.addresses.len()
    }
}

impl Conn {
    /// Connects and completes the opening handshake; `index` picks the source address
    /// and varies the key.
    pub async fn open(target: &Target, index: usize) -> Result<Conn, String> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, Self::open_inner(target, index))
            .await
            .map_err(|_| format!("handshake timed out after {HANDSHAKE_TIMEOUT:?}"))?
    }

    async fn open_inner(target: &Target, index: usize) -> Result<Conn, String> {
        let mut stream = connect_tcp(target, index)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let key = handshake_key(index as u64);
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            target.path,
            target.address(index)
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send handshake: {e}"))?;

        let mut response = Vec::with_capacity(256);
        let head_len = loop {
            let mut chunk = [0u8; 1024];
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read handshake: {e}"))?;
            if n == 0 {
                return Err("server closed the connection during the handshake".into());
            }
            response.extend_from_slice(&chunk[..n]);
            if let Some(end) = find_header_end(&response) {
                break end;
            }
            if response.len() > 16 * 1024 {
                return Err("handshake response headers too long".into());
            }
        };
        let head = String::from_utf8_lossy(&response[..head_len]).into_owned();
        let status = head.lines().next().unwrap_or("");
        if !status.starts_with("HTTP/1.1 101") {
            return Err(format!("handshake refused: {status}"));
        }
        let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
        if header_value(&head, "sec-websocket-accept") != Some(expected.as_str()) {
            return Err("wrong or missing Sec-WebSocket-Accept".into());
        }
        if header_value(&head, "sec-websocket-extensions").is_some() {
            return Err("server negotiated an extension the client did not offer".into());
        }
        Ok(Conn {
            stream,
            reader: FrameReader::default(),
            buffer: vec![0u8; target.read_buffer.max(256)].into_boxed_slice(),
            leftover: response[head_len..].to_vec(),
            out: Vec::new(),
        })
    }

    /// Reads once (waiting if nothing is there) and parses what came. Pings are
    /// answered through `out`, which the caller writes. Returns false on end of stream.
    pub async fn read_events<F>(&mut self, on_event: &mut F) -> Result<bool, String>
    where
        F: FnMut(Event<'_>) -> Result<(), String>,
    {
        let Conn {
            stream,
            reader,
            buffer,
            leftover,
            out,
        } = self;
        let mut handle = |event: Event<'_>| match event {
            Event::Ping(data) => {
                frame::push_client_frame(out, frame::OP_PONG, data);
                Ok(())
            }
            other => on_event(other),
        };
        if !leftover.is_empty() {
            let pending = std::mem::take(leftover);
            reader.feed(&pending, &mut handle)?;
            return Ok(true);
        }
        let n = stream
            .read(buffer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Ok(false);
        }
        reader.feed(&buffer[..n], &mut handle)?;
        Ok(true)
    }

    /// Writes and clears `out`.
    pub async fn flush(&mut self) -> Result<(), String> {
        if !self.out.is_empty() {
            self.stream
                .write_all(&self.out)
                .await
                .map_err(|e| format!("write: {e}"))?;
            self.out.clear();
        }
        Ok(())
    }

    /// The closing handshake: send a close frame, then read (ignoring stray data)
    /// until the server's close frame or end of stream. True when it was clean.
    pub async fn close(mut self, timeout: Duration) -> bool {
        frame::push_close_frame(&mut self.out);
        if self.flush().await.is_err() {
            return false;
        }
        let wait = async {
            loop {
                let mut saw_close = false;
                let mut ignore = |event: Event<'_>| {
                    saw_close |= matches!(event, Event::Close);
                    Ok(())
                };
                match self.read_events(&mut ignore).await {
                    Ok(true) if saw_close => return true,
                    Ok(true) => {}
                    // End of stream without a close frame still ends the connection.
                    Ok(false) => return true,
                    Err(_) => return false,
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_24_characters_of_base64() {
        for counter in [0u64, 1, 12345, u64::MAX] {
            let key = handshake_key(counter);
            assert_eq!(key.len(), 24, "{key}");
            assert!(key.ends_with("=="), "{key}");
        }
        assert_ne!(handshake_key(1), handshake_key(2));
    }

    #[test]
    fn header_lookup_ignores_case() {
        let head = "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: abc=\r\n\r\n";
        assert_eq!(header_value(head, "sec-websocket-accept"), Some("abc="));
        assert_eq!(header_value(head, "upgrade"), None);
    }
}
