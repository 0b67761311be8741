//! The daemon's settings: typed TOML, defaults, and validation.
//!
//! A [`Config`] is loaded from a file (or built from defaults), the command
//! line is applied on top of it (see `cli.rs`), and [`Config::validate`] runs
//! before any socket is bound, so a bad setting fails at start with one message
//! that names it. Every field has a named default function; `ws2fcgi.example.toml`
//! documents each one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::{Secret, redact_url};

pub mod toml_error;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type, …).
    #[error("invalid config file {path}, {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// One line: `line N: ` and what is wrong, naming the setting.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("invalid setting `{setting}`: {message}")]
    Invalid {
        /// The setting's TOML name (`fpm.pool_size`, `listen`, …).
        setting: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

/// Where the daemon accepts WebSocket clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address, `host:port`.
    Tcp(SocketAddr),
    /// A Unix stream socket, written `unix:/path` (for nginx in front).
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a path, e.g. unix:/run/ws2fcgi/ws.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(Self::Tcp)
            .map_err(|_| format!("`{s}` is neither ip:port (e.g. 127.0.0.1:8090) nor unix:/path"))
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Where PHP-FPM listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FpmAddr {
    /// `managed`: ws2fcgi starts and supervises its own php-fpm (see `[fpm.managed]`).
    Managed,
    /// `host:port`; the host is resolved at each connect.
    Tcp(String),
    /// `unix:/path`, PHP-FPM's usual `listen = /run/php/php8.2-fpm.sock`.
    Unix(PathBuf),
}

impl FromStr for FpmAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "managed" {
            return Ok(Self::Managed);
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a path, e.g. unix:/run/php/php8.2-fpm.sock".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::Tcp(s.to_owned()))
            }
            _ => Err(format!(
                "`{s}` is neither unix:/path, host:port (e.g. 127.0.0.1:9000) nor managed"
            )),
        }
    }
}

impl std::fmt::Display for FpmAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Managed => write!(f, "managed"),
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The admin listener's address: `IP:PORT`, or a bare `PORT` meaning `127.0.0.1:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminAddr(pub SocketAddr);

impl FromStr for AdminAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(port) = s.parse::<u16>() {
            return Ok(Self(SocketAddr::from(([127, 0, 0, 1], port))));
        }
        s.parse()
            .map(Self)
            .map_err(|_| format!("`{s}` is neither IP:PORT nor a port number"))
    }
}

