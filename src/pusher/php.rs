//! Events to PHP for a Pusher app with a `script`: the FastCGI requests a
//! Pusher connection's life and its channels make, their CGI variables, and
//! the one answer that is parsed (a presence member from PHP). See
//! `docs/protocol.md` ("Pusher events") for the contract.
//!
//! ```text
//! WS_EVENT          when                                    PHP's 2xx          body sent
//! open              the handshake, before the upgrade       accepts            -
//! subscribe         private-/presence- with auth = "php"    accepts            the client's channel_data
//! client_event      a client-* event, before it is relayed  relays it          the event's data
//! close             the connection ended                    -                  -
//! member_added      a user's first connection in presence   -                  -
//! member_removed    a user's last connection left           -                  -
//! channel_occupied  a channel's first subscriber            -                  -
//! channel_vacated   its last one left                       -                  -
//! ```
//!
//! A connection's events carry the handshake's variables (cookies, `HTTP_*`,
//! `REQUEST_URI`, `REMOTE_ADDR`…, as the raw contract's) plus
//! `WS_PUSHER_APP_ID` and `WS_PUSHER_SOCKET_ID`, fixed at the handshake
//! ([`connection_env`]); each event adds its own ([`event_vars`]). A
//! channel's events (the last four, Pusher's webhooks) belong to no
//! connection: [`channel_event_env`].

use std::path::Path;

use serde_json::Value;

use super::App;
use super::state::Change;
use crate::context::Context;
use crate::contract as c;
use crate::event::{ConnEnv, push_meta};
use crate::fcgi::push_param;
use crate::hub::ConnHandle;
use crate::php::{EventError, Request, VARS_CAPACITY, push_conn_vars, send_retrying};
use crate::response::PhpResponse;

/// An event of one Pusher connection, as PHP is told it.
#[derive(Debug, Clone, Copy)]
pub enum ConnEvent<'a> {
    /// The handshake: PHP's 2xx lets the connection be established.
    Open,
    /// A subscription PHP authorizes (`auth = "php"`).
    Subscribe {
        /// The channel.
        channel: &'a str,
        /// The `channel_data` the client sent (presence), as is: the client
        /// wrote it, so PHP's answer, not this, names the member.
        channel_data: Option<&'a str>,
    },
    /// A client event PHP sees before it is relayed.
    ClientEvent {
        /// The channel.
        channel: &'a str,
        /// The event name (`client-…`).
        event: &'a str,
        /// The data, JSON as the client sent it.
        data: &'a str,
    },
    /// The connection ended.
    Close {
        /// The close code (see `docs/pusher.md`).
        code: u16,
        /// The close reason, possibly empty.
        reason: &'a str,
    },
}

impl ConnEvent<'_> {
    /// `WS_EVENT`'s value.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Open => c::EVENT_OPEN,
            Self::Subscribe { .. } => c::EVENT_SUBSCRIBE,
            Self::ClientEvent { .. } => c::EVENT_CLIENT_EVENT,
            Self::Close { .. } => c::EVENT_CLOSE,
        }
    }

    /// The request body.
    pub fn body(&self) -> &[u8] {
        match self {
            Self::Subscribe { channel_data, .. } => channel_data.unwrap_or("").as_bytes(),
            Self::ClientEvent { data, .. } => data.as_bytes(),
            Self::Open | Self::Close { .. } => b"",
        }
    }
}

/// Adds the Pusher connection's fixed variables to the raw contract's
/// (`event::connection_env`): `WS_PUSHER_APP_ID`, `WS_PUSHER_SOCKET_ID`.
pub fn connection_env(mut env: ConnEnv, app_id: &str, socket_id: &str) -> ConnEnv {
    env.own = env.own.extended(|own| {
        own.var(c::VAR_PUSHER_APP_ID.as_bytes(), app_id.as_bytes());
        own.var(c::VAR_PUSHER_SOCKET_ID.as_bytes(), socket_id.as_bytes());
    });
    env
}

/// Appends the variables of one connection event to `out` (after the
/// connection's own); `user_id` is `WS_PUSHER_USER_ID` (the presence member on its
/// channel, else the signed-in user).
pub fn event_vars(
    event: &ConnEvent<'_>,
    user_id: Option<&str>,
    handle: &ConnHandle,
    out: &mut Vec<u8>,
) {
    let mut p = |name: &str, value: &[u8]| push_param(out, name.as_bytes(), value);
    p(c::VAR_EVENT, event.name().as_bytes());
    match event {
        ConnEvent::Open | ConnEvent::Close { .. } => {
            p("REQUEST_METHOD", b"GET");
            p("CONTENT_LENGTH", b"0");
        }
        ConnEvent::Subscribe { .. } | ConnEvent::ClientEvent { .. } => {
            p("REQUEST_METHOD", b"POST");
            p("CONTENT_TYPE", c::CONTENT_TYPE_JSON.as_bytes());
            p("CONTENT_LENGTH", event.body().len().to_string().as_bytes());
        }
    }
    match event {
        ConnEvent::Open => {}
        ConnEvent::Subscribe { channel, .. } => p(c::VAR_PUSHER_CHANNEL, channel.as_bytes()),
        ConnEvent::ClientEvent { channel, event, .. } => {
            p(c::VAR_PUSHER_CHANNEL, channel.as_bytes());
            p(c::VAR_PUSHER_EVENT, event.as_bytes());
        }
        ConnEvent::Close { code, reason } => {
            p(c::VAR_CLOSE_CODE, code.to_string().as_bytes());
            p(c::VAR_CLOSE_REASON, reason.as_bytes());
        }
    }
    if let Some(user_id) = user_id {
        p(c::VAR_PUSHER_USER_ID, user_id.as_bytes());
    }
    push_meta(handle, out);
}

