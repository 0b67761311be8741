//! The daemon's settings: typed TOML, defaults, and validation.
//!
//! A [`Config`] is loaded from a file (or built from defaults), the command
//! line is applied on top of it (see `cli.rs`), and [`Config::validate`] runs
//! before any socket is bound, so a bad setting fails at start with one message
//! that names it. Every field has a named default function; `ws2fcgi.example.toml`
//! documents each one.
//!
//! This file holds [`Config`] (the top-level settings, `[log]`, `[shutdown]`,
//! `[[route]]`) and its loading; each other table has a file of its own:
//! `websocket.rs`, `limits.rs`, `fpm.rs` (with `[fpm.managed]`),
//! `control.rs`, `cluster.rs`, `history.rs`, `pusher.rs`, `tls.rs`; `address.rs` parses the address settings,
//! `validate.rs` checks a whole configuration, and `toml_error.rs` words a
//! file's TOML errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

mod address;
mod cluster;
mod control;
mod fpm;
mod history;
mod limits;
mod pusher;
mod tls;
pub mod toml_error;
mod validate;
mod websocket;

pub use address::{AdminAddr, FpmAddr, ListenAddr};
pub use cluster::{ClusterConfig, MIN_CLUSTER_SECRET};
pub use control::ControlConfig;
pub use fpm::{FpmConfig, ManagedFpmConfig, is_environment_reference};
pub use history::{
    ChannelHistory, HistoryConfig, Policy, matches as pattern_matches, parse_byte_size,
};
pub use limits::LimitsConfig;
pub use pusher::{AuthMode, PusherApp, PusherConfig};
pub use tls::{ClientAuth, TlsConfig};
pub use validate::{MAX_DURATION, MAX_WORKER_THREADS};
pub use websocket::{RateLimitAction, RateLimitConfig, WebSocketConfig};

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

/// How connections are spread over threads (`runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// One work-stealing runtime of `worker_threads` threads: any thread
    /// runs any connection.
    #[default]
    Shared,
    /// `shards` threads, each with a runtime of its own that accepts,
    /// serves and writes its own connections with its share of the FastCGI
    /// pool (`shard.rs`).
    Sharded,
}

/// The whole configuration, as in `ws2fcgi.example.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Addresses to accept WebSocket clients on (`ip:port`, `tls://ip:port` or `unix:/path`).
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
    /// `shared` (one work-stealing runtime) or `sharded` (a thread per shard).
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// Shards of `runtime = "sharded"`; 0: one per core (at most `fpm.pool_size`).
    #[serde(default)]
    pub shards: usize,
    /// How long a broadcast's frames may wait before the members' writers
    /// are woken, so that several publishes go out in one write; 0: at once.
    #[serde(default, with = "humantime_serde")]
    pub fanout_delay: Duration,
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
    /// Channel history, for clients that reconnect; off by default. Needs a restart.
    #[serde(default)]
    pub history: HistoryConfig,
    /// The Pusher Channels protocol at `/app/{key}`; off without apps.
    #[serde(default)]
    pub pusher: PusherConfig,
    /// The certificate of `tls://` listeners; re-read on SIGHUP.
    #[serde(default)]
    pub tls: TlsConfig,
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

fn default_listen() -> Vec<ListenAddr> {
    vec![ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 8090)))]
}

fn default_listen_mode() -> String {
    "0660".into()
}
fn default_log_level() -> String {
    "info".into()
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

    /// The script for a request path: its route's, else the default `script`.
    pub fn script_for(&self, path: &str) -> Option<&Path> {
        self.routes
            .iter()
            .find(|r| r.path == path)
            .map(|r| r.script.as_path())
            .or(self.script.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    pub(super) fn minimal() -> Config {
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
    fn tls_listeners_need_a_certificate_that_can_be_read() {
        let addr: ListenAddr = "tls://0.0.0.0:443".parse().expect("parses");
        assert_eq!(addr, ListenAddr::Tls(SocketAddr::from(([0, 0, 0, 0], 443))));
        assert_eq!(addr.to_string(), "tls://0.0.0.0:443");
        let err = "tls://localhost".parse::<ListenAddr>().unwrap_err();
        assert!(err.contains("tls://0.0.0.0:443"), "{err}");
        let mut config = minimal();
        config.listen = vec![addr];
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("`tls.cert`"), "{err}");
        config.tls.cert = Some("/nonexistent/cert.pem".into());
        config.tls.key = Some("/nonexistent/key.pem".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("`tls.cert`") && err.contains("/nonexistent/cert.pem"),
            "{err}"
        );
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
}
