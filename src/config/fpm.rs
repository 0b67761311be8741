//! `[fpm]` and `[fpm.managed]`: PHP-FPM's address, the FastCGI pool's
//! sizes and timeouts, and the php-fpm ws2fcgi runs itself
//! (`address = "managed"`), with the checks of its environment.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, FpmAddr, invalid};

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
    /// Open events (handshakes) waiting for a free FastCGI connection or
    /// running, at most; past it, or when the estimated wait passes
    /// `queue_timeout`, a handshake is turned away at once with a
    /// Retry-After (`admission.rs`). 0: no count bound.
    #[serde(default = "default_open_queue")]
    pub open_queue: usize,
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
            open_queue: default_open_queue(),
            request_timeout: default_request_timeout(),
            idle_timeout: default_fpm_idle_timeout(),
            max_response_header_bytes: default_max_response_header_bytes(),
            max_response_body_bytes: default_max_response_body_bytes(),
            retry_window: default_retry_window(),
            managed: ManagedFpmConfig::default(),
        }
    }
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
fn default_open_queue() -> usize {
    16_384
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
pub(super) fn validate_managed_env(
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

#[cfg(test)]
mod tests {
    use crate::config::tests::minimal;

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
