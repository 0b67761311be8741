//! The signature of an HTTP API request, checked as Pusher documents it
//! ("Generating authentication signatures"). Pure: no clock, no I/O (the
//! caller passes the time), so it is unit-tested with Pusher's worked
//! example and fuzzed (`fuzz/fuzz_targets/pusher_api_signature.rs`).
//!
//! Every request carries in its query string `auth_key` (the app's key),
//! `auth_timestamp` (Unix seconds, within `pusher.timestamp_tolerance` of
//! now), `auth_version` (`1.0`), `body_md5` (the hex MD5 of the body, when
//! there is one) and `auth_signature`, the hex HMAC-SHA256 with the app's
//! secret of
//!
//! ```text
//! METHOD \n PATH \n key=value&key=value…   (every parameter but auth_signature,
//!                                          keys lower-cased and sorted, values not escaped)
//! ```
//!
//! The SDKs send the query string unescaped (channel names and prefixes
//! need no escaping); a value that is percent-escaped all the same is
//! signed unescaped, as the documentation says. The path is signed as it
//! came on the wire, or unescaped when that differs and the raw one fails.
//! The signature is compared in constant time.

use std::fmt;

use md5::{Digest, Md5};

use super::auth;

/// The only `auth_version` there is.
pub const AUTH_VERSION: &str = "1.0";

/// Most parameters in a query string; more is refused (a signature over
/// thousands of parameters is no request an SDK makes).
pub const MAX_PARAMS: usize = 64;

/// A request's query parameters: keys lower-cased, values unescaped,
/// sorted by key, each key once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    params: Vec<(String, String)>,
}

impl Query {
    /// Parses a raw query string (without the `?`). A key given twice, more
    /// than [`MAX_PARAMS`] parameters or an escape that does not decode to
    /// UTF-8 is refused: what was signed would be ambiguous.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut params = Vec::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            if params.len() == MAX_PARAMS {
                return Err(format!("more than {MAX_PARAMS} query parameters"));
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = unescape(key)?.to_ascii_lowercase();
            let value = unescape(value)?;
            params.push((key, value));
        }
        params.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(twice) = params.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(format!(
                "query parameter `{}` given twice",
                cut(&twice[0].0)
            ));
        }
        Ok(Self { params })
    }

    /// The value of `key` (lower-case), if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.params[i].1.as_str())
    }

    /// `key=value&…` of every parameter but `auth_signature`, as signed.
    pub fn signed_part(&self) -> String {
        let mut out = String::new();
        for (key, value) in self.params.iter().filter(|(k, _)| k != "auth_signature") {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(key);
            out.push('=');
            out.push_str(value);
        }
        out
    }
}

/// Why a request's signature is refused: each is a 401, worded for the
/// developer whose SDK or clock is wrong (nothing secret in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A required parameter is missing.
    Missing(&'static str),
    /// `auth_key` is not the app's key.
    UnknownKey,
    /// `auth_version` is not `1.0`.
    Version(String),
    /// `auth_timestamp` is not a number of seconds.
    BadTimestamp,
    /// `auth_timestamp` is too far from now.
    Expired {
        /// The request's timestamp.
        given: u64,
        /// The server's time.
        now: u64,
        /// `pusher.timestamp_tolerance`, in seconds.
        tolerance: u64,
    },
    /// `body_md5` is not the MD5 of the body.
    BodyMd5,
    /// `auth_signature` is not the signature of `signed`.
    Signature {
        /// The string the server signed (method, path, parameters).
        signed: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(name) => write!(f, "Missing parameter: {name}"),
            Self::UnknownKey => f.write_str("Unknown auth_key"),
            Self::Version(v) => write!(
                f,
                "Unsupported auth_version `{}`: {AUTH_VERSION} is the only one",
                cut(v)
            ),
            Self::BadTimestamp => f.write_str("auth_timestamp must be Unix time in seconds"),
            Self::Expired {
                given,
                now,
                tolerance,
            } => write!(
                f,
                "Timestamp expired: given timestamp ({given}) not within {tolerance}s of server time ({now})"
            ),
            Self::BodyMd5 => f.write_str("body_md5 does not match the MD5 of the request body"),
            Self::Signature { signed } => write!(
                f,
                "Invalid signature: you should have sent the HMAC-SHA256 hex digest of {signed:?} with your secret"
            ),
        }
    }
}

