//! The open of a `ws2fcgi.v1` client in a cluster: its joins, and what it
//! missed read from Redis (`cluster/history.rs`).
//!
//! The read is async, so it cannot happen under the hub's lock as on one
//! node. Instead the connection joins its channels *holding*
//! ([`crate::hub::Hub::open_hold`]): what is published to it meanwhile is
//! kept aside with its offset. Then each channel's record (and, for a
//! channel the client gave a position in, the entries after it) is read;
//! then, under the lock, `connected` is sent, the missed publications, and
//! the held ones after the offset each channel was read at
//! ([`crate::hub::Hub::open_release`]). Every publication to a channel with
//! history is either in what was read or held after it: no gap, no duplicate.

use super::{OpenV1, apply_rest, heartbeat_secs};
use crate::context::Context;
use crate::hub::ConnHandle;
use crate::response::PhpResponse;
use crate::v1::{self, Position, Publication};

/// Applies the open answer of a `ws2fcgi.v1` client on a cluster node;
/// returns the close PHP asked for.
pub async fn open_in_cluster(
    ctx: &Context,
    handle: &ConnHandle,
    answer: &PhpResponse,
    open: OpenV1<'_>,
) -> Option<(u16, String)> {
    let d = &answer.directives;
    for channel in &d.leave {
        ctx.hub.leave(&handle.id, channel);
    }
    let Some(cluster) = ctx.cluster.as_ref() else {
        return super::apply_answer(ctx, handle, answer, Some(open));
    };
    ctx.hub.open_hold(handle, &d.join);
    let config = ctx.config();
    let mut channels: Vec<&str> = Vec::with_capacity(d.join.len());
    let mut positions: Vec<Option<Position>> = Vec::with_capacity(d.join.len());
    let mut lost: Vec<&str> = Vec::new();
    let mut replay = Vec::new();
    let mut read_at = Vec::new();
    for channel in &d.join {
        if channels.contains(&channel.as_str()) {
            continue;
        }
        channels.push(channel);
        let given = open
            .since
            .iter()
            .find(|(c, _)| c == channel)
            .map(|(_, p)| p);
        // An unreadable token: every channel is lost (as on one node).
        let unreadable = open.since_invalid;
        let Some(policy) = config.history.policy(channel) else {
            if given.is_some() || unreadable {
                lost.push(channel);
            }
            positions.push(None);
            continue;
        };
        let from = given.map_or(0, |p| p.offset.saturating_add(1));
        let read = match cluster.read_history(channel, policy, from, 0).await {
            Ok(read) => read,
            Err(e) => {
                tracing::debug!(conn = %open.public_id, channel, error = %e, "history not read");
                if given.is_some() || unreadable {
                    lost.push(channel);
                }
                positions.push(None);
                continue;
            }
        };
        read_at.push((channel.clone(), read.top.clone()));
        if unreadable {
            lost.push(channel);
            positions.push(Some(read.top.clone()));
            continue;
        }
        let now = crate::cluster::history::now_ms();
        match given.map(|g| (g, read.since(g, policy.ttl, now))) {
            Some((given, Some(missed))) => {
                for entry in missed {
                    let position = Position {
                        offset: entry.offset,
                        epoch: read.top.epoch.clone(),
                    };
                    let p = Publication::new(channel, entry.kind, &entry.data, Some(position));
                    replay.push(p.framed().clone());
                }
                positions.push(Some(given.clone()));
            }
            Some((_, None)) => {
                lost.push(channel);
                positions.push(Some(read.top.clone()));
            }
            None => positions.push(Some(read.top.clone())),
        }
    }
    let joined: Vec<v1::Joined<'_>> = channels
        .iter()
        .zip(positions)
        .map(|(channel, position)| v1::Joined { channel, position })
        .collect();
    let recovered = !open.since.is_empty() && !open.since_invalid && lost.is_empty();
    let connected = v1::connected(
        open.public_id,
        heartbeat_secs(ctx),
        recovered,
        &joined,
        &lost,
    );
    let replayed = replay.len();
    ctx.hub.open_release(handle, connected, replay, &read_at);
    if open.since_invalid {
        ctx.metrics.recovery_unreadable();
    } else if !open.since.is_empty() {
        ctx.metrics.recovery(lost.is_empty(), replayed);
        if !lost.is_empty() {
            tracing::info!(conn = %open.public_id, ?lost, "channels not recovered");
        }
    }
    apply_rest(ctx, handle, answer)
}
