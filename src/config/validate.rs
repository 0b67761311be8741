//! [`Config::validate`]: every check that parsing alone cannot make, run
//! before anything is bound, each refusal naming its setting.

use std::time::Duration;

use super::fpm::validate_managed_env;
use super::{Config, ConfigError, invalid, parse_mode};
use crate::secret::Secret;

/// Longest `fanout_delay` accepted: a broadcast's frames wait this long at most.
const MAX_FANOUT_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Most worker threads `worker_threads` accepts.
pub const MAX_WORKER_THREADS: usize = 1024;

impl Config {
    /// Is one of `listen` a `tls://` address?
    pub fn has_tls_listener(&self) -> bool {
        self.listen
            .iter()
            .any(|a| matches!(a, super::ListenAddr::Tls(_)))
    }

    /// Checks every value that parsing alone cannot, before anything is bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", format!("`{}`: {e}", self.log.level)));
        }
        if self.listen.is_empty() {
            return Err(invalid("listen", "at least one address is needed"));
        }
        // The files are read here, so a start, `check-config` and a reload
        // all refuse a certificate that cannot be used.
        if self.has_tls_listener() {
            crate::tls::server_config(&self.tls)?;
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
        if self.shards > MAX_WORKER_THREADS {
            return Err(invalid(
                "shards",
                format!(
                    "{} is more than {MAX_WORKER_THREADS}; use 0 for one per core",
                    self.shards
                ),
            ));
        }
        if self.fanout_delay > MAX_FANOUT_DELAY {
            return Err(invalid(
                "fanout_delay",
                format!(
                    "{:?} is more than {MAX_FANOUT_DELAY:?}; it delays every broadcast",
                    self.fanout_delay
                ),
            ));
        }
        if self.fpm.address.is_none() {
            return Err(invalid(
                "fpm.address",
                "PHP-FPM's address is required (--fpm unix:/path or host:port)",
            ));
        }
        if self.script.is_none() && self.routes.is_empty() && self.pusher.apps.is_empty() {
            return Err(invalid(
                "script",
                "give a script for every path (--script), at least one [[route]] or a [[pusher.app]]",
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
        if let Err((setting, message)) = self.history.check() {
            return Err(invalid(setting, message));
        }
        if let Err((setting, message)) = self.pusher.check() {
            return Err(invalid(setting, message));
        }
        self.cluster.validate()
    }
}

/// Longest value of any duration setting. Far beyond any useful timeout, and
/// it keeps `Instant::now() + d` (which panics on overflow; humantime accepts
/// up to 2^64 seconds) safe wherever a duration is added to the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

pub(super) fn positive(setting: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        Err(invalid(setting, "must be longer than zero"))
    } else {
        at_most_a_year(setting, d)
    }
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
    use crate::config::tests::minimal;

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
}
