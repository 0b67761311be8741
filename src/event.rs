//! WebSocket events and the CGI variables that describe them to PHP.
//!
//! The variables that never change during a connection (the handshake's
//! headers, addresses, script, connection id) are worked out once, at the
//! handshake: the part every connection of a route and listener shares is
//! encoded as FastCGI name-value bytes and interned, the connection's own
//! part is kept compactly (`conn_vars.rs`) and written out with each event,
//! whose own few (`WS_EVENT`, message type, metadata, …) follow. See
//! `docs/protocol.md` for the full list.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use hyper::http::request::Parts;

use crate::conn_vars::{self, OwnVars};
use crate::contract as c;
use crate::fcgi::push_param;
use crate::frame::Kind;
use crate::host::{self, Host};
use crate::hub::ConnHandle;
use crate::inbound::Charge;

/// One WebSocket event, sent to PHP as one FastCGI request.
#[derive(Debug)]
pub enum Event {
    /// The handshake: PHP accepts (2xx) or rejects it.
    Open,
    /// A data message from the client; its payload is the request body.
    Message {
        /// Text or binary.
        kind: Kind,
        /// The payload, byte-exact.
        data: Bytes,
        /// Its place in the inbound budget, given back when the event is
        /// dropped (after PHP answered, or when it is discarded).
        charge: Charge,
    },
    /// The connection ended; always the last event.
    Close {
        /// See the close codes in `contract.rs`.
        code: u16,
        /// The reason (may be empty).
        reason: String,
    },
}

impl Event {
    /// `WS_EVENT`'s value.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Open => c::EVENT_OPEN,
            Self::Message { .. } => c::EVENT_MESSAGE,
            Self::Close { .. } => c::EVENT_CLOSE,
        }
    }

    /// The request body.
    pub fn body(&self) -> &[u8] {
        match self {
            Self::Message { data, .. } => data,
            _ => b"",
        }
    }
}

/// Who the client is, as PHP should see it (after trusted-proxy rules).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// REMOTE_ADDR.
    pub remote_ip: IpAddr,
    /// REMOTE_PORT (0 when unknown, e.g. behind a proxy on a Unix socket).
    pub remote_port: u16,
    /// The client came over TLS (HTTPS=on).
    pub https: bool,
    /// SERVER_ADDR and SERVER_PORT when the listener is TCP.
    pub local: Option<std::net::SocketAddr>,
}

/// What the fixed part of a connection's variables is made from.
pub struct EnvSource<'a> {
    /// The handshake request.
    pub request: &'a Parts,
    /// Its `Host` header, already checked (see [`crate::host`]).
    pub host: Host<'a>,
    /// `server_name`: what PHP sees instead of `host`, when set.
    pub server_name: Option<&'a str>,
    /// Who the client is.
    pub client: &'a ClientInfo,
    /// SCRIPT_FILENAME.
    pub script: &'a Path,
    /// DOCUMENT_ROOT; the script's directory when `None`.
    pub document_root: Option<&'a Path>,
    /// WS_CONTROL_SOCKET, when a control socket is configured.
    pub control_socket: Option<&'a Path>,
    /// The TLS session, on a `tls://` listener (`SSL_*`).
    pub tls: Option<&'a crate::tls::Session>,
}

/// A connection's fixed CGI variables: a part that is the same for every
/// connection of a route and listener (encoded, shared, see
/// [`EnvInterner`]) and the connection's own part (addresses, URI, id,
/// headers), kept compactly and written out for each event
/// ([`OwnVars::push_to`]).
#[derive(Debug, Clone)]
pub struct ConnEnv {
    /// Script, document root, software, scheme, control socket…
    pub shared: Arc<[u8]>,
    /// What differs from one connection to the next; `WS_CONNECTION_ID`'s
    /// value is given when it is written.
    pub own: OwnVars,
}

impl ConnEnv {
    /// An empty environment (tests, stand-ins).
    pub fn empty() -> Self {
        Self {
            shared: Arc::from(&b""[..]),
            own: OwnVars::empty(),
        }
    }
}

