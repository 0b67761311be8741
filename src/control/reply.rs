//! A control request's reply, and its bytes on the wire.
//!
//! Most requests a busy publisher sends are `publish` and `send`, whose
//! replies have one shape; those are written straight into the connection's
//! output buffer, with no `serde_json::Value` (a map, its keys and a string
//! each) built per request. Every other reply is JSON built as before. The
//! bytes are the same either way (`serde_json` with `preserve_order`: keys
//! in the order written):
//!
//! ```text
//! {"ok":true,"delivered":3}
//! {"ok":true,"delivered":3,"offset":17,"epoch":"0a1b…"}
//! {"ok":false,"error":"…"}          and every other reply: a JSON object
//! ```

use serde_json::{Value, json};

use crate::v1::Position;

/// What a control request answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `publish` (to a channel without history) and `send`: how many
    /// connections the message was queued to.
    Delivered(u64),
    /// `publish` to a channel with history: also the publication's place.
    Published {
        /// Connections the message was queued to.
        delivered: u64,
        /// Its offset and epoch in the channel's history.
        position: Position,
    },
    /// Any other reply, refusals included.
    Json(Value),
}

impl Reply {
    /// Did the request succeed (`"ok":true`)?
    pub fn is_ok(&self) -> bool {
        match self {
            Self::Delivered(_) | Self::Published { .. } => true,
            Self::Json(value) => value.get("ok").and_then(Value::as_bool).unwrap_or(false),
        }
    }

    /// The reply's `delivered` count (0 when it has none).
    pub fn delivered(&self) -> u64 {
        match self {
            Self::Delivered(delivered) | Self::Published { delivered, .. } => *delivered,
            Self::Json(value) => value.get("delivered").and_then(Value::as_u64).unwrap_or(0),
        }
    }

    /// Appends the reply as one JSON line (with its newline) to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        match self {
            Self::Delivered(delivered) => {
                out.extend_from_slice(b"{\"ok\":true,\"delivered\":");
                push_u64(out, *delivered);
                out.push(b'}');
            }
            Self::Published {
                delivered,
                position,
            } => {
                out.extend_from_slice(b"{\"ok\":true,\"delivered\":");
                push_u64(out, *delivered);
                out.extend_from_slice(b",\"offset\":");
                push_u64(out, position.offset);
                out.extend_from_slice(b",\"epoch\":");
                push_json(out, &*position.epoch);
                out.push(b'}');
            }
            Self::Json(value) => push_json(out, value),
        }
        out.push(b'\n');
    }

    /// The reply as a JSON value (the HTTP endpoint's body).
    pub fn into_value(self) -> Value {
        match self {
            Self::Delivered(delivered) => json!({"ok": true, "delivered": delivered}),
            Self::Published {
                delivered,
                position,
            } => json!({
                "ok": true,
                "delivered": delivered,
                "offset": position.offset,
                "epoch": &*position.epoch,
            }),
            Self::Json(value) => value,
        }
    }
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    // Decimal digits, as serde_json writes an integer.
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn push_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Serializing a string or a `Value` into a Vec cannot fail (no map has
    // non-string keys); were it to, the line still parses as a refusal.
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"{\"ok\":false}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes `serde_json` writes for the reply's value, as before.
    fn as_before(reply: &Reply) -> Vec<u8> {
        let mut line = serde_json::to_vec(&reply.clone().into_value()).unwrap();
        line.push(b'\n');
        line
    }

    #[test]
    fn the_written_line_is_the_json_of_the_reply() {
        let epochs = ["0a1b2c", "with \"quotes\", \\, \u{1} and é", ""];
        let mut replies = vec![
            Reply::Json(json!({"ok": false, "error": "bad \"line\"\n"})),
            Reply::Json(json!({"ok": true, "found": false})),
        ];
        for delivered in [0, 1, 9, 10, 70_000, u64::MAX] {
            replies.push(Reply::Delivered(delivered));
            for (offset, epoch) in [0, 1, 12_345, u64::MAX]
                .into_iter()
                .zip(epochs.iter().cycle())
            {
                replies.push(Reply::Published {
                    delivered,
                    position: Position {
                        offset,
                        epoch: (*epoch).into(),
                    },
                });
            }
        }
        for reply in &replies {
            let mut line = Vec::new();
            reply.write_line(&mut line);
            assert_eq!(
                String::from_utf8_lossy(&line),
                String::from_utf8_lossy(&as_before(reply)),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn ok_and_delivered_read_every_shape() {
        assert!(Reply::Delivered(0).is_ok());
        assert_eq!(Reply::Delivered(70_000).delivered(), 70_000);
        let published = Reply::Published {
            delivered: 3,
            position: Position {
                offset: 1,
                epoch: "e".into(),
            },
        };
        assert!(published.is_ok());
        assert_eq!(published.delivered(), 3);
        let refused = Reply::Json(json!({"ok": false, "error": "x"}));
        assert!(!refused.is_ok());
        assert_eq!(refused.delivered(), 0);
        let closed = Reply::Json(json!({"ok": true, "closed": true}));
        assert!(closed.is_ok());
        assert_eq!(closed.delivered(), 0);
    }
}
