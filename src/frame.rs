//! RFC 6455 framing: decoding what clients send, encoding what the server sends.
//!
//! The decoder keeps no read buffer of its own while a connection is idle: the connection
//! task reads into a per-thread scratch buffer and feeds it here, and only the bytes of an
//! unfinished frame are kept (a large payload is read straight into its own buffer). The
//! encoder produces a frame as a small header plus the payload `Bytes`, so a broadcast
//! hands every member the same payload and the socket is written with one `writev`.

use bytes::{Bytes, BytesMut};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Longest header a client frame can have: 2 + 8 (length) + 4 (mask).
const MAX_HEADER: usize = 14;
/// A close reason holds at most 123 bytes (125 minus the code).
const MAX_CLOSE_REASON: usize = 123;
/// A partial payload at least this big is read straight into its own buffer.
pub const DIRECT_READ: usize = 4096;

/// UTF-8 text, validated once when the message was completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text {
    bytes: Bytes,
    /// All ASCII: the common case, checked faster than UTF-8 and copied into a Python
    /// string without decoding.
    ascii: bool,
}

impl Text {
    pub fn new(bytes: Bytes) -> Result<Self, Violation> {
        if bytes.is_ascii() {
            return Ok(Self { bytes, ascii: true });
        }
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(Self {
                bytes,
                ascii: false,
            }),
            Err(_) => Err(Violation::InvalidUtf8),
        }
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: validated in `new`, and `Bytes` is immutable.
        unsafe { std::str::from_utf8_unchecked(&self.bytes) }
    }

    pub fn is_ascii(&self) -> bool {
        self.ascii
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// What a complete frame or message means to the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Text(Text),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// The peer's close: its code (1005 when it gave none) and reason.
    Close(u16, String),
}

/// Why the peer's input ends the connection; each maps to a close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    Protocol(&'static str),
    InvalidUtf8,
    TooBig,
}

impl Violation {
    pub fn close(self) -> (u16, &'static str) {
        match self {
            Violation::Protocol(reason) => (1002, reason),
            Violation::InvalidUtf8 => (1007, "invalid UTF-8 in text message"),
            Violation::TooBig => (1009, "message too big"),
        }
    }
}

struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    len: usize,
}

/// Parse a client frame header; `Ok(None)` when `buf` does not hold all of it yet.
fn parse_header(buf: &[u8], max_size: usize) -> Result<Option<(Header, usize)>, Violation> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(Violation::Protocol("reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin {
                return Err(Violation::Protocol("fragmented control frame"));
            }
            if b1 & 0x7F > 125 {
                return Err(Violation::Protocol("control frame too long"));
            }
        }
        _ => return Err(Violation::Protocol("reserved opcode")),
    }
    if b1 & 0x80 == 0 {
        return Err(Violation::Protocol("unmasked frame from a client"));
    }
    let (len, at) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
            if len >> 63 != 0 {
                return Err(Violation::Protocol("frame length out of range"));
            }
            (len, 10)
        }
        short => (short as u64, 2),
    };
    if buf.len() < at + 4 {
        return Ok(None);
    }
    if len > max_size as u64 {
        return Err(Violation::TooBig);
    }
    let mask = buf[at..at + 4].try_into().expect("4 bytes");
    Ok(Some((
        Header {
            fin,
            opcode,
            mask,
            len: len as usize,
        },
        at + 4,
    )))
}

/// XOR `data` with the 4-byte mask, eight bytes at a time.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let value = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so the mask's phase is 0 again.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// A frame whose header is read and whose payload is still arriving.
struct Partial {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    len: usize,
    payload: BytesMut,
}

/// Turns the bytes a client sends into messages and control frames.
pub struct Decoder {
    max_size: usize,
    /// An incomplete header: its bytes so far.
    head: [u8; MAX_HEADER],
    head_len: usize,
    frame: Option<Partial>,
    /// A fragmented message: its opcode and the payload so far.
    message: Option<(u8, BytesMut)>,
}

