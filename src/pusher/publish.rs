//! Publishing a Pusher event from the server side (the HTTP API's `events`
//! and `batch_events`; the control socket's `pusher_publish`).
//!
//! One event to one or several channels of an app, maybe leaving out the
//! connection that caused it (`socket_id`, as Pusher's `exclude`): each
//! channel's frame is encoded once and shared by its members through the
//! hub. An event on `#server-to-user-<id>` reaches the connections signed
//! in as that user. A `cache-` channel keeps the event for its next
//! subscribers (`state.rs`). In a cluster the event reaches every node,
//! and `socket_id` may name a connection of any of them (`cluster.rs`).

use super::channel;
use super::cluster::Except;
use super::{SocketId, frame, hub_channel};
use crate::context::Context;

/// Longest event name, in bytes (Pusher's limit).
pub const MAX_EVENT_NAME: usize = 200;

/// The prefix of a user's channel (`pusher:signin`).
pub const USER_CHANNEL_PREFIX: &str = "#server-to-user-";

/// An event to publish.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The channels (at most `pusher.max_channels_per_event`).
    pub channels: &'a [String],
    /// The event name.
    pub name: &'a str,
    /// The data, a string (usually JSON), sent as is.
    pub data: &'a str,
    /// A connection left out, as Pusher's `socket_id` parameter.
    pub socket_id: Option<&'a str>,
}

/// Why an event was not published. Everything but `UnknownApp` is the
/// request's fault (HTTP 400; `TooLarge` 413).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// No app has this id.
    #[error("no pusher app `{0}`")]
    UnknownApp(String),
    /// No channel, or more than `pusher.max_channels_per_event`.
    #[error("an event needs 1 to {0} channels")]
    ChannelCount(usize),
    /// A channel name Pusher would not accept.
    #[error("channel `{channel}`: {problem}")]
    BadChannel {
        /// The name (cut to 200 bytes).
        channel: String,
        /// What is wrong.
        problem: String,
    },
    /// An empty event name or one longer than [`MAX_EVENT_NAME`].
    #[error("the event name must be 1 to {MAX_EVENT_NAME} bytes")]
    BadName,
    /// `data` longer than `pusher.max_message_bytes`.
    #[error("data of {0} bytes is more than pusher.max_message_bytes ({1})")]
    TooLarge(usize, usize),
    /// A `socket_id` that is not `\d+\.\d+`.
    #[error("socket_id `{0}` is not of the form 1234.5678")]
    BadSocketId(String),
}

/// Checks a channel an event may name: a subscribable name, or a user's channel.
pub fn check_channel(name: &str) -> Result<(), String> {
    match name.strip_prefix(USER_CHANNEL_PREFIX) {
        Some(user) => super::check_user_id(user),
        None => channel::check(name),
    }
}

/// Checks `event` against the limits without publishing it.
pub fn check(ctx: &Context, event: &Event<'_>) -> Result<(), PublishError> {
    let config = ctx.config();
    let limits = &config.pusher;
    if event.channels.is_empty() || event.channels.len() > limits.max_channels_per_event {
        return Err(PublishError::ChannelCount(limits.max_channels_per_event));
    }
    for name in event.channels {
        check_channel(name).map_err(|problem| PublishError::BadChannel {
            channel: cut(name),
            problem,
        })?;
    }
    if event.name.is_empty() || event.name.len() > MAX_EVENT_NAME {
        return Err(PublishError::BadName);
    }
    if event.data.len() > limits.max_message_bytes {
        return Err(PublishError::TooLarge(
            event.data.len(),
            limits.max_message_bytes,
        ));
    }
    if let Some(text) = event.socket_id {
        text.parse::<SocketId>()
            .map_err(|()| PublishError::BadSocketId(cut(text)))?;
    }
    Ok(())
}

/// Publishes `event` to the channels of app `app_id`; returns the deliveries.
pub fn publish(ctx: &Context, app_id: &str, event: &Event<'_>) -> Result<usize, PublishError> {
    let apps = ctx.pusher_apps();
    let app = apps
        .by_id(app_id)
        .ok_or_else(|| PublishError::UnknownApp(cut(app_id)))?;
    check(ctx, event)?;
    let mut delivered = 0;
    for name in event.channels {
        let text = frame::event(event.name, Some(name), event.data, None);
        let except = event
            .socket_id
            .map(|text| Except::socket_id(ctx, text))
            .unwrap_or_default();
        delivered += super::cluster::publish(ctx, &hub_channel(&app.id, name), &text, except);
    }
    Ok(delivered)
}

fn cut(text: &str) -> String {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
