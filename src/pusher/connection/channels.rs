//! What a Pusher connection does with channels: subscribe (a signature
//! checked, or PHP asked with `auth = "php"`, see `php.rs`), unsubscribe,
//! sign in, and relay client events to a channel's other members.

use std::time::Instant;

use serde_json::Value;

use super::{Conn, Ending, Sub, php};
use crate::pusher::protocol::codes;
use crate::pusher::state::Presence;
use crate::pusher::{ChannelKind, auth, channel, frame, hub_channel, user_channel};

impl Conn {
    pub(super) fn subscribe(&mut self, name: &str, auth: Option<&str>, channel_data: Option<&str>) {
        if let Some(user) = name.strip_prefix(crate::pusher::publish::USER_CHANNEL_PREFIX) {
            // pusher-js subscribes to its user's channel after a sign-in;
            // the connection joined it when it signed in.
            if self.user.as_deref() == Some(user) {
                self.send(&frame::subscription_succeeded(name));
            } else {
                self.send(&frame::subscription_error(
                    name,
                    "AuthError",
                    "sign in as this user first",
                    401,
                ));
            }
            return;
        }
        if let Err(problem) = channel::check(name) {
            self.error(codes::GENERIC, &format!("pusher:subscribe: {problem}"));
            return;
        }
        if self.subs.iter().any(|s| &*s.channel == name) {
            self.error(
                codes::GENERIC,
                &format!("pusher:subscribe: already subscribed to `{name}`"),
            );
            return;
        }
        let most = self.config.pusher.max_channels_per_connection;
        if self.subs.len() >= most {
            self.send(&frame::subscription_error(
                name,
                "LimitReached",
                &format!("at most {most} channels per connection"),
                429,
            ));
            return;
        }
        let kind = ChannelKind::of(name);
        if self.php.is_some() && php::decides(&self.app, kind, name) {
            self.ask_subscribe(name, kind, channel_data);
            return;
        }
        let mut presence = None;
        if kind.needs_auth() {
            let signed = auth::channel_text(&self.socket_id, name, channel_data);
            if !auth.is_some_and(|a| auth::verify(&self.app, &signed, a)) {
                tracing::info!(socket_id = %self.socket_id, channel = name, "pusher: subscription refused: bad or missing auth");
                self.send(&frame::subscription_error(
                    name,
                    "AuthError",
                    "invalid signature",
                    401,
                ));
                return;
            }
            if kind.is_presence() {
                match member(channel_data) {
                    Ok(p) => presence = Some(p),
                    Err(problem) => {
                        self.send(&frame::subscription_error(name, "AuthError", problem, 400));
                        return;
                    }
                }
            }
        }
        self.join(name, kind, presence);
    }

    /// Subscribes to an authorized channel.
    pub(super) fn join(
        &mut self,
        name: &str,
        kind: ChannelKind,
        presence: Option<(String, Value)>,
    ) {
        let hub = hub_channel(&self.app.id, name);
        let user_id = presence
            .as_ref()
            .map(|(id, _)| Box::<str>::from(id.as_str()));
        self.ctx.pusher.subscribe(
            &self.ctx.hub,
            &self.handle,
            &hub,
            name,
            presence.as_ref().map(|(id, info)| Presence {
                user_id: id,
                user_info: info.clone(),
            }),
            kind.is_cache(),
        );
        self.subs.push(Sub {
            channel: name.into(),
            hub: hub.into(),
            kind,
            user_id,
        });
    }

    pub(super) fn unsubscribe(&mut self, name: &str) {
        let Some(at) = self.subs.iter().position(|s| &*s.channel == name) else {
            return;
        };
        let sub = self.subs.swap_remove(at);
        self.ctx.pusher.unsubscribe(
            &self.ctx.hub,
            &self.handle.id,
            &sub.hub,
            &sub.channel,
            sub.user_id.as_deref(),
        );
    }

    pub(super) fn leave_all(&mut self) {
        for sub in std::mem::take(&mut self.subs) {
            self.ctx.pusher.unsubscribe(
                &self.ctx.hub,
                &self.handle.id,
                &sub.hub,
                &sub.channel,
                sub.user_id.as_deref(),
            );
        }
    }

