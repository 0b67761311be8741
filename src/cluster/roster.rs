//! The roster task: Pusher presence per **user**, cluster-wide, in Redis.
//!
//! A node tells Redis when a user's first connection on it subscribes to a
//! presence channel and when its last one there leaves ([`Op`]); a Lua
//! script decides, atomically, whether that is the user's first connection
//! in the whole cluster (or its last), and only then keeps the member and
//! publishes one announcement on the bus, numbered by one counter:
//!
//! ```text
//! JOIN  SADD on:<node> "<hub>\n<user>"      (0: already told → nothing)
//!       HINCRBY holders:<hub> <user> 1      (> 1: another node has the user → nothing)
//!       HSET members:<hub> <user> <info>; SADD channels <hub>
//!       INCR seq; PUBLISH <prefix>:bus "WP" seq " " <sealed member_added>
//! LEAVE SREM on:<node> "<hub>\n<user>"      (0: not there → nothing)
//!       HINCRBY holders:<hub> <user> -1     (> 0: another node has the user → nothing)
//!       HDEL holders, members; SREM channels <hub> when it has none left
//!       INCR seq; PUBLISH <prefix>:bus "WP" seq " " <sealed member_removed>
//! ```
//!
//! (keys under `<prefix>:pusher:`). A channel's first subscriber on a node
//! and its last go the same way (`OCCUPY`, `VACATE`: `SADD`/`SREM on:<node>
//! <hub>`, `HINCRBY occupied <hub> ±1`), without an announcement. Every
//! change a script finds to be the cluster's is reported by this node
//! (`State::report_cluster`: events to PHP), so once. Every node, this one too, applies the
//! announcements from the bus in `seq` order (`pusher/roster.rs`), and loads
//! the members whole ([`LOAD_SCRIPT`]) after every (re)connect and when it
//! sees a gap in the numbers.
//!
//! A node that dies is **reaped**: every `node_ttl/3` each node looks for
//! nodes in `<prefix>:pusher:nodes` whose liveness key (written by the
//! presence task) is gone, and runs LEAVE for each of their users, the
//! script checking that the node is still dead; the `SREM` of the pair makes
//! each removal happen once, whichever node reaps. So a dead node's users
//! are announced gone within `node_ttl` + `node_ttl/3`.
//!
//! After a (re)connect, or when too many changes waited, the node
//! *resynchronises*: it compares its users with its `on:<node>` set and
//! sends the difference as joins and leaves. A node stopping gracefully
//! leaves with all its users.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};
use serde_json::Value as Json;
use sha1::{Digest, Sha1};

use super::link::{FIRST_BACKOFF, Link};
use super::seal::{self, MAX_AGE};
use super::valid_node_id;
use super::wire::{self, Body, Envelope};
use crate::frame::Kind;
use crate::pusher::roster::Op;
use crate::pusher::state::Change;
use crate::pusher::{frame, from_hub_channel};

/// The magic of a presence announcement on the bus.
pub const BUS_MAGIC: &[u8; 2] = b"WP";

/// Scripts pipelined in one round trip at most.
const BATCH: usize = 256;

/// A user's first connection on a node. Returns 1 when it was the first in
/// the cluster (and announced).
///
/// KEYS: `on:<node>`, `holders:<hub>`, `members:<hub>`, channels, seq, nodes.
/// ARGV: pair, user, info, hub, node, bus channel, sealed announcement.
pub const JOIN_SCRIPT: &str = r"
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SADD', KEYS[6], ARGV[5])
if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) > 1 then return 0 end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[4])
local seq = redis.call('INCR', KEYS[5])
redis.call('PUBLISH', ARGV[6], 'WP' .. seq .. ' ' .. ARGV[7])
return 1
";