/// Keeps one copy of each distinct shared part. What goes into it comes from
/// the configuration and the listener, never from the client, so the set
/// stays as small as the number of routes and listeners.
#[derive(Debug, Default)]
pub struct EnvInterner {
    parts: std::sync::Mutex<std::collections::HashSet<Arc<[u8]>>>,
}

impl EnvInterner {
    /// The shared copy of `bytes`.
    pub fn intern(&self, bytes: &[u8]) -> Arc<[u8]> {
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(part) = parts.get(bytes) {
            return part.clone();
        }
        let part: Arc<[u8]> = Arc::from(bytes);
        parts.insert(part.clone());
        part
    }
}

/// Works out the variables every event of a connection shares.
pub fn connection_env(src: &EnvSource<'_>, interner: &EnvInterner) -> ConnEnv {
    let req = src.request;
    let path = req.uri.path();
    let query = req.uri.query().unwrap_or("");
    let request_uri = req.uri.path_and_query().map_or(path, |pq| pq.as_str());
    // As nginx's `server_name`: a configured name replaces the client's Host,
    // port included (the listener's, or the scheme's, when it names none).
    let configured = src
        .server_name
        .and_then(|name| host::parse(name.as_bytes()).ok());
    let (server_name, named_port) = match configured {
        Some(name) => (name.name, name.port),
        None => (src.host.name, src.host.port),
    };
    let server_port = match (named_port, src.client.local) {
        (Some(port), _) => port.to_string(),
        // Plain, or TLS ended here: the port the client reached. HTTPS
        // through a proxy: the scheme's (ours is the proxy's side).
        (None, Some(local)) if !src.client.https || src.tls.is_some() => local.port().to_string(),
        (None, _) if src.client.https => "443".into(),
        _ => "80".into(),
    };
    let document_root = src
        .document_root
        .or_else(|| src.script.parent())
        .unwrap_or(Path::new("/"));
    let version = match req.version {
        hyper::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };

    // Nothing in the shared part may come from the client (Host, headers…).
    let mut shared = Vec::with_capacity(256);
    let mut p = |name: &str, value: &[u8]| push_param(&mut shared, name.as_bytes(), value);
    p("GATEWAY_INTERFACE", b"CGI/1.1");
    p("SERVER_SOFTWARE", c::SERVER_SOFTWARE.as_bytes());
    p("SERVER_PROTOCOL", version.as_bytes());
    if let Some(local) = src.client.local {
        p("SERVER_ADDR", local.ip().to_string().as_bytes());
    }
    p("SCRIPT_FILENAME", src.script.as_os_str().as_encoded_bytes());
    p(
        "DOCUMENT_ROOT",
        document_root.as_os_str().as_encoded_bytes(),
    );
    p(
        "REQUEST_SCHEME",
        if src.client.https { b"https" } else { b"http" },
    );
    if src.client.https {
        p("HTTPS", b"on");
    }
    if let Some(control) = src.control_socket {
        p(
            c::VAR_CONTROL_SOCKET,
            control.as_os_str().as_encoded_bytes(),
        );
    }

    let mut own = conn_vars::Builder::new();
    let mut p = |name: &str, value: &[u8]| own.var(name.as_bytes(), value);
    p("SERVER_NAME", server_name.as_bytes());
    p("SERVER_PORT", server_port.as_bytes());
    p("REMOTE_ADDR", src.client.remote_ip.to_string().as_bytes());
    p("REMOTE_PORT", src.client.remote_port.to_string().as_bytes());
    // REQUEST_URI, DOCUMENT_URI, QUERY_STRING, SCRIPT_NAME; then
    // WS_CONNECTION_ID, written from the hub's id with each event.
    own.uri(request_uri, path, query);
    own.connection_id();
    let mut p = |name: &str, value: &[u8]| own.var(name.as_bytes(), value);
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
    push_headers(&mut own, &req.headers);
    ConnEnv {
        shared: interner.intern(&shared),
        own: own.finish(),
    }
}

