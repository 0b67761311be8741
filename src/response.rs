//! PHP's answer to an event: CGI status, headers, directives and body.
//!
//! A pure function over the bytes PHP-FPM returned on stdout, so every case of
//! a malformed answer is unit-tested and fuzzed. The header block is parsed by
//! `httparse`; this module adds the CGI `Status:` header and the `X-WS-*`
//! directives of `docs/protocol.md`:
//!
//! ```text
//! Status: 403 Forbidden              (absent means 200)
//! X-WS-Join: room1, room2            (channels, comma-separated)
//! X-WS-Leave: room1
//! X-WS-Meta-User-Id: 42              (WS_META_USER_ID on later events; empty deletes)
//! X-WS-Close: 4000 bye               (close after the body is sent)
//! Content-Type: application/octet-stream   (send the body as a binary message)
//! ```
//!
//! A directive that is malformed is skipped and reported in
//! [`PhpResponse::problems`]; the rest of the answer still applies.

use bytes::Bytes;

use crate::contract;

/// Most header lines PHP may send in one answer.
pub const MAX_HEADERS: usize = 100;
/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 200;
/// Longest metadata name, in bytes.
pub const MAX_META_NAME_LEN: usize = 64;
/// Longest metadata value, in bytes.
pub const MAX_META_VALUE_LEN: usize = 4096;
/// Longest close reason: a close frame's payload is at most 125 bytes, 2 of them the code.
pub const MAX_CLOSE_REASON_LEN: usize = 123;

/// An answer PHP gave that cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The header block is larger than `fpm.max_response_header_bytes`.
    #[error("response headers exceed {0} bytes")]
    HeadersTooLarge(usize),
    /// The body is larger than `fpm.max_response_body_bytes`.
    #[error("response body exceeds {0} bytes")]
    BodyTooLarge(usize),
    /// The header block is not `Name: value` lines ended by a blank line.
    #[error("malformed response headers: {0}")]
    BadHeaders(String),
    /// The `Status:` header is not a number from 200 to 599.
    #[error("malformed Status header `{0}`")]
    BadStatus(String),
}

/// Channel and metadata changes, and a close, that PHP asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    /// Channels to join.
    pub join: Vec<String>,
    /// Channels to leave (applied before `join`).
    pub leave: Vec<String>,
    /// Metadata to set (`Some`) or delete (`None`), keys canonical (see [`meta_key`]).
    pub meta: Vec<(String, Option<String>)>,
    /// Close the connection after sending the body.
    pub close: Option<(u16, String)>,
}

impl Directives {
    /// True when there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.join.is_empty()
            && self.leave.is_empty()
            && self.meta.is_empty()
            && self.close.is_none()
    }
}

/// PHP's answer, ready to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhpResponse {
    /// The HTTP status (CGI `Status:`), 200 when absent.
    pub status: u16,
    /// Headers to pass to the client on a handshake answer: everything but
    /// directives, `Status` and hop-by-hop headers; names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The `X-WS-*` directives.
    pub directives: Directives,
    /// The body goes out as a binary message (Content-Type application/octet-stream).
    pub binary: bool,
    /// The body; sent to the client as one message when not empty.
    pub body: Bytes,
    /// Directives that were malformed and skipped, one message each, for the log.
    pub problems: Vec<String>,
}

impl PhpResponse {
    /// Is the status 2xx (accepting a handshake)?
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Headers that describe the FastCGI/HTTP framing, never passed on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "sec-websocket-accept",
];

/// Parses PHP's stdout.
///
/// ```
/// use ws2fcgi::response::parse;
/// let r = parse(b"Status: 403 Forbidden\r\nX-WS-Join: a, b\r\n\r\nno".to_vec(), 4096, 4096).unwrap();
/// assert_eq!(r.status, 403);
/// assert_eq!(r.directives.join, ["a", "b"]);
/// assert_eq!(&r.body[..], b"no");
/// ```
pub fn parse(
    stdout: Vec<u8>,
    max_header_bytes: usize,
    max_body_bytes: usize,
) -> Result<PhpResponse, ResponseError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (header_len, parsed) = if stdout.is_empty() {
        // A script that printed nothing and set nothing: accept, no message.
        (0, &[][..])
    } else {
        match httparse::parse_headers(&stdout, &mut raw) {
            Ok(httparse::Status::Complete((len, headers))) => (len, headers),
            Ok(httparse::Status::Partial) => {
                if stdout.len() > max_header_bytes {
                    return Err(ResponseError::HeadersTooLarge(max_header_bytes));
                }
                return Err(ResponseError::BadHeaders(
                    "no blank line ends the header block".into(),
                ));
            }
            Err(e) => return Err(ResponseError::BadHeaders(e.to_string())),
        }
    };
    if header_len > max_header_bytes {
        return Err(ResponseError::HeadersTooLarge(max_header_bytes));
    }

    let mut response = PhpResponse {
        status: 200,
        headers: Vec::new(),
        directives: Directives::default(),
        binary: false,
        body: Bytes::new(),
        problems: Vec::new(),
    };
    for header in parsed {
        let name = header.name.to_ascii_lowercase();
        let value = header.value;
        if name == "status" {
            response.status = parse_status(value)?;
        } else if let Some(directive) = name.strip_prefix(contract::HEADER_DIRECTIVE_PREFIX) {
            if let Err(problem) = apply_directive(&mut response.directives, directive, value) {
                response
                    .problems
                    .push(format!("{}: {problem}", header.name));
            }
        } else if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        } else {
            if name == "content-type" {
                response.binary = is_binary_type(value);
            }
            response.headers.push((name, value.to_vec()));
        }
    }

    let body_len = stdout.len() - header_len;
    if body_len > max_body_bytes {
        return Err(ResponseError::BodyTooLarge(max_body_bytes));
    }
    let mut stdout = Bytes::from(stdout);
    response.body = stdout.split_off(header_len);
    Ok(response)
}

