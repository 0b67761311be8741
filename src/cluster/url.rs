//! The cluster's Redis URL (`cluster.redis`), checked at start with a
//! message that says what is wrong and the form expected. The Redis client
//! alone says `Redis URL did not parse - InvalidClientConfig`.

/// The forms the daemon takes, for every message.
const FORMS: &str = "redis://host:port/ (e.g. redis://127.0.0.1:6379/, \
                     redis://:password@host:port/db) or unix:///path/to/redis.sock";

/// `Ok` when the Redis client can use `url`; otherwise what is wrong, in one
/// line ending with the expected form.
pub fn check(url: &str) -> Result<(), String> {
    check_shown(url, &crate::secret::redact_url(url))
}

/// [`check`], naming the URL as `shown` (without its password).
fn check_shown(url: &str, shown: &str) -> Result<(), String> {
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(format!("`{shown}` has no scheme; write {FORMS}"));
    };
    match scheme {
        "redis" | "redis+unix" | "unix" | "valkey" | "valkey+unix" => {}
        "rediss" | "valkeys" => {
            return Err(format!(
                "`{shown}`: TLS ({scheme}://) is not supported; reach Redis over a private \
                 network or a Unix socket: {FORMS}"
            ));
        }
        other => {
            return Err(format!(
                "`{shown}`: `{other}://` is not a Redis URL; write {FORMS}"
            ));
        }
    }
    use redis::IntoConnectionInfo as _;
    url.into_connection_info().map(drop).map_err(|e| {
        let text = e.to_string();
        // "<description> - InvalidClientConfig": the kind says nothing more.
        let what = text.split(" - ").next().unwrap_or(&text).trim();
        let what = match what {
            "Redis URL did not parse" => "it does not parse as a URL",
            "Missing hostname" => "no host",
            "Invalid database number" => "the database, after the last '/', is not a number",
            other => other,
        };
        format!("`{shown}` is not a usable Redis URL ({what}); write {FORMS}")
    })
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn the_documented_forms_pass() {
        for url in [
            "redis://127.0.0.1:6379/",
            "redis://:secret@10.0.0.5:6379/2",
            "redis+unix:///run/redis/redis.sock",
            "unix:///run/redis/redis.sock",
        ] {
            assert_eq!(check(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn each_mistake_says_what_and_the_form() {
        for (url, what) in [
            ("localhost:6379", "has no scheme"),
            ("foo://bar", "`foo://` is not a Redis URL"),
            ("http://x/", "`http://` is not a Redis URL"),
            ("rediss://x:6380/", "TLS (rediss://) is not supported"),
            ("redis://:6379/", "not a usable Redis URL"),
            ("redis://host:port/", "not a usable Redis URL"),
            ("redis://host:6379/notanumber", "not a usable Redis URL"),
        ] {
            let err = check(url).unwrap_err();
            assert!(err.contains(what), "{url}: {err}");
            assert!(
                err.ends_with("or unix:///path/to/redis.sock") && !err.contains('\n'),
                "{url}: {err}"
            );
            assert!(!err.contains("InvalidClientConfig"), "{url}: {err}");
        }
    }

    #[test]
    fn a_mistake_never_shows_the_password() {
        for url in [
            "rediss://:hunter2@x:6380/",
            "redis://:hunter2@h:6379/zero",
            "http://:hunter2@h/",
        ] {
            let err = check(url).unwrap_err();
            assert!(
                !err.contains("hunter2") && err.contains("<redacted>"),
                "{err}"
            );
        }
    }
}
