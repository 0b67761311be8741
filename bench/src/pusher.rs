//! Pusher Channels clients: the app a run uses, a client's path, joining a
//! channel, and reading a payload back out of an event's frame.
//!
//! A Pusher client connects to `/app/{key}?protocol=7&…`, waits for
//! `pusher:connection_established` (its `socket_id`), subscribes, and waits
//! for `pusher_internal:subscription_succeeded`. Private and presence
//! channels are authorized here, with the app's secret, as an app's auth
//! endpoint would (`key:HMAC-SHA256(secret, socket_id:channel[:channel_data])`,
//! `ws2fcgi::pusher::auth`):
//!
//! ```text
//! ← {"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",…}"}
//! → {"event":"pusher:subscribe","data":{"channel":"bench","auth":"…","channel_data":"…"}}
//! ← {"event":"pusher_internal:subscription_succeeded","channel":"bench","data":"…"}
//! ← {"event":"bench","channel":"bench","data":"t=…;s=0;q=17;the room is…"}
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Serialize, Serializer};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use ws2fcgi::pusher::auth;

use crate::stats::ErrorTally;
use crate::target::Ws;

/// The event name every published or relayed bench message carries.
pub const EVENT: &str = "bench";

/// The client event the `client-events` mode relays.
pub const CLIENT_EVENT: &str = "client-bench";

/// A Pusher app as configured in the daemon (`[[pusher.app]]`), given as
/// `ID:KEY:SECRET`. Serialized without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PusherApp {
    /// `id`, in the HTTP API's paths.
    pub id: String,
    /// `key`, in the client's path and the API's `auth_key`.
    pub key: String,
    /// `secret`, which signs subscriptions and API requests.
    pub secret: String,
}

impl FromStr for PusherApp {
    type Err = String;

    /// ```
    /// use ws2fcgi_bench::pusher::PusherApp;
    /// let app: PusherApp = "1001:app-key:s:e:c".parse().unwrap();
    /// assert_eq!((app.id.as_str(), app.key.as_str(), app.secret.as_str()), ("1001", "app-key", "s:e:c"));
    /// assert!("1001:app-key".parse::<PusherApp>().is_err());
    /// ```
    fn from_str(text: &str) -> Result<Self, String> {
        let mut parts = text.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(id), Some(key), Some(secret))
                if !id.is_empty() && !key.is_empty() && !secret.is_empty() =>
            {
                Ok(Self {
                    id: id.into(),
                    key: key.into(),
                    secret: secret.into(),
                })
            }
            _ => Err(format!("`{text}` is not ID:KEY:SECRET")),
        }
    }
}

impl Serialize for PusherApp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        json!({"id": self.id, "key": self.key}).serialize(s)
    }
}

/// A client's path and query for `app` (what pusher-js asks for, but for `client`).
pub fn client_path(app: &PusherApp) -> String {
    format!(
        "/app/{}?protocol=7&client=ws2fcgi-bench&version={}",
        app.key,
        env!("CARGO_PKG_VERSION")
    )
}

/// Why a connection did not join its channel; its `Display` is the tally key.
#[derive(Debug)]
pub enum JoinError {
    /// The server sent `pusher:error` (its code) or `pusher:subscription_error`.
    Refused(String),
    /// The connection ended or failed before joining.
    Ended(String),
    /// A frame that is not what the protocol says comes next.
    Unexpected(String),
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(why) => write!(f, "join refused: {why}"),
            Self::Ended(why) => write!(f, "join: {why}"),
            Self::Unexpected(what) => write!(f, "join: unexpected {what}"),
        }
    }
}

/// A presence member's identity (`channel_data`).
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// `user_id`.
    pub user_id: &'a str,
}

/// Waits for `connection_established`, subscribes to `channel` (authorized
/// when it is private or presence; `member` for presence) and waits until
/// it succeeded. Returns the `socket_id`. The caller bounds the time.
pub async fn join(
    ws: &mut Ws,
    app: &PusherApp,
    channel: &str,
    member: Option<Member<'_>>,
) -> Result<String, JoinError> {
    let established = next_event(ws).await?;
    if established.event != "pusher:connection_established" {
        return Err(unexpected(&established));
    }
    let socket_id = established
        .data_json()
        .and_then(|d| d.get("socket_id")?.as_str().map(str::to_owned))
        .ok_or_else(|| JoinError::Unexpected("connection_established without socket_id".into()))?;
    ws.send(Message::text(subscribe(app, &socket_id, channel, member)))
        .await
        .map_err(|e| JoinError::Ended(format!("send: {e}")))?;
    loop {
        let event = next_event(ws).await?;
        match event.event.as_str() {
            "pusher_internal:subscription_succeeded" => return Ok(socket_id),
            "pusher:subscription_error" | "pusher:error" => {
                return Err(JoinError::Refused(event.data.to_string()));
            }
            // A cache channel's replay, or a member joining meanwhile.
            _ => {}
        }
    }
}

/// Joins every connection to `channel` ([`join`]), at most `concurrency` at
/// a time, each within `timeout`; returns the joined ones and why the
/// others did not join.
pub async fn join_all(
    conns: Vec<Ws>,
    app: &Arc<PusherApp>,
    channel: &Arc<str>,
    concurrency: u32,
    timeout: Duration,
) -> (Vec<Ws>, ErrorTally) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1) as usize));
    let mut tasks = JoinSet::new();
    for mut ws in conns {
        let (app, channel, permits) = (Arc::clone(app), Arc::clone(channel), Arc::clone(&permits));
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            match tokio::time::timeout(timeout, join(&mut ws, &app, &channel, None)).await {
                Ok(Ok(_)) => Ok(ws),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("join timeout".to_string()),
            }
        });
    }
    let (mut joined, mut errors) = (Vec::with_capacity(tasks.len()), ErrorTally::default());
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(ws)) => joined.push(ws),
            Ok(Err(e)) => errors.add(e),
            Err(e) => errors.add(format!("task: {e}")),
        }
    }
    (joined, errors)
}