macro_rules! deserialize_from_str {
    ($ty:ty) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
deserialize_from_str!(ListenAddr);
deserialize_from_str!(FpmAddr);
deserialize_from_str!(AdminAddr);

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The whole configuration, as in `ws2fcgi.example.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Addresses to accept WebSocket clients on (`ip:port` or `unix:/path`).
    #[serde(default = "default_listen")]
    pub listen: Vec<ListenAddr>,
    /// File mode of `unix:` WebSocket listeners, octal.
    #[serde(default = "default_listen_mode")]
    pub listen_mode: String,
    /// Group of `unix:` WebSocket listeners (name or gid), e.g. nginx's; unchanged when unset.
    #[serde(default)]
    pub listen_group: Option<String>,
    /// The script for every path not named in `route`.
    #[serde(default)]
    pub script: Option<PathBuf>,
    /// Per-path scripts, matched exactly on the request path.
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
    /// DOCUMENT_ROOT for PHP; defaults to the directory of the event's script.
    #[serde(default)]
    pub document_root: Option<PathBuf>,
    /// What PHP sees as SERVER_NAME (and, with a port, SERVER_PORT) instead
    /// of the client's Host header, as nginx's `server_name`: `name` or
    /// `name:port`. Unset: the (validated) Host header.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Peers whose X-Forwarded-For / X-Forwarded-Proto are believed: CIDR
    /// blocks or addresses, and "unix" for peers on a Unix listener.
    #[serde(default)]
    pub trusted_proxies: Vec<crate::proxy::Trusted>,
    /// The admin listener (`/healthz`, `/metrics`); off when unset.
    #[serde(default)]
    pub admin: Option<AdminAddr>,
    /// Threads that run connections (tokio workers); 0: one per core.
    #[serde(default)]
    pub worker_threads: usize,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// PHP-FPM and the FastCGI connection pool.
    #[serde(default)]
    pub fpm: FpmConfig,
    /// The local control socket PHP pushes through.
    #[serde(default)]
    pub control: ControlConfig,
    /// Per-connection behaviour and limits.
    #[serde(default)]
    pub websocket: WebSocketConfig,
    /// Limits shared by every client: unfinished handshakes per address,
    /// how IPv6 addresses are grouped into one client, and the inbound byte
    /// budget.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Shutdown behaviour.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Several nodes sharing channels through Redis; off (one node) by default.
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// One WebSocket path served by its own script.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The request path, e.g. `/chat`. Matched exactly, query string ignored.
    pub path: String,
    /// The PHP script (SCRIPT_FILENAME) for events of connections on this path.
    pub script: PathBuf,
}

impl FromStr for Route {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((path, script)) if path.starts_with('/') && !script.is_empty() => Ok(Self {
                path: path.to_owned(),
                script: PathBuf::from(script),
            }),
            _ => Err(format!(
                "`{s}` is not PATH=SCRIPT (e.g. /chat=/srv/app/chat.php)"
            )),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter (`info`, `ws2fcgi=debug`); `RUST_LOG` wins when set.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

/// `[fpm]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FpmConfig {
    /// PHP-FPM's address (`unix:/path` or `host:port`). Required.
    #[serde(default)]
    pub address: Option<FpmAddr>,
    /// Keep-alive FastCGI connections at most; each pins one FPM worker.
    /// Keep it at or below the pool's `pm.max_children`.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How long to wait for a connect to PHP-FPM.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long an event may wait for a free FastCGI connection.
    #[serde(default = "default_queue_timeout", with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// How long PHP may take to answer one event.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Idle keep-alive connections are closed after this long.
    #[serde(default = "default_fpm_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest header block PHP may answer with, in bytes.
    #[serde(default = "default_max_response_header_bytes")]
    pub max_response_header_bytes: usize,
    /// Largest body PHP may answer with, in bytes.
    #[serde(default = "default_max_response_body_bytes")]
    pub max_response_body_bytes: usize,
    /// For a message or close event, how long to keep retrying while PHP-FPM
    /// cannot be reached before the connection is closed with 1011.
    #[serde(default = "default_retry_window", with = "humantime_serde")]
    pub retry_window: Duration,
    /// The php-fpm ws2fcgi runs itself when `address = "managed"`.
    #[serde(default)]
    pub managed: ManagedFpmConfig,
}

/// `[fpm.managed]`: the php-fpm started with `--fpm managed`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedFpmConfig {
    /// The php-fpm binary; default: the newest `php-fpm*` on PATH or in /usr/sbin.
    #[serde(default)]
    pub binary: Option<PathBuf>,
    /// Where its config, socket and pid file go; default `$RUNTIME_DIRECTORY`,
    /// `$XDG_RUNTIME_DIR/ws2fcgi`, or `<tmp>/ws2fcgi-<uid>`.
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    /// The user (and group of that name) PHP workers run as when ws2fcgi runs
    /// as root; default root, with a warning.
    #[serde(default)]
    pub user: Option<String>,
    /// Workers beyond `fpm.pool_size` (`pm.max_children = pool_size + spare`),
    /// for web pages served by the same php-fpm (nginx in front).
    #[serde(default = "default_spare_children")]
    pub spare_children: usize,
    /// File mode of the php-fpm socket, octal.
    #[serde(default = "default_managed_socket_mode")]
    pub socket_mode: String,
    /// Group of the php-fpm socket (e.g. nginx's, to share the pool); php-fpm's default when unset.
    #[serde(default)]
    pub socket_group: Option<String>,
    /// Requests a worker serves before it is replaced (`pm.max_requests`).
    #[serde(default = "default_managed_max_requests")]
    pub max_requests: u32,
    /// php.ini settings for the workers (`php_admin_value[NAME] = VALUE`).
    #[serde(default)]
    pub php_admin_value: std::collections::BTreeMap<String, String>,
    /// Environment variables of the workers (`env[NAME] = VALUE`), besides
    /// PATH, TMPDIR, LANG and LC_ALL (kept when set); the rest of the
    /// daemon's environment is cleared. A value `$NAME` copies NAME from
    /// ws2fcgi's environment.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

impl Default for ManagedFpmConfig {
    fn default() -> Self {
        Self {
            binary: None,
            run_dir: None,
            user: None,
            spare_children: default_spare_children(),
            socket_mode: default_managed_socket_mode(),
            socket_group: None,
            max_requests: default_managed_max_requests(),
            php_admin_value: Default::default(),
            env: Default::default(),
        }
    }
}

impl Default for FpmConfig {
    fn default() -> Self {
        Self {
            address: None,
            pool_size: default_pool_size(),
            connect_timeout: default_connect_timeout(),
            queue_timeout: default_queue_timeout(),
            request_timeout: default_request_timeout(),
            idle_timeout: default_fpm_idle_timeout(),
            max_response_header_bytes: default_max_response_header_bytes(),
            max_response_body_bytes: default_max_response_body_bytes(),
            retry_window: default_retry_window(),
            managed: ManagedFpmConfig::default(),
        }
    }
}

/// `[control]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Path of the control socket; none means no control socket.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// File mode of the socket, octal (`"0660"`).
    #[serde(default = "default_control_mode")]
    pub mode: String,
    /// Owner (user name or uid) of the socket; unchanged when unset.
    #[serde(default)]
    pub owner: Option<String>,
    /// Group (group name or gid) of the socket; unchanged when unset.
    #[serde(default)]
    pub group: Option<String>,
    /// Longest request line (and HTTP body), in bytes.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Address of the optional HTTP publish endpoint; off when unset. Keep it on loopback.
    #[serde(default)]
    pub http: Option<SocketAddr>,
    /// Bearer token the HTTP endpoint requires, when set. Never printed.
    #[serde(default)]
    pub http_token: Option<Secret>,
    /// Time an HTTP endpoint client has to send a request's head, and then
    /// again its body; a slow head is dropped, a slow body gets 408.
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    pub http_timeout: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket: None,
            mode: default_control_mode(),
            owner: None,
            group: None,
            max_line_bytes: default_max_line_bytes(),
            http: None,
            http_token: None,
            http_timeout: default_http_timeout(),
        }
    }
}

impl ControlConfig {
    /// The socket's file mode, parsed from [`ControlConfig::mode`].
    pub fn mode_bits(&self) -> Result<u32, ConfigError> {
        parse_mode("control.mode", &self.mode)
    }
}

