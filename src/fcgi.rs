//! The FastCGI record format (FastCGI 1.0 specification), as pure functions.
//!
//! ws2fcgi is a FastCGI *client* in the Responder role. This module encodes a
//! whole request into one buffer (so it goes out in one write) and decodes the
//! records PHP-FPM answers with, refusing anything malformed with a typed
//! error. No I/O happens here, so the decoder can be unit-tested and fuzzed;
//! `fpm/` owns the sockets.
//!
//! ```text
//! record  = version:u8(1) type:u8 request_id:u16be content_length:u16be
//!           padding_length:u8 reserved:u8 content[content_length] padding
//! request = BEGIN_REQUEST(role=RESPONDER, flags=KEEP_CONN)
//!           PARAMS(name-value pairs)… PARAMS(empty)
//!           STDIN(body)… STDIN(empty)
//! answer  = (STDOUT | STDERR)… END_REQUEST(app_status:u32be, protocol_status:u8)
//! ```
//!
//! The crate `fastcgi-client` was the first choice; it is not used because its
//! streaming reader reports a response cut off mid-record as complete, its
//! buffered reader has no size limit, and it only takes UTF-8 parameters.

/// Every request uses this id: PHP-FPM does not multiplex, one request runs on
/// a connection at a time (nginx does the same).
pub const REQUEST_ID: u16 = 1;
/// Length of a record header.
pub const HEADER_LEN: usize = 8;
/// Largest content of one record.
pub const MAX_CONTENT: usize = 65535;

const VERSION: u8 = 1;
const BEGIN_REQUEST: u8 = 1;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const STDERR: u8 = 7;
/// `FCGI_GET_VALUES`: a management record asking the server's limits;
/// with no content it asks nothing, and a server may answer or ignore it.
pub const GET_VALUES: u8 = 9;
const ROLE_RESPONDER: u16 = 1;
const FLAG_KEEP_CONN: u8 = 1;

/// A FastCGI answer that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FcgiError {
    /// The record header's version byte is not 1.
    #[error("record with unsupported FastCGI version {0}")]
    BadVersion(u8),
    /// A record for another request id (we only ever send id 1).
    #[error("record for unexpected request id {0}")]
    WrongRequestId(u16),
    /// A record type a responder never sends to its client.
    #[error("unexpected record type {0}")]
    UnexpectedType(u8),
    /// END_REQUEST with a body shorter than 8 bytes.
    #[error("END_REQUEST record too short ({0} bytes)")]
    ShortEndRequest(usize),
    /// Bytes followed the END_REQUEST record; they belong to no request.
    #[error("{0} stray bytes after the end of the answer")]
    TrailingBytes(usize),
    /// END_REQUEST whose protocol status is not REQUEST_COMPLETE.
    #[error("request not completed: {0}")]
    NotCompleted(&'static str),
}

/// Appends one name-value pair in FastCGI's length-prefixed encoding.
///
/// Names and values are bytes: a header value that is not UTF-8 reaches PHP unchanged.
///
/// ```
/// let mut out = Vec::new();
/// ws2fcgi::fcgi::push_param(&mut out, b"WS_EVENT", b"open");
/// assert_eq!(out, b"\x08\x04WS_EVENTopen");
/// ```
pub fn push_param(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    push_len(out, name.len());
    push_len(out, value.len());
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// Decodes name-value pairs encoded by [`push_param`] into lossy UTF-8
/// strings, in order: the inverse the unit tests of the encoders share.
///
/// # Panics
/// On a truncated encoding (test input only).
#[cfg(test)]
pub(crate) fn decode_params(mut buf: &[u8]) -> Vec<(String, String)> {
    fn len(buf: &mut &[u8]) -> usize {
        if buf[0] < 128 {
            let n = usize::from(buf[0]);
            *buf = &buf[1..];
            n
        } else {
            let n = u32::from_be_bytes([buf[0] & 0x7f, buf[1], buf[2], buf[3]]) as usize;
            *buf = &buf[4..];
            n
        }
    }
    let mut pairs = Vec::new();
    while !buf.is_empty() {
        let n = len(&mut buf);
        let v = len(&mut buf);
        let name = String::from_utf8_lossy(&buf[..n]).into_owned();
        let value = String::from_utf8_lossy(&buf[n..n + v]).into_owned();
        buf = &buf[n + v..];
        pairs.push((name, value));
    }
    pairs
}

/// Appends one name-value pair whose value comes in pieces, as one value.
///
/// ```
/// let mut out = Vec::new();
/// ws2fcgi::fcgi::push_param_parts(&mut out, b"ID", &[b"node", b".", b"0a"]);
/// assert_eq!(out, b"\x02\x07IDnode.0a");
/// ```
pub fn push_param_parts(out: &mut Vec<u8>, name: &[u8], value: &[&[u8]]) {
    push_len(out, name.len());
    push_len(out, value.iter().map(|part| part.len()).sum());
    out.extend_from_slice(name);
    for part in value {
        out.extend_from_slice(part);
    }
}

/// Reads one length as [`push_param`] writes it from the front of `buf`:
/// the length and the rest, or `None` when `buf` ends first.
pub(crate) fn read_len(buf: &[u8]) -> Option<(usize, &[u8])> {
    match *buf {
        [b, ref rest @ ..] if b < 128 => Some((usize::from(b), rest)),
        [b0, b1, b2, b3, ref rest @ ..] => {
            let len = u32::from_be_bytes([b0 & 0x7f, b1, b2, b3]);
            Some((usize::try_from(len).ok()?, rest))
        }
        _ => None,
    }
}

/// Appends one length in FastCGI's name-value encoding: one byte below
/// 128, else four with the top bit set.
pub(crate) fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 128 {
        out.push(len as u8);
    } else {
        // Lengths are capped well below 2^31 by the callers' limits.
        let len = (len as u32) | 0x8000_0000;
        out.extend_from_slice(&len.to_be_bytes());
    }
}

