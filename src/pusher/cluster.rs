//! Pusher events across the nodes of a cluster (`[cluster]`).
//!
//! A Pusher event (HTTP API, control `pusher_publish`, a client's
//! `client-*` event) is a hub publish of one text frame to the channel's hub
//! name (`"\u{1}" app "\u{1}" channel`), so it rides the raw cluster's bus
//! unchanged: this node's members get it at once, and **one** `PUBLISH` of
//! one envelope carries it to every other node, which delivers it to its
//! own members (`cluster/bus.rs` hands such envelopes to [`receive`]).
//!
//! The event's `socket_id` may name a connection of any node: a socket id
//! carries its node's tag (`socket_id.rs`), so the publishing node leaves out
//! its own connection itself and puts another node's socket id in the
//! envelope's `except` list, where that node finds it.
//!
//! A `cache-` channel's event is kept by every node that applies it, the
//! publishing one and the others alike, so a subscriber on any node is
//! sent the last event (`state.rs`); and in Redis, the sealed envelope at
//! `<prefix>:pusher:cache:<hub>` for [`CACHE_TTL`] (a `SET` pipelined with
//! the `PUBLISH`), which a node loads when it (re)connects, so a node
//! started after the event knows it too.
//!
//! `terminate_connections` crosses nodes the same way: one publish of the
//! `pusher:error` 4009 frame ([`terminate_frame`]) to the user's channel;
//! a node that applies exactly that frame to a user's channel closes the
//! connections it reached. (An app's own events on a user's channel always
//! carry a `channel` field, so they never equal it.)

use bytes::Bytes;

use super::state::CACHE_TTL;
use super::{ChannelKind, SocketId, from_hub_channel};
use crate::context::Context;
use crate::frame::Kind;
use crate::hub::ConnId;

/// Who an event leaves out.
#[derive(Debug, Default)]
pub struct Except {
    /// Connections of this node.
    pub local: Vec<ConnId>,
    /// Socket ids of other nodes' connections, as given.
    pub remote: Vec<String>,
}

impl Except {
    /// The connection a `socket_id` names: one of this node's if it is
    /// live here, else (in a cluster) the socket id of another node's.
    pub fn socket_id(ctx: &Context, text: &str) -> Self {
        let mut except = Self::default();
        let Ok(sid) = text.parse::<SocketId>() else {
            return except;
        };
        if sid.node == ctx.socket_tag() {
            except.local.extend(ctx.hub.find(sid.slot, sid.serial));
        } else if ctx.cluster.is_some() {
            except.remote.push(text.to_owned());
        }
        except
    }
}

/// Is a hub channel a `cache-` channel (whose last event is kept)?
pub fn is_cache(hub_channel: &str) -> bool {
    from_hub_channel(hub_channel)
        .is_some_and(|(_, name)| !name.starts_with('#') && ChannelKind::of(name).is_cache())
}

/// Publishes an event's frame to a hub channel on every node but `except`;
/// returns this node's deliveries.
pub fn publish(ctx: &Context, hub_channel: &str, frame: &str, except: Except) -> usize {
    let cache = is_cache(hub_channel);
    let local = || {
        ctx.pusher
            .publish(&ctx.hub, hub_channel, frame, &except.local, cache)
    };
    match &ctx.cluster {
        None => local(),
        Some(cluster) => {
            let payload = Bytes::copy_from_slice(frame.as_bytes());
            let keep = cache.then(|| (cluster.pusher_cache_key(hub_channel), CACHE_TTL));
            cluster.publish_keeping(
                hub_channel,
                Kind::Text,
                &payload,
                except.remote.clone(),
                keep,
                local,
            )
        }
    }
}

/// The frame a terminated connection is sent before it is closed.
pub fn terminate_frame() -> String {
    super::frame::error(
        Some(super::api::TERMINATED_CODE),
        "Connection terminated by the app's server",
    )
}

/// Is `hub_channel` a signed-in user's channel?
fn is_user_channel(hub_channel: &str) -> bool {
    from_hub_channel(hub_channel)
        .is_some_and(|(_, name)| name.starts_with(super::publish::USER_CHANNEL_PREFIX))
}