/// Sends a connection's event to PHP, retrying while PHP-FPM cannot take
/// it (within `fpm.retry_window`, as the raw contract's message events).
pub async fn ask(
    ctx: &Context,
    handle: &ConnHandle,
    env: &ConnEnv,
    event: ConnEvent<'_>,
    user_id: Option<&str>,
) -> Result<PhpResponse, EventError> {
    let mut vars = Vec::with_capacity(VARS_CAPACITY);
    push_conn_vars(ctx, handle, env, &mut vars);
    event_vars(&event, user_id, handle, &mut vars);
    let request = Request {
        event: event.name(),
        conn: Some(&handle.id),
        params: [&env.shared, &vars],
        body: event.body(),
    };
    send_retrying(ctx, &request).await
}

/// `WS_EVENT` of a channel's change.
pub fn change_name(change: &Change) -> &'static str {
    match change {
        Change::Occupied => c::EVENT_CHANNEL_OCCUPIED,
        Change::Vacated => c::EVENT_CHANNEL_VACATED,
        Change::MemberAdded { .. } => c::EVENT_MEMBER_ADDED,
        Change::MemberRemoved { .. } => c::EVENT_MEMBER_REMOVED,
    }
}

/// The whole environment of a channel's event (Pusher's webhooks): no
/// connection, so no handshake variables; the app's script.
pub fn channel_event_env(
    app: &App,
    script: &Path,
    document_root: Option<&Path>,
    control_socket: Option<&Path>,
    channel: &str,
    change: &Change,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(384);
    let mut p = |name: &str, value: &[u8]| push_param(&mut out, name.as_bytes(), value);
    let root = document_root
        .or_else(|| script.parent())
        .unwrap_or(Path::new("/"));
    p("GATEWAY_INTERFACE", b"CGI/1.1");
    p("SERVER_SOFTWARE", c::SERVER_SOFTWARE.as_bytes());
    p("SCRIPT_FILENAME", script.as_os_str().as_encoded_bytes());
    p("DOCUMENT_ROOT", root.as_os_str().as_encoded_bytes());
    p("REQUEST_METHOD", b"GET");
    p("CONTENT_LENGTH", b"0");
    p(c::VAR_EVENT, change_name(change).as_bytes());
    p(c::VAR_PUSHER_APP_ID, app.id.as_bytes());
    p(c::VAR_PUSHER_CHANNEL, channel.as_bytes());
    if let Change::MemberAdded { user_id } | Change::MemberRemoved { user_id } = change {
        p(c::VAR_PUSHER_USER_ID, user_id.as_bytes());
    }
    if let Some(control) = control_socket {
        p(
            c::VAR_CONTROL_SOCKET,
            control.as_os_str().as_encoded_bytes(),
        );
    }
    out
}

/// Why PHP's answer to a presence subscription names no member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// The body is not a JSON object.
    #[error("the answer is not a JSON object {{\"user_id\":…,\"user_info\":{{…}}}}")]
    NotAnObject,
    /// No `user_id`, or one that is neither a string nor a number.
    #[error("the answer has no user_id (a string or a number)")]
    NoUserId,
    /// A `user_id` that is empty, too long or holds control characters.
    #[error("the answer's user_id is unusable: {0}")]
    BadUserId(String),
}

