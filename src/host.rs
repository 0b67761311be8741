//! The `Host` header: syntax check and split into name and port (pure).
//!
//! A handshake's `Host` becomes `SERVER_NAME` and `SERVER_PORT` (unless
//! `server_name` is set) and `HTTP_HOST`, so PHP must be able to trust its
//! shape. It is RFC 3986's `host [ ":" port ]`, a little stricter:
//!
//! ```text
//! host      = "[" IPv6address "]"                   (no zone id, no IPvFuture)
//!           / 1*255( ALPHA / DIGIT / "-" / "." / "_" / "~" / "%" HEXDIG HEXDIG )
//! port      = *5DIGIT                               (at most 65535; empty means none)
//! ```
//!
//! The second line is RFC 3986's `reg-name` (which also covers `IPv4address`)
//! without its `sub-delims` (`! $ & ' ( ) * + , ; =`): no DNS name has them,
//! and they are the characters that break out of quoted HTML, SQL or shell
//! text. Anything else (quotes, `<`, spaces, control bytes, non-ASCII, a
//! userinfo `@`, a path) is refused.
//!
//! ```
//! use ws2fcgi::host::{parse, Host};
//! assert_eq!(parse(b"chat.example.com:8443"), Ok(Host { name: "chat.example.com", port: Some(8443) }));
//! assert_eq!(parse(b"[::1]").unwrap().name, "[::1]");
//! assert!(parse(br#"evil"><img src=x>"#).is_err());
//! ```

use std::net::Ipv6Addr;

use hyper::HeaderMap;

/// Longest host name (DNS names are at most 253 bytes).
pub const MAX_HOST_NAME: usize = 255;

/// A valid `Host` value, split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host<'a> {
    /// The name as sent: a registered name, an IPv4 address, or an IPv6
    /// address in brackets (`[::1]`, as CGI's `SERVER_NAME` writes it).
    pub name: &'a str,
    /// The port, when one was given.
    pub port: Option<u16>,
}

/// Why a `Host` value is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No `Host` header (HTTP/1.1 and RFC 6455 require one).
    #[error("no Host header")]
    Missing,
    /// More than one `Host` header.
    #[error("more than one Host header")]
    Repeated,
    /// An empty host name.
    #[error("empty host name")]
    Empty,
    /// A host name over [`MAX_HOST_NAME`] bytes.
    #[error("host name longer than {MAX_HOST_NAME} bytes")]
    TooLong,
    /// A byte a host name may not hold (or a malformed `%` escape).
    #[error("host name holds a character that is not allowed")]
    BadChar,
    /// `[...]` that is not an IPv6 address.
    #[error("not an IPv6 address in brackets")]
    BadIpLiteral,
    /// A port that is not 1 to 5 digits up to 65535.
    #[error("bad port")]
    BadPort,
}

/// Checks and splits a `Host` value.
pub fn parse(raw: &[u8]) -> Result<Host<'_>, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    let text = std::str::from_utf8(raw).map_err(|_| HostError::BadChar)?;
    let (name, port) = if let Some(rest) = text.strip_prefix('[') {
        let end = rest.find(']').ok_or(HostError::BadIpLiteral)?;
        let address = &rest[..end];
        // std's parser takes hex digits, ':' and an embedded dotted IPv4 only.
        address
            .parse::<Ipv6Addr>()
            .map_err(|_| HostError::BadIpLiteral)?;
        let name = &text[..end + 2];
        match &rest[end + 1..] {
            "" => (name, None),
            after => (
                name,
                Some(after.strip_prefix(':').ok_or(HostError::BadPort)?),
            ),
        }
    } else {
        let (name, port) = match text.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (text, None),
        };
        check_reg_name(name)?;
        (name, port)
    };
    let port = match port {
        None | Some("") => None,
        Some(digits) => Some(parse_port(digits)?),
    };
    Ok(Host { name, port })
}

/// The request's one `Host` header, checked.
pub fn from_headers(headers: &HeaderMap) -> Result<Host<'_>, HostError> {
    let mut values = headers.get_all(hyper::header::HOST).iter();
    let value = values.next().ok_or(HostError::Missing)?;
    if values.next().is_some() {
        return Err(HostError::Repeated);
    }
    parse(value.as_bytes())
}