    pub(super) fn signin(&mut self, auth_value: &str, user_data: &str) -> Option<Ending> {
        let signed = auth::user_text(&self.socket_id, user_data);
        let id = auth::verify(&self.app, &signed, auth_value)
            .then(|| user_id_of(user_data))
            .flatten();
        let Some(id) = id else {
            tracing::info!(socket_id = %self.socket_id, "pusher: sign-in refused");
            self.error(
                codes::UNAUTHORIZED,
                "sign-in refused: invalid signature or user_data",
            );
            return Some(self.close(codes::UNAUTHORIZED, "unauthorized"));
        };
        if let Some(old) = self.user.take() {
            self.ctx
                .hub
                .leave(&self.handle.id, &user_channel(&self.app.id, &old));
        }
        self.ctx
            .hub
            .join(&self.handle.id, &user_channel(&self.app.id, &id));
        self.user = Some(id.into());
        self.send(&frame::signin_success(user_data));
        None
    }

    pub(super) fn client_event(&mut self, event: &str, name: &str, data: &Value) {
        let Some(sub) = self.subs.iter().find(|s| &*s.channel == name) else {
            self.error(
                codes::GENERIC,
                &format!("{event}: not subscribed to the channel"),
            );
            return;
        };
        if !sub.kind.allows_client_events() {
            self.error(
                codes::GENERIC,
                &format!("{event}: client events are only for private and presence channels"),
            );
            return;
        }
        if !self.client_events.take(Instant::now()) {
            self.ctx.metrics.rate_limited.inc();
            self.error(
                codes::CLIENT_EVENT_RATE_LIMIT,
                &format!(
                    "{event}: dropped, more than {} client events per second",
                    self.config.pusher.client_events_per_second
                ),
            );
            return;
        }
        let data = data.to_string();
        let most = self.config.pusher.max_message_bytes;
        if data.len() > most {
            self.error(
                codes::GENERIC,
                &format!("{event}: dropped, data larger than {most} bytes"),
            );
            return;
        }
        if self.php.is_some() {
            let user = sub.user_id.clone().or_else(|| self.user.clone());
            self.ask_client_event(event, name, data, user);
            return;
        }
        self.relay(event, name, &data);
    }

    /// Relays a client event to the channel's other members.
    pub(super) fn relay(&self, event: &str, name: &str, data: &str) {
        let Some(sub) = self.subs.iter().find(|s| &*s.channel == name) else {
            return;
        };
        let frame = frame::client_event(event, name, data, sub.user_id.as_deref());
        let except = crate::pusher::cluster::Except {
            local: vec![self.handle.id],
            remote: Vec::new(),
        };
        crate::pusher::cluster::publish(&self.ctx, &sub.hub, &frame, except);
    }
}

/// The `user_id` and `user_info` of a presence subscription's `channel_data`.
fn member(channel_data: Option<&str>) -> Result<(String, Value), &'static str> {
    let data: Value = channel_data
        .and_then(|d| serde_json::from_str(d).ok())
        .ok_or("presence channels need channel_data, a JSON object")?;
    let id = match data.get("user_id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("channel_data has no user_id"),
    };
    crate::pusher::check_user_id(&id).map_err(|_| "user_id must be 1 to 200 bytes")?;
    let info = data.get("user_info").cloned().unwrap_or(Value::Null);
    Ok((id, info))
}

/// The `id` of a sign-in's `user_data`, if it is a JSON object with a usable string id.
fn user_id_of(user_data: &str) -> Option<String> {
    let data: Value = serde_json::from_str(user_data).ok()?;
    let id = data.get("id")?.as_str()?;
    crate::pusher::check_user_id(id).ok()?;
    Some(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_members_and_users_are_read_from_json() {
        assert_eq!(
            member(Some(r#"{"user_id":7,"user_info":{"n":"a"}}"#)).unwrap(),
            ("7".to_string(), serde_json::json!({"n": "a"}))
        );
        assert_eq!(member(Some(r#"{"user_id":"u"}"#)).unwrap().1, Value::Null);
        for bad in [
            None,
            Some("{}"),
            Some("[]"),
            Some(r#"{"user_id":""}"#),
            Some("x"),
        ] {
            assert!(member(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            user_id_of(r#"{"id":"42","name":"x"}"#).as_deref(),
            Some("42")
        );
        for bad in ["{}", r#"{"id":42}"#, r#"{"id":""}"#, "nope"] {
            assert!(user_id_of(bad).is_none(), "{bad}");
        }
    }
}