/// The member PHP's 2xx answer to a presence subscription names: a JSON
/// object with `user_id` (a string or a number) and optional `user_info`
/// (any JSON; `null` when absent). Pure, fuzzed (`fuzz/fuzz_targets/pusher_member.rs`).
///
/// ```
/// use ws2fcgi::pusher::php::presence_member;
/// let (id, info) = presence_member(br#"{"user_id":42,"user_info":{"name":"Ada"}}"#).unwrap();
/// assert_eq!((id.as_str(), info["name"].as_str()), ("42", Some("Ada")));
/// assert!(presence_member(b"42").is_err());
/// ```
pub fn presence_member(body: &[u8]) -> Result<(String, Value), MemberError> {
    let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(body) else {
        return Err(MemberError::NotAnObject);
    };
    let id = match answer.get("user_id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(MemberError::NoUserId),
    };
    super::check_user_id(&id).map_err(MemberError::BadUserId)?;
    let info = answer.remove("user_info").unwrap_or(Value::Null);
    Ok((id, info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;

    use crate::fcgi::decode_params as decode;

    fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn presence_answers_are_read_or_refused_with_a_reason() {
        assert_eq!(
            presence_member(br#"{"user_id":"u1","user_info":{"n":1}}"#).unwrap(),
            ("u1".into(), serde_json::json!({"n": 1}))
        );
        assert_eq!(
            presence_member(br#"{"user_id":7}"#).unwrap(),
            ("7".into(), Value::Null)
        );
        let refused = [
            (&b""[..], MemberError::NotAnObject),
            (b"not json", MemberError::NotAnObject),
            (b"[1]", MemberError::NotAnObject),
            (br#"{"id":"u"}"#, MemberError::NoUserId),
            (br#"{"user_id":true}"#, MemberError::NoUserId),
        ];
        for (body, error) in refused {
            assert_eq!(presence_member(body), Err(error), "{body:?}");
        }
        assert!(matches!(
            presence_member(br#"{"user_id":""}"#),
            Err(MemberError::BadUserId(_))
        ));
        let long = format!(
            r#"{{"user_id":"{}"}}"#,
            "x".repeat(super::super::MAX_USER_ID + 1)
        );
        assert!(matches!(
            presence_member(long.as_bytes()),
            Err(MemberError::BadUserId(_))
        ));
    }

    #[test]
    fn connection_events_carry_their_variables() {
        let hub = Hub::default();
        let handle = hub.register(1024);
        handle
            .update_meta(&[("user".into(), Some("ada".into()))])
            .unwrap();
        let mut out = Vec::new();
        let event = ConnEvent::ClientEvent {
            channel: "private-a",
            event: "client-typing",
            data: r#"{"x":1}"#,
        };
        event_vars(&event, Some("u1"), &handle, &mut out);
        let env = decode(&out);
        assert_eq!(get(&env, "WS_EVENT"), Some("client_event"));
        assert_eq!(get(&env, "REQUEST_METHOD"), Some("POST"));
        assert_eq!(get(&env, "CONTENT_TYPE"), Some("application/json"));
        assert_eq!(get(&env, "CONTENT_LENGTH"), Some("7"));
        assert_eq!(get(&env, "WS_PUSHER_CHANNEL"), Some("private-a"));
        assert_eq!(get(&env, "WS_PUSHER_EVENT"), Some("client-typing"));
        assert_eq!(get(&env, "WS_PUSHER_USER_ID"), Some("u1"));
        assert_eq!(get(&env, "WS_META_USER"), Some("ada"));

        let close = ConnEvent::Close {
            code: 4201,
            reason: "pong reply not received",
        };
        out.clear();
        event_vars(&close, None, &handle, &mut out);
        let env = decode(&out);
        assert_eq!(get(&env, "WS_EVENT"), Some("close"));
        assert_eq!(get(&env, "REQUEST_METHOD"), Some("GET"));
        assert_eq!(get(&env, "WS_CLOSE_CODE"), Some("4201"));
        assert_eq!(get(&env, "WS_PUSHER_USER_ID"), None);
        assert!(close.body().is_empty());

        let env = connection_env(ConnEnv::empty(), "1001", "12.34");
        out.clear();
        env.own.push_to(&[], &mut out);
        let env = decode(&out);
        assert_eq!(get(&env, "WS_PUSHER_APP_ID"), Some("1001"));
        assert_eq!(get(&env, "WS_PUSHER_SOCKET_ID"), Some("12.34"));
    }

    #[test]
    fn channel_events_name_the_channel_and_member() {
        let app = App {
            id: "1001".into(),
            key: "k".into(),
            secret: serde_json::from_str("\"s\"").unwrap(),
            auth: Default::default(),
            script: None,
        };
        let change = Change::MemberRemoved {
            user_id: "u9".into(),
        };
        let env = channel_event_env(
            &app,
            Path::new("/srv/app/pusher.php"),
            None,
            Some(Path::new("/run/c.sock")),
            "presence-room",
            &change,
        );
        let env = decode(&env);
        assert_eq!(get(&env, "WS_EVENT"), Some("member_removed"));
        assert_eq!(get(&env, "SCRIPT_FILENAME"), Some("/srv/app/pusher.php"));
        assert_eq!(get(&env, "DOCUMENT_ROOT"), Some("/srv/app"));
        assert_eq!(get(&env, "WS_PUSHER_APP_ID"), Some("1001"));
        assert_eq!(get(&env, "WS_PUSHER_CHANNEL"), Some("presence-room"));
        assert_eq!(get(&env, "WS_PUSHER_USER_ID"), Some("u9"));
        assert_eq!(get(&env, "WS_CONTROL_SOCKET"), Some("/run/c.sock"));
        assert_eq!(get(&env, "WS_CONNECTION_ID"), None);
        assert_eq!(change_name(&Change::Occupied), "channel_occupied");
        assert_eq!(change_name(&Change::Vacated), "channel_vacated");
    }
}
