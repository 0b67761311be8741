//! The JSON frames a Pusher server sends, as the protocol writes them:
//!
//! ```text
//! {"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}
//! {"event":"my-event","channel":"room","data":"<JSON string, as published>"}
//! {"event":"client-typing","channel":"presence-room","data":"…","user_id":"42"}
//! {"event":"pusher:error","data":{"code":4301,"message":"…"}}
//! ```
//!
//! `data` of events is a string: what was published, passed through as
//! the publisher encoded it (pusher-js parses it as JSON when it can).
//! Each function returns the frame's text; an event for a channel is sent
//! through the hub (one encoding shared by every member), the others are
//! for one connection ([`text`] makes the WebSocket frame).

use bytes::Bytes;
use serde_json::{Value, json};

use crate::frame::Kind;

/// A text WebSocket frame of `json`, for one connection's outbox.
pub fn text(json: &str) -> Bytes {
    crate::frame::data(Kind::Text, json.as_bytes())
}

/// An event on a channel. `data` is sent as a JSON string; `user_id` is
/// added for client events on presence channels.
///
/// ```
/// let f = ws2fcgi::pusher::frame::event("e", Some("c"), r#"{"a":1}"#, None);
/// assert_eq!(f, r#"{"event":"e","channel":"c","data":"{\"a\":1}"}"#);
/// ```
pub fn event(event: &str, channel: Option<&str>, data: &str, user_id: Option<&str>) -> String {
    let mut object = serde_json::Map::with_capacity(4);
    object.insert("event".into(), Value::from(event));
    if let Some(channel) = channel {
        object.insert("channel".into(), Value::from(channel));
    }
    object.insert("data".into(), Value::from(data));
    if let Some(user_id) = user_id {
        object.insert("user_id".into(), Value::from(user_id));
    }
    Value::Object(object).to_string()
}

/// A client event, relayed: `data` is the JSON the client sent (encoded
/// again, so valid JSON), not a string; `user_id` on presence channels.
pub fn client_event(event: &str, channel: &str, data_json: &str, user_id: Option<&str>) -> String {
    let quote = |s: &str| Value::from(s).to_string();
    let mut text = format!(
        "{{\"event\":{},\"channel\":{},\"data\":{data_json}",
        quote(event),
        quote(channel)
    );
    if let Some(user_id) = user_id {
        text.push_str(",\"user_id\":");
        text.push_str(&quote(user_id));
    }
    text.push('}');
    text
}

/// An event whose data is a JSON value, sent as its encoding (a string).
fn internal(event_name: &str, channel: Option<&str>, data: &Value) -> String {
    event(event_name, channel, &data.to_string(), None)
}

/// `pusher:connection_established`.
pub fn connection_established(socket_id: &str, activity_timeout_secs: u64) -> String {
    internal(
        "pusher:connection_established",
        None,
        &json!({"socket_id": socket_id, "activity_timeout": activity_timeout_secs}),
    )
}

/// `pusher:error`; `code` is one of [`codes`](super::protocol) or none.
pub fn error(code: Option<u16>, message: &str) -> String {
    json!({"event": "pusher:error", "data": {"code": code, "message": message}}).to_string()
}

/// `pusher:ping` (the server's, after `activity_timeout` of silence).
pub fn ping() -> String {
    json!({"event": "pusher:ping", "data": {}}).to_string()
}

/// `pusher:pong`, the answer to a client's `pusher:ping`.
pub fn pong() -> String {
    json!({"event": "pusher:pong", "data": {}}).to_string()
}

/// `pusher_internal:subscription_succeeded` of a channel without members.
pub fn subscription_succeeded(channel: &str) -> String {
    event(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        "{}",
        None,
    )
}

/// `pusher_internal:subscription_succeeded` of a presence channel:
/// `{"presence":{"ids":[…],"hash":{id: info},"count":N}}`.
pub fn presence_succeeded<'a>(
    channel: &str,
    members: impl Iterator<Item = (&'a str, &'a Value)>,
) -> String {
    let mut ids = Vec::new();
    let mut hash = serde_json::Map::new();
    for (id, info) in members {
        ids.push(Value::from(id));
        hash.insert(id.to_owned(), info.clone());
    }
    let count = ids.len();
    internal(
        "pusher_internal:subscription_succeeded",
        Some(channel),
        &json!({"presence": {"ids": ids, "hash": hash, "count": count}}),
    )
}

/// `pusher:subscription_error`: `type` (`AuthError`, `LimitReached`, …),
/// the reason, and an HTTP-like `status` (401 for a bad signature).
pub fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> String {
    internal(
        "pusher:subscription_error",
        Some(channel),
        &json!({"type": kind, "error": error, "status": status}),
    )
}

/// `pusher:cache_miss`: a cache channel had no event to replay.
pub fn cache_miss(channel: &str) -> String {
    event("pusher:cache_miss", Some(channel), "{}", None)
}

/// `pusher_internal:member_added`.
pub fn member_added(channel: &str, user_id: &str, user_info: &Value) -> String {
    internal(
        "pusher_internal:member_added",
        Some(channel),
        &json!({"user_id": user_id, "user_info": user_info}),
    )
}

/// `pusher_internal:member_removed`.
pub fn member_removed(channel: &str, user_id: &str) -> String {
    internal(
        "pusher_internal:member_removed",
        Some(channel),
        &json!({"user_id": user_id}),
    )
}

/// `pusher:signin_success`, with the `user_data` the client signed in with.
pub fn signin_success(user_data: &str) -> String {
    internal(
        "pusher:signin_success",
        None,
        &json!({"user_data": user_data}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("JSON")
    }

    #[test]
    fn frames_are_what_pusher_js_reads() {
        let f = parse(&connection_established("1.2", 120));
        assert_eq!(f["event"], "pusher:connection_established");
        assert_eq!(
            parse(f["data"].as_str().unwrap()),
            json!({"socket_id": "1.2", "activity_timeout": 120})
        );
        let f = parse(&event(
            "client-x",
            Some("presence-a"),
            "\"q\\\"\"",
            Some("7"),
        ));
        assert_eq!(f["data"], "\"q\\\"\"");
        assert_eq!(f["user_id"], "7");
        let f = parse(&client_event(
            "client-x",
            "private-a",
            r#"{"a":[1]}"#,
            Some("u\"1"),
        ));
        assert_eq!(f["data"], json!({"a": [1]}));
        assert_eq!(f["user_id"], "u\"1");
        let f = parse(&error(Some(4301), "slow down"));
        assert_eq!(f["data"]["code"], 4301);
        let info = json!({"name": "A"});
        let f = parse(&presence_succeeded(
            "presence-a",
            [("1", &info), ("2", &Value::Null)].into_iter(),
        ));
        let data = parse(f["data"].as_str().unwrap());
        assert_eq!(data["presence"]["count"], 2);
        assert_eq!(data["presence"]["ids"], json!(["1", "2"]));
        assert_eq!(data["presence"]["hash"]["1"]["name"], "A");
        let f = parse(&subscription_error("private-a", "AuthError", "bad", 401));
        assert_eq!(parse(f["data"].as_str().unwrap())["status"], 401);
    }
}
