//! A connection's own CGI variables, kept compactly and written out, as
//! FastCGI name-value pairs, for each event.
//!
//! What differs from one connection to the next (addresses, the request
//! target, the id, the handshake's headers) is kept for the connection's
//! whole life, so it is kept small: a variable whose name is well known
//! keeps a one-byte tag instead of its name, the path is kept once for
//! `REQUEST_URI`, `DOCUMENT_URI`, `SCRIPT_NAME` and `QUERY_STRING`, and the
//! connection id is not kept at all (the hub's handle holds it in binary;
//! it is written when an event is encoded). [`OwnVars::push_to`] writes
//! exactly the pairs, in exactly the order, given to the [`Builder`].
//!
//! ```text
//! vars  = op*
//! op    = NAMED+i value          NAMES[i] = value
//!       | PAIR value value       any name = value
//!       | TARGET value length    REQUEST_URI = value; its path is value[..length],
//!                                the query what follows the path's '?'
//!       | DOCUMENT_URI | SCRIPT_NAME | QUERY_STRING    the last TARGET's path or query
//!       | CONNECTION_ID          WS_CONNECTION_ID = the id given when written
//! value = length bytes           (length as FastCGI's: one byte below 128, else four)
//! ```

use std::sync::Arc;

use crate::contract as c;
use crate::fcgi::{push_len, push_param, push_param_parts, read_len};

/// A pair kept with its name.
const PAIR: u8 = 0;
/// `REQUEST_URI`, and where its path ends.
const TARGET: u8 = 1;
/// `DOCUMENT_URI`: the last target's path.
const DOCUMENT_URI: u8 = 2;
/// `QUERY_STRING`: what follows the last target's path and its `?`.
const QUERY_STRING: u8 = 3;
/// `SCRIPT_NAME`: the last target's path.
const SCRIPT_NAME: u8 = 4;
/// `WS_CONNECTION_ID`, given when the variables are written.
const CONNECTION_ID: u8 = 5;
/// `NAMED + i`: `NAMES[i]`.
const NAMED: u8 = 8;

/// Names kept as a tag: the connection's fixed variables and the headers
/// most WebSocket clients send. (A name not here is kept whole.)
const NAMES: &[&str] = &[
    "SERVER_NAME",
    "SERVER_PORT",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    // A request target that is not its path and query (`Builder::uri`).
    "REQUEST_URI",
    "DOCUMENT_URI",
    "QUERY_STRING",
    "SCRIPT_NAME",
    "HTTP_HOST",
    "HTTP_UPGRADE",
    "HTTP_CONNECTION",
    "HTTP_SEC_WEBSOCKET_KEY",
    "HTTP_SEC_WEBSOCKET_VERSION",
    "HTTP_SEC_WEBSOCKET_EXTENSIONS",
    "HTTP_SEC_WEBSOCKET_PROTOCOL",
    "HTTP_ORIGIN",
    "HTTP_USER_AGENT",
    "HTTP_COOKIE",
    "HTTP_ACCEPT",
    "HTTP_ACCEPT_ENCODING",
    "HTTP_ACCEPT_LANGUAGE",
    "HTTP_CACHE_CONTROL",
    "HTTP_PRAGMA",
    "HTTP_AUTHORIZATION",
    "HTTP_REFERER",
    "HTTP_FORWARDED",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_REAL_IP",
    "HTTP_SEC_FETCH_DEST",
    "HTTP_SEC_FETCH_MODE",
    "HTTP_SEC_FETCH_SITE",
    c::VAR_SSL_PROTOCOL,
    c::VAR_SSL_CLIENT_VERIFY,
    c::VAR_SSL_CLIENT_S_DN,
    c::VAR_SSL_CLIENT_I_DN,
    c::VAR_SSL_CLIENT_SERIAL,
    c::VAR_SSL_CLIENT_CERT,
    c::VAR_PUSHER_APP_ID,
    c::VAR_PUSHER_SOCKET_ID,
];

/// A connection's own variables, as kept (see the module docs).
#[derive(Debug, Clone)]
pub struct OwnVars(Arc<[u8]>);

impl OwnVars {
    /// None at all (tests, stand-ins).
    pub fn empty() -> Self {
        Self(Arc::from(&b""[..]))
    }

    /// Bytes kept (without the `Arc`'s header).
    pub fn kept_len(&self) -> usize {
        self.0.len()
    }

    /// The same variables and then those `more` adds.
    pub fn extended(&self, more: impl FnOnce(&mut Builder)) -> Self {
        let mut builder = Builder {
            ops: self.0.to_vec(),
        };
        more(&mut builder);
        builder.finish()
    }

