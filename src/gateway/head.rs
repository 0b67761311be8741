//! A handshake's request head, read by the gateway itself: pure functions
//! over the bytes a client sent, so they are unit-tested and fuzzed
//! (`scripts/fuzz handshake_head`).
//!
//! [`peek`] looks at the first bytes of a socket to tell whether they are a
//! whole request head that the direct path (`direct.rs`) serves; anything
//! else (a partial or malformed head, more than [`MAX_HEADERS`] headers, a
//! request that is not a WebSocket `GET`) is left to hyper, which answers
//! it as before. [`parts`] turns a head the direct path consumed into the
//! `http` request parts the handshake reads, header values sharing the
//! head's one buffer.
//!
//! ```text
//! GET /chat?room=1 HTTP/1.1\r\n        method, target, version
//! Host: example.com\r\n                headers, at most MAX_HEADERS
//! Upgrade: websocket\r\n
//! …\r\n
//! \r\n                                 end of the head: its length
//! ```

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, Uri, Version};

/// Headers a head served by the direct path may have; one with more goes
/// to hyper (whose limit is 100 and whose answer past it is its own).
pub const MAX_HEADERS: usize = 64;

/// A complete request head the direct path may serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peeked<'a> {
    /// The head's length in bytes, its blank line included.
    pub len: usize,
    /// The request target's path (before any `?`).
    pub path: &'a str,
}

/// Is `buf` the start of a complete `GET` request head, HTTP/1.1, with an
/// `Upgrade` header naming `websocket`? Returns its length and path; `None`
/// for anything else (partial, malformed, another method or version, no
/// upgrade, too many headers), which hyper then serves.
pub fn peek(buf: &[u8]) -> Option<Peeked<'_>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) | Err(_) => return None,
    };
    if request.method != Some("GET") || request.version != Some(1) {
        return None;
    }
    let upgrade = request.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("upgrade")
            && std::str::from_utf8(h.value).is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
            })
    });
    if !upgrade {
        return None;
    }
    let target = request.path?;
    let path = target.split('?').next().unwrap_or(target);
    if !path.starts_with('/') {
        return None;
    }
    Some(Peeked { len, path })
}

/// Why a head [`peek`] accepted cannot become request parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not a complete head [`peek`] accepts (the bytes changed between the
    /// peek and the read: never expected).
    #[error("not a complete WebSocket request head")]
    NotAHead,
    /// The request target is not a valid URI.
    #[error("invalid request target")]
    Target,
    /// A header's name or value is not valid HTTP.
    #[error("invalid header")]
    Header,
}

/// The request parts of `head`, a complete head as [`peek`] accepts it,
/// exactly its length. Header values are slices of `head` (no copy).
pub fn parts(head: &Bytes) -> Result<Parts, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        _ => return Err(HeadError::NotAHead),
    }
    let target = request.path.ok_or(HeadError::NotAHead)?;
    let uri =
        Uri::from_maybe_shared(head.slice_ref(target.as_bytes())).map_err(|_| HeadError::Target)?;
    let mut map = HeaderMap::with_capacity(request.headers.len());
    for h in request.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| HeadError::Header)?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value))
            .map_err(|_| HeadError::Header)?;
        map.append(name, value);
    }
    let mut request = Request::new(());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = map;
    Ok(request.into_parts().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANDSHAKE: &[u8] = b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\n\
Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ws2fcgi.v1\r\nX-Empty:\r\n\r\n";

    #[test]
    fn a_websocket_get_is_peeked_with_its_length_and_path() {
        let mut sent = HANDSHAKE.to_vec();
        sent.extend_from_slice(b"\x81\x85frame after the head");
        assert_eq!(
            peek(&sent),
            Some(Peeked {
                len: HANDSHAKE.len(),
                path: "/chat"
            })
        );
    }

    #[test]
    fn anything_else_is_left_to_hyper() {
        let replace = |from: &str, to: &str| {
            String::from_utf8(HANDSHAKE.to_vec())
                .unwrap()
                .replacen(from, to, 1)
                .into_bytes()
        };
        for (case, bytes) in [
            ("partial", HANDSHAKE[..HANDSHAKE.len() - 2].to_vec()),
            ("POST", replace("GET", "POST")),
            ("HTTP/1.0", replace("HTTP/1.1", "HTTP/1.0")),
            ("no upgrade", replace("Upgrade: websocket", "Upgrade: h2c")),
            (
                "absolute target",
                replace("/chat", "http://example.com/chat"),
            ),
            ("asterisk", replace("/chat?room=1", "*")),
            (
                "malformed",
                replace("Host: example.com", "Host example.com"),
            ),
            ("empty", Vec::new()),
        ] {
            assert_eq!(peek(&bytes), None, "{case}");
        }
        let mut many = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(peek(&many), None, "more than MAX_HEADERS");
    }

    #[test]
    fn the_upgrade_token_may_be_one_of_several_in_any_case() {
        let sent = b"GET / HTTP/1.1\r\nUpgrade: foo, WebSocket\r\n\r\n";
        assert_eq!(peek(sent).map(|p| p.path), Some("/"));
    }

    #[test]
    fn parts_carry_every_header_in_order_and_the_target() {
        let head = Bytes::from_static(HANDSHAKE);
        let parts = parts(&head).unwrap();
        assert_eq!(parts.method, Method::GET);
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(parts.uri.path(), "/chat");
        assert_eq!(parts.uri.query(), Some("room=1"));
        assert_eq!(parts.headers.len(), 7);
        assert_eq!(parts.headers["host"], "example.com");
        assert_eq!(parts.headers["sec-websocket-protocol"], "ws2fcgi.v1");
        assert_eq!(parts.headers["x-empty"], "");
    }

    #[test]
    fn a_head_that_is_not_exactly_one_is_refused() {
        let mut longer = HANDSHAKE.to_vec();
        longer.push(b'x');
        assert_eq!(parts(&Bytes::from(longer)).err(), Some(HeadError::NotAHead));
        let short = Bytes::from_static(&HANDSHAKE[..20]);
        assert_eq!(parts(&short).err(), Some(HeadError::NotAHead));
        let bad = Bytes::from_static(b"GET /a\x7fb HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        assert!(parts(&bad).is_err());
    }
}
