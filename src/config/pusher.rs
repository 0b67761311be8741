//! `[pusher]` and `[[pusher.app]]`: the Pusher Channels protocol (see
//! `docs/pusher.md`), spoken on the WebSocket listeners at `/app/{key}`
//! beside the raw contract.
//!
//! ```toml
//! [pusher]
//! activity_timeout = "120s"          # told to clients; the server pings after this much silence
//! max_channels_per_connection = 100
//! max_message_bytes = 10240          # a client event's or a published event's data
//! max_channels_per_event = 100       # HTTP API
//! max_batch_events = 10              # HTTP API
//! client_events_per_second = 10      # per connection
//! timestamp_tolerance = "600s"       # HTTP API: auth_timestamp
//! # api_listen = "127.0.0.1:8092"    # HTTP API also here (it is always on the WebSocket listeners)
//!
//! [[pusher.app]]
//! id = "1001"
//! key = "app-key"
//! secret = "app-secret"
//! auth = "signature"                 # or "php": PHP authorizes private and presence subscriptions
//! # script = "/srv/app/pusher.php"   # events to PHP (open, subscribe, client_event, …, close)
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;

/// Longest app id or key.
pub const MAX_APP_NAME: usize = 100;

/// `[pusher]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PusherConfig {
    /// Sent to clients in `pusher:connection_established`: a client pings
    /// after this much silence, and so does the server, which closes (4201)
    /// when its ping is not answered within the same time again.
    #[serde(default = "default_activity_timeout", with = "humantime_serde")]
    pub activity_timeout: Duration,
    /// Channels one connection may be subscribed to at once.
    #[serde(default = "default_max_channels_per_connection")]
    pub max_channels_per_connection: usize,
    /// Largest `data` of an event, in bytes (client events, published events).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Most channels one published event may name (HTTP API).
    #[serde(default = "default_max_channels_per_event")]
    pub max_channels_per_event: usize,
    /// Most events in one `batch_events` request (HTTP API).
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: usize,
    /// Client events one connection may send per second (a burst of as many).
    #[serde(default = "default_client_events_per_second")]
    pub client_events_per_second: u32,
    /// How far a signed HTTP API request's `auth_timestamp` may be from now.
    #[serde(default = "default_timestamp_tolerance", with = "humantime_serde")]
    pub timestamp_tolerance: Duration,
    /// A separate listener for the HTTP API (it is always served on the
    /// WebSocket listeners too); none when unset.
    #[serde(default)]
    pub api_listen: Option<SocketAddr>,
    /// The apps; the Pusher protocol is off when there is none.
    #[serde(default, rename = "app")]
    pub apps: Vec<PusherApp>,
}

/// One `[[pusher.app]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PusherApp {
    /// The app id (`/apps/{id}` of the HTTP API).
    pub id: String,
    /// The public key clients connect with (`/app/{key}`).
    pub key: String,
    /// Signs private and presence subscriptions, sign-ins and HTTP API requests.
    pub secret: Secret,
    /// Events to PHP: the script PHP-FPM runs for this app's connections
    /// and channels (`docs/protocol.md`, "Pusher events"); none when unset.
    #[serde(default)]
    pub script: Option<std::path::PathBuf>,
    /// How private and presence subscriptions are authorized.
    #[serde(default)]
    pub auth: AuthMode,
}

/// `pusher.app.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// The client sends `key:HMAC-SHA256(secret, …)`, as every Pusher server checks.
    #[default]
    Signature,
    /// PHP decides: a `subscribe` event to the app's `script`, whose 2xx
    /// accepts (for presence with the member as JSON).
    Php,
}

impl Default for PusherConfig {
    fn default() -> Self {
        Self {
            activity_timeout: default_activity_timeout(),
            max_channels_per_connection: default_max_channels_per_connection(),
            max_message_bytes: default_max_message_bytes(),
            max_channels_per_event: default_max_channels_per_event(),
            max_batch_events: default_max_batch_events(),
            client_events_per_second: default_client_events_per_second(),
            timestamp_tolerance: default_timestamp_tolerance(),
            api_listen: None,
            apps: Vec::new(),
        }
    }
}

fn default_activity_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_max_channels_per_connection() -> usize {
    100
}
fn default_max_message_bytes() -> usize {
    10_240
}
fn default_max_channels_per_event() -> usize {
    100
}
fn default_max_batch_events() -> usize {
    10
}
fn default_client_events_per_second() -> u32 {
    10
}
fn default_timestamp_tolerance() -> Duration {
    Duration::from_secs(600)
}