/// Appends `HTTP_*` for every handshake header whose name is only letters,
/// digits and '-' (so `X_Forwarded_For` cannot pose as `X-Forwarded-For`),
/// never `HTTP_PROXY` (httpoxy). Repeated headers are joined with ", "
/// (Cookie with "; ").
fn push_headers(out: &mut conn_vars::Builder, headers: &hyper::HeaderMap) {
    let mut name_buf = Vec::with_capacity(64);
    for name in headers.keys() {
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
        let mut values = headers.get_all(name).iter();
        let Some(first) = values.next() else { continue };
        let mut joined: Option<Vec<u8>> = None;
        for more in values {
            let buf = joined.get_or_insert_with(|| first.as_bytes().to_vec());
            buf.extend_from_slice(separator);
            buf.extend_from_slice(more.as_bytes());
        }
        let value = joined.as_deref().unwrap_or(first.as_bytes());
        out.var(&name_buf, value);
    }
}

/// Appends the variables of one event to `out` (after the connection's own).
pub fn event_env(event: &Event, handle: &ConnHandle, out: &mut Vec<u8>) {
    let mut p = |name: &[u8], value: &[u8]| push_param(out, name, value);
    p(c::VAR_EVENT.as_bytes(), event.name().as_bytes());
    match event {
        Event::Open | Event::Close { .. } => {
            p(b"REQUEST_METHOD", b"GET");
            p(b"CONTENT_LENGTH", b"0");
        }
        Event::Message { kind, data, .. } => {
            p(b"REQUEST_METHOD", b"POST");
            let (kind, content_type) = match kind {
                Kind::Text => (c::MESSAGE_TEXT, c::CONTENT_TYPE_TEXT),
                Kind::Binary => (c::MESSAGE_BINARY, c::CONTENT_TYPE_BINARY),
            };
            p(c::VAR_MESSAGE_TYPE.as_bytes(), kind.as_bytes());
            p(b"CONTENT_TYPE", content_type.as_bytes());
            p(b"CONTENT_LENGTH", data.len().to_string().as_bytes());
        }
    }
    if let Event::Close { code, reason } = event {
        p(c::VAR_CLOSE_CODE.as_bytes(), code.to_string().as_bytes());
        p(c::VAR_CLOSE_REASON.as_bytes(), reason.as_bytes());
    }
    push_meta(handle, out);
}

