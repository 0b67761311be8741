//! A setting that is a credential (`control.http_token`, `cluster.secret`):
//! never printed, compared in constant time.
//!
//! [`Secret`]'s `Debug` and `Display` write `<redacted>`, so a configuration
//! or command line that is ever logged or shown in an error keeps it out. The
//! value is reached only through [`Secret::expose`], where it is used.

use std::borrow::Cow;
use std::fmt;

use sha2::{Digest, Sha256};

/// What [`Secret`] prints instead of its value.
pub const REDACTED: &str = "<redacted>";

/// A credential from the configuration or the command line.
#[derive(Clone, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for the one place that uses it (a key, a header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Is `given` this secret? Constant time: both sides are hashed first, so
    /// neither the bytes nor the length of the secret show in the timing.
    pub fn matches(&self, given: &[u8]) -> bool {
        same_digest(&Sha256::digest(given), &Sha256::digest(self.0.as_bytes()))
    }
}

/// Compares two digests without stopping at the first difference.
fn same_digest(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && std::hint::black_box(diff) == 0
}

impl PartialEq for Secret {
    /// Constant time, as [`Secret::matches`]; a reload compares configurations.
    fn eq(&self, other: &Self) -> bool {
        self.matches(other.0.as_bytes())
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// `url` with its password replaced by [`REDACTED`]: the user info's
/// (`redis://user:password@host`, all of it when it has no `:`) and a
/// `pass` or `password` query parameter's (`redis+unix:///path?pass=…`).
///
/// ```
/// use ws2fcgi::secret::redact_url;
/// assert_eq!(redact_url("redis://:pw@10.0.0.5/2"), "redis://:<redacted>@10.0.0.5/2");
/// assert_eq!(redact_url("unix:///run/r.sock?pass=pw&db=1"), "unix:///run/r.sock?pass=<redacted>&db=1");
/// assert_eq!(redact_url("redis://127.0.0.1/"), "redis://127.0.0.1/");
/// ```
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Cow::Borrowed(url);
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    out.push_str("://");
    // The last '@' ends the user info: a password with a raw '/' or '@' in
    // it is still covered.
    match before_query.rsplit_once('@') {
        Some((userinfo, host_and_path)) => {
            if let Some((user, _)) = userinfo.split_once(':') {
                out.push_str(user);
                out.push(':');
            }
            out.push_str(REDACTED);
            out.push('@');
            out.push_str(host_and_path);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if name == "pass" || name == "password" => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(REDACTED);
                }
                _ => out.push_str(pair),
            }
        }
    }
    if out == url {
        Cow::Borrowed(url)
    } else {
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_redacted_and_compares_by_value() {
        let secret = Secret::from("hunter2-hunter2-hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "<redacted> <redacted>");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(<redacted>)");
        assert_eq!(secret.expose(), "hunter2-hunter2-hunter2");
        assert!(secret.matches(b"hunter2-hunter2-hunter2"));
        assert!(!secret.matches(b"hunter2-hunter2-hunter3"));
        assert!(!secret.matches(b"hunter2"));
        assert!(!secret.matches(b""));
        assert_eq!(secret, Secret::from("hunter2-hunter2-hunter2".to_owned()));
        assert_ne!(secret, Secret::from("other"));
    }

    #[test]
    fn urls_lose_their_passwords_only() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/"),
            (
                "redis://:pw@10.0.0.5:6379/2",
                "redis://:<redacted>@10.0.0.5:6379/2",
            ),
            ("redis://app:pw@h/", "redis://app:<redacted>@h/"),
            ("redis://token@h/", "redis://<redacted>@h/"),
            ("redis://:p/w@d@h/", "redis://:<redacted>@h/"),
            (
                "redis+unix:///run/r.sock?db=2&pass=pw",
                "redis+unix:///run/r.sock?db=2&pass=<redacted>",
            ),
            (
                "unix:///run/r.sock?user=u&password=pw",
                "unix:///run/r.sock?user=u&password=<redacted>",
            ),
            ("localhost:6379", "localhost:6379"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
