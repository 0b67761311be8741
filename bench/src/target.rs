//! Where the load goes, and the loopback-only rule.
//!
//! The tool refuses any target that is not this machine: a `ws://` URL whose
//! host is in 127.0.0.0/8, `[::1]` or `localhost`, a PHP-FPM `host:port` with
//! the same hosts, or a Unix socket. `localhost` is mapped to 127.0.0.1 without
//! asking a resolver.
//!
//! Client sockets to an IPv4 target are bound to 127.0.0.(1 + i % sources)
//! before connecting: each source address has its own ~28k ephemeral ports, so
//! one process can hold more than ~28k connections to one server port.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::UsageError;
use crate::cli::WsArgs;
use crate::inflate::Wire;

/// One client WebSocket connection (over a [`Wire`]: see `inflate.rs`).
pub type Ws = WebSocketStream<Wire>;

/// A validated WebSocket target.
#[derive(Debug, Clone)]
pub struct WsTarget {
    /// The URL as given (Host header and request path come from it).
    url: String,
    /// Where to connect.
    addr: SocketAddr,
    /// How many 127.0.0.x source addresses to spread over (1: do not bind).
    sources: u8,
    read_buffer: usize,
    connect_timeout: Duration,
    subprotocol: Option<String>,
    deflate: bool,
    /// Bytes every connection to this target read from its socket.
    wire_bytes: Arc<AtomicU64>,
}

impl WsTarget {
    /// Validates `args.url`: `ws://`, a loopback host, a port (default 80).
    pub fn new(args: &WsArgs) -> Result<Self, UsageError> {
        let uri: Uri = args
            .url
            .parse()
            .map_err(|e| UsageError(format!("--url {}: {e}", args.url)))?;
        if uri.scheme_str() != Some("ws") {
            return Err(UsageError(format!(
                "--url {}: only ws:// (plain WebSocket on loopback) is supported",
                args.url
            )));
        }
        let host = uri.host().unwrap_or("");
        let ip = loopback_ip(host).map_err(|e| UsageError(format!("--url {}: {e}", args.url)))?;
        Ok(Self {
            url: args.url.clone(),
            addr: SocketAddr::new(ip, uri.port_u16().unwrap_or(80)),
            sources: args.sources,
            read_buffer: args.read_buffer as usize,
            connect_timeout: args.connect_timeout,
            subprotocol: args.subprotocol.clone(),
            deflate: args.deflate,
            wire_bytes: Arc::default(),
        })
    }

    /// The same target with `name=value` added to the URL's query.
    pub fn with_query(&self, name: &str, value: &str) -> Self {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        let mut url = self.url.clone();
        // A URL without a path ("ws://host:port") needs one before the query.
        if url.splitn(4, '/').count() < 4 {
            url.push('/');
        }
        url.push(separator);
        url.push_str(&percent_encode(name));
        url.push('=');
        url.push_str(&percent_encode(value));
        Self {
            url,
            ..self.clone()
        }
    }

    /// The same target with the URL's path and query replaced by `path_and_query`.
    pub fn with_path(&self, path_and_query: &str) -> Self {
        // "ws://host:port/…": the authority ends at the third slash.
        let end = self
            .url
            .match_indices('/')
            .nth(2)
            .map_or(self.url.len(), |(i, _)| i);
        Self {
            url: format!("{}{path_and_query}", &self.url[..end]),
            ..self.clone()
        }
    }

    /// Bytes read from the sockets of every connection to this target so far.
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes.load(Ordering::Relaxed)
    }

    /// The URL connections are made to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens connection number `i`: TCP from its source address, then the handshake.
    pub async fn connect(&self, i: u64) -> Result<Ws, ConnectError> {
        tokio::time::timeout(self.connect_timeout, self.connect_inner(i))
            .await
            .unwrap_or(Err(ConnectError::Timeout))
    }

    async fn connect_inner(&self, i: u64) -> Result<Ws, ConnectError> {
        let socket = match self.addr {
            SocketAddr::V4(_) => {
                let socket = TcpSocket::new_v4().map_err(ConnectError::Tcp)?;
                if self.sources > 1 {
                    let last = 1 + (i % u64::from(self.sources)) as u8;
                    let source = SocketAddr::new(Ipv4Addr::new(127, 0, 0, last).into(), 0);
                    socket.bind(source).map_err(ConnectError::Bind)?;
                }
                socket
            }
            SocketAddr::V6(_) => TcpSocket::new_v6().map_err(ConnectError::Tcp)?,
        };
        let stream = socket.connect(self.addr).await.map_err(ConnectError::Tcp)?;
        stream.set_nodelay(true).map_err(ConnectError::Tcp)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(self.read_buffer)
            // Write each message at once: we flush after every send anyway.
            .write_buffer_size(0);
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(ConnectError::Handshake)?;
        if let Some(protocol) = &self.subprotocol
            && let Ok(value) = protocol.parse()
        {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", value);
        }
        if self.deflate {
            request.headers_mut().insert(
                "sec-websocket-extensions",
                tokio_tungstenite::tungstenite::http::HeaderValue::from_static(
                    "permessage-deflate",
                ),
            );
        }
        let stream = Wire::new(stream, self.deflate, self.wire_bytes.clone());
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(ConnectError::Handshake)?;
        Ok(ws)
    }
}