/// Closes the connections of a user's channel on every node, each sent
/// [`terminate_frame`] first; returns how many were on this node.
pub fn terminate(ctx: &Context, user_hub_channel: &str) -> usize {
    let frame = terminate_frame();
    let local = || close_members(ctx, user_hub_channel, &frame);
    match &ctx.cluster {
        None => local(),
        Some(cluster) => {
            let payload = Bytes::copy_from_slice(frame.as_bytes());
            cluster.publish(user_hub_channel, Kind::Text, &payload, Vec::new(), local)
        }
    }
}

fn close_members(ctx: &Context, hub_channel: &str, frame: &str) -> usize {
    let ids: Vec<ConnId> = ctx
        .hub
        .presence(hub_channel)
        .into_iter()
        .map(|m| m.id)
        .collect();
    ctx.hub.send(&ids, Kind::Text, frame.as_bytes());
    for id in &ids {
        ctx.hub.close(
            id,
            super::api::TERMINATED_CODE,
            "terminated by the app's server",
        );
    }
    ids.len()
}

/// Another node's Pusher event, from the bus: delivered to this node's
/// members but the connections `except` names here (public ids of this
/// node, or socket ids with this node's tag). Returns the deliveries.
pub fn receive(ctx: &Context, hub_channel: &str, payload: &[u8], except: &[String]) -> usize {
    let Ok(frame) = std::str::from_utf8(payload) else {
        return 0;
    };
    if is_user_channel(hub_channel) && frame == terminate_frame() {
        return close_members(ctx, hub_channel, frame);
    }
    let tag = ctx.socket_tag();
    let except: Vec<ConnId> = except
        .iter()
        .filter_map(|text| {
            text.parse::<SocketId>()
                .ok()
                .filter(|sid| sid.node == tag)
                .and_then(|sid| ctx.hub.find(sid.slot, sid.serial))
        })
        .collect();
    ctx.pusher
        .publish(&ctx.hub, hub_channel, frame, &except, is_cache(hub_channel))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::roster::{Op, Ops, Order};
    use super::super::state::{Presence, State};
    use crate::hub::{ConnHandle, Hub};
    use serde_json::Value;

    /// The frames queued to `handle`, parsed.
    fn frames(handle: &ConnHandle) -> Vec<Value> {
        let mut batch = std::collections::VecDeque::new();
        handle.outbox.drain_into(&mut batch, 1000, 0);
        batch
            .iter()
            .map(|f| {
                let start = f.iter().position(|&b| b == b'{').unwrap();
                serde_json::from_slice(&f[start..]).unwrap()
            })
            .collect()
    }

    #[test]
    fn in_a_cluster_redis_announces_members_and_the_state_only_reports_ops() {
        let hub = Hub::default();
        let state = State::default();
        let ops = Arc::new(Ops::default());
        state.join_cluster(ops.clone());
        let me = |id| {
            Some(Presence {
                user_id: id,
                user_info: Value::Null,
            })
        };
        let (w, a) = (hub.register(1 << 16), hub.register(1 << 16));
        state.subscribe(&hub, &w, "h", "presence-r", me("w"), false);
        state.subscribe(&hub, &a, "h", "presence-r", me("a"), false);
        let (queued, resync) = ops.take();
        assert!(!resync);
        assert!(matches!(&queued[..], [
            Op::Occupy { .. },
            Op::Join { user: w, .. },
            Op::Join { user: a, .. },
        ] if w == "w" && a == "a"));
        // Nothing is announced until Redis says so; each list holds its own user.
        let first = frames(&w);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["event"], "pusher_internal:subscription_succeeded");
        let added = super::super::frame::member_added("presence-r", "w", &Value::Null);
        assert_eq!(
            state.announce(&hub, 1, "h", &added),
            Some(Order::New { missed: 0 })
        );
        assert!(frames(&w).is_empty(), "w was told of itself already");
        assert_eq!(frames(&a).len(), 2, "a's list, then w's member_added");
        assert_eq!(state.announce(&hub, 1, "h", &added), Some(Order::Old));
        assert_eq!(
            state.members("h").len(),
            1,
            "the roster: w only, a is on its way"
        );
        state.unsubscribe(&hub, &a.id, "h", "presence-r", Some("a"));
        state.unsubscribe(&hub, &w.id, "h", "presence-r", Some("w"));
        let (queued, _) = ops.take();
        assert!(matches!(
            &queued[..],
            [Op::Leave { .. }, Op::Leave { .. }, Op::Vacate { .. },]
        ));
    }
}