    /// Appends the variables to `out` as FastCGI name-value pairs, exactly
    /// as given to the [`Builder`]; `conn_id` is `WS_CONNECTION_ID`'s value,
    /// in pieces.
    pub fn push_to(&self, conn_id: &[&[u8]], out: &mut Vec<u8>) {
        let whole = write(&self.0, conn_id, out);
        // Only the builder writes what is kept.
        debug_assert!(whole.is_some(), "own variables cut short");
    }
}

/// Writes the ops in `ops`; `None` when they end in the middle of one.
fn write(mut ops: &[u8], conn_id: &[&[u8]], out: &mut Vec<u8>) -> Option<()> {
    let mut path: &[u8] = b"";
    let mut query: &[u8] = b"";
    while let Some((&tag, rest)) = ops.split_first() {
        ops = rest;
        match tag {
            PAIR => {
                let name = take(&mut ops)?;
                let value = take(&mut ops)?;
                push_param(out, name, value);
            }
            TARGET => {
                let target = take(&mut ops)?;
                let (len, rest) = read_len(ops)?;
                ops = rest;
                let (p, q) = target.split_at_checked(len)?;
                path = p;
                query = q.get(1..).unwrap_or(b"");
                push_param(out, b"REQUEST_URI", target);
            }
            DOCUMENT_URI => push_param(out, b"DOCUMENT_URI", path),
            QUERY_STRING => push_param(out, b"QUERY_STRING", query),
            SCRIPT_NAME => push_param(out, b"SCRIPT_NAME", path),
            CONNECTION_ID => push_param_parts(out, c::VAR_CONNECTION_ID.as_bytes(), conn_id),
            _ => {
                let name = NAMES.get(usize::from(tag.checked_sub(NAMED)?))?;
                let value = take(&mut ops)?;
                push_param(out, name.as_bytes(), value);
            }
        }
    }
    Some(())
}

/// Takes one length-prefixed value from the front of `ops`.
fn take<'a>(ops: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = read_len(ops)?;
    let (value, rest) = rest.split_at_checked(len)?;
    *ops = rest;
    Some(value)
}

/// Builds [`OwnVars`], one variable after the other, in the order PHP
/// receives them.
#[derive(Debug)]
pub struct Builder {
    ops: Vec<u8>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// No variables yet.
    pub fn new() -> Self {
        Self {
            ops: Vec::with_capacity(256),
        }
    }

    /// `name` = `value`.
    pub fn var(&mut self, name: &[u8], value: &[u8]) {
        match NAMES.iter().position(|known| known.as_bytes() == name) {
            // NAMES is far shorter than the tags left after NAMED.
            Some(i) => self.ops.push(NAMED + i as u8),
            None => {
                self.ops.push(PAIR);
                push_len(&mut self.ops, name.len());
                self.ops.extend_from_slice(name);
            }
        }
        push_len(&mut self.ops, value.len());
        self.ops.extend_from_slice(value);
    }

    /// `REQUEST_URI`, `DOCUMENT_URI`, `QUERY_STRING` and `SCRIPT_NAME`, in
    /// that order: `request_uri`, `path`, `query` and `path`. The path is
    /// kept once when `request_uri` is the path, `?` and the query (or the
    /// path alone, for an empty query), as a client's request target is.
    pub fn uri(&mut self, request_uri: &str, path: &str, query: &str) {
        let cut = match request_uri.strip_prefix(path) {
            Some("") => query.is_empty(),
            Some(rest) => rest.strip_prefix('?') == Some(query),
            None => false,
        };
        if cut {
            self.ops.push(TARGET);
            push_len(&mut self.ops, request_uri.len());
            self.ops.extend_from_slice(request_uri.as_bytes());
            push_len(&mut self.ops, path.len());
            self.ops
                .extend_from_slice(&[DOCUMENT_URI, QUERY_STRING, SCRIPT_NAME]);
        } else {
            self.var(b"REQUEST_URI", request_uri.as_bytes());
            self.var(b"DOCUMENT_URI", path.as_bytes());
            self.var(b"QUERY_STRING", query.as_bytes());
            self.var(b"SCRIPT_NAME", path.as_bytes());
        }
    }

    /// `WS_CONNECTION_ID`, whose value is given when the variables are
    /// written ([`OwnVars::push_to`]).
    pub fn connection_id(&mut self) {
        self.ops.push(CONNECTION_ID);
    }