/// A user's last connection on a node left (or the node is dead: `ARGV[6]`
/// is 1, and nothing happens while its liveness key exists). Returns 1 when
/// it was the last in the cluster (and announced).
///
/// KEYS: `on:<node>`, `holders:<hub>`, `members:<hub>`, channels, seq, the node's liveness key.
/// ARGV: pair, user, hub, bus channel, sealed announcement, only-if-dead.
pub const LEAVE_SCRIPT: &str = r"
if ARGV[6] == '1' and redis.call('EXISTS', KEYS[6]) == 1 then return 0 end
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) > 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('SREM', KEYS[4], ARGV[3]) end
local seq = redis.call('INCR', KEYS[5])
redis.call('PUBLISH', ARGV[4], 'WP' .. seq .. ' ' .. ARGV[5])
return 1
";

/// A channel's first subscriber on a node. Returns 1 when it is the first
/// in the cluster (the channel is occupied).
///
/// KEYS: `on:<node>`, occupied, nodes. ARGV: hub, node.
pub const OCCUPY_SCRIPT: &str = r"
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SADD', KEYS[3], ARGV[2])
if redis.call('HINCRBY', KEYS[2], ARGV[1], 1) > 1 then return 0 end
return 1
";

/// A channel's last subscriber on a node left (or the node is dead:
/// `ARGV[2]` is 1, and nothing happens while its liveness key exists).
/// Returns 1 when it was the last in the cluster (the channel is vacated).
///
/// KEYS: `on:<node>`, occupied, the node's liveness key. ARGV: hub, only-if-dead.
pub const VACATE_SCRIPT: &str = r"
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) > 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
";

/// Every presence channel's members, and the counter they are at:
/// `{epoch, seq, hub, [user, info, …], hub, […], …}`.
///
/// KEYS: channels, seq, epoch. ARGV: the members keys' prefix, a fresh epoch.
pub const LOAD_SCRIPT: &str = r"
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[2]
  redis.call('SET', KEYS[3], epoch)
end
local out = {epoch, tonumber(redis.call('GET', KEYS[2]) or '0')}
for _, hub in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  out[#out + 1] = hub
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. hub)
end
return out
";

/// Forgets a dead node that has no users left.
///
/// KEYS: nodes, the node's liveness key, `on:<node>`. ARGV: node.
const FORGET_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 and redis.call('SCARD', KEYS[3]) == 0 then
  redis.call('SREM', KEYS[1], ARGV[1])
end
return 0
";

/// What announcement seals are bound to: `<prefix>:pusher`.
pub fn binding(prefix: &str) -> String {
    format!("{prefix}:pusher")
}

/// Splits a bus message `"WP" <seq> " " <sealed>`; `None` when it is not one.
pub fn split_bus(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let rest = bytes.strip_prefix(BUS_MAGIC)?;
    let space = rest.iter().position(|&b| b == b' ')?;
    let seq = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
    Some((seq, &rest[space + 1..]))
}

/// Opens an announcement: its number, hub channel and frame. Checks the MAC
/// and the seal's age (the order is the number's, checked by the roster).
pub fn open_bus(
    key: &seal::Key,
    prefix: &str,
    bytes: &[u8],
) -> Result<(u64, String, Bytes), String> {
    let (seq, sealed) = split_bus(bytes).ok_or("not a presence announcement")?;
    let (body, at) = seal::open(key, &binding(prefix), sealed).map_err(|e| e.to_string())?;
    let oldest = seal::now_ns().saturating_sub(u64::try_from(MAX_AGE.as_nanos()).unwrap_or(0));
    if at < oldest {
        return Err("stale".into());
    }
    match wire::decode(body).map_err(|e| e.to_string())?.body {
        Body::Publish {
            channel,
            kind: Kind::Text,
            payload,
            ..
        } => Ok((seq, channel, payload)),
        _ => Err("not a text publication".into()),
    }
}