impl Decoder {
    pub fn new(max_size: usize) -> Self {
        Self {
            max_size,
            head: [0; MAX_HEADER],
            head_len: 0,
            frame: None,
            message: None,
        }
    }

    /// The buffer of a partial payload with at least `DIRECT_READ` bytes still to come:
    /// the caller may read into its spare capacity and then call `feed_direct`.
    pub fn direct_buffer(&mut self) -> Option<&mut BytesMut> {
        let frame = self.frame.as_mut()?;
        (frame.len - frame.payload.len() >= DIRECT_READ).then_some(&mut frame.payload)
    }

    /// Bytes still missing from the partial payload (for sizing a direct read).
    pub fn direct_missing(&self) -> usize {
        self.frame
            .as_ref()
            .map_or(0, |frame| frame.len - frame.payload.len())
    }

    /// Account for bytes read straight into `direct_buffer`.
    pub fn feed_direct(&mut self, out: &mut impl FnMut(Received)) -> Result<(), Violation> {
        let complete = self
            .frame
            .as_ref()
            .is_some_and(|frame| frame.payload.len() == frame.len);
        if complete {
            let frame = self.frame.take().expect("checked above");
            self.finish(frame.fin, frame.opcode, frame.mask, frame.payload, out)?;
        }
        Ok(())
    }

    /// Decode `data`, handing each complete message or control frame to `out`.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        out: &mut impl FnMut(Received),
    ) -> Result<(), Violation> {
        while !data.is_empty() {
            if let Some(frame) = &mut self.frame {
                let take = (frame.len - frame.payload.len()).min(data.len());
                frame.payload.extend_from_slice(&data[..take]);
                data = &data[take..];
                self.feed_direct(out)?;
                continue;
            }
            let (header, used) = if self.head_len > 0 {
                // Complete a header that was split across reads.
                let old = self.head_len;
                let add = (MAX_HEADER - old).min(data.len());
                self.head[old..old + add].copy_from_slice(&data[..add]);
                match parse_header(&self.head[..old + add], self.max_size)? {
                    Some((header, used)) => {
                        self.head_len = 0;
                        data = &data[used - old..];
                        (header, 0)
                    }
                    None => {
                        self.head_len = old + add;
                        return Ok(());
                    }
                }
            } else {
                match parse_header(data, self.max_size)? {
                    Some(parsed) => parsed,
                    None => {
                        self.head[..data.len()].copy_from_slice(data);
                        self.head_len = data.len();
                        return Ok(());
                    }
                }
            };
            data = &data[used..];
            if header.len <= data.len() {
                // The whole payload is here: one allocation, one copy, no partial state.
                let payload = BytesMut::from(&data[..header.len]);
                data = &data[header.len..];
                self.finish(header.fin, header.opcode, header.mask, payload, out)?;
            } else {
                let mut payload = BytesMut::with_capacity(header.len);
                payload.extend_from_slice(data);
                data = &[];
                self.frame = Some(Partial {
                    fin: header.fin,
                    opcode: header.opcode,
                    mask: header.mask,
                    len: header.len,
                    payload,
                });
            }
        }
        Ok(())
    }

    fn finish(
        &mut self,
        fin: bool,
        opcode: u8,
        mask: [u8; 4],
        mut payload: BytesMut,
        out: &mut impl FnMut(Received),
    ) -> Result<(), Violation> {
        unmask(&mut payload, mask);
        match opcode {
            OP_PING => out(Received::Ping(payload.freeze())),
            OP_PONG => out(Received::Pong(payload.freeze())),
            OP_CLOSE => {
                let (code, reason) = parse_close(&payload)?;
                out(Received::Close(code, reason));
            }
            OP_TEXT | OP_BINARY => {
                if self.message.is_some() {
                    return Err(Violation::Protocol("new message inside a fragmented one"));
                }
                if fin {
                    out(message(opcode, payload.freeze())?);
                } else {
                    self.message = Some((opcode, payload));
                }
            }
            _ => {
                let Some((kind, mut so_far)) = self.message.take() else {
                    return Err(Violation::Protocol("continuation without a message"));
                };
                if so_far.len() + payload.len() > self.max_size {
                    return Err(Violation::TooBig);
                }
                so_far.extend_from_slice(&payload);
                if fin {
                    out(message(kind, so_far.freeze())?);
                } else {
                    self.message = Some((kind, so_far));
                }
            }
        }
        Ok(())
    }
}