    /// The variables, kept in an allocation of their size.
    pub fn finish(self) -> OwnVars {
        OwnVars(Arc::from(self.ops))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use hyper::http::request::Parts;

    use crate::event::{ClientInfo, EnvInterner, EnvSource, connection_env};
    use crate::host;

    #[test]
    fn every_name_has_a_tag() {
        assert!(NAMED as usize + NAMES.len() <= 256);
        let mut seen = std::collections::HashSet::new();
        assert!(NAMES.iter().all(|n| seen.insert(n)), "no name twice");
    }

    #[test]
    fn what_is_written_is_what_was_given_in_order() {
        let long = "v".repeat(300);
        let given: &[(&str, &str)] = &[
            ("SERVER_NAME", "example.com"),
            ("REMOTE_PORT", "0"),
            ("HTTP_X_ODD", ""),
            ("HTTP_COOKIE", long.as_str()),
            ("SSL_CLIENT_CERT", "-----BEGIN"),
            (long.as_str(), "a name kept whole"),
            ("", "an empty name"),
        ];
        let mut builder = Builder::new();
        let mut expected = Vec::new();
        for (name, value) in given {
            builder.var(name.as_bytes(), value.as_bytes());
            push_param(&mut expected, name.as_bytes(), value.as_bytes());
        }
        let vars = builder.finish();
        let mut out = b"before".to_vec();
        vars.push_to(&[b"id"], &mut out);
        assert_eq!(&out[..6], b"before", "appended");
        assert_eq!(&out[6..], &expected[..]);
        assert!(vars.kept_len() < expected.len());
    }

    #[test]
    fn the_path_is_kept_once_and_written_four_times() {
        let cases = [
            ("/chat/room?x=1&y=2", "/chat/room", "x=1&y=2", true),
            ("/", "/", "", true),
            ("/a?", "/a", "", true),
            ("/a??b", "/a", "?b", true),
            // Not a path and its query: kept as given.
            ("*", "/", "", false),
            ("/a?b", "/a", "c", false),
            ("/a", "/a", "b", false),
            ("", "", "", true),
        ];
        for (uri, path, query, cut) in cases {
            let mut builder = Builder::new();
            builder.uri(uri, path, query);
            builder.connection_id();
            let vars = builder.finish();
            let mut expected = Vec::new();
            push_param(&mut expected, b"REQUEST_URI", uri.as_bytes());
            push_param(&mut expected, b"DOCUMENT_URI", path.as_bytes());
            push_param(&mut expected, b"QUERY_STRING", query.as_bytes());
            push_param(&mut expected, b"SCRIPT_NAME", path.as_bytes());
            push_param(&mut expected, b"WS_CONNECTION_ID", b"node.0123");
            let mut out = Vec::new();
            vars.push_to(&[b"node", b".", b"0123"], &mut out);
            assert_eq!(out, expected, "{uri:?}");
            assert_eq!(vars.0[0] == TARGET, cut, "{uri:?}");
        }
    }

    #[test]
    fn extended_variables_follow_the_others() {
        let mut builder = Builder::new();
        builder.var(b"SERVER_PORT", b"80");
        let vars = builder.finish().extended(|more| {
            more.var(c::VAR_PUSHER_APP_ID.as_bytes(), b"1001");
            more.var(b"X_OTHER", b"y");
        });
        let mut expected = Vec::new();
        push_param(&mut expected, b"SERVER_PORT", b"80");
        push_param(&mut expected, b"WS_PUSHER_APP_ID", b"1001");
        push_param(&mut expected, b"X_OTHER", b"y");
        let mut out = Vec::new();
        vars.push_to(&[], &mut out);
        assert_eq!(out, expected);
    }

    /// The connection's own variables as `event::connection_env` encoded
    /// and kept them before this module, for the comparison below.
    fn encoded_before(src: &EnvSource<'_>, conn_id: &str) -> Vec<u8> {
        let req = src.request;
        let path = req.uri.path();
        let query = req.uri.query().unwrap_or("");
        let request_uri = req.uri.path_and_query().map_or(path, |pq| pq.as_str());
        let configured = src
            .server_name
            .and_then(|name| host::parse(name.as_bytes()).ok());
        let (server_name, named_port) = match configured {
            Some(name) => (name.name, name.port),
            None => (src.host.name, src.host.port),
        };
        let server_port = match (named_port, src.client.local) {
            (Some(port), _) => port.to_string(),
            (None, Some(local)) if !src.client.https || src.tls.is_some() => {
                local.port().to_string()
            }
            (None, _) if src.client.https => "443".into(),
            _ => "80".into(),
        };
        let mut own = Vec::new();
        let mut p = |name: &str, value: &[u8]| push_param(&mut own, name.as_bytes(), value);
        p("SERVER_NAME", server_name.as_bytes());
        p("SERVER_PORT", server_port.as_bytes());
        p("REMOTE_ADDR", src.client.remote_ip.to_string().as_bytes());
        p("REMOTE_PORT", src.client.remote_port.to_string().as_bytes());
        p("REQUEST_URI", request_uri.as_bytes());
        p("DOCUMENT_URI", path.as_bytes());
        p("QUERY_STRING", query.as_bytes());
        p("SCRIPT_NAME", path.as_bytes());
        p(c::VAR_CONNECTION_ID, conn_id.as_bytes());
        if let Some(tls) = src.tls {
            p(c::VAR_SSL_PROTOCOL, tls.protocol.as_bytes());
            p(c::VAR_SSL_CLIENT_VERIFY, tls.verify().as_bytes());
            if let Some(cert) = &tls.client {
                p(c::VAR_SSL_CLIENT_S_DN, cert.subject.as_bytes());
                p(c::VAR_SSL_CLIENT_I_DN, cert.issuer.as_bytes());
                p(c::VAR_SSL_CLIENT_SERIAL, cert.serial.as_bytes());
                p(c::VAR_SSL_CLIENT_CERT, cert.pem.as_bytes());
            }
        }
        let mut name_buf = Vec::new();
        for name in req.headers.keys() {
            let raw = name.as_str();
            if raw == "proxy" || !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                continue;
            }
            name_buf.clear();
            name_buf.extend_from_slice(b"HTTP_");
            name_buf.extend(raw.bytes().map(|b| match b {
                b'-' => b'_',
                b => b.to_ascii_uppercase(),
            }));
            let separator: &[u8] = if raw == "cookie" { b"; " } else { b", " };
            let mut values = req.headers.get_all(name).iter();
            let Some(first) = values.next() else { continue };
            let mut joined: Option<Vec<u8>> = None;
            for more in values {
                let buf = joined.get_or_insert_with(|| first.as_bytes().to_vec());
                buf.extend_from_slice(separator);
                buf.extend_from_slice(more.as_bytes());
            }
            push_param(
                &mut own,
                &name_buf,
                joined.as_deref().unwrap_or(first.as_bytes()),
            );
        }
        own
    }