/// Opens a cache channel's last event as kept in Redis: the sealed bus
/// envelope of its publish (the seal bound to the bus channel); its frame
/// and age.
fn open_cached(
    key: &seal::Key,
    bus: &str,
    hub: &str,
    sealed: &[u8],
) -> Result<(String, std::time::Duration), &'static str> {
    let (body, at) = seal::open(key, bus, sealed).map_err(|_| "bad seal")?;
    let age = std::time::Duration::from_nanos(seal::now_ns().saturating_sub(at));
    match wire::decode(body).map(|e| e.body) {
        Ok(Body::Publish {
            channel,
            kind: Kind::Text,
            payload,
            ..
        }) if channel == hub => {
            let frame = String::from_utf8(payload.to_vec()).map_err(|_| "not UTF-8")?;
            Ok((frame, age))
        }
        Ok(_) => Err("not a text publication of this channel"),
        Err(_) => Err("malformed envelope"),
    }
}

/// The set member of a (hub channel, user): hub names hold no newline.
fn pair(hub: &str, user: &str) -> String {
    format!("{hub}\n{user}")
}

fn sha1_hex(text: &str) -> String {
    Sha1::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The scripts' SHA1s, loaded on every connection.
struct Shas {
    join: String,
    leave: String,
    occupy: String,
    vacate: String,
    load: String,
    forget: String,
}

/// The scripts, in the order [`Shas`] lists them.
const SCRIPTS: [&str; 6] = [
    JOIN_SCRIPT,
    LEAVE_SCRIPT,
    OCCUPY_SCRIPT,
    VACATE_SCRIPT,
    LOAD_SCRIPT,
    FORGET_SCRIPT,
];

/// The op of an `on:<node>` member: `<hub>\n<user>` a presence user,
/// `<hub>` an occupied channel; as the op that undoes it.
fn undo(member: &str) -> Op {
    match member.split_once('\n') {
        Some((hub, user)) => Op::Leave {
            hub: hub.to_owned(),
            user: user.to_owned(),
        },
        None => Op::Vacate {
            hub: member.to_owned(),
        },
    }
}

/// The `on:<node>` member an op adds or removes.
fn member_of(op: &Op) -> String {
    match op {
        Op::Join { hub, user, .. } | Op::Leave { hub, user } => pair(hub, user),
        Op::Occupy { hub } | Op::Vacate { hub } => hub.clone(),
    }
}

/// The change an op made when Redis found it the cluster's.
fn change_of(op: &Op) -> (&str, Change) {
    match op {
        Op::Join { hub, user, .. } => (
            hub,
            Change::MemberAdded {
                user_id: user.clone(),
            },
        ),
        Op::Leave { hub, user } => (
            hub,
            Change::MemberRemoved {
                user_id: user.clone(),
            },
        ),
        Op::Occupy { hub } => (hub, Change::Occupied),
        Op::Vacate { hub } => (hub, Change::Vacated),
    }
}

impl Link {
    fn pusher_key(&self, rest: &str) -> String {
        format!("{}:pusher:{rest}", self.cluster.prefix)
    }

    pub(super) async fn roster(self) {
        let ops = self.cluster.pusher_ops.clone();
        let mut backoff = FIRST_BACKOFF;
        let mut generation = self.health.generation();
        loop {
            generation.borrow_and_update();
            let ready = async {
                let mut conn = self.connect().await?;
                let shas = self.load_scripts(&mut conn).await?;
                self.wait_alive(&mut conn).await?;
                self.resync(&mut conn, &shas).await?;
                self.load_cache(&mut conn).await?;
                RedisResult::Ok((conn, shas))
            };
            let ready = tokio::select! {
                ready = ready => ready,
                () = self.stop.cancelled() => return,
            };
            let (mut conn, shas) = match ready {
                Ok(ready) => ready,
                Err(e) => {
                    // The other tasks log the link's state; this one only retries.
                    tracing::debug!(error = %e, "pusher presence: redis not ready; retrying");
                    if !self.pause(&mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            backoff = FIRST_BACKOFF;
            let mut reap = tokio::time::interval(self.cluster.node_ttl / 3);
            reap.tick().await;
            let failed = loop {
                let step = tokio::select! {
                    () = self.stop.cancelled() => {
                        self.leave_cluster(&mut conn, &shas).await;
                        return;
                    }
                    () = ops.wake.notified() => self.send_ops(&mut conn, &shas).await,
                    _ = reap.tick() => self.reap(&mut conn, &shas).await,
                    _ = generation.changed() => Err(redis::RedisError::from(std::io::Error::other(
                        "the subscriber lost its connection",
                    ))),
                };
                if let Err(e) = step {
                    break e;
                }
            };
            tracing::debug!(error = %failed, "pusher presence: lost redis; resynchronising when it is back");
        }
    }

    async fn load_scripts(&self, conn: &mut MultiplexedConnection) -> RedisResult<Shas> {
        let mut pipe = redis::pipe();
        for text in SCRIPTS {
            pipe.cmd("SCRIPT").arg("LOAD").arg(text);
        }
        let shas: Vec<String> = pipe.query_async(conn).await?;
        let expected = SCRIPTS.map(sha1_hex);
        if shas != expected {
            return Err(redis::RedisError::from(std::io::Error::other(
                "redis gave unexpected script hashes",
            )));
        }
        let [join, leave, occupy, vacate, load, forget] = expected;
        Ok(Shas {
            join,
            leave,
            occupy,
            vacate,
            load,
            forget,
        })
    }

    /// Waits until the presence task announced this node alive: a node that
    /// holds users while it is not alive would be reaped.
    async fn wait_alive(&self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        let key = self.alive_key(&self.cluster.node_id);
        let mut wait = FIRST_BACKOFF;
        loop {
            let alive: bool = redis::cmd("EXISTS").arg(&key).query_async(conn).await?;
            if alive {
                return Ok(());
            }
            if !self.pause(&mut wait).await {
                return Err(redis::RedisError::from(std::io::Error::other("stopping")));
            }
        }
    }

    /// A sealed announcement of `frame` on `hub`.
    fn announcement(&self, hub: &str, frame: String) -> Vec<u8> {
        let envelope = Envelope {
            origin: self.cluster.node_id.clone(),
            body: Body::Publish {
                channel: hub.to_owned(),
                except: Vec::new(),
                kind: Kind::Text,
                payload: Bytes::from(frame),
            },
        };
        // A hub name is at most a few hundred bytes: this encodes.
        let mut bytes = wire::encode(&envelope).unwrap_or_default();
        seal::seal(
            &self.cluster.key,
            &binding(&self.cluster.prefix),
            seal::now_ns(),
            &mut bytes,
        );
        bytes
    }

    /// Starts the join or leave script (`sha`) in `pipe` with the five keys
    /// both share; the caller adds the sixth key and the arguments.
    fn member_script<'p>(
        &self,
        pipe: &'p mut redis::Pipeline,
        sha: &str,
        on: &str,
        hub: &str,
        channels: &str,
        seq: &str,
    ) -> &'p mut redis::Pipeline {
        pipe.cmd("EVALSHA")
            .arg(sha)
            .arg(6)
            .arg(on)
            .arg(self.pusher_key(&format!("holders:{hub}")))
            .arg(self.pusher_key(&format!("members:{hub}")))
            .arg(channels)
            .arg(seq)
    }

    /// Adds one op's script to `pipe`: `node`'s change of `op`; `only_if_dead`
    /// for a reaped node's leaves.
    fn push_op(
        &self,
        pipe: &mut redis::Pipeline,
        shas: &Shas,
        node: &str,
        op: &Op,
        only_if_dead: bool,
    ) {
        let on = self.pusher_key(&format!("on:{node}"));
        let channels = self.pusher_key("channels");
        let seq = self.pusher_key("seq");
        match op {
            Op::Join { hub, user, info } => {
                let Some((_, channel)) = from_hub_channel(hub) else {
                    return;
                };
                let json: Json = serde_json::from_str(info).unwrap_or(Json::Null);
                let sealed = self.announcement(hub, frame::member_added(channel, user, &json));
                self.member_script(pipe, &shas.join, &on, hub, &channels, &seq)
                    .arg(self.pusher_key("nodes"))
                    .arg(pair(hub, user))
                    .arg(user)
                    .arg(info)
                    .arg(hub)
                    .arg(node)
                    .arg(&*self.cluster.bus)
                    .arg(sealed);
            }
            Op::Leave { hub, user } => {
                let Some((_, channel)) = from_hub_channel(hub) else {
                    return;
                };
                let sealed = self.announcement(hub, frame::member_removed(channel, user));
                self.member_script(pipe, &shas.leave, &on, hub, &channels, &seq)
                    .arg(self.alive_key(node))
                    .arg(pair(hub, user))
                    .arg(user)
                    .arg(hub)
                    .arg(&*self.cluster.bus)
                    .arg(sealed)
                    .arg(if only_if_dead { "1" } else { "0" });
            }
            Op::Occupy { hub } => {
                pipe.cmd("EVALSHA")
                    .arg(&shas.occupy)
                    .arg(3)
                    .arg(&on)
                    .arg(self.pusher_key("occupied"))
                    .arg(self.pusher_key("nodes"))
                    .arg(hub)
                    .arg(node);
            }
            Op::Vacate { hub } => {
                pipe.cmd("EVALSHA")
                    .arg(&shas.vacate)
                    .arg(3)
                    .arg(&on)
                    .arg(self.pusher_key("occupied"))
                    .arg(self.alive_key(node))
                    .arg(hub)
                    .arg(if only_if_dead { "1" } else { "0" });
            }
        }
    }

    /// Runs `ops` of `node` in order, pipelined, and reports (as this node)
    /// those that were the cluster's changes; returns how many.
    async fn run_ops(
        &self,
        conn: &mut MultiplexedConnection,
        shas: &Shas,
        node: &str,
        ops: &[Op],
        only_if_dead: bool,
    ) -> RedisResult<usize> {
        let mut changed = 0;
        for chunk in ops.chunks(BATCH) {
            let mut pipe = redis::pipe();
            let mut sent = Vec::with_capacity(chunk.len());
            for op in chunk {
                let before = pipe.cmd_iter().count();
                self.push_op(&mut pipe, shas, node, op, only_if_dead);
                if pipe.cmd_iter().count() > before {
                    sent.push(op);
                }
            }
            if sent.is_empty() {
                continue;
            }
            let results: Vec<i64> = pipe.query_async(conn).await?;
            for (op, result) in sent.into_iter().zip(results) {
                if result == 1 {
                    changed += 1;
                    let (hub, change) = change_of(op);
                    self.ctx.pusher.report_cluster(hub, change);
                }
            }
        }
        Ok(changed)
    }

    /// Sends this node's queued changes (or resynchronises when asked to).
    async fn send_ops(&self, conn: &mut MultiplexedConnection, shas: &Shas) -> RedisResult<()> {
        let (ops, resync) = self.cluster.pusher_ops.take();
        if resync {
            return self.resync(conn, shas).await;
        }
        let node = self.cluster.node_id.clone();
        self.run_ops(conn, shas, &node, &ops, false).await?;
        Ok(())
    }

    /// Makes Redis hold exactly this node's users, then loads the roster.
    async fn resync(&self, conn: &mut MultiplexedConnection, shas: &Shas) -> RedisResult<()> {
        let _ = self.cluster.pusher_ops.take();
        let local = self.ctx.pusher.local_ops(&self.ctx.hub);
        let node = self.cluster.node_id.clone();
        let held: HashSet<String> = redis::cmd("SMEMBERS")
            .arg(self.pusher_key(&format!("on:{node}")))
            .query_async(conn)
            .await?;
        let wanted: HashSet<String> = local.iter().map(member_of).collect();
        // Leaves before vacates, occupies before joins, as they would have come.
        let mut ops: Vec<Op> = held.difference(&wanted).map(|m| undo(m)).collect();
        ops.sort_by_key(|op| matches!(op, Op::Vacate { .. }));
        let mut adds: Vec<Op> = local
            .into_iter()
            .filter(|op| !held.contains(&member_of(op)))
            .collect();
        adds.sort_by_key(|op| matches!(op, Op::Join { .. }));
        ops.extend(adds);
        self.run_ops(conn, shas, &node, &ops, false).await?;
        self.load_roster(conn, shas).await
    }

    /// Reads every presence channel's members into this node's roster.
    async fn load_roster(&self, conn: &mut MultiplexedConnection, shas: &Shas) -> RedisResult<()> {
        let epoch = format!("{:016x}", super::random_u64());
        let value: Value = redis::cmd("EVALSHA")
            .arg(&shas.load)
            .arg(3)
            .arg(self.pusher_key("channels"))
            .arg(self.pusher_key("seq"))
            .arg(self.pusher_key("epoch"))
            .arg(self.pusher_key("members:"))
            .arg(epoch)
            .query_async(conn)
            .await?;
        let Some((epoch, seq, members)) = parse_load(&value) else {
            return Err(redis::RedisError::from(std::io::Error::other(
                "unexpected answer to the roster load",
            )));
        };
        self.ctx.pusher.load_roster(&epoch, seq, members);
        Ok(())
    }

    /// Reads the cache channels' last events kept in Redis into this
    /// node's memory (a node started after an event was published knows it).
    async fn load_cache(&self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        let pattern = self.pusher_key("cache:*");
        let prefix = self.pusher_key("cache:");
        let mut cursor = 0u64;
        let mut loaded = 0usize;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(conn)
                .await?;
            if !keys.is_empty() {
                let values: Vec<Option<Vec<u8>>> =
                    redis::cmd("MGET").arg(&keys).query_async(conn).await?;
                for (key, value) in keys.iter().zip(values) {
                    let (Some(hub), Some(sealed)) = (key.strip_prefix(&prefix), value) else {
                        continue;
                    };
                    match open_cached(&self.cluster.key, &self.cluster.bus, hub, &sealed) {
                        Ok((frame, age)) => {
                            self.ctx.pusher.restore_cache(hub, &frame, age);
                            loaded += 1;
                        }
                        Err(problem) => {
                            tracing::warn!(key = %key, problem, "a cached pusher event in redis was refused")
                        }
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        tracing::info!(
            cached_events = loaded,
            "pusher presence and cache channels read from redis"
        );
        Ok(())
    }

    /// Leaves with every user of a dead node, once (whichever node gets there).
    async fn reap(&self, conn: &mut MultiplexedConnection, shas: &Shas) -> RedisResult<()> {
        let me = self.cluster.node_id.clone();
        let nodes_key = self.pusher_key("nodes");
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&nodes_key)
            .query_async(conn)
            .await?;
        if !nodes.contains(&me) && !self.ctx.pusher.local_ops(&self.ctx.hub).is_empty() {
            // This node was taken for dead (Redis stalled longer than
            // node_ttl) and reaped: put its users back.
            tracing::warn!(
                "this node's pusher presence was reaped by another node; resynchronising"
            );
            return self.resync(conn, shas).await;
        }
        let others: Vec<&String> = nodes
            .iter()
            .filter(|n| **n != me && valid_node_id(n))
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for node in &others {
            pipe.cmd("EXISTS").arg(self.alive_key(node));
        }
        let alive: Vec<bool> = pipe.query_async(conn).await?;
        for (node, alive) in others.into_iter().zip(alive) {
            if alive {
                continue;
            }
            let on = self.pusher_key(&format!("on:{node}"));
            let held: Vec<String> = redis::cmd("SMEMBERS").arg(&on).query_async(conn).await?;
            let mut ops: Vec<Op> = held.iter().map(|m| undo(m)).collect();
            ops.sort_by_key(|op| matches!(op, Op::Vacate { .. }));
            let removed = self.run_ops(conn, shas, node, &ops, true).await?;
            redis::cmd("EVALSHA")
                .arg(&shas.forget)
                .arg(3)
                .arg(&nodes_key)
                .arg(self.alive_key(node))
                .arg(&on)
                .arg(node)
                .query_async::<()>(conn)
                .await?;
            if !ops.is_empty() {
                tracing::info!(node = %node, users = ops.len(), removed,
                    "pusher presence of a dead node removed");
            }
        }
        Ok(())
    }

    /// Graceful stop: the changes still queued, then leave with every user left.
    async fn leave_cluster(&self, conn: &mut MultiplexedConnection, shas: &Shas) {
        let node = self.cluster.node_id.clone();
        let result = async {
            let (mut ops, _) = self.cluster.pusher_ops.take();
            let held: Vec<String> = redis::cmd("SMEMBERS")
                .arg(self.pusher_key(&format!("on:{node}")))
                .query_async(conn)
                .await?;
            let mut left: Vec<Op> = held.iter().map(|m| undo(m)).collect();
            left.sort_by_key(|op| matches!(op, Op::Vacate { .. }));
            ops.extend(left);
            self.run_ops(conn, shas, &node, &ops, false).await?;
            redis::cmd("SREM")
                .arg(self.pusher_key("nodes"))
                .arg(&node)
                .query_async::<()>(conn)
                .await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e,
                "could not remove this node's pusher presence; other nodes reap it within node_ttl");
        }
    }
}

/// Hub channel → user → `user_info`.
type Members = HashMap<String, HashMap<String, Json>>;

/// `{epoch, seq, hub, [user, info, …], …}` of [`LOAD_SCRIPT`].
fn parse_load(value: &Value) -> Option<(String, u64, Members)> {
    let Value::Array(items) = value else {
        return None;
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let epoch = text(items.first()?)?;
    let seq = match items.get(1)? {
        Value::Int(n) => u64::try_from(*n).ok()?,
        _ => return None,
    };
    let mut members = HashMap::new();
    for chunk in items[2..].chunks(2) {
        let [hub, Value::Array(fields)] = chunk else {
            return None;
        };
        let hub = text(hub)?;
        let mut users = HashMap::new();
        for field in fields.chunks(2) {
            let [user, info] = field else { return None };
            let info = text(info)
                .and_then(|i| serde_json::from_str(&i).ok())
                .unwrap_or(Json::Null);
            users.insert(text(user)?, info);
        }
        members.insert(hub, users);
    }
    Some((epoch, seq, members))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_split_and_loads_parse() {
        assert_eq!(split_bus(b"WP12 abc"), Some((12, &b"abc"[..])));
        assert_eq!(split_bus(b"WH12 abc"), None);
        assert_eq!(split_bus(b"WPx abc"), None);
        let value = Value::Array(vec![
            Value::BulkString(b"e1".to_vec()),
            Value::Int(7),
            Value::BulkString(b"\x011\x01presence-a".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"u".to_vec()),
                Value::BulkString(br#"{"n":1}"#.to_vec()),
            ]),
        ]);
        let (epoch, seq, members) = parse_load(&value).unwrap();
        assert_eq!((epoch.as_str(), seq), ("e1", 7));
        assert_eq!(
            members["\u{1}1\u{1}presence-a"]["u"],
            serde_json::json!({"n": 1})
        );
        assert!(parse_load(&Value::Int(1)).is_none());
    }

    #[test]
    fn an_announcement_opens_with_the_key_it_was_sealed_with() {
        let key = seal::Key::new(b"a cluster secret of some length");
        let envelope = Envelope {
            origin: "n1".into(),
            body: Body::Publish {
                channel: "\u{1}1\u{1}presence-a".into(),
                except: Vec::new(),
                kind: Kind::Text,
                payload: Bytes::from_static(b"{}"),
            },
        };
        let mut bytes = wire::encode(&envelope).unwrap();
        seal::seal(&key, &binding("p"), seal::now_ns(), &mut bytes);
        let mut message = b"WP3 ".to_vec();
        message.extend_from_slice(&bytes);
        let (seq, hub, frame) = open_bus(&key, "p", &message).unwrap();
        assert_eq!(
            (seq, hub.as_str(), &frame[..]),
            (3, "\u{1}1\u{1}presence-a", &b"{}"[..])
        );
        assert!(
            open_bus(&key, "other", &message).is_err(),
            "bound to the prefix"
        );
        assert!(open_bus(&seal::Key::new(b"another secret entirely"), "p", &message).is_err());
    }
}