/// Parses an octal file mode (`"0660"`) of the setting named `setting`.
pub fn parse_mode(setting: &'static str, text: &str) -> Result<u32, ConfigError> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            invalid(
                setting,
                format!("`{text}` is not an octal file mode like \"0660\""),
            )
        })
}

/// `[websocket]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Events of one connection waiting for PHP at most; when full the daemon
    /// stops reading that socket and TCP backpressure reaches the client.
    #[serde(default = "default_event_queue")]
    pub event_queue: usize,
    /// Bytes queued towards one client at most; past it the client is cut off
    /// as a slow consumer (close 1008).
    #[serde(default = "default_outbound_queue_bytes")]
    pub outbound_queue_bytes: usize,
    /// Bytes of one client's messages the daemon holds at most (read,
    /// being assembled, waiting for or in PHP); when full the daemon stops
    /// reading that socket. A connection with nothing queued may always
    /// receive one message of `max_message_size`.
    #[serde(default = "default_inbound_queue_bytes")]
    pub inbound_queue_bytes: usize,
    /// Largest message a client may send, in bytes (close 1009 past it).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Largest single frame a client may send, in bytes (close 1009 past it).
    #[serde(default = "default_max_frame_size")]
    pub max_frame_size: usize,
    /// Bytes read from a client socket per read call at most. The buffer
    /// exists only while read bytes wait to be parsed: idle connections hold none.
    #[serde(default = "default_read_buffer_size")]
    pub read_buffer_size: usize,
    /// How often to ping an idle client.
    #[serde(default = "default_ping_interval", with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A client silent for this long (no frame, no pong) is closed with 3008.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A client must send its whole handshake request within this time.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// After sending a close frame, how long to wait for the client's.
    #[serde(default = "default_close_timeout", with = "humantime_serde")]
    pub close_timeout: Duration,
    /// Client sockets at most: connections, counted until their close event
    /// has reached PHP, and sockets still in their handshake, counted from
    /// `accept`. 0 means the open-files limit less 256 and less
    /// `fpm.pool_size`, which is also the most any value gets. Past it a new
    /// socket is answered 503 at once.
    #[serde(default)]
    pub max_connections: usize,
    /// Connections per client address at most (after trusted-proxy rules);
    /// 0 means no limit. Past it handshakes get 429 before PHP.
    #[serde(default)]
    pub max_connections_per_ip: u32,
    /// Largest handshake request head (request line and headers), in bytes;
    /// at least 8192. Past it the client gets 431.
    #[serde(default = "default_max_handshake_bytes")]
    pub max_handshake_bytes: usize,
    /// Origins allowed to connect (`https://example.com`, `https://*.example.com`);
    /// empty allows all. Others get 403 before PHP.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Per-connection inbound message rate; no limit when absent.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

/// `[websocket.rate_limit]`: a token bucket per connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Messages per second a client may send, sustained.
    pub messages_per_second: f64,
    /// Messages a client may send in a burst above the rate.
    pub burst: u32,
    /// What happens to a message over the limit.
    #[serde(default)]
    pub action: RateLimitAction,
    /// With `action = "drop"`, a text message sent to the client for each
    /// dropped message; empty sends nothing.
    #[serde(default = "default_rate_limit_notice")]
    pub notice: String,
}

/// What to do with a message over the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitAction {
    /// Drop it (PHP never sees it) and send the client `notice`.
    #[default]
    Drop,
    /// Close the connection with 1008.
    Close,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            event_queue: default_event_queue(),
            outbound_queue_bytes: default_outbound_queue_bytes(),
            inbound_queue_bytes: default_inbound_queue_bytes(),
            max_message_size: default_max_message_size(),
            max_frame_size: default_max_frame_size(),
            read_buffer_size: default_read_buffer_size(),
            ping_interval: default_ping_interval(),
            idle_timeout: default_idle_timeout(),
            handshake_timeout: default_handshake_timeout(),
            close_timeout: default_close_timeout(),
            max_connections: 0,
            max_connections_per_ip: 0,
            max_handshake_bytes: default_max_handshake_bytes(),
            allowed_origins: Vec::new(),
            rate_limit: None,
        }
    }
}

/// `[limits]`: limits across connections.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sockets from one peer address that have not yet sent their handshake
    /// request, at most; past it a new socket from that address is answered
    /// 429 at once. Counted by the socket's own peer (a trusted proxy's and
    /// Unix-socket peers are not counted). 0 means no limit.
    #[serde(default = "default_max_handshakes_per_ip")]
    pub max_handshakes_per_ip: u32,
    /// IPv6 clients are counted per block of this prefix length (32 to 128)
    /// by every per-address limit; IPv4-mapped IPv6 addresses count as IPv4.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// Bytes of client messages the daemon holds at most, all connections
    /// together; when spent, sockets that send more are not read until bytes
    /// are given back. Needs a restart.
    #[serde(default = "default_inbound_bytes")]
    pub inbound_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_handshakes_per_ip: default_max_handshakes_per_ip(),
            ipv6_prefix: default_ipv6_prefix(),
            inbound_bytes: default_inbound_bytes(),
        }
    }
}

/// `[shutdown]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// On SIGTERM/SIGINT, how long to wait for close events to reach PHP.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: default_drain_timeout(),
        }
    }
}

