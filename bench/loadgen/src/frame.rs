//! RFC 6455 framing, the cheap way round: client frames are built once, masked, and
//! only their 16-byte sequence number is patched per send; server frames are parsed as
//! a stream of chunks so that no message is ever buffered whole.

/// Every data message starts with its sequence number as 16 lowercase hex digits, so
/// text messages stay valid UTF-8; the rest is a fixed printable filler.
pub const SEQ_DIGITS: usize = 16;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

fn hex16(seq: u64) -> [u8; SEQ_DIGITS] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; SEQ_DIGITS];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = DIGITS[((seq >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

pub fn parse_hex16(digits: &[u8; SEQ_DIGITS]) -> Option<u64> {
    let mut value = 0u64;
    for &digit in digits {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | nibble as u64;
    }
    Some(value)
}

/// Appends a masked client frame carrying `payload` (used for the rare frames:
/// pongs, closes; data frames come from a [`Template`]).
pub fn push_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    push_length(out, payload.len());
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

pub fn push_close_frame(out: &mut Vec<u8>) {
    push_client_frame(out, OP_CLOSE, &1000u16.to_be_bytes());
}

fn push_length(out: &mut Vec<u8>, len: usize) {
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// A pre-built, pre-masked text frame of one size.
pub struct Template {
    frame: Vec<u8>,
    payload_start: usize,
    /// The unmasked payload with a zero sequence number: what the server must send back.
    payload: Vec<u8>,
}

impl Template {
    pub fn new(size: usize) -> Template {
        assert!(
            size >= SEQ_DIGITS,
            "messages carry a {SEQ_DIGITS}-digit sequence number"
        );
        let payload: Vec<u8> = (0..size)
            .map(|i| {
                if i < SEQ_DIGITS {
                    b'0'
                } else {
                    b'a' + (i % 26) as u8
                }
            })
            .collect();
        let mut frame = Vec::with_capacity(size + 14);
        push_client_frame(&mut frame, OP_TEXT, &payload);
        Template {
            payload_start: frame.len() - size,
            frame,
            payload,
        }
    }

    pub fn size(&self) -> usize {
        self.payload.len()
    }

    /// Appends the frame for message `seq`: one copy and sixteen XORs.
    pub fn push(&self, out: &mut Vec<u8>, seq: u64) {
        let start = out.len() + self.payload_start;
        out.extend_from_slice(&self.frame);
        for (i, digit) in hex16(seq).iter().enumerate() {
            out[start + i] = digit ^ MASK[i % 4];
        }
    }

    /// Whether `chunk`, found at `offset` in a message, matches the filler
    /// (the sequence digits are checked separately, once the message is complete).
    pub fn filler_matches(&self, offset: usize, chunk: &[u8]) -> bool {
        let end = offset + chunk.len();
        if end > self.payload.len() {
            return false;
        }
        if end <= SEQ_DIGITS {
            return true;
        }
        let skip = SEQ_DIGITS.saturating_sub(offset);
        chunk[skip..] == self.payload[offset + skip..end]
    }
}

/// What the parser reports, in stream order.
pub enum Event<'a> {
    /// Part of a data message's payload, starting at `offset` within the message.
    Data {
        offset: usize,
        bytes: &'a [u8],
    },
    /// A data message ended; `len` is its total payload length.
    MessageEnd {
        opcode: u8,
        len: usize,
    },
    Ping(&'a [u8]),
    Close,
}

enum State {
    Header,
    Payload {
        remaining: usize,
        opcode: u8,
        fin: bool,
    },
}

/// Incremental parser for server-to-client frames.
pub struct FrameReader {
    header: [u8; 14],
    header_len: usize,
    state: State,
    /// Opcode of the data message in progress (it may span continuation frames).
    message_opcode: Option<u8>,
    message_len: usize,
    control: Vec<u8>,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader {
            header: [0; 14],
            header_len: 0,
            state: State::Header,
            message_opcode: None,
            message_len: 0,
            control: Vec::new(),
        }
    }
}

impl FrameReader {
    /// Feeds bytes read from the socket, calling `on_event` for everything complete.
    pub fn feed<F>(&mut self, mut input: &[u8], on_event: &mut F) -> Result<(), String>
    where
        F: FnMut(Event<'_>) -> Result<(), String>,
    {
        while !input.is_empty() {
            match self.state {
                State::Header => {
                    let needed = self.header_needed();
                    let take = (needed - self.header_len).min(input.len());
                    self.header[self.header_len..self.header_len + take]
                        .copy_from_slice(&input[..take]);
                    self.header_len += take;
                    input = &input[take..];
                    if self.header_len == self.header_needed() {
                        self.start_payload(on_event)?;
                    }
                }
                State::Payload {
                    remaining,
                    opcode,
                    fin,
                } => {
                    let take = remaining.min(input.len());
                    let (bytes, rest) = input.split_at(take);
                    input = rest;
                    if opcode >= OP_CLOSE {
                        self.control.extend_from_slice(bytes);
                    } else {
                        on_event(Event::Data {
                            offset: self.message_len,
                            bytes,
                        })?;
                        self.message_len += take;
                    }
                    self.state = State::Payload {
                        remaining: remaining - take,
                        opcode,
                        fin,
                    };
                    if remaining == take {
                        self.finish_frame(on_event)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Header bytes needed so far: 2, then as many as the length and mask bits say.
    fn header_needed(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + extended + mask
    }

    fn start_payload<F>(&mut self, on_event: &mut F) -> Result<(), String>
    where
        F: FnMut(Event<'_>) -> Result<(), String>,
    {
        let first = self.header[0];
        if first & 0x70 != 0 {
            return Err("server frame has RSV bits set (no extension was negotiated)".into());
        }
        if self.header[1] & 0x80 != 0 {
            return Err("server frame is masked (RFC 6455 5.1 forbids it)".into());
        }
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0f;
        let len = match self.header[1] & 0x7f {
            126 => u16::from_be_bytes([self.header[2], self.header[3]]) as usize,
            127 => u64::from_be_bytes(self.header[2..10].try_into().unwrap()) as usize,
            short => short as usize,
        };
        self.header_len = 0;
        match opcode {
            OP_TEXT | OP_BINARY if self.message_opcode.is_none() => {
                self.message_opcode = Some(opcode);
                self.message_len = 0;
            }
            OP_CONTINUATION if self.message_opcode.is_some() => {}
            OP_CLOSE | OP_PING | OP_PONG if fin && len <= 125 => self.control.clear(),
            _ => {
                return Err(format!(
                    "unexpected server frame: opcode {opcode:#x}, fin {fin}, length {len}"
                ))
            }
        }
        self.state = State::Payload {
            remaining: len,
            opcode,
            fin,
        };
        if len == 0 {
            self.finish_frame(on_event)?;
        }
        Ok(())
    }

    fn finish_frame<F>(&mut self, on_event: &mut F) -> Result<(), String>
    where
        F: FnMut(Event<'_>) -> Result<(), String>,
    {
        let State::Payload { opcode, fin, .. } = self.state else {
            unreachable!()
        };
        self.state = State::Header;
        match opcode {
            OP_PING => on_event(Event::Ping(&self.control)),
            OP_CLOSE => on_event(Event::Close),
            OP_PONG => Ok(()),
            _ if fin => {
                let opcode = self
                    .message_opcode
                    .take()
                    .expect("a data message is in progress");
                on_event(Event::MessageEnd {
                    opcode,
                    len: self.message_len,
                })
            }
            _ => Ok(()),
        }
    }
}

/// Collects a message's sequence digits and checks its filler as chunks arrive.
#[derive(Default)]
pub struct MessageCheck {
    digits: [u8; SEQ_DIGITS],
    filler_ok: bool,
    started: bool,
}

impl MessageCheck {
    pub fn data(&mut self, template: &Template, offset: usize, bytes: &[u8]) {
        if !self.started {
            self.started = true;
            self.filler_ok = true;
        }
        if offset < SEQ_DIGITS {
            let take = (SEQ_DIGITS - offset).min(bytes.len());
            self.digits[offset..offset + take].copy_from_slice(&bytes[..take]);
        }
        self.filler_ok &= template.filler_matches(offset, bytes);
    }

    /// Ends the message: its sequence number, or why it is not one of ours.
    pub fn finish(&mut self, template: &Template, opcode: u8, len: usize) -> Result<u64, String> {
        let filler_ok = self.filler_ok && self.started;
        self.started = false;
        if opcode != OP_TEXT {
            return Err(format!("expected a text message, got opcode {opcode:#x}"));
        }
        if len != template.size() {
            return Err(format!(
                "message of {len} bytes, expected {}",
                template.size()
            ));
        }
        if !filler_ok {
            return Err("message content differs from what was sent".into());
        }
        parse_hex16(&self.digits)
            .ok_or_else(|| "message does not start with a sequence number".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmask(frame: &[u8]) -> (u8, Vec<u8>) {
        let (len, mut at) = match frame[1] & 0x7f {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let mask = &frame[at..at + 4];
        at += 4;
        let payload = frame[at..at + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        (frame[0], payload)
    }

    /// Turns a client frame into the unmasked frame a server would send back.
    fn as_server_frame(frame: &[u8]) -> Vec<u8> {
        let (first, payload) = unmask(frame);
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 65535 => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&payload);
        out
    }

    fn roundtrip(size: usize, seqs: &[u64], chunk: usize) -> Vec<u64> {
        let template = Template::new(size);
        let mut stream = Vec::new();
        for &seq in seqs {
            let mut frame = Vec::new();
            template.push(&mut frame, seq);
            stream.extend(as_server_frame(&frame));
        }
        let mut reader = FrameReader::default();
        let mut check = MessageCheck::default();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            reader
                .feed(piece, &mut |event| {
                    match event {
                        Event::Data { offset, bytes } => check.data(&template, offset, bytes),
                        Event::MessageEnd { opcode, len } => {
                            got.push(check.finish(&template, opcode, len)?)
                        }
                        _ => panic!("only data expected"),
                    }
                    Ok(())
                })
                .unwrap();
        }
        got
    }

    #[test]
    fn sequence_numbers_survive_any_chunking() {
        let seqs = [0, 1, 0xdead_beef, u64::MAX >> 1];
        for size in [16, 64, 125, 126, 16 * 1024, 70_000] {
            for chunk in [1, 3, 7, 64, 100_000] {
                assert_eq!(
                    roundtrip(size, &seqs, chunk),
                    seqs,
                    "size {size} chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn corrupted_filler_is_reported() {
        let template = Template::new(64);
        let mut frame = Vec::new();
        template.push(&mut frame, 7);
        let mut server = as_server_frame(&frame);
        let last = server.len() - 1;
        server[last] ^= 1;
        let mut reader = FrameReader::default();
        let mut check = MessageCheck::default();
        let result = reader.feed(&server, &mut |event| {
            match event {
                Event::Data { offset, bytes } => check.data(&template, offset, bytes),
                Event::MessageEnd { opcode, len } => {
                    check.finish(&template, opcode, len)?;
                }
                _ => {}
            }
            Ok(())
        });
        assert!(result.is_err());
    }

    #[test]
    fn fragmented_messages_and_control_frames() {
        let template = Template::new(40);
        let mut frame = Vec::new();
        template.push(&mut frame, 42);
        let (_, payload) = unmask(&frame);
        // text(fin=0) + ping + continuation(fin=1)
        let mut stream = vec![0x01, 20];
        stream.extend_from_slice(&payload[..20]);
        stream.extend_from_slice(&[0x89, 2, b'h', b'i']);
        stream.extend_from_slice(&[0x80, 20]);
        stream.extend_from_slice(&payload[20..]);
        let mut reader = FrameReader::default();
        let mut check = MessageCheck::default();
        let mut events = Vec::new();
        reader
            .feed(&stream, &mut |event| {
                match event {
                    Event::Data { offset, bytes } => check.data(&template, offset, bytes),
                    Event::MessageEnd { opcode, len } => {
                        events.push(format!("seq {}", check.finish(&template, opcode, len)?))
                    }
                    Event::Ping(data) => {
                        events.push(format!("ping {}", String::from_utf8_lossy(data)))
                    }
                    Event::Close => events.push("close".into()),
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(events, ["ping hi", "seq 42"]);
    }
}
