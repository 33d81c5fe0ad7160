//! Property tests of what a client controls byte for byte: the frame decoder and the
//! handshake checks. Arbitrary input must never panic and must always end in a defined
//! outcome; valid input must decode the same however the network splits it.

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Version};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::frame::tests::masked_frame as client_frame;
use crate::frame::{
    Decoder, OutFrame, Received, Violation, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG,
    OP_TEXT,
};
use crate::handshake::{origin_allowed, problem as handshake_problem, subprotocols, valid_key};

/// Cases per property: the decoder's run in a few seconds in release builds.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- frame decoder ----

/// Everything the decoder handed out, and the violation that stopped it (`None`: it
/// wants more bytes, or the input ended on a frame boundary).
type Outcome = (Vec<Received>, Option<Violation>);

/// Feed `wire` in pieces of the sizes `chunks` gives in turn, as the IO task does: a
/// large pending payload is read straight into the decoder's buffer (`feed_direct`).
fn decode(max_size: usize, wire: &[u8], chunks: &[usize]) -> Outcome {
    let mut decoder = Decoder::new(max_size);
    let mut got = Vec::new();
    let mut rest = wire;
    let mut sizes = chunks.iter().copied().filter(|n| *n > 0).cycle();
    while !rest.is_empty() {
        let size = sizes.next().unwrap_or(rest.len()).min(rest.len());
        let (piece, after) = rest.split_at(size);
        rest = after;
        let mut piece = piece;
        while !piece.is_empty() {
            let missing = decoder.direct_missing();
            let result = match decoder.direct_buffer() {
                Some(buffer) => {
                    let take = missing.min(piece.len());
                    buffer.extend_from_slice(&piece[..take]);
                    piece = &piece[take..];
                    decoder.feed_direct(&mut |r| got.push(r))
                }
                None => {
                    let result = decoder.feed(piece, &mut |r| got.push(r));
                    piece = &[];
                    result
                }
            };
            if let Err(violation) = result {
                return (got, Some(violation));
            }
        }
    }
    (got, None)
}

/// One thing a client sends: a data message in fragments (with a ping between the first
/// two, if any), or a control frame.
#[derive(Clone, Debug)]
enum Sent {
    Message {
        text: bool,
        payload: Vec<u8>,
        /// Where the payload is cut into fragments (any byte, inside a code point too).
        cuts: Vec<usize>,
        ping_between: Option<Vec<u8>>,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    // Mostly small; sometimes large enough for the direct-read path.
    prop_oneof![
        6 => vec(any::<u8>(), 0..200),
        1 => vec(any::<u8>(), 4_000..12_000),
    ]
}

fn control_payload() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=125)
}

fn sent() -> impl Strategy<Value = Sent> {
    let text = (
        prop_oneof![
            4 => any::<String>(),
            1 => "[a-zé€😀]{1000,3000}",
        ],
        vec(any::<usize>(), 0..4),
        proptest::option::of(control_payload()),
    )
        .prop_map(|(s, cuts, ping_between)| Sent::Message {
            text: true,
            payload: s.into_bytes(),
            cuts,
            ping_between,
        });
    let binary = (
        payload(),
        vec(any::<usize>(), 0..4),
        proptest::option::of(control_payload()),
    )
        .prop_map(|(payload, cuts, ping_between)| Sent::Message {
            text: false,
            payload,
            cuts,
            ping_between,
        });
    prop_oneof![
        3 => text,
        3 => binary,
        1 => control_payload().prop_map(Sent::Ping),
        1 => control_payload().prop_map(Sent::Pong),
    ]
}

