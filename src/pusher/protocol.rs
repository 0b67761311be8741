//! What a Pusher client sends, parsed: a pure function over one text
//! message, so it can be unit-tested and fuzzed (`fuzz/fuzz_targets/pusher_frame.rs`).
//!
//! ```text
//! {"event":"pusher:ping","data":{}}
//! {"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"key:sig","channel_data":"{…}"}}
//! {"event":"pusher:unsubscribe","data":{"channel":"presence-a"}}
//! {"event":"pusher:signin","data":{"auth":"key:sig","user_data":"{\"id\":\"1\"}"}}
//! {"event":"client-typing","channel":"private-a","data":{…}}
//! ```
//!
//! `data` may also come as a JSON string holding the object (some clients
//! encode it twice); both are accepted. Anything else is a [`FrameError`]
//! the connection answers with `pusher:error` and survives.

use serde_json::Value;

/// `pusher:error` codes, as Pusher documents them.
pub mod codes {
    /// The app key is unknown (`/app/{key}`); the client does not reconnect.
    pub const APP_DOES_NOT_EXIST: u16 = 4001;
    /// The `protocol` query parameter is not a number.
    pub const INVALID_VERSION_FORMAT: u16 = 4006;
    /// A protocol version this server does not speak.
    pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
    /// No `protocol` query parameter.
    pub const NO_PROTOCOL_VERSION: u16 = 4008;
    /// Not authorized (a sign-in with a bad signature).
    pub const UNAUTHORIZED: u16 = 4009;
    /// Over capacity: the client reconnects after a back-off.
    pub const OVER_CAPACITY: u16 = 4100;
    /// Generic "reconnect immediately" (the server is going away).
    pub const RECONNECT: u16 = 4200;
    /// The client did not answer the server's `pusher:ping` in time.
    pub const PONG_NOT_RECEIVED: u16 = 4201;
    /// Any other error; the connection stays (malformed JSON, unknown event,
    /// an event too large, a client event not allowed).
    pub const GENERIC: u16 = 4300;
    /// A client event over `client_events_per_second`: dropped.
    pub const CLIENT_EVENT_RATE_LIMIT: u16 = 4301;
}

/// Longest event name accepted (`client-*`), in bytes.
pub const MAX_EVENT_NAME: usize = 200;

/// One message from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// `pusher:ping`: answer `pusher:pong`.
    Ping,
    /// `pusher:pong`: the answer to the server's ping.
    Pong,
    /// `pusher:subscribe`.
    Subscribe {
        /// The channel.
        channel: String,
        /// `key:signature`, for private and presence channels.
        auth: Option<String>,
        /// A presence member's `{"user_id":…,"user_info":…}`, as signed (a string).
        channel_data: Option<String>,
    },
    /// `pusher:unsubscribe`.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// `pusher:signin` (user authentication).
    Signin {
        /// `key:signature` of `<socket_id>::user::<user_data>`.
        auth: String,
        /// The user, a JSON object with a string `id`, as signed.
        user_data: String,
    },
    /// A `client-*` event on a channel.
    ClientEvent {
        /// The event name (starts with `client-`).
        event: String,
        /// The channel.
        channel: String,
        /// The data, relayed as sent.
        data: Value,
    },
}

/// Why a message was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a JSON object.
    #[error("the message is not a JSON object")]
    NotJson,
    /// No string `event`.
    #[error("the message has no \"event\"")]
    NoEvent,
    /// An event this server does not know.
    #[error("unknown event `{0}`")]
    Unknown(String),
    /// A known event with a missing or wrong field.
    #[error("{event}: {problem}")]
    BadField {
        /// The event.
        event: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

/// Parses one text message from a client.
pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
    let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(text) else {
        return Err(FrameError::NotJson);
    };
    let event = match message.get("event") {
        Some(Value::String(e)) => e.clone(),
        _ => return Err(FrameError::NoEvent),
    };
    let data = message.remove("data").unwrap_or(Value::Null);
    match event.as_str() {
        "pusher:ping" => Ok(ClientFrame::Ping),
        "pusher:pong" => Ok(ClientFrame::Pong),
        "pusher:subscribe" => {
            const E: &str = "pusher:subscribe";
            let data = object(data, E)?;
            Ok(ClientFrame::Subscribe {
                channel: string(&data, "channel", E)?.ok_or(bad(E, "no \"channel\""))?,
                auth: string(&data, "auth", E)?,
                channel_data: string(&data, "channel_data", E)?,
            })
        }
        "pusher:unsubscribe" => {
            const E: &str = "pusher:unsubscribe";
            let data = object(data, E)?;
            Ok(ClientFrame::Unsubscribe {
                channel: string(&data, "channel", E)?.ok_or(bad(E, "no \"channel\""))?,
            })
        }
        "pusher:signin" => {
            const E: &str = "pusher:signin";
            let data = object(data, E)?;
            Ok(ClientFrame::Signin {
                auth: string(&data, "auth", E)?.ok_or(bad(E, "no \"auth\""))?,
                user_data: string(&data, "user_data", E)?.ok_or(bad(E, "no \"user_data\""))?,
            })
        }
        name if name.starts_with("client-") => {
            const E: &str = "client event";
            if name.len() > MAX_EVENT_NAME {
                return Err(bad(E, "event name longer than 200 bytes"));
            }
            let channel = match message.get("channel") {
                Some(Value::String(c)) => c.clone(),
                _ => return Err(bad(E, "no \"channel\"")),
            };
            Ok(ClientFrame::ClientEvent {
                event,
                channel,
                data,
            })
        }
        _ => Err(FrameError::Unknown(truncate(&event, MAX_EVENT_NAME))),
    }
}

