//! RFC 6455 framing: decoding what clients send, encoding what the server sends.
//!
//! The decoder keeps no read buffer of its own while a connection is idle: the connection
//! task reads into a per-thread scratch buffer and feeds it here, and only the bytes of an
//! unfinished frame are kept (a large payload is read straight into its own buffer). The
//! encoder produces a frame as a small header plus the payload `Bytes`, so a broadcast
//! hands every member the same payload and the socket is written with one `writev`.
//!
//! Decoding is strict and sans-IO: bytes in, messages and control frames out, and the
//! first violation returned as soon as the bytes that hold it are seen (text is validated
//! piece by piece as it arrives), after everything complete before it was handed out.

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

    /// Text whose bytes `Utf8Check` has already validated, fragment by fragment.
    fn validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        let ascii = bytes.is_ascii();
        Self { bytes, ascii }
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

/// Incremental UTF-8 validation of a text message whose bytes arrive in pieces
/// (fragments, or one frame's payload over several reads), so that invalid text fails on
/// the piece that holds it rather than when the message ends. Only the up-to-3 bytes of
/// a code point cut by a piece boundary are kept between pieces.
#[derive(Default)]
struct Utf8Check {
    tail: [u8; 4],
    tail_len: usize,
    /// Some piece was checked: the message's end must be checked here too.
    seen_any: bool,
}