/// The wire bytes of `items` (each frame masked with the next of `masks`), and what the
/// decoder must hand out for them.
fn encode(items: &[Sent], masks: &[[u8; 4]]) -> (Vec<u8>, Vec<Received>) {
    let mut masks = masks.iter().copied().cycle();
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for item in items {
        match item {
            Sent::Message {
                text,
                payload,
                cuts,
                ping_between,
            } => {
                let mut bounds: Vec<usize> = cuts
                    .iter()
                    .map(|c| c % (payload.len() + 1))
                    .chain([0, payload.len()])
                    .collect();
                bounds.sort_unstable();
                bounds.dedup();
                if bounds.len() == 1 {
                    bounds.push(0); // an empty message: one empty frame
                }
                let pieces = bounds.len() - 1;
                for (i, pair) in bounds.windows(2).enumerate() {
                    let opcode = match (i, text) {
                        (0, true) => OP_TEXT,
                        (0, false) => OP_BINARY,
                        _ => OP_CONTINUATION,
                    };
                    let last = i + 1 == pieces;
                    let piece = &payload[pair[0]..pair[1].max(pair[0])];
                    wire.extend(client_frame(last, opcode, masks.next().unwrap(), piece));
                    if let (0, Some(ping), false) = (i, ping_between, last) {
                        wire.extend(client_frame(true, OP_PING, masks.next().unwrap(), ping));
                        expected.push(Received::Ping(Bytes::from(ping.clone())));
                    }
                }
                let data = Bytes::from(payload.clone());
                expected.push(if *text {
                    Received::Text(crate::frame::Text::new(data).expect("valid UTF-8"))
                } else {
                    Received::Binary(data)
                });
            }
            Sent::Ping(p) => {
                wire.extend(client_frame(true, OP_PING, masks.next().unwrap(), p));
                expected.push(Received::Ping(Bytes::from(p.clone())));
            }
            Sent::Pong(p) => {
                wire.extend(client_frame(true, OP_PONG, masks.next().unwrap(), p));
                expected.push(Received::Pong(Bytes::from(p.clone())));
            }
        }
    }
    (wire, expected)
}

fn chunks() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        vec(1usize..8, 1..16),
        vec(1usize..5_000, 1..16),
        Just(vec![usize::MAX]),
    ]
}

/// A close code the decoder may end with: protocol error, invalid UTF-8, too big.
fn defined(outcome: &Outcome) -> bool {
    outcome
        .1
        .is_none_or(|v| matches!(v.close().0, 1002 | 1007 | 1009))
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn arbitrary_bytes_in_arbitrary_pieces_end_in_a_defined_outcome(
        wire in vec(any::<u8>(), 0..4096),
        pieces in chunks(),
        max_size in 0usize..5_000,
    ) {
        let outcome = decode(max_size, &wire, &pieces);
        prop_assert!(defined(&outcome), "{:?}", outcome.1);
        // However the bytes were split, the decoder saw the same thing.
        prop_assert_eq!(outcome, decode(max_size, &wire, &[usize::MAX]));
    }

    #[test]
    fn valid_frames_decode_to_the_same_messages_however_they_are_split(
        items in vec(sent(), 1..8),
        masks in vec(any::<[u8; 4]>(), 1..8),
        pieces in chunks(),
        close in proptest::option::of((1000u16..=1003, "[a-z ]{0,100}")),
    ) {
        let (mut wire, mut expected) = encode(&items, &masks);
        if let Some((code, reason)) = close {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice(reason.as_bytes());
            wire.extend(client_frame(true, OP_CLOSE, masks[0], &payload));
            expected.push(Received::Close(code, reason));
        }
        let (got, violation) = decode(1 << 20, &wire, &pieces);
        prop_assert_eq!(violation, None);
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn mutated_valid_frames_end_in_a_defined_outcome(
        items in vec(sent(), 1..6),
        masks in vec(any::<[u8; 4]>(), 1..4),
        flips in vec((any::<usize>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
        pieces in chunks(),
        max_size in prop_oneof![Just(1usize << 20), 0usize..300],
    ) {
        let (mut wire, _) = encode(&items, &masks);
        for (at, byte) in flips {
            let at = at % wire.len();
            wire[at] ^= byte;
        }
        if let Some(cut) = cut {
            wire.truncate(cut % (wire.len() + 1));
        }
        let outcome = decode(max_size, &wire, &pieces);
        prop_assert!(defined(&outcome), "{:?}", outcome.1);
        prop_assert_eq!(outcome, decode(max_size, &wire, &[usize::MAX]));
    }

    #[test]
    fn a_partly_written_frame_continues_with_exactly_the_bytes_left(
        payload in payload(),
        opcode in prop_oneof![Just(OP_TEXT), Just(OP_BINARY), Just(OP_PONG)],
        written in vec(any::<usize>(), 1..4),
    ) {
        let frame = OutFrame::new(opcode, Bytes::from(payload));
        let mut whole = frame.head().to_vec();
        whole.extend_from_slice(&frame.payload);
        let mut rest = frame.clone();
        let mut offset = 0;
        for n in written {
            let n = n % (rest.wire_len() + 1);
            rest = rest.after(n);
            offset += n;
            let mut left = rest.head().to_vec();
            left.extend_from_slice(&rest.payload);
            prop_assert_eq!(&left[..], &whole[offset..]);
        }
    }
}

// ---- handshake checks ----

/// Header names the checks read, and some they do not.
fn header_name() -> impl Strategy<Value = HeaderName> {
    prop_oneof![
        Just(header::HOST),
        Just(header::CONNECTION),
        Just(header::UPGRADE),
        Just(header::ORIGIN),
        Just(header::SEC_WEBSOCKET_VERSION),
        Just(header::SEC_WEBSOCKET_KEY),
        Just(header::SEC_WEBSOCKET_PROTOCOL),
        "x-[a-z]{1,8}".prop_map(|n| HeaderName::from_bytes(n.as_bytes()).expect("a token")),
    ]
}

/// Any value HTTP allows in a header (visible ASCII, tabs, spaces and bytes past 0x7F),
/// and sometimes a plausible one.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    let any_bytes = vec(any::<u8>(), 0..80).prop_map(|bytes| {
        let allowed: Vec<u8> = bytes
            .into_iter()
            .filter(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7F))
            .collect();
        HeaderValue::from_bytes(&allowed).expect("filtered to allowed bytes")
    });
    let plausible = prop_oneof![
        Just("websocket"),
        Just("Upgrade"),
        Just("keep-alive, Upgrade"),
        Just("13"),
        Just("dGhlIHNhbXBsZSBub25jZQ=="),
        Just(" chat.v1 , , chat.v2,"),
        Just("https://example.test"),
    ]
    .prop_map(HeaderValue::from_static);
    prop_oneof![any_bytes, plausible]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    vec((header_name(), header_value()), 0..12).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name, value);
        }
        map
    })
}