fn parse_status(value: &[u8]) -> Result<u16, ResponseError> {
    let text = String::from_utf8_lossy(value);
    text.split_ascii_whitespace()
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        // 1xx are interim answers; a CGI answer must be final (and a 101
        // is ws2fcgi's to send, never PHP's).
        .filter(|code| (200..=599).contains(code))
        .ok_or_else(|| ResponseError::BadStatus(text.into_owned()))
}

fn is_binary_type(value: &[u8]) -> bool {
    let essence = value.split(|&b| b == b';').next().unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(contract::CONTENT_TYPE_BINARY.as_bytes())
}

fn apply_directive(d: &mut Directives, name: &str, value: &[u8]) -> Result<(), String> {
    let value = std::str::from_utf8(value).map_err(|_| "value is not UTF-8".to_string())?;
    match name {
        "join" => d.join.extend(channel_list(value)?),
        "leave" => d.leave.extend(channel_list(value)?),
        "close" => d.close = Some(parse_close(value)?),
        _ => match name.strip_prefix("meta-") {
            Some(meta) => {
                let key = meta_key(meta)?;
                if value.len() > MAX_META_VALUE_LEN {
                    return Err(format!("value longer than {MAX_META_VALUE_LEN} bytes"));
                }
                let value = value.trim();
                d.meta
                    .push((key, (!value.is_empty()).then(|| value.to_owned())));
            }
            None => return Err("unknown directive".into()),
        },
    }
    Ok(())
}

/// Splits and checks a comma-separated channel list.
pub fn channel_list(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| check_channel(c).map(|()| c.to_owned()))
        .collect()
}

/// Is `name` an acceptable channel name? Not empty, at most
/// [`MAX_CHANNEL_LEN`] bytes, no control characters, no comma.
pub fn check_channel(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty channel name".into());
    }
    if name.len() > MAX_CHANNEL_LEN {
        return Err(format!("channel name longer than {MAX_CHANNEL_LEN} bytes"));
    }
    if name.chars().any(|c| c.is_control() || c == ',') {
        return Err(format!(
            "channel name `{}` has a control character or comma",
            name.escape_default()
        ));
    }
    Ok(())
}

/// The canonical form of a metadata name: lower case, `-` as `_`.
/// `WS_META_<NAME>` is its upper-case form. Letters, digits, `-` and `_` only.
///
/// ```
/// assert_eq!(ws2fcgi::response::meta_key("User-Id").unwrap(), "user_id");
/// assert!(ws2fcgi::response::meta_key("a b").is_err());
/// ```
pub fn meta_key(name: &str) -> Result<String, String> {
    if name.is_empty() || name.len() > MAX_META_NAME_LEN {
        return Err(format!(
            "metadata name must be 1 to {MAX_META_NAME_LEN} bytes"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "metadata name `{}` may hold only letters, digits, '-' and '_'",
            name.escape_default()
        ));
    }
    Ok(name.to_ascii_lowercase().replace('-', "_"))
}

/// Parses `<code> <reason>`; an empty value means 1000 with no reason.
pub fn parse_close(value: &str) -> Result<(u16, String), String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok((contract::CLOSE_NORMAL, String::new()));
    }
    let (code, reason) = value.split_once(' ').unwrap_or((value, ""));
    let code: u16 = code
        .parse()
        .map_err(|_| format!("`{code}` is not a close code"))?;
    check_close(code, reason.trim()).map(|()| (code, reason.trim().to_owned()))
}

