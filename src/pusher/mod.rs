//! The Pusher Channels protocol (version 7), spoken at `/app/{key}` on the
//! WebSocket listeners, beside the raw contract, so that pusher-js, Laravel
//! Echo and the mobile SDKs connect unchanged (see `docs/pusher.md`).
//!
//! A Pusher connection is handled here, in Rust, without PHP: its frames
//! are parsed by [`protocol`], its subscriptions checked with [`auth`], and
//! it lives in the same [`Hub`](crate::hub::Hub) as every other connection.
//! A Pusher channel is a hub channel named by [`hub_channel`], so a publish
//! is encoded once ([`frame::event`]) and shared by every member, as any
//! hub publish; no raw channel can ever be that name.
//!
//! The pieces, one noun per file:
//! - `app.rs`: the configured apps, by key (`/app/{key}`) and by id (`/apps/{id}`);
//! - `channel.rs`: channel names and their kinds (public, `private-`, …);
//! - `socket_id.rs`: a connection's `socket_id` and back;
//! - `frame.rs`: the JSON frames the server sends;
//! - `auth.rs`: the signatures of subscriptions and sign-ins;
//! - `protocol.rs`: the frames a client sends, parsed (pure, fuzzed);
//! - `state.rs`: what a node keeps: presence members per user, cache channels' last events;
//! - `roster.rs`: in a cluster, the presence members of every node as Redis announced them;
//! - `connection.rs`: one Pusher client's life after the handshake (`gateway/pusher.rs` accepts it);
//! - `api_signature.rs`: the signature of an HTTP API request (pure, fuzzed);
//! - `api.rs`: the HTTP API (`/apps/{id}/…`), on the WebSocket listeners and `pusher.api_listen`;
//! - `publish.rs`: publishing an event from the server side (control socket, HTTP API);
//! - `php.rs`: events to PHP (an app's `script`): their variables, PHP's presence answer;
//! - `channel_events.rs`: the channels' changes (Pusher's webhooks) as ordered requests to PHP;
//! - `cluster.rs`: events, cache channels and presence across cluster nodes.
//!
//! The connections signed in as a user (`pusher:signin`) are the members of
//! the hub channel [`user_channel`]: `Hub::presence` lists them (to
//! terminate them), a publish to it reaches them.

pub mod api;
pub mod api_signature;
pub mod app;
pub mod auth;
pub mod channel;
pub mod channel_events;
pub mod cluster;
pub mod connection;
pub mod frame;
pub mod php;
pub mod protocol;
pub mod publish;
pub mod roster;
pub mod socket_id;
pub mod state;

pub use app::{App, Apps};
pub use channel::ChannelKind;
pub use socket_id::SocketId;
pub use state::State;

/// The protocol version spoken (the `protocol` query parameter of `/app/{key}`).
pub const PROTOCOL_VERSION: u32 = 7;

/// The oldest `protocol` a client may ask for; it is served version 7's
/// frames, as Pusher serves them. pusher-websocket-java (Android, and the
/// React Native and Flutter SDKs on Android) still sends `protocol=5`.
pub const MIN_PROTOCOL_VERSION: u32 = 5;

/// The prefix of every Pusher channel's hub name. Raw channel names forbid
/// control characters (see [`crate::response::check_channel`]), so a hub
/// name that starts with one is never a raw channel's.
pub const HUB_PREFIX: char = '\u{1}';

/// The hub channel of `channel` of the app `app_id`:
/// `"\u{1}" app_id "\u{1}" channel`.
///
/// ```
/// let name = ws2fcgi::pusher::hub_channel("1001", "presence-room");
/// assert_eq!(name, "\u{1}1001\u{1}presence-room");
/// assert!(ws2fcgi::response::check_channel(&name).is_err(), "never a raw name");
/// ```
pub fn hub_channel(app_id: &str, channel: &str) -> String {
    let mut name = String::with_capacity(2 + app_id.len() + channel.len());
    name.push(HUB_PREFIX);
    name.push_str(app_id);
    name.push(HUB_PREFIX);
    name.push_str(channel);
    name
}

/// The app id and Pusher channel of a hub channel name, if it is one.
pub fn from_hub_channel(name: &str) -> Option<(&str, &str)> {
    name.strip_prefix(HUB_PREFIX)?.split_once(HUB_PREFIX)
}

/// Longest user id (`pusher:signin`, presence `user_id`), in bytes.
pub const MAX_USER_ID: usize = 200;

/// Is `id` a usable user id? 1 to [`MAX_USER_ID`] bytes, no control characters.
pub fn check_user_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_USER_ID {
        return Err(format!("a user id must be 1 to {MAX_USER_ID} bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err("a user id must not hold control characters".into());
    }
    Ok(())
}

/// The hub channel of a signed-in user's server-to-user channel
/// (`#server-to-user-<id>`), which clients cannot subscribe to themselves.
pub fn user_channel(app_id: &str, user_id: &str) -> String {
    hub_channel(app_id, &format!("#server-to-user-{user_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_names_round_trip_and_never_collide() {
        let name = hub_channel("1001", "private-a");
        assert_eq!(from_hub_channel(&name), Some(("1001", "private-a")));
        assert_eq!(from_hub_channel("private-a"), None);
        assert!(crate::response::check_channel(&user_channel("1", "u")).is_err());
    }
}
