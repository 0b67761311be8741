//! Carrying out a control [`Command`] and writing its reply.
//!
//! Shared by the Unix control socket and the HTTP endpoint, so both give the
//! same answers. Naming a connection that has closed (or never existed) is not
//! an error: PHP races with disconnects all the time. `send` and `publish`
//! report `delivered: 0`, `close` reports `closed: false`, and `join`, `leave`
//! and `meta` report `found: false`.
//!
//! In a cluster (`[cluster]`), an id names its node (`<node_id>.<40 hex>`):
//! ids of this node (or bare 40-hex ids) are handled here, ids of another node
//! become a request to that node, awaited for at most
//! `cluster.request_timeout`; a node that does not answer counts as not
//! found. A publish reaches this node's members at once and is queued for
//! the others; its `delivered` counts this node's members only.

use std::collections::HashMap;

use futures_util::future::join_all;
use serde_json::{Map, Value, json};

use super::command::{Command, CommandError, Target};
use super::reply::Reply;
use crate::cluster::Cluster;
use crate::cluster::wire::{Op, Outcome};
use crate::context::Context;
use base64::Engine as _;

use crate::hub::{ConnId, HistoryReply, Hub, Published};

/// The reply line for a refused request.
pub fn error_reply(error: &CommandError) -> Value {
    json!({"ok": false, "error": error.to_string()})
}

/// Where a named connection lives.
enum Route<'a> {
    /// On this node.
    Local(ConnId),
    /// On node `.1` of the cluster.
    Remote(&'a Cluster, &'a str, ConnId),
    /// Nowhere: not an id, or of a node that is not in this daemon's cluster.
    Nowhere,
}

fn route<'a>(ctx: &'a Context, target: &'a Target) -> Route<'a> {
    match (&target.node, target.id, &ctx.cluster) {
        (_, None, _) => Route::Nowhere,
        (None, Some(id), _) => Route::Local(id),
        (Some(node), Some(id), Some(cluster)) if node == cluster.node_id() => Route::Local(id),
        (Some(node), Some(id), Some(cluster)) => Route::Remote(cluster, node, id),
        (Some(_), Some(_), None) => Route::Nowhere,
    }
}