/// The `pusher:subscribe` frame for `channel`, signed when it needs it.
pub fn subscribe(
    app: &PusherApp,
    socket_id: &str,
    channel: &str,
    member: Option<Member<'_>>,
) -> String {
    let presence = channel.starts_with("presence-");
    let channel_data =
        (presence).then(|| json!({"user_id": member.map_or("", |m| m.user_id)}).to_string());
    let mut data = json!({ "channel": channel });
    if presence || channel.starts_with("private-") {
        let text = auth::channel_text(socket_id, channel, channel_data.as_deref());
        data["auth"] = Value::from(format!("{}:{}", app.key, auth::sign(&app.secret, &text)));
    }
    if let Some(channel_data) = channel_data {
        data["channel_data"] = Value::from(channel_data);
    }
    json!({"event": "pusher:subscribe", "data": data}).to_string()
}

/// A client event on `channel` whose data is the string `payload`.
pub fn client_event(channel: &str, payload: &str) -> String {
    json!({"event": CLIENT_EVENT, "channel": channel, "data": payload}).to_string()
}

/// The payload of a bench event's frame: its string `data`, up to the first
/// quote (bench payloads have no quote and no escape), without a JSON
/// parse per delivery. `None` for a frame with no string `data` (pings,
/// errors, internal events with object data).
///
/// ```
/// use ws2fcgi_bench::pusher::payload;
/// assert_eq!(payload(r#"{"event":"bench","channel":"b","data":"t=1;s=0;q=2;ok"}"#), Some("t=1;s=0;q=2;ok"));
/// assert_eq!(payload(r#"{"event":"pusher:error","data":{"code":4301}}"#), None);
/// ```
pub fn payload(frame: &str) -> Option<&str> {
    let (_, rest) = frame.split_once(r#","data":""#)?;
    rest.split_once('"').map(|(data, _)| data)
}

/// One frame from the server, read as JSON.
struct Event {
    event: String,
    data: Value,
}

impl Event {
    /// `data` when it is a JSON string holding JSON, as the protocol's own events carry it.
    fn data_json(&self) -> Option<Value> {
        serde_json::from_str(self.data.as_str()?).ok()
    }
}

fn unexpected(event: &Event) -> JoinError {
    JoinError::Unexpected(format!("event `{}`", event.event))
}

async fn next_event(ws: &mut Ws) -> Result<Event, JoinError> {
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                return Err(JoinError::Ended(format!("closed by the server ({code})")));
            }
            Some(Ok(Message::Binary(_))) => {
                return Err(JoinError::Unexpected("binary frame".into()));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(JoinError::Ended(format!("read: {e}"))),
            None => return Err(JoinError::Ended("connection ended".into())),
        };
        let value: Value = serde_json::from_str(&text)
            .map_err(|_| JoinError::Unexpected("frame that is not JSON".into()))?;
        let event = value
            .get("event")
            .and_then(Value::as_str)
            .ok_or_else(|| JoinError::Unexpected("frame without event".into()))?;
        if event == "pusher:error" {
            return Err(JoinError::Refused(value["data"].to_string()));
        }
        return Ok(Event {
            event: event.to_owned(),
            data: value.get("data").cloned().unwrap_or(Value::Null),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> PusherApp {
        // Pusher's documented example (Authorizing users): key, secret, socket id.
        "1:278d425bdf160c739803:7ad3773142a6692b25b8"
            .parse()
            .unwrap()
    }

    #[test]
    fn private_subscriptions_are_signed_as_pusher_documents() {
        let frame: Value =
            serde_json::from_str(&subscribe(&app(), "1234.1234", "private-foobar", None)).unwrap();
        assert_eq!(
            frame["data"]["auth"],
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert!(frame["data"].get("channel_data").is_none());
    }

    #[test]
    fn presence_subscriptions_carry_channel_data() {
        let member = Some(Member { user_id: "u7" });
        let frame: Value =
            serde_json::from_str(&subscribe(&app(), "1.2", "presence-room", member)).unwrap();
        let data = frame["data"]["channel_data"].as_str().unwrap();
        assert_eq!(data, r#"{"user_id":"u7"}"#);
        let signed = auth::sign(&app().secret, &format!("1.2:presence-room:{data}"));
        assert_eq!(
            frame["data"]["auth"],
            format!("278d425bdf160c739803:{signed}")
        );
        let public: Value = serde_json::from_str(&subscribe(&app(), "1.2", "bench", None)).unwrap();
        assert!(public["data"].get("auth").is_none());
    }

    #[test]
    fn payloads_of_server_and_client_events() {
        let server = ws2fcgi::pusher::frame::event(EVENT, Some("bench"), "t=5;s=1;q=9;x y", None);
        assert_eq!(payload(&server), Some("t=5;s=1;q=9;x y"));
        let relayed = ws2fcgi::pusher::frame::client_event(
            CLIENT_EVENT,
            "presence-r",
            &Value::from("t=5;s=0;q=1;").to_string(),
            Some("u1"),
        );
        assert_eq!(payload(&relayed), Some("t=5;s=0;q=1;"));
        let sent: Value = serde_json::from_str(&client_event("private-x", "t=1;s=0;q=0;")).unwrap();
        assert_eq!(sent["data"], "t=1;s=0;q=0;");
    }

    #[test]
    fn the_secret_is_not_serialized() {
        let text = serde_json::to_string(&app()).unwrap();
        assert!(!text.contains("7ad377"), "{text}");
    }
}