fn message(opcode: u8, payload: Bytes) -> Result<Received, Violation> {
    Ok(if opcode == OP_TEXT {
        Received::Text(Text::new(payload)?)
    } else {
        Received::Binary(payload)
    })
}

fn parse_close(payload: &[u8]) -> Result<(u16, String), Violation> {
    match payload.len() {
        0 => Ok((1005, String::new())),
        1 => Err(Violation::Protocol("close frame with a one-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(Violation::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| Violation::InvalidUtf8)?;
            Ok((code, reason.to_owned()))
        }
    }
}

/// A server frame ready to write: a header and a payload shared with other sockets.
#[derive(Clone)]
pub struct OutFrame {
    head: [u8; 10],
    head_len: u8,
    pub payload: Bytes,
}

impl OutFrame {
    pub fn new(opcode: u8, payload: Bytes) -> Self {
        let mut head = [0u8; 10];
        head[0] = 0x80 | opcode;
        let len = payload.len();
        let head_len = if len < 126 {
            head[1] = len as u8;
            2
        } else if len <= u16::MAX as usize {
            head[1] = 126;
            head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        } else {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Self {
            head,
            head_len,
            payload,
        }
    }

    pub fn is_binary(&self) -> bool {
        self.head[0] & 0x0f == OP_BINARY
    }

    pub fn text(payload: Bytes) -> Self {
        Self::new(OP_TEXT, payload)
    }

    pub fn binary(payload: Bytes) -> Self {
        Self::new(OP_BINARY, payload)
    }

    pub fn close(code: u16, reason: &str) -> Self {
        if code == 1005 {
            // "No status" is never sent: answer with an empty close.
            return Self::new(OP_CLOSE, Bytes::new());
        }
        let mut end = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = Vec::with_capacity(2 + end);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        Self::new(OP_CLOSE, payload.into())
    }

    /// What is left to write after the first `n` bytes went out, as a headerless frame.
    pub fn after(&self, n: usize) -> Self {
        let head = self.head();
        let rest = if n < head.len() {
            let mut rest = Vec::with_capacity(self.wire_len() - n);
            rest.extend_from_slice(&head[n..]);
            rest.extend_from_slice(&self.payload);
            Bytes::from(rest)
        } else {
            self.payload.slice(n - head.len()..)
        };
        Self {
            // Keep the opcode for `is_close`; a zero header length writes no header.
            head: self.head,
            head_len: 0,
            payload: rest,
        }
    }

    pub fn head(&self) -> &[u8] {
        &self.head[..self.head_len as usize]
    }

    pub fn is_close(&self) -> bool {
        self.head[0] & 0x0F == OP_CLOSE
    }

    /// Bytes on the wire.
    pub fn wire_len(&self) -> usize {
        self.head_len as usize + self.payload.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn decode_in_pieces(bytes: &[u8], piece: usize) -> Result<Vec<Received>, Violation> {
        let mut decoder = Decoder::new(1 << 20);
        let mut got = Vec::new();
        for chunk in bytes.chunks(piece) {
            decoder.feed(chunk, &mut |r| got.push(r))?;
        }
        Ok(got)
    }

    #[test]
    fn messages_survive_any_split() {
        let big = vec![b'x'; 70_000];
        let mut wire = client_frame(true, OP_TEXT, "héllo".as_bytes());
        wire.extend(client_frame(true, OP_BINARY, &big));
        wire.extend(client_frame(false, OP_TEXT, b"frag"));
        wire.extend(client_frame(true, OP_PING, b"p"));
        wire.extend(client_frame(true, OP_CONTINUATION, b"ment"));
        wire.extend(client_frame(true, OP_CLOSE, &[0x03, 0xE8, b'o', b'k']));
        for piece in [1, 2, 3, 7, 13, 100, 4096, usize::MAX] {
            let got = decode_in_pieces(&wire, piece.min(wire.len())).unwrap();
            assert_eq!(got.len(), 5, "piece {piece}");
            assert!(matches!(&got[0], Received::Text(t) if t.as_str() == "héllo"));
            assert!(matches!(&got[1], Received::Binary(b) if b[..] == big[..]));
            assert!(matches!(&got[2], Received::Ping(p) if &p[..] == b"p"));
            assert!(matches!(&got[3], Received::Text(t) if t.as_str() == "fragment"));
            assert_eq!(got[4], Received::Close(1000, "ok".into()));
        }
    }

    #[test]
    fn violations_map_to_close_codes() {
        let code = |wire: Vec<u8>| decode_in_pieces(&wire, wire.len()).unwrap_err().close().0;
        let mut unmasked = client_frame(true, OP_TEXT, b"hi");
        unmasked[1] &= 0x7F;
        assert_eq!(code(unmasked), 1002);
        assert_eq!(code(client_frame(true, 0x3, b"")), 1002);
        assert_eq!(code(client_frame(true, OP_CONTINUATION, b"x")), 1002);
        assert_eq!(code(client_frame(false, OP_PING, b"")), 1002);
        assert_eq!(code(client_frame(true, OP_TEXT, &[0xFF, 0xFE])), 1007);
        assert_eq!(code(client_frame(true, OP_CLOSE, &[0x03, 0xED])), 1002);
        let mut reserved = client_frame(true, OP_TEXT, b"x");
        reserved[0] |= 0x40;
        assert_eq!(code(reserved), 1002);
        let mut decoder = Decoder::new(10);
        let err = decoder
            .feed(&client_frame(true, OP_BINARY, &[0; 11]), &mut |_| {})
            .unwrap_err();
        assert_eq!(err, Violation::TooBig);
    }

    #[test]
    fn direct_reads_complete_a_large_frame() {
        let payload = vec![7u8; 20_000];
        let wire = client_frame(true, OP_BINARY, &payload);
        let mut decoder = Decoder::new(1 << 20);
        let mut got = Vec::new();
        decoder.feed(&wire[..100], &mut |r| got.push(r)).unwrap();
        let buffer = decoder.direct_buffer().expect("a large payload is pending");
        buffer.extend_from_slice(&wire[100..]);
        decoder.feed_direct(&mut |r| got.push(r)).unwrap();
        assert!(matches!(&got[0], Received::Binary(b) if b[..] == payload[..]));
    }

    #[test]
    fn text_knows_when_it_is_ascii() {
        assert!(Text::new(Bytes::from_static(b"plain")).unwrap().is_ascii());
        let accented = Text::new(Bytes::from("é".as_bytes())).unwrap();
        assert!(!accented.is_ascii());
        assert_eq!(accented.as_str(), "é");
        assert_eq!(
            Text::new(Bytes::from_static(b"\xC3")).unwrap_err(),
            Violation::InvalidUtf8
        );
    }

    #[test]
    fn out_frames_have_minimal_headers() {
        assert_eq!(OutFrame::text(Bytes::from_static(b"hi")).head(), &[0x81, 2]);
        assert_eq!(
            OutFrame::binary(vec![0; 300].into()).head(),
            &[0x82, 126, 1, 44]
        );
        let long = OutFrame::binary(vec![0; 70_000].into());
        assert_eq!(long.head().len(), 10);
        assert_eq!(long.wire_len(), 70_010);
        let close = OutFrame::close(1000, &"é".repeat(100));
        assert!(close.payload.len() <= 125 && close.is_close());
        assert!(OutFrame::close(1005, "").payload.is_empty());
    }
}