/// Runs `command` and returns its reply.
pub async fn execute(ctx: &Context, command: Command) -> Reply {
    let hub = &ctx.hub;
    let reply = match command {
        Command::Publish {
            channel,
            payload,
            except,
        } => {
            #[cfg(feature = "cluster")]
            if let Some(cluster) = &ctx.cluster
                && let Some(policy) = ctx.config().history.policy(&channel)
            {
                return publish_history(ctx, cluster, &channel, &payload, &except, policy).await;
            }
            let mut local = Vec::new();
            let mut remote = Vec::new();
            for target in &except {
                match route(ctx, target) {
                    Route::Local(id) => local.push(id),
                    Route::Remote(..) => remote.push(target.text.clone()),
                    Route::Nowhere => {}
                }
            }
            let publish = || hub.publish(&channel, payload.kind, &payload.data, &local);
            let published = match &ctx.cluster {
                None => publish(),
                Some(cluster) => {
                    let mut published = None;
                    let delivered =
                        cluster.publish(&channel, payload.kind, &payload.data, remote, || {
                            let p = publish();
                            let delivered = p.delivered;
                            published = Some(p);
                            delivered
                        });
                    published.unwrap_or(Published {
                        delivered,
                        position: None,
                    })
                }
            };
            return match published.position {
                None => Reply::Delivered(published.delivered as u64),
                Some(position) => Reply::Published {
                    delivered: published.delivered as u64,
                    position,
                },
            };
        }
        Command::Send { to, payload } => {
            let mut local = Vec::new();
            let mut remote: HashMap<&str, (&Cluster, Vec<String>)> = HashMap::new();
            for target in &to {
                match route(ctx, target) {
                    Route::Local(id) => local.push(id),
                    Route::Remote(cluster, node, id) => {
                        let ids = &mut remote.entry(node).or_insert((cluster, Vec::new())).1;
                        let id = id.to_string();
                        if !ids.contains(&id) {
                            ids.push(id);
                        }
                    }
                    Route::Nowhere => {}
                }
            }
            let mut delivered = hub.send(&local, payload.kind, &payload.data) as u64;
            let requests = remote.into_iter().map(|(node, (cluster, conns))| {
                let op = Op::Send {
                    conns,
                    kind: payload.kind,
                    payload: payload.data.clone(),
                };
                cluster.request(node, op)
            });
            for outcome in join_all(requests).await {
                if let Some(Outcome::Count(n)) = outcome {
                    delivered += u64::from(n);
                }
            }
            return Reply::Delivered(delivered);
        }
        Command::Join { conn, channel } => {
            let found = match route(ctx, &conn) {
                Route::Local(id) => hub.join(&id, &channel),
                Route::Remote(cluster, node, id) => {
                    let op = Op::Join {
                        conn: id.to_string(),
                        channel,
                    };
                    cluster.request(node, op).await == Some(Outcome::Flag(true))
                }
                Route::Nowhere => false,
            };
            json!({"ok": true, "found": found})
        }
        Command::Leave { conn, channel } => {
            let found = match route(ctx, &conn) {
                Route::Local(id) => hub.leave(&id, &channel),
                Route::Remote(cluster, node, id) => {
                    let op = Op::Leave {
                        conn: id.to_string(),
                        channel,
                    };
                    cluster.request(node, op).await == Some(Outcome::Flag(true))
                }
                Route::Nowhere => false,
            };
            json!({"ok": true, "found": found})
        }
        Command::Close { conn, code, reason } => {
            let closed = match route(ctx, &conn) {
                Route::Local(id) => hub.close(&id, code, &reason),
                Route::Remote(cluster, node, id) => {
                    let op = Op::Close {
                        conn: id.to_string(),
                        code,
                        reason,
                    };
                    cluster.request(node, op).await == Some(Outcome::Flag(true))
                }
                Route::Nowhere => false,
            };
            json!({"ok": true, "closed": closed})
        }
        Command::Meta { conn, set } => {
            let outcome = match route(ctx, &conn) {
                Route::Local(id) => local_meta(hub, &id, &set),
                Route::Remote(cluster, node, id) => {
                    let op = Op::Meta {
                        conn: id.to_string(),
                        set,
                    };
                    cluster
                        .request(node, op)
                        .await
                        .unwrap_or(Outcome::Flag(false))
                }
                Route::Nowhere => Outcome::Flag(false),
            };
            match outcome {
                Outcome::Error(problem) => json!({"ok": false, "error": problem}),
                Outcome::Flag(found) => json!({"ok": true, "found": found}),
                Outcome::Count(n) => json!({"ok": true, "found": n > 0}),
            }
        }
        Command::Presence { channel } => {
            let mut members: Vec<Value> = hub
                .presence(&channel)
                .into_iter()
                .map(|m| {
                    let meta: Map<String, Value> = m
                        .meta
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect();
                    json!({"id": ctx.public_id(&m.id), "meta": meta})
                })
                .collect();
            if let Some(cluster) = &ctx.cluster {
                for m in cluster.presence(&channel).await {
                    members.push(json!({"id": m.id, "meta": m.meta}));
                }
            }
            json!({"ok": true, "members": members})
        }
        Command::History {
            channel,
            limit,
            since,
        } => history_reply(ctx, &channel, limit, since.as_ref()).await,
        Command::PusherPublish {
            app,
            channels,
            event,
            data,
            socket_id,
        } => {
            let event = crate::pusher::publish::Event {
                channels: &channels,
                name: &event,
                data: &data,
                socket_id: socket_id.as_deref(),
            };
            match crate::pusher::publish::publish(ctx, &app, &event) {
                Ok(delivered) => json!({"ok": true, "delivered": delivered}),
                Err(e) => json!({"ok": false, "error": e.to_string()}),
            }
        }
        Command::Stats => {
            let s = &hub.stats;
            json!({
                "ok": true,
                "connections": hub.connection_count(),
                "channels": hub.channel_count(),
                "connections_total": s.connections_total.get(),
                "messages_in": s.messages_in.get(),
                "messages_out": s.messages_out.get(),
                "publishes": s.publishes.get(),
                "slow_consumers": s.slow_consumers.get(),
                "fpm_busy": ctx.fpm.busy_count(),
                "fpm_idle": ctx.fpm.idle_count(),
                "uptime_seconds": ctx.uptime().as_secs(),
            })
        }
    };
    Reply::Json(reply)
}

/// A publish to a channel with history in a cluster: Redis gives the offset
/// and puts the publication on the bus, from where every node, this one
/// too, delivers it (`cluster/history.rs`). `delivered` counts this node's
/// members when its own copy came back from the bus.
#[cfg(feature = "cluster")]
async fn publish_history(
    ctx: &Context,
    cluster: &Cluster,
    channel: &str,
    payload: &super::command::Payload,
    except: &[Target],
    policy: crate::config::Policy,
) -> Reply {
    let except = except
        .iter()
        .filter_map(|target| match route(ctx, target) {
            Route::Local(id) => Some(cluster.public_id(&id)),
            Route::Remote(..) => Some(target.text.clone()),
            Route::Nowhere => None,
        })
        .collect();
    // Counted in `publishes` when it comes back from the bus, as on other nodes.
    match cluster
        .publish_history(channel, payload.kind, &payload.data, except, policy)
        .await
    {
        Ok((position, delivered)) => Reply::Published {
            delivered: delivered as u64,
            position,
        },
        Err(e) => Reply::Json(json!({"ok": false, "error": format!("not published: {e}")})),
    }
}