/// Why a connection could not be opened; its `Display` is the tally key.
#[derive(Debug)]
pub enum ConnectError {
    /// Binding the source address failed (ports exhausted on it?).
    Bind(std::io::Error),
    /// The TCP connect failed.
    Tcp(std::io::Error),
    /// The server did not complete the WebSocket handshake.
    Handshake(tokio_tungstenite::tungstenite::Error),
    /// TCP connect plus handshake took longer than `--connect-timeout`.
    Timeout,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use tokio_tungstenite::tungstenite::Error as WsError;
        match self {
            Self::Bind(e) => write!(f, "bind: {}", e.kind()),
            Self::Tcp(e) => write!(f, "connect: {}", e.kind()),
            Self::Handshake(WsError::Http(response)) => {
                write!(f, "handshake: HTTP {}", response.status().as_u16())
            }
            Self::Handshake(e) => write!(f, "handshake: {e}"),
            Self::Timeout => f.write_str("connect timeout"),
        }
    }
}

/// PHP-FPM's address for `fcgi` mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FpmAddr {
    /// `unix:/path`.
    Unix(PathBuf),
    /// `host:port` on loopback.
    Tcp(SocketAddr),
}

impl FpmAddr {
    /// Parses `unix:/path` or a loopback `host:port`.
    ///
    /// ```
    /// use ws2fcgi_bench::target::FpmAddr;
    /// assert!(FpmAddr::parse("unix:/run/php/fpm.sock").is_ok());
    /// assert!(FpmAddr::parse("localhost:9000").is_ok());
    /// assert!(FpmAddr::parse("10.0.0.5:9000").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, UsageError> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(UsageError("--fpm unix: needs a path".into()));
            }
            return Ok(Self::Unix(path.into()));
        }
        let bad = |why: String| UsageError(format!("--fpm {text}: {why}"));
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| bad("expected unix:/path or host:port".into()))?;
        let port: u16 = port.parse().map_err(|_| bad("bad port".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(Self::Tcp(SocketAddr::new(
            loopback_ip(host).map_err(bad)?,
            port,
        )))
    }
}

/// The loopback address `host` names, or why it is refused.
pub(crate) fn loopback_ip(host: &str) -> Result<IpAddr, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(Ipv4Addr::LOCALHOST.into());
    }
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => Ok(ip),
        Ok(ip) => Err(format!(
            "{ip} is not loopback; this tool only loads this machine"
        )),
        Err(_) => Err(format!(
            "host `{host}` refused: use 127.0.0.x, [::1] or localhost"
        )),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> WsArgs {
        WsArgs {
            url: url.into(),
            sources: 250,
            read_buffer: 4096,
            connect_timeout: Duration::from_secs(1),
            subprotocol: None,
            deflate: false,
        }
    }

    #[test]
    fn only_loopback_ws_urls() {
        for ok in [
            "ws://127.0.0.1:8090/",
            "ws://127.1.2.3/x",
            "ws://localhost:8090",
            "ws://[::1]:8090/",
        ] {
            assert!(WsTarget::new(&args(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "ws://10.0.0.1:8090/",
            "ws://example.com/",
            "ws://[2001:db8::1]/",
            "wss://127.0.0.1/",
            "http://127.0.0.1/",
            "ws://0.0.0.0:8090/",
        ] {
            assert!(WsTarget::new(&args(bad)).is_err(), "{bad}");
        }
        let t = WsTarget::new(&args("ws://localhost:8090")).unwrap();
        assert_eq!(t.addr, "127.0.0.1:8090".parse().unwrap());
    }

    #[test]
    fn queries_are_appended() {
        let t = WsTarget::new(&args("ws://127.0.0.1:1")).unwrap();
        assert_eq!(
            t.with_query("channel", "a b").url(),
            "ws://127.0.0.1:1/?channel=a%20b"
        );
        let t = WsTarget::new(&args("ws://127.0.0.1:1/p?x=1")).unwrap();
        assert_eq!(
            t.with_query("channel", "bench").url(),
            "ws://127.0.0.1:1/p?x=1&channel=bench"
        );
    }

    #[test]
    fn paths_are_replaced() {
        for url in [
            "ws://127.0.0.1:1",
            "ws://127.0.0.1:1/",
            "ws://127.0.0.1:1/x?channel=a",
        ] {
            let t = WsTarget::new(&args(url)).unwrap();
            assert_eq!(
                t.with_path("/app/k?protocol=7").url(),
                "ws://127.0.0.1:1/app/k?protocol=7"
            );
        }
    }

    #[test]
    fn fpm_addresses() {
        assert_eq!(
            FpmAddr::parse("unix:/tmp/f.sock").unwrap(),
            FpmAddr::Unix("/tmp/f.sock".into())
        );
        assert_eq!(
            FpmAddr::parse("[::1]:9000").unwrap(),
            FpmAddr::Tcp("[::1]:9000".parse().unwrap())
        );
        assert!(FpmAddr::parse("unix:").is_err());
        assert!(FpmAddr::parse("php:9000").is_err());
        assert!(FpmAddr::parse("127.0.0.1").is_err());
    }
}