fn check_reg_name(name: &str) -> Result<(), HostError> {
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    if name.len() > MAX_HOST_NAME {
        return Err(HostError::TooLong);
    }
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => i += 1,
            b'%' if bytes.len() > i + 2
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                i += 3
            }
            _ => return Err(HostError::BadChar),
        }
    }
    Ok(())
}

fn parse_port(digits: &str) -> Result<u16, HostError> {
    if digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::BadPort);
    }
    digits.parse().map_err(|_| HostError::BadPort)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> (&str, Option<u16>) {
        let host = parse(raw.as_bytes()).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        (host.name, host.port)
    }

    #[test]
    fn names_addresses_and_ports_are_split() {
        assert_eq!(ok("example.com"), ("example.com", None));
        assert_eq!(ok("Example.COM:8090"), ("Example.COM", Some(8090)));
        assert_eq!(ok("a-b_c~d.example."), ("a-b_c~d.example.", None));
        assert_eq!(ok("xn--bcher-kva.example"), ("xn--bcher-kva.example", None));
        assert_eq!(ok("caf%C3%A9.example"), ("caf%C3%A9.example", None));
        assert_eq!(ok("127.0.0.1:65535"), ("127.0.0.1", Some(65535)));
        assert_eq!(ok("localhost:0"), ("localhost", Some(0)));
        assert_eq!(ok("[::1]:82"), ("[::1]", Some(82)));
        assert_eq!(ok("[2001:db8::1]"), ("[2001:db8::1]", None));
        assert_eq!(ok("[::ffff:192.0.2.1]:1"), ("[::ffff:192.0.2.1]", Some(1)));
        // RFC 3986: an empty port is no port.
        assert_eq!(ok("example.com:"), ("example.com", None));
        assert_eq!(ok(&"a".repeat(MAX_HOST_NAME)).0.len(), MAX_HOST_NAME);
    }

    #[test]
    fn hostile_and_malformed_values_are_refused() {
        use HostError::*;
        for (raw, why) in [
            (&b""[..], Empty),
            (b":80", Empty),
            (br#"evil"><img src=x onerror=alert(1)>"#, BadChar),
            (b"evil'.example", BadChar),
            (b"a;b", BadChar),
            (b"a b", BadChar),
            (b"a\tb", BadChar),
            (b"a\r\nX-Injected: 1", BadChar),
            (b"a\0b", BadChar),
            (b"user@example.com", BadChar),
            (b"example.com/path", BadChar),
            (b"example.com\\x", BadChar),
            (b"caf\xc3\xa9.example", BadChar),
            (b"\xff", BadChar),
            (b"bad%zz", BadChar),
            (b"bad%4", BadChar),
            (b"a:b:c", BadPort),
            (b"example.com:80x", BadPort),
            (b"example.com:65536", BadPort),
            (b"example.com:000080", BadPort),
            (b"example.com:-1", BadPort),
            (b"example.com: 80", BadPort),
            (b"[::1", BadIpLiteral),
            (b"[]", BadIpLiteral),
            (b"[fe80::1%25eth0]", BadIpLiteral),
            (b"[v1.fe]", BadIpLiteral),
            (b"[127.0.0.1]", BadIpLiteral),
            (b"[::1]x", BadPort),
            (b"[::1]:x", BadPort),
            (b"::1", Empty),
        ] {
            assert_eq!(parse(raw), Err(why), "{:?}", String::from_utf8_lossy(raw));
        }
        let long = "a".repeat(MAX_HOST_NAME + 1);
        assert_eq!(parse(long.as_bytes()), Err(HostError::TooLong));
    }

    #[test]
    fn exactly_one_header_is_needed() {
        let mut headers = HeaderMap::new();
        assert_eq!(from_headers(&headers), Err(HostError::Missing));
        headers.append("host", "a.example".parse().unwrap());
        assert_eq!(from_headers(&headers).unwrap().name, "a.example");
        headers.append("host", "b.example".parse().unwrap());
        assert_eq!(from_headers(&headers), Err(HostError::Repeated));
    }
}
