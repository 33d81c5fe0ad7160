//! The HTTP/1.1 the loop thread speaks itself: a WebSocket upgrade's request head, read
//! from what a fresh connection has sent, and the one response it gets (the 101, or the
//! refusal). No IO here. Anything else a connection says is hyper's to answer.

use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};

/// What the first bytes of a connection are, as far as the loop thread is concerned.
pub enum Head {
    /// A complete head of a WebSocket upgrade, `len` bytes long (what follows is the
    /// client's first frames).
    Upgrade {
        request: Box<Request<()>>,
        len: usize,
    },
    /// Not complete yet, and still within `max_size`.
    Partial,
    /// Anything else — another request, a malformed or oversized head: for hyper.
    Other,
}

/// Read a request head from `bytes`. `max_size` and `max_headers` are the server's
/// limits: a head past them is `Other`, for hyper to refuse with its 431.
pub fn parse(bytes: &[u8], max_size: usize, max_headers: usize) -> Head {
    let mut storage = vec![httparse::EMPTY_HEADER; max_headers];
    let mut parsed = httparse::Request::new(&mut storage);
    let len = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(len)) if len <= max_size => len,
        Ok(httparse::Status::Partial) if bytes.len() < max_size => return Head::Partial,
        _ => return Head::Other,
    };
    match upgrade_request(&parsed) {
        Some(request) => Head::Upgrade { request, len },
        None => Head::Other,
    }
}

/// The request, if it is a GET over HTTP/1.1 asking for a WebSocket, with no body.
fn upgrade_request(parsed: &httparse::Request<'_, '_>) -> Option<Box<Request<()>>> {
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    if headers.contains_key(header::CONTENT_LENGTH)
        || headers.contains_key(header::TRANSFER_ENCODING)
        || !crate::handshake::has_token(&headers, header::UPGRADE, "websocket")
    {
        return None;
    }
    let mut request = Request::get(parsed.path?).body(()).ok()?;
    *request.headers_mut() = headers;
    Some(Box::new(request))
}

/// What the server adds to every response it writes itself.
#[derive(Clone, Copy)]
pub struct Stamp {
    pub server_header: bool,
    pub date_header: bool,
}

/// A response to a handshake: hyper writes it (`into_response`) on the connections it
/// serves, the loop thread (`to_bytes`) on the ones it reads itself.
pub struct HttpAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpAnswer {
    /// `status` with a short plain-text body.
    pub fn text(status: StatusCode, text: &'static str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Self {
            status,
            headers,
            body: Bytes::from_static(text.as_bytes()),
        }
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }

    /// As written on the wire. A response other than the 101 gets its length and
    /// `connection: close`: the connection is closed once it is written.
    pub fn to_bytes(&self, stamp: Stamp) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut line = |name: &[u8], value: &[u8]| {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        };
        for (name, value) in &self.headers {
            line(name.as_str().as_bytes(), value.as_bytes());
        }
        if stamp.server_header && !self.headers.contains_key(header::SERVER) {
            line(b"server", b"ferrosock");
        }
        if stamp.date_header && !self.headers.contains_key(header::DATE) {
            line(
                b"date",
                httpdate::fmt_http_date(SystemTime::now()).as_bytes(),
            );
        }
        if self.status != StatusCode::SWITCHING_PROTOCOLS {
            line(b"content-length", self.body.len().to_string().as_bytes());
            line(b"connection", b"close");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /ws/7?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn a_complete_upgrade_head_is_read_with_its_length() {
        let mut bytes = UPGRADE.to_vec();
        bytes.extend_from_slice(b"\x81\x80");
        match parse(&bytes, 8192, 100) {
            Head::Upgrade { request, len } => {
                assert_eq!(len, UPGRADE.len());
                assert_eq!(request.uri().path(), "/ws/7");
                assert_eq!(request.uri().query(), Some("x=1"));
                assert_eq!(request.headers()["sec-websocket-version"], "13");
                assert!(crate::handshake::problem(&request).is_none());
            }
            _ => panic!("not read as an upgrade"),
        }
    }

    #[test]
    fn every_cut_of_the_head_is_partial() {
        for cut in 0..UPGRADE.len() {
            assert!(
                matches!(parse(&UPGRADE[..cut], 8192, 100), Head::Partial),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn other_requests_and_heads_past_the_limits_are_for_hyper() {
        let plain = b"GET /items HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(matches!(parse(plain, 8192, 100), Head::Other));
        let post = [b"POST".as_slice(), &UPGRADE[3..]].concat();
        assert!(matches!(parse(&post, 8192, 100), Head::Other));
        let old = String::from_utf8_lossy(UPGRADE).replace("HTTP/1.1", "HTTP/1.0");
        assert!(matches!(parse(old.as_bytes(), 8192, 100), Head::Other));
        assert!(matches!(parse(UPGRADE, 64, 100), Head::Other));
        assert!(matches!(parse(&UPGRADE[..100], 64, 100), Head::Other));
        assert!(matches!(parse(UPGRADE, 8192, 3), Head::Other));
        assert!(matches!(
            parse(b"\x16\x03\x01garbage", 8192, 100),
            Head::Other
        ));
        let body = String::from_utf8_lossy(UPGRADE).replace("Host", "Content-Length: 0\r\nHost");
        assert!(matches!(parse(body.as_bytes(), 8192, 100), Head::Other));
    }

    #[test]
    fn a_refusal_is_written_with_its_length_and_closes() {
        let answer = HttpAnswer::text(StatusCode::FORBIDDEN, "Forbidden");
        let stamp = Stamp {
            server_header: true,
            date_header: false,
        };
        let text = String::from_utf8(answer.to_bytes(stamp)).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\n\
             server: ferrosock\r\ncontent-length: 9\r\nconnection: close\r\n\r\nForbidden"
        );
    }
}