/// Appends `WS_META_<NAME>` for each metadata entry of the connection.
pub fn push_meta(handle: &ConnHandle, out: &mut Vec<u8>) {
    let mut name = Vec::with_capacity(32);
    handle.for_each_meta(|key, value| {
        name.clear();
        name.extend_from_slice(c::VAR_META_PREFIX.as_bytes());
        name.extend(key.bytes().map(|b| b.to_ascii_uppercase()));
        push_param(out, &name, value.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fcgi::decode_params as decode;

    fn request(headers: &[(&str, &str)]) -> Parts {
        let mut b = hyper::Request::builder().uri("/chat/room?x=1&y=2");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn env_of(req: &Parts) -> Vec<(String, String)> {
        env_named(req, None, false)
    }

    fn env_named(req: &Parts, server_name: Option<&str>, https: bool) -> Vec<(String, String)> {
        let client = ClientInfo {
            remote_ip: "10.1.2.3".parse().unwrap(),
            remote_port: 5555,
            https,
            local: Some("127.0.0.1:8090".parse().unwrap()),
        };
        let interner = EnvInterner::default();
        let env = connection_env(
            &EnvSource {
                request: req,
                host: host::from_headers(&req.headers).unwrap_or(Host {
                    name: "localhost",
                    port: None,
                }),
                server_name,
                client: &client,
                script: Path::new("/srv/app/ws.php"),
                document_root: None,
                control_socket: Some(Path::new("/run/c.sock")),
                tls: None,
            },
            &interner,
        );
        decode(&[&env.shared[..], &own_of(&env, "abc")].concat())
    }

    /// The connection's own variables as PHP receives them.
    fn own_of(env: &ConnEnv, conn_id: &str) -> Vec<u8> {
        let mut out = Vec::new();
        env.own.push_to(&[conn_id.as_bytes()], &mut out);
        out
    }

    fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn cgi_variables_describe_the_handshake() {
        let env = env_of(&request(&[
            ("host", "example.com:8090"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ]));
        assert_eq!(get(&env, "REQUEST_URI"), Some("/chat/room?x=1&y=2"));
        assert_eq!(get(&env, "QUERY_STRING"), Some("x=1&y=2"));
        assert_eq!(get(&env, "SCRIPT_NAME"), Some("/chat/room"));
        assert_eq!(get(&env, "DOCUMENT_ROOT"), Some("/srv/app"));
        assert_eq!(get(&env, "SERVER_NAME"), Some("example.com"));
        assert_eq!(get(&env, "SERVER_PORT"), Some("8090"));
        assert_eq!(get(&env, "REMOTE_ADDR"), Some("10.1.2.3"));
        assert_eq!(get(&env, "WS_CONNECTION_ID"), Some("abc"));
        assert_eq!(get(&env, "HTTP_COOKIE"), Some("a=1; b=2"));
        assert_eq!(get(&env, "WS_CONTROL_SOCKET"), Some("/run/c.sock"));
        assert_eq!(get(&env, "HTTPS"), None);
    }

    #[test]
    fn forged_and_proxy_headers_are_dropped() {
        let env = env_of(&request(&[
            ("proxy", "http://evil"),
            ("x_forwarded_for", "1.2.3.4"),
            ("x-real", "ok"),
        ]));
        assert_eq!(get(&env, "HTTP_PROXY"), None);
        assert!(env.iter().all(|(n, _)| n != "HTTP_X_FORWARDED_FOR"));
        assert_eq!(get(&env, "HTTP_X_REAL"), Some("ok"));
    }

    #[test]
    fn the_shared_part_is_interned_and_holds_nothing_from_the_client() {
        let interner = EnvInterner::default();
        let client = ClientInfo {
            remote_ip: "10.1.2.3".parse().unwrap(),
            remote_port: 5555,
            https: false,
            local: Some("127.0.0.1:8090".parse().unwrap()),
        };
        let make = |host: &str| {
            let req = request(&[("host", host), ("x-anything", host)]);
            connection_env(
                &EnvSource {
                    request: &req,
                    host: host::from_headers(&req.headers).unwrap(),
                    server_name: Some("configured.example"),
                    client: &client,
                    script: Path::new("/srv/app/ws.php"),
                    document_root: None,
                    control_socket: None,
                    tls: None,
                },
                &interner,
            )
        };
        let a = make("a.example:1");
        let b = make("b.example:2");
        assert!(Arc::ptr_eq(&a.shared, &b.shared), "one copy for both");
        assert_ne!(own_of(&a, "a"), own_of(&b, "a"));
    }

    #[test]
    fn server_name_and_port_come_from_host_unless_configured() {
        let of = |host: &str, server_name: Option<&str>, https: bool| {
            let env = env_named(&request(&[("host", host)]), server_name, https);
            let get = |name| get(&env, name).map(str::to_owned);
            (get("SERVER_NAME"), get("SERVER_PORT"), get("HTTP_HOST"))
        };
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(of("a.b:81", None, false), (s("a.b"), s("81"), s("a.b:81")));
        assert_eq!(
            of("[::1]:82", None, false),
            (s("[::1]"), s("82"), s("[::1]:82"))
        );
        // No port: the listener's, or 443 behind a TLS proxy.
        assert_eq!(of("a.b", None, false), (s("a.b"), s("8090"), s("a.b")));
        assert_eq!(of("a.b", None, true), (s("a.b"), s("443"), s("a.b")));
        // server_name wins, port included; HTTP_HOST stays the client's.
        let named = Some("chat.example.com");
        assert_eq!(
            of("other.example:9", named, false),
            (s("chat.example.com"), s("8090"), s("other.example:9"))
        );
        assert_eq!(
            of("other.example:9", named, true).1,
            s("443"),
            "the scheme's port, not the client's"
        );
        assert_eq!(of("x:1", Some("chat.example.com:8443"), false).1, s("8443"));
    }
}
