//! `[control]`: the local control socket PHP pushes through, and the
//! optional HTTP endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, parse_mode};
use crate::secret::Secret;

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

fn default_control_mode() -> String {
    "0660".into()
}
fn default_max_line_bytes() -> usize {
    1024 * 1024
}
fn default_http_timeout() -> Duration {
    Duration::from_secs(10)
}