/// Is this a close code and reason a server may send?
pub fn check_close(code: u16, reason: &str) -> Result<(), String> {
    if !contract::is_sendable_close_code(code) {
        return Err(format!(
            "close code {code} may not be sent (use 1000-1003, 1007-1014 or 3000-4999)"
        ));
    }
    if reason.len() > MAX_CLOSE_REASON_LEN {
        return Err(format!(
            "close reason longer than {MAX_CLOSE_REASON_LEN} bytes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &[u8]) -> PhpResponse {
        parse(text.to_vec(), 4096, 1 << 20).expect("parses")
    }

    #[test]
    fn php_default_answer_is_200_text() {
        let r = parse_ok(b"Content-type: text/html; charset=UTF-8\r\n\r\nhello");
        assert_eq!(r.status, 200);
        assert!(!r.binary);
        assert_eq!(&r.body[..], b"hello");
        assert_eq!(
            r.header("content-type"),
            Some(&b"text/html; charset=UTF-8"[..])
        );
    }

    #[test]
    fn empty_output_accepts_with_no_message() {
        let r = parse(Vec::new(), 4096, 4096).unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
    }

    #[test]
    fn status_and_cookies_are_kept_directives_are_not() {
        let r = parse_ok(
            b"Status: 403 Forbidden\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-WS-Meta-User: 7\r\nContent-Length: 2\r\n\r\nno",
        );
        assert_eq!(r.status, 403);
        assert!(!r.is_success());
        let cookies: Vec<_> = r
            .headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .collect();
        assert_eq!(cookies.len(), 2);
        assert!(
            r.headers
                .iter()
                .all(|(n, _)| !n.starts_with("x-ws-") && n != "content-length")
        );
        assert_eq!(
            r.directives.meta,
            vec![("user".to_string(), Some("7".to_string()))]
        );
    }

    #[test]
    fn binary_content_type_selects_binary() {
        let r = parse_ok(b"Content-Type: Application/Octet-Stream; x=y\r\n\r\n\xff\x00");
        assert!(r.binary);
        assert_eq!(&r.body[..], b"\xff\x00");
    }

    #[test]
    fn directives_parse() {
        let r = parse_ok(
            b"X-WS-Join: a, b,,c\r\nX-WS-Join: d\r\nX-WS-Leave: z\r\nX-WS-Meta-Nick-Name:\r\nX-WS-Close: 4001 go away now\r\n\r\n",
        );
        assert_eq!(r.directives.join, ["a", "b", "c", "d"]);
        assert_eq!(r.directives.leave, ["z"]);
        assert_eq!(r.directives.meta, vec![("nick_name".to_string(), None)]);
        assert_eq!(r.directives.close, Some((4001, "go away now".to_string())));
        assert!(r.problems.is_empty());
    }

    #[test]
    fn bad_directives_are_reported_and_skipped() {
        let r = parse_ok(b"X-WS-Close: 1006 nope\r\nX-WS-Frobnicate: 1\r\nX-WS-Meta-a.b: 1\r\nX-WS-Join: ok\r\n\r\n");
        assert_eq!(r.directives.close, None);
        assert_eq!(r.directives.join, ["ok"]);
        assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
    }

    #[test]
    fn close_without_code_is_normal() {
        assert_eq!(parse_close(""), Ok((1000, String::new())));
        assert_eq!(parse_close("4000"), Ok((4000, String::new())));
        assert!(parse_close("abc").is_err());
        assert!(parse_close(&format!("4000 {}", "x".repeat(124))).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b"no header end"[..],
            b"Bad Header Line\r\n\r\n",
            b"\x00\x01\r\n\r\n",
            b": x\r\n\r\n",
        ] {
            assert!(parse(bad.to_vec(), 4096, 4096).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse(b"Status: banana\r\n\r\n".to_vec(), 4096, 4096),
            Err(ResponseError::BadStatus("banana".into()))
        );
        assert_eq!(
            parse(b"Status: 99\r\n\r\n".to_vec(), 4096, 4096),
            Err(ResponseError::BadStatus("99".into()))
        );
        assert_eq!(
            parse(
                b"Status: 101 Switching Protocols\r\n\r\n".to_vec(),
                4096,
                4096
            ),
            Err(ResponseError::BadStatus("101 Switching Protocols".into()))
        );
    }

    #[test]
    fn limits_apply() {
        let big = format!("X-Big: {}\r\n\r\n", "x".repeat(5000));
        assert_eq!(
            parse(big.into_bytes(), 4096, 10),
            Err(ResponseError::HeadersTooLarge(4096))
        );
        assert_eq!(
            parse(b"A: b\r\n\r\n0123456789x".to_vec(), 4096, 10),
            Err(ResponseError::BodyTooLarge(10))
        );
    }
}