    /// A handshake as the gateway gets it: `target` and raw header lines.
    fn handshake(target: &str, headers: &[(&str, &[u8])]) -> Parts {
        let mut b = hyper::Request::builder().uri(target);
        for (name, value) in headers {
            b = b.header(
                *name,
                hyper::header::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn php_receives_the_same_bytes_as_before() {
        let bench: &[(&str, &[u8])] = &[
            ("host", b"127.0.0.1:8090"),
            ("upgrade", b"websocket"),
            ("connection", b"Upgrade"),
            ("sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", b"13"),
        ];
        let long_cookie = format!("session={}", "s".repeat(400));
        let browser: &[(&str, &[u8])] = &[
            ("Host", b"chat.example.com"),
            ("Origin", b"https://chat.example.com"),
            ("User-Agent", b"Mozilla/5.0 (X11; Linux x86_64)"),
            ("Cookie", b"a=1"),
            ("Cookie", long_cookie.as_bytes()),
            ("Accept-Language", b"de-CH, en;q=0.5"),
            (
                "Sec-WebSocket-Extensions",
                b"permessage-deflate; client_max_window_bits",
            ),
            ("Sec-WebSocket-Protocol", b"ws2fcgi.v1, chat"),
            ("X-Forwarded-For", b"203.0.113.7"),
            ("x-forwarded-for", b"198.51.100.2"),
        ];
        let odd: &[(&str, &[u8])] = &[
            ("host", b"[::1]:9"),
            ("proxy", b"http://evil"),
            ("x_forged", b"1"),
            ("x-empty", b""),
            ("x-latin1", b"caf\xe9 \xff"),
            ("x-9-digits-1", b"ok"),
            ("upgrade", b"websocket"),
            ("upgrade", b"h2c"),
            ("sec-websocket-key", &[b'k'; 200]),
        ];
        let cert = crate::tls::Session {
            protocol: "TLSv1.3",
            client: Some(crate::tls::ClientCert {
                subject: "CN=ada".into(),
                issuer: "CN=Test CA,O=Example".into(),
                serial: "0A1B".into(),
                pem: format!("-----BEGIN CERTIFICATE-----\n{}\n", "Q".repeat(900)),
            }),
        };
        let anonymous = crate::tls::Session {
            protocol: "TLSv1.2",
            client: None,
        };
        let local = Some("127.0.0.1:8090".parse().unwrap());
        let v4 = ClientInfo {
            remote_ip: "10.1.2.3".parse().unwrap(),
            remote_port: 5555,
            https: false,
            local,
        };
        let v6 = ClientInfo {
            remote_ip: "2001:db8::17".parse().unwrap(),
            remote_port: 0,
            https: true,
            local: None,
        };
        // Target, headers, server_name, client, TLS session.
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a [u8])],
            Option<&'a str>,
            &'a ClientInfo,
            Option<&'a crate::tls::Session>,
        );
        let cases: &[Case<'_>] = &[
            ("/", bench, None, &v4, None),
            ("/chat/room?x=1&y=2", browser, None, &v4, None),
            (
                "/chat/room?x=1&y=2",
                browser,
                Some("chat.example.com:8443"),
                &v6,
                None,
            ),
            ("/a%20b/?q=%3F?x", odd, None, &v6, Some(&cert)),
            ("/a?", odd, Some("named"), &v4, Some(&anonymous)),
            ("http://example.com/p/q?r", bench, None, &v4, None),
            ("http://example.com", bench, None, &v4, None),
            ("*", &[], None, &v6, None),
        ];
        let interner = EnvInterner::default();
        for &(target, headers, server_name, client, tls) in cases {
            let req = handshake(target, headers);
            let src = EnvSource {
                request: &req,
                host: host::from_headers(&req.headers).unwrap_or(host::Host {
                    name: "localhost",
                    port: None,
                }),
                server_name,
                client,
                script: std::path::Path::new("/srv/app/ws.php"),
                document_root: None,
                control_socket: None,
                tls,
            };
            let env = connection_env(&src, &interner);
            for (conn_id, pieces) in [
                (
                    "0123456789abcdef0123456789abcdef01234567",
                    vec![&b"0123456789abcdef0123456789abcdef01234567"[..]],
                ),
                (
                    "web-1.00000000000000000000000000000000000000ff",
                    vec![b"web-1", b".", b"00000000000000000000000000000000000000ff"],
                ),
            ] {
                let mut now = Vec::new();
                env.own.push_to(&pieces, &mut now);
                assert_eq!(now, encoded_before(&src, conn_id), "{target} {headers:?}");
            }
        }
    }