fn push_header(out: &mut Vec<u8>, kind: u8, content_len: usize) {
    let len = content_len as u16;
    let id = REQUEST_ID.to_be_bytes();
    let len = len.to_be_bytes();
    out.extend_from_slice(&[VERSION, kind, id[0], id[1], len[0], len[1], 0, 0]);
}

fn push_stream(out: &mut Vec<u8>, kind: u8, parts: &[&[u8]]) {
    // Parameters may arrive in several slices (the connection's fixed part and
    // the event's part); records may split them anywhere.
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut left = total;
    let mut part = 0;
    let mut offset = 0;
    while left > 0 {
        let chunk = left.min(MAX_CONTENT);
        push_header(out, kind, chunk);
        let mut need = chunk;
        while need > 0 {
            let slice = &parts[part][offset..];
            let take = slice.len().min(need);
            out.extend_from_slice(&slice[..take]);
            need -= take;
            offset += take;
            if offset == parts[part].len() {
                part += 1;
                offset = 0;
            }
        }
        left -= chunk;
    }
    push_header(out, kind, 0);
}

/// Encodes a whole Responder request with FCGI_KEEP_CONN into `out` (cleared first).
///
/// `params` are already-encoded name-value pairs (see [`push_param`]), given in
/// pieces so a connection's fixed variables are encoded once, not per event.
pub fn encode_request(out: &mut Vec<u8>, params: &[&[u8]], stdin: &[u8]) {
    out.clear();
    let params_len: usize = params.iter().map(|p| p.len()).sum();
    out.reserve(
        HEADER_LEN * (4 + params_len / MAX_CONTENT + stdin.len() / MAX_CONTENT)
            + 8
            + params_len
            + stdin.len(),
    );
    push_header(out, BEGIN_REQUEST, 8);
    let role = ROLE_RESPONDER.to_be_bytes();
    out.extend_from_slice(&[role[0], role[1], FLAG_KEEP_CONN, 0, 0, 0, 0, 0]);
    push_stream(out, PARAMS, params);
    push_stream(out, STDIN, &[stdin]);
}