impl Utf8Check {
    /// Check the next piece of the text.
    fn feed(&mut self, mut piece: &[u8]) -> Result<(), Violation> {
        self.seen_any = true;
        if self.tail_len > 0 {
            // Complete the cut code point first: its lead byte gives its width.
            let width = match self.tail[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let take = (width - self.tail_len).min(piece.len());
            self.tail[self.tail_len..self.tail_len + take].copy_from_slice(&piece[..take]);
            self.tail_len += take;
            piece = &piece[take..];
            match std::str::from_utf8(&self.tail[..self.tail_len]) {
                Ok(_) => self.tail_len = 0,
                Err(error) if error.error_len().is_none() => return Ok(()),
                Err(_) => return Err(Violation::InvalidUtf8),
            }
        }
        if piece.is_ascii() {
            return Ok(());
        }
        match std::str::from_utf8(piece) {
            Ok(_) => Ok(()),
            Err(error) if error.error_len().is_none() => {
                let rest = &piece[error.valid_up_to()..];
                self.tail[..rest.len()].copy_from_slice(rest);
                self.tail_len = rest.len();
                Ok(())
            }
            Err(_) => Err(Violation::InvalidUtf8),
        }
    }

    /// The text ended: a code point still cut is invalid.
    fn finish(&mut self) -> Result<(), Violation> {
        let complete = self.tail_len == 0;
        *self = Self::default();
        if complete {
            Ok(())
        } else {
            Err(Violation::InvalidUtf8)
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

/// XOR `data`, which starts `offset` bytes into its frame's payload, with the mask.
fn unmask_at(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let phase = offset & 3;
    let rotated = [
        mask[phase],
        mask[(phase + 1) & 3],
        mask[(phase + 2) & 3],
        mask[(phase + 3) & 3],
    ];
    unmask(data, rotated);
}

/// A frame whose header is read and whose payload is still arriving.
struct Partial {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    len: usize,
    /// Unmasked up to `checked`; still masked after it.
    payload: BytesMut,
    /// Payload bytes already unmasked (and, for text, validated as they arrived).
    checked: usize,
    /// The payload is text: it is validated as it arrives.
    text: bool,
}

/// Turns the bytes a client sends into messages and control frames.
///
/// Everything complete before a violation is handed out first; the violation is returned
/// as soon as the bytes that hold it are seen (a bad header at once, invalid text on the
/// fragment or read that holds it), and the decoder is not fed again after it.
pub struct Decoder {
    max_size: usize,
    /// An incomplete header: its bytes so far.
    head: [u8; MAX_HEADER],
    head_len: usize,
    /// Boxed, as `message`: rarely there, and an idle socket would carry their room.
    frame: Option<Box<Partial>>,
    /// A fragmented message: its opcode and the payload so far (unmasked).
    message: Option<Box<(u8, BytesMut)>>,
    /// The text message being received, checked piece by piece.
    utf8: Utf8Check,
}

impl Decoder {
    pub fn new(max_size: usize) -> Self {
        Self {
            max_size,
            head: [0; MAX_HEADER],
            head_len: 0,
            frame: None,
            message: None,
            utf8: Utf8Check::default(),
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
        let Some(frame) = &mut self.frame else {
            return Ok(());
        };
        // Unmask what arrived and check it now, not when the frame is complete.
        let arrived = &mut frame.payload[frame.checked..];
        unmask_at(arrived, frame.mask, frame.checked);
        if frame.text {
            self.utf8.feed(arrived)?;
        }
        frame.checked = frame.payload.len();
        if frame.checked == frame.len {
            let frame = *self.frame.take().expect("checked above");
            self.finish(frame.fin, frame.opcode, frame.payload, frame.text, out)?;
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
            let text = self.start_frame(&header)?;
            if header.len <= data.len() {
                // The whole payload is here: one allocation, one copy, no partial state.
                let mut payload = BytesMut::from(&data[..header.len]);
                data = &data[header.len..];
                unmask(&mut payload, header.mask);
                if text && !(header.fin && header.opcode == OP_TEXT) {
                    // A fragment: checked now. A whole text message is checked once, below.
                    self.utf8.feed(&payload)?;
                }
                self.finish(header.fin, header.opcode, payload, text, out)?;
            } else {
                let mut payload = BytesMut::with_capacity(header.len);
                payload.extend_from_slice(data);
                data = &[];
                self.frame = Some(Box::new(Partial {
                    fin: header.fin,
                    opcode: header.opcode,
                    mask: header.mask,
                    len: header.len,
                    payload,
                    checked: 0,
                    text,
                }));
                self.feed_direct(out)?;
            }
        }
        Ok(())
    }

    /// Check that a frame may come now, before its payload is read; returns whether its
    /// payload is text.
    fn start_frame(&mut self, header: &Header) -> Result<bool, Violation> {
        match header.opcode {
            OP_TEXT | OP_BINARY => {
                if self.message.is_some() {
                    return Err(Violation::Protocol("new message inside a fragmented one"));
                }
                if header.opcode == OP_TEXT {
                    self.utf8 = Utf8Check::default();
                }
                Ok(header.opcode == OP_TEXT)
            }
            OP_CONTINUATION => {
                let Some((kind, so_far)) = self.message.as_deref() else {
                    return Err(Violation::Protocol("continuation without a message"));
                };
                if so_far.len() + header.len > self.max_size {
                    return Err(Violation::TooBig);
                }
                Ok(*kind == OP_TEXT)
            }
            _ => Ok(false),
        }
    }

    /// A frame is complete and its payload unmasked. Text fragments have been validated as
    /// they arrived, except a whole unfragmented text frame read at once, validated here.
    fn finish(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: BytesMut,
        text: bool,
        out: &mut impl FnMut(Received),
    ) -> Result<(), Violation> {
        match opcode {
            OP_PING => out(Received::Ping(payload.freeze())),
            OP_PONG => out(Received::Pong(payload.freeze())),
            OP_CLOSE => {
                let (code, reason) = parse_close(&payload)?;
                out(Received::Close(code, reason));
            }
            OP_TEXT | OP_BINARY => {
                if !fin {
                    self.message = Some(Box::new((opcode, payload)));
                } else if text {
                    out(Received::Text(self.complete_text(payload.freeze())?));
                } else {
                    out(Received::Binary(payload.freeze()));
                }
            }
            _ => {
                let (kind, mut so_far) = *self.message.take().expect("checked by start_frame");
                so_far.extend_from_slice(&payload);
                if !fin {
                    self.message = Some(Box::new((kind, so_far)));
                } else if text {
                    out(Received::Text(self.complete_text(so_far.freeze())?));
                } else {
                    out(Received::Binary(so_far.freeze()));
                }
            }
        }
        Ok(())
    }

    /// The last piece of a text message: validated already unless it came whole at once.
    fn complete_text(&mut self, bytes: Bytes) -> Result<Text, Violation> {
        if self.utf8.seen_any {
            self.utf8.finish()?;
            Ok(Text::validated(bytes))
        } else {
            Text::new(bytes)
        }
    }
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
#[derive(Clone, Debug)]
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

    /// Frames already encoded, back to back (`wire`), queued and written as one: a burst
    /// of broadcasts goes to each member as one slice of bytes. Its "opcode" is none
    /// (no FIN bit either): it is neither a close nor started.
    pub fn encoded(wire: Bytes) -> Self {
        Self {
            head: [0; 10],
            head_len: 0,
            payload: wire,
        }
    }

    /// Append the frame's bytes on the wire to `wire`.
    pub fn encode_into(&self, wire: &mut Vec<u8>) {
        wire.extend_from_slice(self.head());
        wire.extend_from_slice(&self.payload);
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
        let mut head = self.head;
        // Keep the opcode for `is_close`; a zero header length writes no header, and the
        // FIN bit marks it started (an `encoded` frame has none until now).
        head[0] |= 0x80;
        Self {
            head,
            head_len: 0,
            payload: rest,
        }
    }

    pub fn head(&self) -> &[u8] {
        &self.head[..self.head_len as usize]
    }

    /// Part of the frame is on the wire already (it was cut by `after`).
    pub fn is_started(&self) -> bool {
        self.head_len == 0 && self.head[0] & 0x80 != 0
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
pub(crate) mod tests {
    use super::*;

    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        masked_frame(fin, opcode, [0x12, 0x34, 0x56, 0x78], payload)
    }

    /// A client frame as the wire carries it (also used by the property tests).
    pub(crate) fn masked_frame(fin: bool, opcode: u8, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
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

    /// Feed `wire` one byte at a time: the messages handed out, and the index of the byte
    /// whose feed returned the violation.
    fn decode_bytewise(wire: &[u8]) -> (Vec<Received>, Option<(usize, Violation)>) {
        let mut decoder = Decoder::new(1 << 20);
        let mut got = Vec::new();
        for (i, byte) in wire.iter().enumerate() {
            if let Err(violation) = decoder.feed(std::slice::from_ref(byte), &mut |r| got.push(r)) {
                return (got, Some((i, violation)));
            }
        }
        (got, None)
    }

    const MIXED: &str = "aé€😀zκόσμε";

    #[test]
    fn text_split_into_fragments_at_every_byte_is_whole_again() {
        let bytes = MIXED.as_bytes();
        for cut in 0..=bytes.len() {
            let mut wire = client_frame(false, OP_TEXT, &bytes[..cut]);
            wire.extend(client_frame(true, OP_PING, b"between"));
            wire.extend(client_frame(true, OP_CONTINUATION, &bytes[cut..]));
            for piece in [1, 3, wire.len()] {
                let got = decode_in_pieces(&wire, piece).unwrap();
                assert_eq!(got.len(), 2, "cut {cut} piece {piece}");
                assert!(matches!(&got[0], Received::Ping(p) if &p[..] == b"between"));
                assert!(
                    matches!(&got[1], Received::Text(t) if t.as_str() == MIXED && !t.is_ascii()),
                    "cut {cut} piece {piece}"
                );
            }
        }
    }

    #[test]
    fn text_in_one_fragment_per_byte_is_whole_again() {
        let bytes = MIXED.as_bytes();
        let mut wire = Vec::new();
        for (i, byte) in bytes.iter().enumerate() {
            let opcode = if i == 0 { OP_TEXT } else { OP_CONTINUATION };
            wire.extend(client_frame(i + 1 == bytes.len(), opcode, &[*byte]));
        }
        let got = decode_in_pieces(&wire, wire.len()).unwrap();
        assert!(matches!(&got[..], [Received::Text(t)] if t.as_str() == MIXED));
    }

    #[test]
    fn invalid_text_fails_on_the_fragment_that_holds_it() {
        // 0xF4 0x90: a code point past U+10FFFF; the message never gets its last fragment.
        let first = "κόσμε".as_bytes();
        let mut wire = client_frame(false, OP_TEXT, first);
        let second_at = wire.len();
        wire.extend(client_frame(
            false,
            OP_CONTINUATION,
            &[0xF4, 0x90, 0x80, 0x80],
        ));
        let mut decoder = Decoder::new(1 << 20);
        decoder.feed(&wire[..second_at], &mut |_| {}).unwrap();
        let err = decoder.feed(&wire[second_at..], &mut |_| {}).unwrap_err();
        assert_eq!(err.close().0, 1007);
        // Fed byte by byte, it fails on the 0x90 (header 6 bytes, then 0xF4, then 0x90).
        let (got, failed) = decode_bytewise(&wire);
        assert!(got.is_empty());
        assert_eq!(failed, Some((second_at + 6 + 1, Violation::InvalidUtf8)));
    }

    #[test]
    fn invalid_text_in_one_frame_fails_on_the_read_that_holds_it() {
        let mut payload = "κόσμε".as_bytes().to_vec();
        let bad = payload.len();
        payload.extend([0xED, 0xA0, 0x80]); // a UTF-16 surrogate: invalid at 0xA0
        payload.extend(b"edited");
        let wire = client_frame(true, OP_TEXT, &payload);
        let (got, failed) = decode_bytewise(&wire);
        assert!(got.is_empty());
        assert_eq!(failed, Some((6 + bad + 1, Violation::InvalidUtf8)));
        // A large frame read straight into its buffer fails on the direct read too.
        let mut big = vec![b'a'; 10_000];
        big[5_000] = 0xFF;
        let wire = client_frame(true, OP_TEXT, &big);
        let mut decoder = Decoder::new(1 << 20);
        decoder.feed(&wire[..100], &mut |_| {}).unwrap();
        let buffer = decoder.direct_buffer().expect("a large payload is pending");
        buffer.extend_from_slice(&wire[100..6_000]);
        assert_eq!(
            decoder.feed_direct(&mut |_| {}),
            Err(Violation::InvalidUtf8)
        );
    }

    #[test]
    fn a_code_point_cut_by_the_message_end_is_invalid() {
        let mut wire = client_frame(false, OP_TEXT, "ok".as_bytes());
        wire.extend(client_frame(true, OP_CONTINUATION, &"é".as_bytes()[..1]));
        assert_eq!(
            decode_in_pieces(&wire, wire.len()).unwrap_err(),
            Violation::InvalidUtf8
        );
        let single = client_frame(true, OP_TEXT, &"€".as_bytes()[..2]);
        for piece in [1, single.len()] {
            assert_eq!(
                decode_in_pieces(&single, piece).unwrap_err(),
                Violation::InvalidUtf8
            );
        }
    }

    #[test]
    fn binary_fragments_are_not_checked_as_text() {
        let mut wire = client_frame(false, OP_BINARY, &[0xFF]);
        wire.extend(client_frame(true, OP_CONTINUATION, &[0xFE]));
        let got = decode_in_pieces(&wire, 1).unwrap();
        assert!(matches!(&got[..], [Received::Binary(b)] if b[..] == [0xFF, 0xFE]));
    }

    #[test]
    fn messages_before_a_violation_are_handed_out() {
        let mut bad_bits = client_frame(true, OP_TEXT, b"after");
        bad_bits[0] |= 0x40;
        let mut reserved_opcode = client_frame(true, 0x5, b"");
        reserved_opcode.extend(client_frame(true, OP_PING, b""));
        let mut stray = client_frame(false, OP_TEXT, b"frag");
        stray.extend(client_frame(true, OP_CONTINUATION, b"ment1"));
        stray.extend(client_frame(false, OP_CONTINUATION, b"x"));
        for (violation, expect) in [
            (bad_bits, vec!["Hello"]),
            (reserved_opcode, vec!["Hello"]),
            (stray, vec!["Hello", "fragment1"]),
        ] {
            let mut wire = client_frame(true, OP_TEXT, b"Hello");
            wire.extend(violation);
            for piece in [1, wire.len()] {
                let mut decoder = Decoder::new(1 << 20);
                let mut got = Vec::new();
                let mut result = Ok(());
                for chunk in wire.chunks(piece) {
                    result = decoder.feed(chunk, &mut |r| got.push(r));
                    if result.is_err() {
                        break;
                    }
                }
                assert_eq!(result.unwrap_err().close().0, 1002);
                let texts: Vec<&str> = got
                    .iter()
                    .map(|r| match r {
                        Received::Text(t) => t.as_str(),
                        other => panic!("unexpected {other:?}"),
                    })
                    .collect();
                assert_eq!(texts, expect);
            }
        }
    }

    #[test]
    fn sequencing_errors_fail_on_the_header() {
        // The second header alone is enough: its payload is never waited for.
        let mut wire = client_frame(false, OP_TEXT, b"a");
        let header_end = wire.len() + 2 + 4;
        wire.extend(client_frame(true, OP_BINARY, &[0; 50]));
        let mut decoder = Decoder::new(1 << 20);
        assert_eq!(
            decoder.feed(&wire[..header_end], &mut |_| {}).unwrap_err(),
            Violation::Protocol("new message inside a fragmented one")
        );
        let mut decoder = Decoder::new(100);
        let mut wire = client_frame(false, OP_BINARY, &[0; 60]);
        let header_end = wire.len() + 2 + 4;
        wire.extend(client_frame(true, OP_CONTINUATION, &[0; 60]));
        assert_eq!(
            decoder.feed(&wire[..header_end], &mut |_| {}).unwrap_err(),
            Violation::TooBig
        );
    }

    #[test]
    fn close_codes_are_checked() {
        let close = |payload: &[u8]| decode_in_pieces(&client_frame(true, OP_CLOSE, payload), 64);
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
        ] {
            let got = close(&code.to_be_bytes()).unwrap();
            assert_eq!(got, vec![Received::Close(code, String::new())]);
        }
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert_eq!(
                close(&code.to_be_bytes()).unwrap_err().close().0,
                1002,
                "{code}"
            );
        }
        assert_eq!(close(&[0x03]).unwrap_err().close().0, 1002);
        assert_eq!(
            close(&[]).unwrap(),
            vec![Received::Close(1005, String::new())]
        );
        assert_eq!(
            close(&[0x03, 0xE8, 0xFF]).unwrap_err(),
            Violation::InvalidUtf8
        );
        let mut long = client_frame(true, OP_PING, &[0; 125]);
        long[1] = 0x80 | 126;
        assert_eq!(decode_in_pieces(&long, 200).unwrap_err().close().0, 1002);
    }

    #[test]
    fn unmasking_from_any_offset_matches_unmasking_at_once() {
        let mask = [1, 2, 3, 4];
        let data: Vec<u8> = (0..=255).collect();
        let mut whole = data.clone();
        unmask(&mut whole, mask);
        for cut in 0..data.len() {
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(cut);
            unmask_at(a, mask, 0);
            unmask_at(b, mask, cut);
            assert_eq!(pieces, whole, "cut {cut}");
        }
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
    fn encoded_frames_are_written_as_they_are() {
        let mut wire = Vec::new();
        OutFrame::text(Bytes::from_static(b"one")).encode_into(&mut wire);
        OutFrame::binary(vec![7; 300].into()).encode_into(&mut wire);
        let burst = OutFrame::encoded(wire.clone().into());
        assert_eq!(burst.head(), b"");
        assert_eq!(&burst.payload[..], &wire[..]);
        assert_eq!(burst.wire_len(), 5 + 304);
        assert!(!burst.is_started() && !burst.is_close());
        let rest = burst.after(4);
        assert!(rest.is_started() && !rest.is_close());
        assert_eq!(&rest.payload[..], &wire[4..]);
        assert!(OutFrame::text(Bytes::from_static(b"x"))
            .after(1)
            .is_started());
        assert!(!OutFrame::text(Bytes::from_static(b"x")).is_started());
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