/// A request as it came: what its signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST` (upper case, as signed).
    pub method: &'a str,
    /// The path as it came on the wire (`/apps/1001/events`).
    pub path: &'a str,
    /// Its query parameters.
    pub query: &'a Query,
    /// Its body (empty for a GET).
    pub body: &'a [u8],
}

/// Checks `request`'s signature against the app's `key` and `secret` at
/// Unix time `now`, allowing `tolerance` seconds either way.
pub fn verify(
    key: &str,
    secret: &str,
    request: &Request<'_>,
    now: u64,
    tolerance: u64,
) -> Result<(), Refusal> {
    let query = request.query;
    let param = |name: &'static str| query.get(name).ok_or(Refusal::Missing(name));
    if param("auth_key")? != key {
        return Err(Refusal::UnknownKey);
    }
    let version = param("auth_version")?;
    if version != AUTH_VERSION {
        return Err(Refusal::Version(version.to_owned()));
    }
    let timestamp = param("auth_timestamp")?;
    if timestamp.is_empty()
        || timestamp.len() > 19
        || !timestamp.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Refusal::BadTimestamp);
    }
    let given: u64 = timestamp.parse().map_err(|_| Refusal::BadTimestamp)?;
    if given.abs_diff(now) > tolerance {
        return Err(Refusal::Expired {
            given,
            now,
            tolerance,
        });
    }
    match query.get("body_md5") {
        Some(md5) if !md5.eq_ignore_ascii_case(&body_md5(request.body)) => {
            return Err(Refusal::BodyMd5);
        }
        None if !request.body.is_empty() => return Err(Refusal::Missing("body_md5")),
        _ => {}
    }
    let signature = param("auth_signature")?;
    let params = query.signed_part();
    let signed = string_to_sign(request.method, request.path, &params);
    if auth::verify_hex(secret, &signed, signature) {
        return Ok(());
    }
    // A client may have signed the path unescaped (its HTTP library
    // escaped it after signing).
    if let Ok(path) = unescape(request.path)
        && path != request.path
        && auth::verify_hex(
            secret,
            &string_to_sign(request.method, &path, &params),
            signature,
        )
    {
        return Ok(());
    }
    Err(Refusal::Signature { signed })
}

/// `METHOD\nPATH\nPARAMS`, the string that is signed.
pub fn string_to_sign(method: &str, path: &str, params: &str) -> String {
    format!("{method}\n{path}\n{params}")
}

