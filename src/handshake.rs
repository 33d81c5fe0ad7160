//! The opening handshake of RFC 6455 section 4: its checks, what the handler is handed,
//! its answer, and the 101 response. No IO and no Python here.

use std::net::SocketAddr;

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::Request;

use crate::stats::Refusal;

/// Request data of the handshake, handed to Python once, when the handler starts.
pub struct Handshake {
    pub route_id: usize,
    pub path: String,
    pub query_string: String,
    /// Over TLS: the scheme is `wss`.
    pub tls: bool,
    pub headers: HeaderText,
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    pub path_params: Vec<(String, String)>,
    pub subprotocols: Vec<String>,
    pub answer: Answer,
}

/// Where the handler's decision goes.
pub enum Answer {
    /// To hyper's task, which holds the request and writes the response.
    Later(tokio::sync::oneshot::Sender<Decision>),
    /// Carried out at once, by whoever holds the socket on the loop thread.
    Here(Box<dyn Answerer>),
}

/// Carries out a decision on a socket the loop thread holds. Dropped unused, it refuses
/// the handshake (403), as hyper does when the decision never comes.
pub trait Answerer: Send + Sync {
    /// False when the client is gone.
    fn answer(self: Box<Self>, decision: Decision) -> bool;
}

impl Answer {
    /// Hand `decision` over; false when the client is gone.
    pub fn send(self, decision: Decision) -> bool {
        match self {
            Answer::Later(sender) => sender.send(decision).is_ok(),
            Answer::Here(answerer) => answerer.answer(decision),
        }
    }
}

/// A request's headers as Python sees them (a WebSocket's handshake, an HTTP request),
/// kept in one string for as long as the connection or request lives (instead of two
/// strings per header): each name and each value ends with a NUL, which no header can
/// hold; values are decoded as Latin-1, as ASGI servers do.
pub struct HeaderText(Box<str>);

impl HeaderText {
    pub fn new(headers: &HeaderMap) -> Self {
        let mut text = String::new();
        for (name, value) in headers {
            text.push_str(name.as_str());
            text.push('\0');
            text.extend(value.as_bytes().iter().map(|&b| b as char));
            text.push('\0');
        }
        Self(text.into_boxed_str())
    }

    /// The (name, value) pairs, in the request's order.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        let mut parts = self.0.split_terminator('\0');
        let mut pairs = Vec::new();
        while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
            pairs.push((name, value));
        }
        pairs
    }
}

/// An address as Python sees it: (host, port).
pub fn address(addr: SocketAddr) -> (String, u16) {
    (addr.ip().to_string(), addr.port())
}

/// The handler's answer to a handshake.
pub enum Decision {
    Accept {
        subprotocol: Option<String>,
        headers: Vec<(String, String)>,
    },
    /// An HTTP response instead of the upgrade: a refusal (`body: None`, the status's
    /// reason phrase as text) or the app's own denial response.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Option<Bytes>,
        why: Refusal,
    },
}

impl Decision {
    pub fn refuse(status: u16, why: Refusal) -> Self {
        Decision::Respond {
            status,
            headers: Vec::new(),
            body: None,
            why,
        }
    }
}

/// Whether a header lists `token` (comma-separated, any case).
pub fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Why a WebSocket handshake is malformed, per RFC 6455 section 4.2.1.
pub fn problem<B>(request: &Request<B>) -> Option<&'static str> {
    let headers = request.headers();
    if request.method() != hyper::Method::GET {
        return Some("the WebSocket handshake must be a GET request");
    }
    if request.version() < hyper::Version::HTTP_11 {
        return Some("the WebSocket handshake needs HTTP/1.1 or later");
    }
    if !headers.contains_key(header::HOST) {
        return Some("missing Host header");
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Some("missing \"Connection: Upgrade\"");
    }
    if headers.get_all(header::ORIGIN).iter().count() > 1 {
        return Some("more than one Origin header");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Some("unsupported or missing Sec-WebSocket-Version (13 is required)");
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if valid_key(key.as_bytes()) => None,
        _ => Some("missing or invalid Sec-WebSocket-Key"),
    }
}

/// A key is the base64 of 16 bytes: 22 base64 characters and "==".
pub fn valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// Whether the Origin is one of `allowed` (`None`: any, `"*"` in the list: any).
pub fn origin_allowed(allowed: Option<&[String]>, headers: &HeaderMap) -> bool {
    let Some(allowed) = allowed else {
        return true;
    };
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .unwrap_or("");
    allowed.iter().any(|a| a == "*" || a == origin)
}

/// The subprotocols the client offers, in its order.
pub fn subprotocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The headers of the 101 response.
pub fn accept_headers(
    headers: &mut HeaderMap,
    key: &[u8],
    subprotocol: Option<String>,
    extra: Vec<(String, String)>,
) {
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    if let Some(value) = subprotocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    append_headers(headers, extra);
}

/// Add the app's headers, skipping any that are not valid HTTP.
pub fn append_headers(headers: &mut HeaderMap, extra: Vec<(String, String)>) {
    for (name, value) in extra {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade() -> hyper::http::request::Builder {
        Request::get("/ws")
            .header("host", "example.com")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    }

    #[test]
    fn handshake_keys_must_be_sixteen_base64_bytes() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZQ"));
        assert!(!valid_key(b"not a key at all, no....=="));
        assert!(!valid_key(b""));
    }

    #[test]
    fn a_complete_upgrade_passes() {
        assert_eq!(problem(&upgrade().body(()).unwrap()), None);
    }

    #[test]
    fn each_missing_piece_is_named() {
        let post = upgrade().method("POST").body(()).unwrap();
        assert!(problem(&post).unwrap().contains("GET"));
        let old = upgrade().version(hyper::Version::HTTP_10).body(()).unwrap();
        assert!(problem(&old).unwrap().contains("HTTP/1.1"));
        let two_origins = upgrade()
            .header("origin", "https://a.example")
            .header("origin", "https://b.example")
            .body(())
            .unwrap();
        assert!(problem(&two_origins).unwrap().contains("Origin"));
        let no_key = Request::get("/ws")
            .header("host", "example.com")
            .header("connection", "Upgrade")
            .header("sec-websocket-version", "13")
            .body(())
            .unwrap();
        assert!(problem(&no_key).unwrap().contains("Sec-WebSocket-Key"));
    }

    #[test]
    fn origins_and_subprotocols() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://a.example"),
        );
        let allowed = vec!["https://a.example".to_owned()];
        assert!(origin_allowed(Some(&allowed), &headers));
        assert!(!origin_allowed(
            Some(&["https://b.example".to_owned()]),
            &headers
        ));
        assert!(origin_allowed(Some(&["*".to_owned()]), &headers));
        assert!(origin_allowed(None, &headers));
        headers.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("chat, , v2"),
        );
        headers.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v3"),
        );
        assert_eq!(subprotocols(&headers), ["chat", "v2", "v3"]);
    }

    #[test]
    fn the_accept_key_is_rfc_6455s_example() {
        let mut headers = HeaderMap::new();
        accept_headers(&mut headers, b"dGhlIHNhbXBsZSBub25jZQ==", None, Vec::new());
        assert_eq!(
            headers["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