/// `[cluster]`: several nodes sharing channels through Redis (docs/cluster.md).
///
/// `Debug` shows `redis` without its password (see [`redact_url`]).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Redis URL (`redis://host:port/db`, `redis+unix:///path`); none means a single node.
    #[serde(default)]
    pub redis: Option<String>,
    /// This node's id, part of every connection id: 1 to 32 of `A-Z a-z 0-9 _ -`.
    /// Default: `<hostname>-<6 random hex digits>`, new at every start.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Prefix of every Redis key and pub/sub channel, so several clusters can share a Redis.
    #[serde(default = "default_cluster_prefix")]
    pub prefix: String,
    /// A node that stops refreshing its keys for this long is gone: its
    /// presence entries expire. Refreshed every third of it.
    #[serde(default = "default_node_ttl", with = "humantime_serde")]
    pub node_ttl: Duration,
    /// How long a send, close, join, leave or meta for a connection of
    /// another node waits for that node's answer.
    #[serde(default = "default_cluster_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The key every node authenticates its envelopes with (HMAC-SHA256); the
    /// same on every node, at least [`MIN_CLUSTER_SECRET`] bytes. Required
    /// unless `redis` is on loopback or a Unix socket. Never printed.
    #[serde(default)]
    pub secret: Option<Secret>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured, so a new field cannot be left out unnoticed.
        let Self {
            redis,
            node_id,
            prefix,
            node_ttl,
            request_timeout,
            secret,
        } = self;
        f.debug_struct("ClusterConfig")
            .field("redis", &redis.as_deref().map(redact_url))
            .field("node_id", node_id)
            .field("prefix", prefix)
            .field("node_ttl", node_ttl)
            .field("request_timeout", request_timeout)
            .field("secret", secret)
            .finish()
    }
}

/// Shortest `cluster.secret`.
pub const MIN_CLUSTER_SECRET: usize = 16;

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis: None,
            node_id: None,
            prefix: default_cluster_prefix(),
            node_ttl: default_node_ttl(),
            request_timeout: default_cluster_request_timeout(),
            secret: None,
        }
    }
}

impl ClusterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(secret) = self.secret.as_ref().map(Secret::expose)
            && (secret.len() < MIN_CLUSTER_SECRET || secret.chars().any(char::is_control))
        {
            return Err(invalid(
                "cluster.secret",
                format!(
                    "must be at least {MIN_CLUSTER_SECRET} bytes, without control characters \
                     (e.g. the output of `openssl rand -hex 32`)"
                ),
            ));
        }
        if let Some(url) = &self.redis {
            let local = check_redis_url(url).map_err(|m| invalid("cluster.redis", m))?;
            if !local && self.secret.is_none() {
                return Err(invalid(
                    "cluster.secret",
                    format!(
                        "required when cluster.redis (`{}`) is not on loopback or a Unix \
                         socket: without it anyone who can PUBLISH on that Redis can close, \
                         join, leave or set metadata on any connection; set the same random \
                         secret on every node (`openssl rand -hex 32`), in the file or in \
                         WS2FCGI_CLUSTER_SECRET",
                        redact_url(url)
                    ),
                ));
            }
        }
        if let Some(id) = &self.node_id
            && !crate::cluster::valid_node_id(id)
        {
            return Err(invalid(
                "cluster.node_id",
                format!("`{id}`: use 1 to 32 of A-Z, a-z, 0-9, '_' and '-'"),
            ));
        }
        if self.prefix.is_empty()
            || self.prefix.len() > 64
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
        {
            return Err(invalid(
                "cluster.prefix",
                format!(
                    "`{}`: use 1 to 64 of A-Z, a-z, 0-9, '_', '-', '.' and ':'",
                    self.prefix
                ),
            ));
        }
        if self.node_ttl < Duration::from_secs(1) {
            return Err(invalid("cluster.node_ttl", "must be at least 1s"));
        }
        positive("cluster.request_timeout", self.request_timeout)?;
        Ok(())
    }
}

/// Checks a Redis URL; true when it names loopback or a Unix socket, where
/// only this machine's users can reach Redis.
#[cfg(feature = "cluster")]
fn check_redis_url(url: &str) -> Result<bool, String> {
    use redis::{ConnectionAddr, IntoConnectionInfo as _};
    // What is wrong and the forms expected, before the client's own words.
    crate::cluster::url::check(url)?;
    let info = url
        .into_connection_info()
        .map_err(|e| format!("`{}`: {e}", redact_url(url)))?;
    Ok(match info.addr() {
        ConnectionAddr::Unix(_) => true,
        ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => is_loopback(host),
        _ => false,
    })
}

/// `localhost`, or a loopback address (`127.0.0.1`, `::1`, `[::1]`).
#[cfg(feature = "cluster")]
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| crate::proxy::canonical(ip).is_loopback())
}

#[cfg(not(feature = "cluster"))]
fn check_redis_url(_url: &str) -> Result<bool, String> {
    Err("this ws2fcgi was built without the `cluster` feature; rebuild with it".into())
}

fn default_cluster_prefix() -> String {
    "ws2fcgi".into()
}
fn default_node_ttl() -> Duration {
    Duration::from_secs(15)
}
fn default_cluster_request_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_listen() -> Vec<ListenAddr> {
    vec![ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 8090)))]
}

/// Most worker threads `worker_threads` accepts.
pub const MAX_WORKER_THREADS: usize = 1024;