/// One decoded record of PHP-FPM's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// Part of the CGI response (headers, blank line, body).
    Stdout(&'a [u8]),
    /// Part of PHP's error output.
    Stderr(&'a [u8]),
    /// The request is complete; the connection may be reused.
    End {
        /// PHP-FPM's application status (the script's exit status).
        app_status: u32,
    },
}

/// Decodes the next record from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds no complete record yet, else the record
/// and how many bytes it used (header, content and padding).
pub fn decode(buf: &[u8]) -> Result<Option<(Record<'_>, usize)>, FcgiError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[0] != VERSION {
        return Err(FcgiError::BadVersion(buf[0]));
    }
    let kind = buf[1];
    let id = u16::from_be_bytes([buf[2], buf[3]]);
    let content_len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    let total = HEADER_LEN + content_len + usize::from(buf[6]);
    // Management records (id 0) are never answered to a Responder request.
    if id != REQUEST_ID {
        return Err(FcgiError::WrongRequestId(id));
    }
    if !matches!(kind, STDOUT | STDERR | END_REQUEST) {
        return Err(FcgiError::UnexpectedType(kind));
    }
    if buf.len() < total {
        return Ok(None);
    }
    let content = &buf[HEADER_LEN..HEADER_LEN + content_len];
    let record = match kind {
        STDOUT => Record::Stdout(content),
        STDERR => Record::Stderr(content),
        _ => {
            if content.len() < 8 {
                return Err(FcgiError::ShortEndRequest(content.len()));
            }
            let app_status = u32::from_be_bytes([content[0], content[1], content[2], content[3]]);
            match content[4] {
                0 => Record::End { app_status },
                1 => return Err(FcgiError::NotCompleted("cannot multiplex")),
                2 => return Err(FcgiError::NotCompleted("overloaded")),
                3 => return Err(FcgiError::NotCompleted("unknown role")),
                _ => return Err(FcgiError::NotCompleted("unknown protocol status")),
            }
        }
    };
    Ok(Some((record, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, id: u16, content: &[u8], padding: u8) -> Vec<u8> {
        let mut out = vec![
            VERSION,
            kind,
            (id >> 8) as u8,
            id as u8,
            (content.len() >> 8) as u8,
            content.len() as u8,
            padding,
            0,
        ];
        out.extend_from_slice(content);
        out.extend(std::iter::repeat_n(0, usize::from(padding)));
        out
    }

    #[test]
    fn params_decode_back_to_what_was_pushed() {
        let mut out = Vec::new();
        push_param(&mut out, b"WS_EVENT", b"message");
        push_param(&mut out, b"LONG", &[b'y'; 300]);
        push_param(&mut out, b"EMPTY", b"");
        let pairs = decode_params(&out);
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[0], ("WS_EVENT".into(), "message".into()));
        assert_eq!(pairs[1].1.len(), 300);
        assert_eq!(pairs[2], ("EMPTY".into(), String::new()));
    }

    #[test]
    fn long_lengths_use_four_bytes() {
        let mut out = Vec::new();
        push_param(&mut out, b"N", &[b'x'; 200]);
        assert_eq!(&out[..5], &[1, 0x80, 0, 0, 200]);
        assert_eq!(out.len(), 1 + 4 + 1 + 200);
    }

    #[test]
    fn request_splits_large_streams_into_records() {
        let body = vec![7u8; MAX_CONTENT * 2 + 10];
        let mut params = Vec::new();
        push_param(&mut params, b"A", b"1");
        let mut out = Vec::new();
        encode_request(&mut out, &[&params, b""], &body);
        // BEGIN, PARAMS, PARAMS(empty), 3×STDIN, STDIN(empty)
        let mut kinds = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let len = usize::from(u16::from_be_bytes([out[at + 4], out[at + 5]]));
            kinds.push((out[at + 1], len));
            at += HEADER_LEN + len + usize::from(out[at + 6]);
        }
        assert_eq!(
            kinds,
            vec![
                (BEGIN_REQUEST, 8),
                (PARAMS, params.len()),
                (PARAMS, 0),
                (STDIN, MAX_CONTENT),
                (STDIN, MAX_CONTENT),
                (STDIN, 10),
                (STDIN, 0)
            ]
        );
        assert_eq!(at, out.len());
    }

    #[test]
    fn params_split_across_pieces_are_contiguous() {
        let a = vec![1u8; MAX_CONTENT - 3];
        let b = vec![2u8; 10];
        let mut out = Vec::new();
        encode_request(&mut out, &[&a, &b], b"");
        let first = &out[16 + HEADER_LEN..16 + HEADER_LEN + MAX_CONTENT];
        assert!(first[..MAX_CONTENT - 3].iter().all(|&x| x == 1));
        assert!(first[MAX_CONTENT - 3..].iter().all(|&x| x == 2));
    }

    #[test]
    fn decodes_records_with_padding() {
        let mut buf = record(STDOUT, 1, b"Status: 200\r\n\r\nhi", 6);
        buf.extend(record(END_REQUEST, 1, &[0, 0, 0, 0, 0, 0, 0, 0], 0));
        let (rec, used) = decode(&buf).unwrap().unwrap();
        assert_eq!(rec, Record::Stdout(b"Status: 200\r\n\r\nhi"));
        assert_eq!(used, HEADER_LEN + 17 + 6);
        let (rec, _) = decode(&buf[used..]).unwrap().unwrap();
        assert_eq!(rec, Record::End { app_status: 0 });
    }

    #[test]
    fn incomplete_records_wait_for_more() {
        let buf = record(STDOUT, 1, b"abcdef", 2);
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn malformed_records_are_errors() {
        let mut bad = record(STDOUT, 1, b"x", 0);
        bad[0] = 2;
        assert_eq!(decode(&bad), Err(FcgiError::BadVersion(2)));
        assert_eq!(
            decode(&record(STDOUT, 7, b"x", 0)),
            Err(FcgiError::WrongRequestId(7))
        );
        assert_eq!(
            decode(&record(PARAMS, 1, b"x", 0)),
            Err(FcgiError::UnexpectedType(PARAMS))
        );
        assert_eq!(
            decode(&record(END_REQUEST, 1, &[0, 0], 0)),
            Err(FcgiError::ShortEndRequest(2))
        );
        assert_eq!(
            decode(&record(END_REQUEST, 1, &[0, 0, 0, 0, 2, 0, 0, 0], 0)),
            Err(FcgiError::NotCompleted("overloaded"))
        );
    }
}