/// A publication as the `history` op lists it.
fn publication_value(offset: u64, kind: crate::frame::Kind, data: &[u8]) -> Value {
    match kind {
        crate::frame::Kind::Text => {
            json!({"offset": offset, "data": String::from_utf8_lossy(data)})
        }
        crate::frame::Kind::Binary => json!({
            "offset": offset,
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "binary": true,
        }),
    }
}

fn no_history(channel: &str) -> Value {
    json!({"ok": false, "error": format!("channel `{channel}` keeps no history (see [history])")})
}

fn history_value(top: &crate::v1::Position, publications: Vec<Value>) -> Value {
    json!({
        "ok": true,
        "epoch": &*top.epoch,
        "offset": top.offset,
        "publications": publications,
    })
}

fn lost_value(top: &crate::v1::Position) -> Value {
    json!({
        "ok": true,
        "lost": true,
        "epoch": &*top.epoch,
        "offset": top.offset,
        "publications": [],
    })
}

async fn history_reply(
    ctx: &Context,
    channel: &str,
    limit: usize,
    since: Option<&crate::v1::Position>,
) -> Value {
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &ctx.cluster {
        return cluster_history(ctx, cluster, channel, limit, since).await;
    }
    match ctx.hub.history(channel, limit, since) {
        HistoryReply::None => no_history(channel),
        HistoryReply::Publications(top, list) => {
            let list = list
                .iter()
                .map(|p| publication_value(p.offset, p.kind, &p.data()))
                .collect();
            history_value(&top, list)
        }
        HistoryReply::Lost(top) => lost_value(&top),
    }
}

/// The `history` op in a cluster: read from Redis.
#[cfg(feature = "cluster")]
async fn cluster_history(
    ctx: &Context,
    cluster: &Cluster,
    channel: &str,
    limit: usize,
    since: Option<&crate::v1::Position>,
) -> Value {
    let Some(policy) = ctx.config().history.policy(channel) else {
        return no_history(channel);
    };
    let (from, latest) = match since {
        Some(since) => (since.offset.saturating_add(1), 0),
        None => (0, limit),
    };
    let read = match cluster.read_history(channel, policy, from, latest).await {
        Ok(read) => read,
        Err(e) => return json!({"ok": false, "error": e.to_string()}),
    };
    let now = crate::cluster::history::now_ms();
    let entries = match since {
        Some(since) => read.since(since, policy.ttl, now),
        None => read.entries.as_deref(),
    };
    match entries {
        Some(list) => {
            let oldest = now.saturating_sub(u64::try_from(policy.ttl.as_millis()).unwrap_or(0));
            let list = list
                .iter()
                .zip(read.times())
                .filter(|(_, at)| **at >= oldest)
                .take(limit)
                .map(|(e, _)| publication_value(e.offset, e.kind, &e.data))
                .collect();
            history_value(&read.top, list)
        }
        None => lost_value(&read.top),
    }
}

fn local_meta(hub: &Hub, id: &ConnId, set: &[(String, Option<String>)]) -> Outcome {
    match hub.get(id) {
        None => Outcome::Flag(false),
        Some(handle) => match handle.update_meta(set) {
            Ok(()) => Outcome::Flag(true),
            Err(problem) => Outcome::Error(problem),
        },
    }
}

/// Runs a request another node sent for connections of this one (see
/// `cluster/wire.rs`). Ids that are not this node's format match nothing.
pub fn run_request(ctx: &Context, op: Op) -> Outcome {
    let hub = &ctx.hub;
    let parse = |conn: &str| conn.parse::<ConnId>().ok();
    match op {
        Op::Send {
            conns,
            kind,
            payload,
        } => {
            let ids: Vec<ConnId> = conns.iter().filter_map(|c| parse(c)).collect();
            let delivered = hub.send(&ids, kind, &payload);
            Outcome::Count(u32::try_from(delivered).unwrap_or(u32::MAX))
        }
        Op::Join { conn, channel } => {
            let valid = crate::response::check_channel(&channel).is_ok();
            Outcome::Flag(valid && parse(&conn).is_some_and(|id| hub.join(&id, &channel)))
        }
        Op::Leave { conn, channel } => {
            Outcome::Flag(parse(&conn).is_some_and(|id| hub.leave(&id, &channel)))
        }
        Op::Close { conn, code, reason } => match crate::response::check_close(code, &reason) {
            Err(problem) => Outcome::Error(problem),
            Ok(()) => Outcome::Flag(parse(&conn).is_some_and(|id| hub.close(&id, code, &reason))),
        },
        Op::Meta { conn, set } => {
            let canonical = set.iter().all(|(key, value)| {
                crate::response::meta_key(key).is_ok_and(|k| k == *key)
                    && value
                        .as_ref()
                        .is_none_or(|v| v.len() <= crate::response::MAX_META_VALUE_LEN)
            });
            match parse(&conn) {
                _ if !canonical => Outcome::Error("invalid metadata from another node".into()),
                None => Outcome::Flag(false),
                Some(id) => local_meta(hub, &id, &set),
            }
        }
    }
}