fn default_listen_mode() -> String {
    "0660".into()
}
fn default_log_level() -> String {
    "info".into()
}
fn default_pool_size() -> usize {
    8
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_queue_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_fpm_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_response_header_bytes() -> usize {
    64 * 1024
}
fn default_max_response_body_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_retry_window() -> Duration {
    Duration::from_secs(5)
}
fn default_spare_children() -> usize {
    2
}
fn default_managed_socket_mode() -> String {
    "0600".into()
}
fn default_managed_max_requests() -> u32 {
    1000
}
fn default_control_mode() -> String {
    "0660".into()
}
fn default_max_line_bytes() -> usize {
    1024 * 1024
}
fn default_http_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_event_queue() -> usize {
    8
}
fn default_outbound_queue_bytes() -> usize {
    1024 * 1024
}
fn default_inbound_queue_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_inbound_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_max_message_size() -> usize {
    2 * 1024 * 1024
}
fn default_max_frame_size() -> usize {
    2 * 1024 * 1024
}
fn default_read_buffer_size() -> usize {
    16 * 1024
}
fn default_ping_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(75)
}
fn default_max_handshake_bytes() -> usize {
    16 * 1024
}
fn default_rate_limit_notice() -> String {
    r#"{"error":"rate limited"}"#.into()
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_close_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_handshakes_per_ip() -> u32 {
    64
}
fn default_ipv6_prefix() -> u8 {
    64
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for Config {
    fn default() -> Self {
        // An empty document takes every serde default, so the two never drift.
        toml::from_str("").unwrap_or_else(|_| unreachable!("empty config always parses"))
    }
}

impl Config {
    /// Reads and parses a TOML file; call [`Config::validate`] afterwards.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text; the error is one line naming the line and the
    /// setting, and what the setting takes (see `toml_error.rs`).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| toml_error::explain(text, &e))
    }

    /// Checks every value that parsing alone cannot, before anything is bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", format!("`{}`: {e}", self.log.level)));
        }
        if self.listen.is_empty() {
            return Err(invalid("listen", "at least one address is needed"));
        }
        if self.worker_threads > MAX_WORKER_THREADS {
            return Err(invalid(
                "worker_threads",
                format!(
                    "{} is more than {MAX_WORKER_THREADS}; use 0 for one per core",
                    self.worker_threads
                ),
            ));
        }
        if self.fpm.address.is_none() {
            return Err(invalid(
                "fpm.address",
                "PHP-FPM's address is required (--fpm unix:/path or host:port)",
            ));
        }
        if self.script.is_none() && self.routes.is_empty() {
            return Err(invalid(
                "script",
                "give a script for every path (--script) or at least one [[route]]",
            ));
        }
        for script in self
            .script
            .iter()
            .chain(self.routes.iter().map(|r| &r.script))
        {
            if !script.is_absolute() {
                return Err(invalid(
                    "script",
                    format!("`{}` must be an absolute path", script.display()),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for route in &self.routes {
            if !route.path.starts_with('/') {
                return Err(invalid(
                    "route.path",
                    format!("`{}` must start with '/'", route.path),
                ));
            }
            if !seen.insert(route.path.as_str()) {
                return Err(invalid(
                    "route.path",
                    format!("`{}` is routed twice", route.path),
                ));
            }
        }
        if let Some(root) = &self.document_root
            && !root.is_absolute()
        {
            return Err(invalid("document_root", "must be an absolute path"));
        }
        if let Some(name) = &self.server_name
            && let Err(e) = crate::host::parse(name.as_bytes())
        {
            return Err(invalid(
                "server_name",
                format!(
                    "`{name}`: {e}; use a host name, an IPv4 address or [IPv6], with an optional :port"
                ),
            ));
        }
        for name in self.fpm.managed.php_admin_value.keys() {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._".contains(&b))
            {
                return Err(invalid(
                    "fpm.managed.php_admin_value",
                    format!("`{name}` is not an ini setting name"),
                ));
            }
        }
        if self
            .fpm
            .managed
            .php_admin_value
            .values()
            .any(|v| v.contains('\n'))
        {
            return Err(invalid(
                "fpm.managed.php_admin_value",
                "values must be one line",
            ));
        }
        validate_managed_env(&self.fpm.managed.env)?;
        if self.fpm.pool_size == 0 || self.fpm.pool_size > 1024 {
            return Err(invalid("fpm.pool_size", "must be between 1 and 1024"));
        }
        positive("fpm.connect_timeout", self.fpm.connect_timeout)?;
        positive("fpm.queue_timeout", self.fpm.queue_timeout)?;
        positive("fpm.request_timeout", self.fpm.request_timeout)?;
        positive("fpm.idle_timeout", self.fpm.idle_timeout)?;
        at_most_a_year("fpm.retry_window", self.fpm.retry_window)?;
        at_most_a_year("shutdown.drain_timeout", self.shutdown.drain_timeout)?;
        if self.fpm.max_response_header_bytes < 1024 {
            return Err(invalid(
                "fpm.max_response_header_bytes",
                "must be at least 1024",
            ));
        }
        self.control.mode_bits()?;
        parse_mode("listen_mode", &self.listen_mode)?;
        parse_mode("fpm.managed.socket_mode", &self.fpm.managed.socket_mode)?;
        if self.fpm.managed.spare_children > 1024 {
            return Err(invalid(
                "fpm.managed.spare_children",
                "must be at most 1024",
            ));
        }
        if self.control.max_line_bytes < 1024 {
            return Err(invalid("control.max_line_bytes", "must be at least 1024"));
        }
        if let Some(socket) = &self.control.socket
            && socket.as_os_str().is_empty()
        {
            return Err(invalid("control.socket", "must not be empty"));
        }
        if let Some(token) = self.control.http_token.as_ref().map(Secret::expose)
            && (token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(invalid(
                "control.http_token",
                "must be non-empty, without spaces or control characters",
            ));
        }
        positive("control.http_timeout", self.control.http_timeout)?;
        let ws = &self.websocket;
        if ws.event_queue == 0 || ws.event_queue > 4096 {
            return Err(invalid(
                "websocket.event_queue",
                "must be between 1 and 4096",
            ));
        }
        if ws.outbound_queue_bytes < 1024 {
            return Err(invalid(
                "websocket.outbound_queue_bytes",
                "must be at least 1024",
            ));
        }
        if ws.max_message_size == 0 {
            return Err(invalid("websocket.max_message_size", "must be positive"));
        }
        if ws.inbound_queue_bytes < 1024 {
            return Err(invalid(
                "websocket.inbound_queue_bytes",
                "must be at least 1024",
            ));
        }
        if self.limits.inbound_bytes < ws.max_message_size.max(64 * 1024) {
            return Err(invalid(
                "limits.inbound_bytes",
                format!(
                    "must be at least 65536 and at least websocket.max_message_size ({}), or one message would not fit",
                    ws.max_message_size
                ),
            ));
        }
        if ws.max_frame_size == 0 {
            return Err(invalid("websocket.max_frame_size", "must be positive"));
        }
        if !(64..=1024 * 1024).contains(&ws.read_buffer_size) {
            return Err(invalid(
                "websocket.read_buffer_size",
                "must be between 64 and 1048576",
            ));
        }
        positive("websocket.ping_interval", ws.ping_interval)?;
        positive("websocket.close_timeout", ws.close_timeout)?;
        positive("websocket.handshake_timeout", ws.handshake_timeout)?;
        at_most_a_year("websocket.idle_timeout", ws.idle_timeout)?;
        if ws.max_handshake_bytes < 8192 {
            return Err(invalid(
                "websocket.max_handshake_bytes",
                "must be at least 8192",
            ));
        }
        crate::limits::OriginPolicy::new(&ws.allowed_origins)
            .map_err(|e| invalid("websocket.allowed_origins", e))?;
        if let Some(rate) = &ws.rate_limit {
            if !(rate.messages_per_second.is_finite() && rate.messages_per_second > 0.0) {
                return Err(invalid(
                    "websocket.rate_limit.messages_per_second",
                    "must be a positive number",
                ));
            }
            if rate.burst == 0 {
                return Err(invalid("websocket.rate_limit.burst", "must be at least 1"));
            }
        }
        if ws.idle_timeout <= ws.ping_interval {
            return Err(invalid(
                "websocket.idle_timeout",
                "must be longer than websocket.ping_interval, or every idle client is cut off",
            ));
        }
        if !(32..=128).contains(&self.limits.ipv6_prefix) {
            return Err(invalid(
                "limits.ipv6_prefix",
                format!(
                    "{} is not a prefix length between 32 and 128 (64 counts each /64 as one client)",
                    self.limits.ipv6_prefix
                ),
            ));
        }
        self.cluster.validate()
    }

    /// The script for a request path: its route's, else the default `script`.
    pub fn script_for(&self, path: &str) -> Option<&Path> {
        self.routes
            .iter()
            .find(|r| r.path == path)
            .map(|r| r.script.as_path())
            .or(self.script.as_deref())
    }
}

/// Longest value of any duration setting. Far beyond any useful timeout, and
/// it keeps `Instant::now() + d` (which panics on overflow; humantime accepts
/// up to 2^64 seconds) safe wherever a duration is added to the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

fn positive(setting: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        Err(invalid(setting, "must be longer than zero"))
    } else {
        at_most_a_year(setting, d)
    }
}

/// Is `name` an environment variable name: a letter or `_`, then letters,
/// digits and `_`?
fn is_environment_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Is an `fpm.managed.env` value `$NAME`, a variable copied from ws2fcgi's
/// own environment (php-fpm's meaning of a leading `$`)?
pub fn is_environment_reference(value: &str) -> bool {
    value.strip_prefix('$').is_some_and(is_environment_name)
}

/// `fpm.managed.env`: names of variables; values of one line, literal or `$NAME`.
fn validate_managed_env(
    env: &std::collections::BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    const SETTING: &str = "fpm.managed.env";
    for (name, value) in env {
        if !is_environment_name(name) {
            return Err(invalid(
                SETTING,
                format!(
                    "`{name}` is not a variable name (letters, digits and _, not starting with a digit)"
                ),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(invalid(
                SETTING,
                format!("the value of {name} must be one line without control characters"),
            ));
        }
        if value.starts_with('$') && !is_environment_reference(value) {
            return Err(invalid(
                SETTING,
                format!(
                    "the value of {name} starts with $ but is not $NAME (a variable of ws2fcgi's environment); php-fpm reads a leading $ so"
                ),
            ));
        }
    }
    Ok(())
}

fn at_most_a_year(setting: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d > MAX_DURATION {
        Err(invalid(setting, "must be at most 365 days"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Config {
        Config::from_toml(
            r#"
            script = "/srv/app/ws.php"
            [fpm]
            address = "unix:/run/php/php-fpm.sock"
            "#,
        )
        .expect("parses")
    }

    #[test]
    fn minimal_config_is_valid_with_defaults() {
        let config = minimal();
        config.validate().expect("valid");
        assert_eq!(config.fpm.pool_size, 8);
        assert_eq!(config.websocket.outbound_queue_bytes, 1024 * 1024);
        assert_eq!(config.listen, default_listen());
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let config = Config::from_toml(
            r#"
            script = "/srv/app/ws.php"
            [fpm]
            address = "unix:/run/php/php-fpm.sock"
            [control]
            http = "127.0.0.1:8091"
            http_token = "token-7f3a9c"
            [cluster]
            redis = "redis://:redis-pw-5e1d@10.0.0.5:6379/"
            secret = "cluster-secret-0b8e4d2a"
            "#,
        )
        .expect("parses");
        assert_eq!(
            config.control.http_token.as_ref().map(Secret::expose),
            Some("token-7f3a9c")
        );
        let shown = format!("{config:?} {config:#?}");
        for secret in ["token-7f3a9c", "redis-pw-5e1d", "cluster-secret-0b8e4d2a"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("http_token: Some(<redacted>)"), "{shown}");
        assert!(shown.contains("secret: Some(<redacted>)"), "{shown}");
        assert!(shown.contains("10.0.0.5:6379"), "{shown}");
    }

    #[test]
    fn worker_threads_are_bounded() {
        let base = "script = \"/x.php\"\n[fpm]\naddress = \"unix:/run/php.sock\"\n";
        let config = Config::from_toml(&format!("worker_threads = 1\n{base}")).expect("parses");
        assert_eq!(config.worker_threads, 1);
        assert!(config.validate().is_ok());
        let config =
            Config::from_toml(&format!("worker_threads = 100000\n{base}")).expect("parses");
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("worker_threads"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = Config::from_toml("scrpt = \"/x.php\"").unwrap_err();
        assert!(err.contains("scrpt"), "{err}");
    }

    #[test]
    fn durations_are_human_strings() {
        let config = Config::from_toml("[fpm]\nrequest_timeout = \"1500ms\"").expect("parses");
        assert_eq!(config.fpm.request_timeout, Duration::from_millis(1500));
        let err = Config::from_toml("[fpm]\nrequest_timeout = \"soon\"").unwrap_err();
        assert!(err.contains("request_timeout"), "{err}");
    }

    #[test]
    fn addresses_parse_or_say_why() {
        assert_eq!(
            "unix:/tmp/a.sock".parse::<ListenAddr>(),
            Ok(ListenAddr::Unix("/tmp/a.sock".into()))
        );
        assert!("localhost".parse::<ListenAddr>().is_err());
        assert_eq!(
            "php:9000".parse::<FpmAddr>(),
            Ok(FpmAddr::Tcp("php:9000".into()))
        );
        assert!("php".parse::<FpmAddr>().is_err());
        assert!("unix:".parse::<FpmAddr>().is_err());
    }

    #[test]
    fn inbound_budgets_have_safe_defaults_and_are_checked() {
        let config = minimal();
        assert_eq!(config.websocket.inbound_queue_bytes, 4 << 20);
        assert_eq!(config.limits.inbound_bytes, 64 << 20);
        let mut config = minimal();
        config.websocket.inbound_queue_bytes = 1023;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("websocket.inbound_queue_bytes"), "{err}");
        // The budget must hold one whole message.
        let mut config = minimal();
        config.limits.inbound_bytes = config.websocket.max_message_size - 1;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("limits.inbound_bytes"), "{err}");
        assert!(err.contains("websocket.max_message_size"), "{err}");
        let mut config = minimal();
        config.limits.inbound_bytes = config.websocket.max_message_size;
        config.validate().expect("one message's worth is enough");
        let err = Config::from_toml("[limits]\ninbound_bytes = -1").unwrap_err();
        assert!(err.contains("inbound_bytes"), "{err}");
    }

    #[test]
    fn validation_names_the_setting() {
        let mut config = minimal();
        config.fpm.pool_size = 0;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("fpm.pool_size"), "{err}");

        let mut config = minimal();
        config.fpm.address = None;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("fpm.address")
        );

        let mut config = minimal();
        config.control.mode = "rw".into();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("control.mode")
        );

        let mut config = minimal();
        config.server_name = Some("chat.example.com:8443".into());
        config.validate().expect("a name and a port");
        config.server_name = Some("evil\"><img".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("server_name"), "{err}");

        let mut config = minimal();
        config.script = Some("relative.php".into());
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("script")
        );
    }

    #[test]
    fn limits_table_has_safe_defaults_and_a_bounded_prefix() {
        let config = minimal();
        assert_eq!(config.limits.ipv6_prefix, 64);
        assert_eq!(config.limits.max_handshakes_per_ip, 64);
        for (prefix, ok) in [
            (31, false),
            (32, true),
            (64, true),
            (128, true),
            (129, false),
        ] {
            let mut config = minimal();
            config.limits.ipv6_prefix = prefix;
            match config.validate() {
                Ok(()) => assert!(ok, "{prefix} accepted"),
                Err(e) => {
                    assert!(!ok, "{prefix} refused: {e}");
                    assert!(e.to_string().contains("limits.ipv6_prefix"), "{e}");
                }
            }
        }
        let err = Config::from_toml("[limits]\nipv6_prefix = 300").unwrap_err();
        assert!(err.contains("ipv6_prefix"), "{err}");
    }

    #[test]
    fn durations_past_a_year_are_refused() {
        // Each once passed validation and then panicked the daemon the first
        // time it was added to the clock (`Instant + Duration` overflows).
        for setting in [
            "fpm.retry_window",
            "fpm.request_timeout",
            "control.http_timeout",
            "websocket.close_timeout",
            "websocket.handshake_timeout",
            "websocket.idle_timeout",
            "shutdown.drain_timeout",
        ] {
            let (table, key) = setting.split_once('.').unwrap();
            let header = if table == "fpm" {
                String::new()
            } else {
                format!("[{table}]\n")
            };
            let text = format!(
                "script = \"/srv/app/ws.php\"\n[fpm]\naddress = \"unix:/run/php.sock\"\n\
                 {header}{key} = \"10000000000000000000s\"\n"
            );
            let config = Config::from_toml(&text).expect("humantime takes it");
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(setting), "{setting}: {err}");
        }
        let mut config = minimal();
        config.fpm.retry_window = MAX_DURATION;
        config.websocket.idle_timeout = MAX_DURATION;
        config.validate().expect("a year is allowed");
        assert!(
            std::time::Instant::now()
                .checked_add(MAX_DURATION)
                .is_some()
        );
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn cluster_settings_are_checked_by_name() {
        let config = Config::from_toml(
            r#"
            script = "/srv/app/ws.php"
            [fpm]
            address = "unix:/run/php/php-fpm.sock"
            [cluster]
            redis = "redis://127.0.0.1:6379/"
            node_id = "web-1"
            node_ttl = "5s"
            "#,
        )
        .expect("parses");
        config.validate().expect("valid");
        type Spoil = fn(&mut ClusterConfig);
        let cases: [(Spoil, &str); 7] = [
            (|c| c.secret = Some("short".into()), "cluster.secret"),
            (
                |c| c.secret = Some("0123456789abcdef\n".into()),
                "cluster.secret",
            ),
            (|c| c.redis = Some("http://x/".into()), "cluster.redis"),
            (|c| c.node_id = Some("web.1".into()), "cluster.node_id"),
            (|c| c.node_id = Some("n".repeat(33)), "cluster.node_id"),
            (|c| c.prefix = "a b".into(), "cluster.prefix"),
            (
                |c| c.node_ttl = Duration::from_millis(500),
                "cluster.node_ttl",
            ),
        ];
        for (spoil, named) in cases {
            let mut bad = config.clone();
            spoil(&mut bad.cluster);
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains(named), "{err}");
        }
        assert_eq!(
            Config::default().cluster.redis,
            None,
            "a single node by default"
        );
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn a_secret_is_required_unless_redis_is_local() {
        let mut config = minimal();
        for local in [
            "redis://127.0.0.1:6379/",
            "redis://127.0.0.2/",
            "redis://localhost:6379/0",
            "redis://[::1]:6379/",
            "redis://:password@127.0.0.1/",
            "redis+unix:///run/redis/redis.sock",
            "unix:///run/redis/redis.sock",
        ] {
            config.cluster.redis = Some(local.into());
            config.validate().unwrap_or_else(|e| panic!("{local}: {e}"));
        }
        for remote in [
            "redis://10.0.0.5:6379/",
            "redis://redis.internal.example/",
            "redis://[2001:db8::5]:6379/",
            "redis://localhost.example/",
        ] {
            config.cluster.redis = Some(remote.into());
            let err = config.validate().unwrap_err().to_string();
            assert!(
                err.contains("cluster.secret") && err.contains(remote),
                "{err}"
            );
            config.cluster.secret = Some("0123456789abcdef".into());
            config
                .validate()
                .unwrap_or_else(|e| panic!("{remote}: {e}"));
            config.cluster.secret = None;
        }
    }

    #[cfg(not(feature = "cluster"))]
    #[test]
    fn a_build_without_cluster_refuses_redis() {
        let mut config = minimal();
        config.cluster.redis = Some("redis://127.0.0.1:6379/".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("cluster.redis") && err.contains("feature"),
            "{err}"
        );
    }

    #[test]
    fn routes_pick_their_script_and_fall_back() {
        let config = Config::from_toml(
            r#"
            script = "/srv/default.php"
            [fpm]
            address = "127.0.0.1:9000"
            [[route]]
            path = "/chat"
            script = "/srv/chat.php"
            "#,
        )
        .expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.script_for("/chat"), Some(Path::new("/srv/chat.php")));
        assert_eq!(
            config.script_for("/other"),
            Some(Path::new("/srv/default.php"))
        );
    }

    #[test]
    fn managed_env_names_and_values_are_checked() {
        let mut config = minimal();
        let env = &mut config.fpm.managed.env;
        env.insert("APP_ENV".into(), "production; \"quoted\" $5".into());
        env.insert("DATABASE_URL".into(), "$DATABASE_URL".into());
        config.validate().expect("valid");
        for (name, value, says) in [
            ("1X", "a", "not a variable name"),
            ("A-B", "a", "not a variable name"),
            ("A", "two\nlines", "one line"),
            ("A", "$not a name", "starts with $"),
        ] {
            let mut config = minimal();
            config.fpm.managed.env.insert(name.into(), value.into());
            let err = config.validate().unwrap_err().to_string();
            assert!(
                err.contains("fpm.managed.env") && err.contains(says),
                "{err}"
            );
        }
    }
}