fn request(method: Method, version: Version, headers: HeaderMap) -> Request<()> {
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    request
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(config(1_000))]

    #[test]
    fn arbitrary_handshake_headers_never_panic(
        method in prop_oneof![Just(Method::GET), Just(Method::POST), Just(Method::OPTIONS)],
        version in prop_oneof![Just(Version::HTTP_10), Just(Version::HTTP_11), Just(Version::HTTP_2)],
        headers in headers(),
        allowed in proptest::option::of(vec("[a-z:/.*]{0,20}", 0..3)),
    ) {
        let request = request(method, version, headers);
        let _ = handshake_problem(&request);
        for protocol in subprotocols(request.headers()) {
            prop_assert!(!protocol.is_empty() && !protocol.contains(','));
            prop_assert_eq!(protocol.trim(), protocol.as_str());
        }
        let everyone = origin_allowed(None, request.headers());
        prop_assert!(everyone);
        let _ = origin_allowed(allowed.as_deref(), request.headers());
        if let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) {
            let _ = valid_key(key.as_bytes());
        }
    }

    #[test]
    fn a_valid_handshake_passes_whatever_else_it_carries(
        nonce in any::<[u8; 16]>(),
        extra in vec(("x-[a-z]{1,8}", header_value()), 0..6),
        connection in prop_oneof![Just("Upgrade"), Just("keep-alive, upgrade"), Just("UPGRADE")],
    ) {
        let key = base64(&nonce);
        prop_assert!(valid_key(key.as_bytes()), "{}", key);
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static(connection));
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        headers.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_str(&key).unwrap());
        for (name, value) in extra {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
        }
        let valid = request(Method::GET, Version::HTTP_11, headers.clone());
        prop_assert_eq!(handshake_problem(&valid), None);
        // Without any one required header it is refused.
        for required in [
            header::HOST,
            header::CONNECTION,
            header::SEC_WEBSOCKET_VERSION,
            header::SEC_WEBSOCKET_KEY,
        ] {
            let mut missing = headers.clone();
            missing.remove(&required);
            let refused = request(Method::GET, Version::HTTP_11, missing);
            prop_assert!(handshake_problem(&refused).is_some(), "{:?}", required);
        }
    }

    #[test]
    fn keys_are_checked_without_panicking(key in vec(any::<u8>(), 0..40)) {
        let valid = valid_key(&key);
        prop_assert!(!valid || (key.len() == 24 && key.ends_with(b"==")));
    }
}
