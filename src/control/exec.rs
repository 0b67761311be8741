//! Carrying out a control [`Command`] and writing its reply.
//!
//! Shared by the Unix control socket and the HTTP endpoint, so both give the
//! same answers. Naming a connection that has closed (or never existed) is not
//! an error: PHP races with disconnects all the time. `send` and `publish`
//! report `delivered: 0`, `close` reports `closed: false`, and `join`, `leave`
//! and `meta` report `found: false`.

use serde_json::{Value, json};

use super::command::{Command, CommandError, Target};
use crate::context::Context;
use crate::frame;
use crate::hub::ConnId;

/// The reply line for a refused request.
pub fn error_reply(error: &CommandError) -> Value {
    json!({"ok": false, "error": error.to_string()})
}

/// Runs `command` and returns its reply.
pub fn execute(ctx: &Context, command: Command) -> Value {
    let hub = &ctx.hub;
    match command {
        Command::Publish {
            channel,
            payload,
            except,
        } => {
            let except: Vec<ConnId> = except.iter().filter_map(|t| t.id).collect();
            let encoded = frame::data(payload.kind, &payload.data);
            let delivered = hub.publish(&channel, &encoded, &except);
            json!({"ok": true, "delivered": delivered})
        }
        Command::Send { to, payload } => {
            let ids: Vec<ConnId> = to.iter().filter_map(|t| t.id).collect();
            let encoded = frame::data(payload.kind, &payload.data);
            let delivered = hub.send(&ids, &encoded);
            json!({"ok": true, "delivered": delivered})
        }
        Command::Join { conn, channel } => {
            let found = local(&conn).is_some_and(|id| hub.join(&id, &channel));
            json!({"ok": true, "found": found})
        }
        Command::Leave { conn, channel } => {
            let found = local(&conn).is_some_and(|id| hub.leave(&id, &channel));
            json!({"ok": true, "found": found})
        }
        Command::Close { conn, code, reason } => {
            let closed = local(&conn).is_some_and(|id| hub.close(&id, code, &reason));
            json!({"ok": true, "closed": closed})
        }
        Command::Meta { conn, set } => match local(&conn).and_then(|id| hub.get(&id)) {
            None => json!({"ok": true, "found": false}),
            Some(handle) => match handle.update_meta(&set) {
                Ok(()) => json!({"ok": true, "found": true}),
                Err(problem) => json!({"ok": false, "error": problem}),
            },
        },
        Command::Presence { channel } => {
            let members: Vec<Value> = hub
                .presence(&channel)
                .into_iter()
                .map(|m| {
                    let meta: serde_json::Map<String, Value> = m
                        .meta
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect();
                    json!({"id": m.id.to_string(), "meta": meta})
                })
                .collect();
            json!({"ok": true, "members": members})
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
    }
}

fn local(target: &Target) -> Option<ConnId> {
    target.id
}