/// The lower-case hex MD5 of a body (`body_md5`).
pub fn body_md5(body: &[u8]) -> String {
    let digest = Md5::digest(body);
    let mut out = String::with_capacity(32);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The query string an SDK sends for `method path` with `body` and the
/// extra `params`, signed with `key` and `secret` at `timestamp`: what the
/// tests and the fuzz target sign requests with.
pub fn sign(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    body: &[u8],
    params: &[(&str, &str)],
    timestamp: u64,
) -> String {
    let timestamp = timestamp.to_string();
    let md5 = body_md5(body);
    let mut all: Vec<(&str, &str)> = vec![
        ("auth_key", key),
        ("auth_timestamp", &timestamp),
        ("auth_version", AUTH_VERSION),
    ];
    if !body.is_empty() {
        all.push(("body_md5", &md5));
    }
    all.extend_from_slice(params);
    all.sort();
    let query = all
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let signature = auth::sign(secret, &string_to_sign(method, path, &query));
    format!("{query}&auth_signature={signature}")
}

/// Percent-decoding (`+` is kept: the SDKs never escape a space with it).
fn unescape(text: &str) -> Result<String, String> {
    if !text.contains('%') {
        return Ok(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape in `{}`", cut(text)))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{}` does not unescape to UTF-8", cut(text)))
}

/// At most 100 bytes of `text`, for error messages.
fn cut(text: &str) -> &str {
    let mut end = text.len().min(100);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";
    const BODY: &str = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;

    fn check(method: &str, path: &str, query: &str, body: &str, now: u64) -> Result<(), Refusal> {
        let query = Query::parse(query).map_err(|_| Refusal::Missing("query"))?;
        let request = Request {
            method,
            path,
            query: &query,
            body: body.as_bytes(),
        };
        verify(KEY, SECRET, &request, now, 600)
    }

    /// Pusher's worked example ("HTTP API reference", Worked authentication example).
    #[test]
    fn pusher_documented_example() {
        assert_eq!(
            body_md5(BODY.as_bytes()),
            "ec365a775a4cd0599faeb73354201b6f"
        );
        let params = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f";
        assert_eq!(
            auth::sign(SECRET, &string_to_sign("POST", "/apps/3/events", params)),
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        let query = format!(
            "{params}&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        assert_eq!(
            sign(
                KEY,
                SECRET,
                "POST",
                "/apps/3/events",
                BODY.as_bytes(),
                &[],
                1353088179
            ),
            query
        );
        check("POST", "/apps/3/events", &query, BODY, 1353088179).expect("valid");
        // In any order, keys in any case, the signature in upper case.
        let shuffled = format!(
            "AUTH_SIGNATURE=DA454824C97BA181A32CCC17A72625BA02771F50B50E1E7430E47A1F3F457E6C&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_version=1.0&Auth_Timestamp=1353088179&auth_key={KEY}"
        );
        check("POST", "/apps/3/events", &shuffled, BODY, 1353088179 + 600).expect("valid");
    }

    #[test]
    fn each_refusal() {
        let now = 1_700_000_000;
        let path = "/apps/3/channels";
        let good = sign(
            KEY,
            SECRET,
            "GET",
            path,
            b"",
            &[("info", "user_count"), ("filter_by_prefix", "presence-")],
            now,
        );
        check("GET", path, &good, "", now).expect("valid");
        let cases: Vec<(String, &str, &str, Refusal)> = vec![
            (good.replace(KEY, "other"), "GET", "", Refusal::UnknownKey),
            (
                good.replace("auth_version=1.0", "auth_version=2.0"),
                "GET",
                "",
                Refusal::Version("2.0".into()),
            ),
            (
                good.replace(&format!("auth_timestamp={now}"), "auth_timestamp=-5"),
                "GET",
                "",
                Refusal::BadTimestamp,
            ),
            (
                good.replace("presence-", "private-"),
                "GET",
                "",
                Refusal::Signature {
                    signed: String::new(),
                },
            ),
            (
                good.clone(),
                "POST",
                "",
                Refusal::Signature {
                    signed: String::new(),
                },
            ),
            (good.clone(), "GET", "{}", Refusal::Missing("body_md5")),
            (
                format!("{good}&body_md5=00000000000000000000000000000000"),
                "GET",
                "{}",
                Refusal::BodyMd5,
            ),
            (
                good.replace("auth_key=", "x="),
                "GET",
                "",
                Refusal::Missing("auth_key"),
            ),
        ];
        for (query, method, body, want) in cases {
            let got = check(method, path, &query, body, now).expect_err(&query);
            match (&got, &want) {
                (Refusal::Signature { signed }, Refusal::Signature { .. }) => {
                    assert!(
                        signed.starts_with(method) && !signed.contains("auth_signature"),
                        "{signed}"
                    );
                }
                _ => assert_eq!(got, want, "{query}"),
            }
            assert!(!got.to_string().contains(SECRET));
        }
        let stale = check("GET", path, &good, "", now + 601).unwrap_err();
        assert_eq!(
            stale,
            Refusal::Expired {
                given: now,
                now: now + 601,
                tolerance: 600
            }
        );
        assert!(stale.to_string().contains("not within 600s"), "{stale}");
        check("GET", path, &good, "", now - 600).expect("at the edge of the tolerance");
    }

    #[test]
    fn escaped_values_and_paths_are_signed_unescaped() {
        let now = 1_700_000_000;
        let signed = sign(
            KEY,
            SECRET,
            "POST",
            "/apps/3/users/a b/terminate_connections",
            b"{}",
            &[],
            now,
        );
        check(
            "POST",
            "/apps/3/users/a%20b/terminate_connections",
            &signed,
            "{}",
            now,
        )
        .expect("valid");
        let q = Query::parse("Info=user%5Fcount&a=&b").unwrap();
        assert_eq!(q.get("info"), Some("user_count"));
        assert_eq!(q.get("a"), Some(""));
        assert_eq!(q.signed_part(), "a=&b=&info=user_count");
        for bad in ["a=1&A=2", "a=%zz", "a=%ff", "a=%4"] {
            assert!(Query::parse(bad).is_err(), "{bad}");
        }
        assert!(Query::parse(&"a=1&".repeat(MAX_PARAMS + 1)).is_err());
    }
}