    #[test]
    fn ops_cut_short_write_what_is_whole() {
        let mut builder = Builder::new();
        builder.var(b"SERVER_PORT", b"80");
        builder.var(b"REMOTE_PORT", b"5555");
        let ops = builder.finish().0;
        let mut out = Vec::new();
        assert_eq!(write(&ops[..ops.len() - 1], &[], &mut out), None);
        let mut expected = Vec::new();
        push_param(&mut expected, b"SERVER_PORT", b"80");
        assert_eq!(out, expected);
        assert_eq!(write(&[7], &[], &mut Vec::new()), None, "an unused tag");
        assert_eq!(write(&[255, 0], &[], &mut Vec::new()), None, "past NAMES");
    }
}

#[cfg(test)]
mod memory_budget {
    use super::*;

    /// What every idle connection of `ws2fcgi-bench idle` keeps
    /// (docs/performance.md, "Byte by byte, part 4"): growth fails here.
    #[test]
    fn a_bench_clients_own_variables_stay_small() {
        let mut own = Builder::new();
        own.var(b"SERVER_NAME", b"127.0.0.1");
        own.var(b"SERVER_PORT", b"40000");
        own.var(b"REMOTE_ADDR", b"127.0.0.1");
        own.var(b"REMOTE_PORT", b"50000");
        own.uri("/", "/", "");
        own.connection_id();
        own.var(b"HTTP_HOST", b"127.0.0.1:40000");
        own.var(b"HTTP_CONNECTION", b"Upgrade");
        own.var(b"HTTP_UPGRADE", b"websocket");
        own.var(b"HTTP_SEC_WEBSOCKET_VERSION", b"13");
        own.var(b"HTTP_SEC_WEBSOCKET_KEY", b"dGhlIHNhbXBsZSBub25jZQ==");
        let own = own.finish();
        let mut written = Vec::new();
        own.push_to(&[&[b'0'; 40]], &mut written);
        eprintln!("kept {} bytes, written {}", own.kept_len(), written.len());
        assert_eq!(written.len(), 346, "what PHP receives, as before");
        assert!(own.kept_len() <= 112, "kept {} bytes", own.kept_len());
    }
}