fn bad(event: &'static str, problem: &'static str) -> FrameError {
    FrameError::BadField { event, problem }
}

/// `data` as an object: given as one, or as a string that holds one.
fn object(data: Value, event: &'static str) -> Result<serde_json::Map<String, Value>, FrameError> {
    match data {
        Value::Object(map) => Ok(map),
        Value::String(text) => match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(bad(event, "\"data\" is not an object")),
        },
        _ => Err(bad(event, "\"data\" is not an object")),
    }
}

/// An optional string field (`null` counts as absent).
fn string(
    data: &serde_json::Map<String, Value>,
    field: &'static str,
    event: &'static str,
) -> Result<Option<String>, FrameError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(
            event,
            match field {
                "channel" => "\"channel\" is not a string",
                "auth" => "\"auth\" is not a string",
                "channel_data" => "\"channel_data\" is not a string",
                _ => "\"user_data\" is not a string",
            },
        )),
    }
}

fn truncate(text: &str, most: usize) -> String {
    let mut end = text.len().min(most);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_pusher_js_sends_is_understood() {
        assert_eq!(
            parse(r#"{"event":"pusher:ping","data":{}}"#),
            Ok(ClientFrame::Ping)
        );
        assert_eq!(parse(r#"{"event":"pusher:pong"}"#), Ok(ClientFrame::Pong));
        assert_eq!(
            parse(r#"{"event":"pusher:subscribe","data":{"channel":"room"}}"#),
            Ok(ClientFrame::Subscribe {
                channel: "room".into(),
                auth: None,
                channel_data: None
            })
        );
        assert_eq!(
            parse(
                r#"{"event":"pusher:subscribe","data":"{\"channel\":\"presence-a\",\"auth\":\"k:s\",\"channel_data\":\"{}\"}"}"#
            ),
            Ok(ClientFrame::Subscribe {
                channel: "presence-a".into(),
                auth: Some("k:s".into()),
                channel_data: Some("{}".into())
            })
        );
        assert_eq!(
            parse(r#"{"event":"pusher:unsubscribe","data":{"channel":"room"}}"#),
            Ok(ClientFrame::Unsubscribe {
                channel: "room".into()
            })
        );
        assert_eq!(
            parse(
                r#"{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\"id\":\"1\"}"}}"#
            ),
            Ok(ClientFrame::Signin {
                auth: "k:s".into(),
                user_data: r#"{"id":"1"}"#.into()
            })
        );
        assert_eq!(
            parse(r#"{"event":"client-typing","channel":"private-a","data":{"x":[1,2]}}"#),
            Ok(ClientFrame::ClientEvent {
                event: "client-typing".into(),
                channel: "private-a".into(),
                data: json!({"x": [1, 2]})
            })
        );
    }

    #[test]
    fn bad_messages_are_named_errors() {
        for text in ["", "nope", "[1]", "\"s\"", "{", "{\"event\":1}", "{}"] {
            assert!(
                matches!(parse(text), Err(FrameError::NotJson | FrameError::NoEvent)),
                "{text}"
            );
        }
        assert_eq!(
            parse(r#"{"event":"pusher:teleport"}"#),
            Err(FrameError::Unknown("pusher:teleport".into()))
        );
        for text in [
            r#"{"event":"pusher:subscribe"}"#,
            r#"{"event":"pusher:subscribe","data":{"channel":7}}"#,
            r#"{"event":"pusher:subscribe","data":"[]"}"#,
            r#"{"event":"pusher:signin","data":{"auth":"k:s"}}"#,
            r#"{"event":"client-x","data":{}}"#,
        ] {
            assert!(
                matches!(parse(text), Err(FrameError::BadField { .. })),
                "{text}"
            );
        }
        let long = format!(r#"{{"event":"{}"}}"#, "é".repeat(300));
        match parse(&long) {
            Err(FrameError::Unknown(name)) => assert!(name.len() <= MAX_EVENT_NAME),
            other => panic!("{other:?}"),
        }
    }
}
