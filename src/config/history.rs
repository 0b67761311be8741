//! `[history]`: how many publications each channel keeps, and for how long,
//! so that a client that reconnects can be sent what it missed.
//!
//! ```toml
//! [history]
//! size = 0            # publications kept per channel; 0 = no history (the default)
//! ttl = "5m"          # and for at most this long
//! max_bytes = "64MiB" # one budget for all channels; the oldest publications go first
//! [[history.channel]] # overrides, first match wins; * matches any run of characters
//! pattern = "room:*"
//! size = 500
//! ttl = "1h"
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Most publications one channel may keep.
pub const MAX_HISTORY_SIZE: usize = 1_000_000;
/// Longest a publication may be kept.
pub const MAX_HISTORY_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// `[history]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Publications kept per channel; 0: none (channels keep no history).
    #[serde(default)]
    pub size: usize,
    /// How long a publication is kept at most.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Bytes of publications kept at most, every channel together (a number
    /// of bytes, or a string with a unit: "64MiB", "512KiB", "1GB").
    #[serde(default = "default_max_bytes", deserialize_with = "byte_size")]
    pub max_bytes: usize,
    /// Per-channel overrides; the first whose pattern matches wins.
    #[serde(default, rename = "channel")]
    pub channels: Vec<ChannelHistory>,
}

/// One `[[history.channel]]` override.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelHistory {
    /// Channel names this applies to; `*` matches any run of characters.
    pub pattern: String,
    /// Publications kept; defaults to `history.size`.
    #[serde(default)]
    pub size: Option<usize>,
    /// How long they are kept; defaults to `history.ttl`.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            size: 0,
            ttl: default_ttl(),
            max_bytes: default_max_bytes(),
            channels: Vec::new(),
        }
    }
}

/// What one channel keeps: at most `size` publications, each for at most `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Publications kept (at least 1).
    pub size: usize,
    /// How long each is kept.
    pub ttl: Duration,
}

impl HistoryConfig {
    /// What `channel` keeps; `None` when it keeps no history.
    pub fn policy(&self, channel: &str) -> Option<Policy> {
        let (size, ttl) = match self.channels.iter().find(|c| matches(&c.pattern, channel)) {
            Some(c) => (c.size.unwrap_or(self.size), c.ttl.unwrap_or(self.ttl)),
            None => (self.size, self.ttl),
        };
        (size > 0 && !ttl.is_zero()).then_some(Policy { size, ttl })
    }

    /// Does any channel keep history?
    pub fn enabled(&self) -> bool {
        self.size > 0 || self.channels.iter().any(|c| c.size.is_some_and(|s| s > 0))
    }

    /// Checks the values; the error names the setting.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let too_big = |size: usize| size > MAX_HISTORY_SIZE;
        if too_big(self.size) {
            return Err(("history.size", format!("at most {MAX_HISTORY_SIZE}")));
        }
        if self.ttl > MAX_HISTORY_TTL {
            return Err(("history.ttl", "at most 30 days".into()));
        }
        if self.enabled() && self.max_bytes == 0 {
            return Err(("history.max_bytes", "must be above 0".into()));
        }
        for c in &self.channels {
            if c.pattern.is_empty() {
                return Err(("history.channel.pattern", "must not be empty".into()));
            }
            if c.size.is_some_and(too_big) {
                return Err((
                    "history.channel.size",
                    format!("`{}`: at most {MAX_HISTORY_SIZE}", c.pattern),
                ));
            }
            if c.ttl.is_some_and(|t| t > MAX_HISTORY_TTL) {
                return Err((
                    "history.channel.ttl",
                    format!("`{}`: at most 30 days", c.pattern),
                ));
            }
        }
        Ok(())
    }
}

/// Does `name` match `pattern`, where `*` matches any run of characters?
///
/// ```
/// use ws2fcgi::config::pattern_matches as m;
/// assert!(m("room:*", "room:1"));
/// assert!(m("*", ""));
/// assert!(m("a*b*c", "aXbYbc"));
/// assert!(!m("room:*", "lobby"));
/// assert!(!m("room", "room:1"));
/// ```
pub fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*`: an exact match
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn default_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_max_bytes() -> usize {
    64 * 1024 * 1024
}

/// A byte count: an integer, or a string `<number><unit>` with units B, KB,
/// MB, GB (powers of 1000) and KiB, MiB, GiB (powers of 1024).
fn byte_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(usize),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Number(n) => Ok(n),
        Raw::Text(text) => parse_byte_size(&text).map_err(serde::de::Error::custom),
    }
}

/// Parses "64MiB", "512 KiB", "1GB", "100".
///
/// ```
/// use ws2fcgi::config::parse_byte_size as p;
/// assert_eq!(p("64MiB"), Ok(64 << 20));
/// assert_eq!(p("1 kB"), Ok(1000));
/// assert_eq!(p("100"), Ok(100));
/// assert!(p("lots").is_err());
/// ```
pub fn parse_byte_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as \"64MiB\""))?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (B, KB, MB, GB, KiB, MiB, GiB)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_override_wins() {
        let config: HistoryConfig = toml::from_str(
            r#"
            size = 10
            ttl = "1m"
            max_bytes = "1MiB"
            [[channel]]
            pattern = "room:*"
            size = 500
            ttl = "1h"
            [[channel]]
            pattern = "room:quiet"
            size = 1
            [[channel]]
            pattern = "none:*"
            size = 0
            "#,
        )
        .unwrap();
        assert_eq!(config.max_bytes, 1 << 20);
        let room = config.policy("room:quiet").unwrap();
        assert_eq!((room.size, room.ttl), (500, Duration::from_secs(3600)));
        let other = config.policy("lobby").unwrap();
        assert_eq!((other.size, other.ttl), (10, Duration::from_secs(60)));
        assert_eq!(config.policy("none:x"), None);
        assert!(config.check().is_ok());
    }

    #[test]
    fn no_history_by_default() {
        let config = HistoryConfig::default();
        assert!(!config.enabled());
        assert_eq!(config.policy("room"), None);
    }

    #[test]
    fn bad_values_name_their_setting() {
        let bad: Result<HistoryConfig, _> = toml::from_str(r#"max_bytes = "64 parsecs""#);
        assert!(bad.unwrap_err().to_string().contains("unknown unit"));
        let config = HistoryConfig {
            size: MAX_HISTORY_SIZE + 1,
            ..HistoryConfig::default()
        };
        assert_eq!(config.check().unwrap_err().0, "history.size");
    }
}
