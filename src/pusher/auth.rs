//! Pusher's signatures: a private or presence subscription carries
//! `auth = "<key>:<hex HMAC-SHA256(secret, text)>"`, signed by the app's
//! server (Laravel's `/broadcasting/auth`), where the text is
//!
//! ```text
//! <socket_id>:<channel>                    private-, private-encrypted-
//! <socket_id>:<channel>:<channel_data>     presence- (channel_data as the client sent it)
//! <socket_id>::user::<user_data>           pusher:signin
//! ```
//!
//! The signature is checked in constant time (`Mac::verify_slice`); the key
//! part must be the app's key.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::App;

type HmacSha256 = Hmac<Sha256>;

/// The text a channel subscription signs.
pub fn channel_text(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// The text a sign-in signs.
pub fn user_text(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

fn mac(secret: &str, text: &str) -> HmacSha256 {
    // HMAC takes a key of any length: this never fails.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(text.as_bytes());
    mac
}

/// Lower-case hex HMAC-SHA256 of `text` with `secret`.
///
/// ```
/// // Pusher's documented example (Authorizing users).
/// let sig = ws2fcgi::pusher::auth::sign("7ad3773142a6692b25b8", "1234.1234:private-foobar");
/// assert_eq!(sig, "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4");
/// ```
pub fn sign(secret: &str, text: &str) -> String {
    hex(&mac(secret, text).finalize().into_bytes())
}

/// The `auth` value the app's server gives a client: `key:signature`.
pub fn token(app: &App, text: &str) -> String {
    format!("{}:{}", app.key, sign(app.secret.expose(), text))
}

/// Is `auth` the app's signature of `text`? Constant time in the signature.
pub fn verify(app: &App, text: &str, auth: &str) -> bool {
    let Some((key, signature)) = auth.split_once(':') else {
        return false;
    };
    let Some(bytes) = unhex(signature) else {
        return false;
    };
    // The key is public; comparing it plainly leaks nothing.
    key == app.key && mac(app.secret.expose(), text).verify_slice(&bytes).is_ok()
}

/// Is `signature` (64 hex digits, either case) the HMAC-SHA256 of `text`
/// with `secret`? Constant time in the signature; an HTTP API request's
/// `auth_signature` is checked with it (see `api_signature.rs`).
pub fn verify_hex(secret: &str, text: &str, signature: &str) -> bool {
    unhex(signature).is_some_and(|bytes| mac(secret, text).verify_slice(&bytes).is_ok())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Hex (either case) to bytes; `None` unless 64 hex digits (a SHA-256).
fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> App {
        App {
            id: "1".into(),
            key: "278d425bdf160c739803".into(),
            secret: serde_json::from_str("\"7ad3773142a6692b25b8\"").unwrap(),
            auth: Default::default(),
            script: None,
        }
    }

    #[test]
    fn pusher_documented_signatures() {
        let app = app();
        let text = channel_text("1234.1234", "private-foobar", None);
        let auth = token(&app, &text);
        assert_eq!(
            auth,
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert!(verify(&app, &text, &auth));
        assert!(verify(
            &app,
            &text,
            &auth
                .to_uppercase()
                .replacen("278D425BDF160C739803", "278d425bdf160c739803", 1)
        ));
        // Presence: channel_data is part of what is signed (the value is
        // PHP's hash_hmac('sha256', …), as Laravel's auth endpoint computes it).
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let text = channel_text("1234.1234", "presence-foobar", Some(data));
        assert_eq!(
            sign("7ad3773142a6692b25b8", &text),
            "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
        );
    }

    #[test]
    fn forged_or_malformed_auth_is_refused() {
        let app = app();
        let text = channel_text("1.2", "private-a", None);
        let good = token(&app, &text);
        let (_, sig) = good.split_once(':').unwrap();
        for bad in [
            String::new(),
            sig.to_string(),
            format!("other-key:{sig}"),
            format!("{}:{}", app.key, &sig[..63]),
            format!("{}:{}0", app.key, sig),
            format!(
                "{}:{}",
                app.key,
                sig.replacen(&sig[..1], if &sig[..1] == "0" { "1" } else { "0" }, 1)
            ),
            token(&app, &channel_text("1.3", "private-a", None)),
            format!("{}:{}", app.key, "zz".repeat(32)),
        ] {
            assert!(!verify(&app, &text, &bad), "{bad}");
        }
        assert_eq!(user_text("1.2", "{}"), "1.2::user::{}");
    }
}
