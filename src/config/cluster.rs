//! `[cluster]`: several nodes sharing channels through Redis, and the
//! checks of the Redis URL and the secret.

use std::time::Duration;

use serde::Deserialize;

use super::validate::positive;
use super::{ConfigError, invalid};
use crate::secret::{Secret, redact_url};

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
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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

#[cfg(test)]
mod tests {
    #[cfg(feature = "cluster")]
    use super::*;
    #[cfg(feature = "cluster")]
    use crate::config::Config;
    use crate::config::tests::minimal;

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
}