/// Is `name` a usable app id or key? Letters, digits, `-`, `_`, `.`; it
/// appears in URL paths and in signed strings.
fn app_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_APP_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl PusherConfig {
    /// Checks what parsing cannot: (setting, message) of the first problem.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        let d = self.activity_timeout;
        if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
            return Err((
                "pusher.activity_timeout",
                "must be between 1s and 1h".into(),
            ));
        }
        let counts = [
            (
                "pusher.max_channels_per_connection",
                self.max_channels_per_connection,
                100_000,
            ),
            ("pusher.max_message_bytes", self.max_message_bytes, 16 << 20),
            (
                "pusher.max_channels_per_event",
                self.max_channels_per_event,
                10_000,
            ),
            ("pusher.max_batch_events", self.max_batch_events, 10_000),
            (
                "pusher.client_events_per_second",
                self.client_events_per_second as usize,
                1_000_000,
            ),
        ];
        for (setting, value, most) in counts {
            if value == 0 || value > most {
                return Err((setting, format!("{value} is not between 1 and {most}")));
            }
        }
        if self.timestamp_tolerance < Duration::from_secs(1)
            || self.timestamp_tolerance > super::MAX_DURATION
        {
            return Err((
                "pusher.timestamp_tolerance",
                "must be between 1s and a year".into(),
            ));
        }
        let mut ids = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for app in &self.apps {
            if !app_name_ok(&app.id) {
                return Err((
                    "pusher.app.id",
                    format!(
                        "`{}`: 1 to {MAX_APP_NAME} letters, digits, '-', '_' or '.'",
                        app.id
                    ),
                ));
            }
            if !app_name_ok(&app.key) {
                return Err((
                    "pusher.app.key",
                    format!(
                        "`{}`: 1 to {MAX_APP_NAME} letters, digits, '-', '_' or '.'",
                        app.key
                    ),
                ));
            }
            if !ids.insert(app.id.as_str()) {
                return Err(("pusher.app.id", format!("`{}` is used twice", app.id)));
            }
            if !keys.insert(app.key.as_str()) {
                return Err(("pusher.app.key", format!("`{}` is used twice", app.key)));
            }
            if app.secret.expose().is_empty() {
                return Err((
                    "pusher.app.secret",
                    format!("app `{}`: must not be empty", app.id),
                ));
            }
            if let Some(script) = &app.script
                && !script.is_absolute()
            {
                return Err((
                    "pusher.app.script",
                    format!(
                        "app `{}`: `{}` must be an absolute path",
                        app.id,
                        script.display()
                    ),
                ));
            }
            if app.auth == AuthMode::Php && app.script.is_none() {
                return Err((
                    "pusher.app.auth",
                    format!(
                        "app `{}`: \"php\" asks the app's `script`; set one, or use \"signature\"",
                        app.id
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    fn check(extra: &str) -> Result<(), String> {
        let text =
            format!("script = \"/srv/ws.php\"\n[fpm]\naddress = \"127.0.0.1:9000\"\n{extra}");
        let config = Config::from_toml(&text)?;
        config.validate().map_err(|e| e.to_string())
    }

    const APP: &str = "[[pusher.app]]\nid = \"1001\"\nkey = \"app-key\"\nsecret = \"s3cret-9a\"\n";

    #[test]
    fn defaults_and_one_app() {
        check(APP).expect("valid");
        let config = Config::default();
        assert_eq!(config.pusher.activity_timeout.as_secs(), 120);
        assert_eq!(config.pusher.max_channels_per_connection, 100);
        assert!(config.pusher.apps.is_empty());
    }

    #[test]
    fn each_refusal_names_its_setting() {
        let cases = [
            (format!("{APP}{APP}"), "pusher.app.id"),
            (
                format!("{APP}[[pusher.app]]\nid = \"2\"\nkey = \"app-key\"\nsecret = \"x\"\n"),
                "pusher.app.key",
            ),
            (APP.replace("app-key", "app key"), "pusher.app.key"),
            (APP.replace("1001", "10/01"), "pusher.app.id"),
            (APP.replace("s3cret-9a", ""), "pusher.app.secret"),
            (format!("{APP}script = \"p.php\"\n"), "pusher.app.script"),
            (format!("{APP}auth = \"php\"\n"), "pusher.app.auth"),
            (
                "[pusher]\nmax_channels_per_connection = 0\n".to_string(),
                "pusher.max_channels_per_connection",
            ),
            (
                "[pusher]\nactivity_timeout = \"0s\"\n".to_string(),
                "pusher.activity_timeout",
            ),
        ];
        for (text, setting) in cases {
            let err = check(&text).expect_err(&text);
            assert!(err.contains(setting), "{text}: {err}");
        }
    }

    #[test]
    fn events_to_php_need_an_absolute_script() {
        check(&format!("{APP}script = \"/srv/p.php\"\n")).expect("script alone");
        check(&format!("{APP}script = \"/srv/p.php\"\nauth = \"php\"\n")).expect("auth php");
    }

    #[test]
    fn the_secret_is_redacted() {
        let config = Config::from_toml(APP).expect("parses");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret-9a"), "{shown}");
    }

    #[test]
    fn no_script_is_needed_for_pusher_alone() {
        let config =
            Config::from_toml(&format!("[fpm]\naddress = \"127.0.0.1:9000\"\n{APP}")).unwrap();
        config.validate().expect("pusher apps alone are enough");
    }
}
