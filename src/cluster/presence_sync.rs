//! The presence task: this node's presence keys in Redis, and the other
//! nodes' presence read back.
//!
//! It writes `<prefix>:presence:<node>:<channel>` hashes as the
//! [`Tracker`](super::presence::Tracker) reports changes, reading the hub's
//! current state for each; every `node_ttl/3` it sets the node's liveness key
//! and extends its hashes (all with expiry `node_ttl`); after every (re)connect
//! it rewrites them all; on a graceful stop it deletes them. Presence queries
//! run concurrently on a clone of its connection.
//!
//! Pusher's channels (hub names starting with `\u{1}`, `pusher/mod.rs`) are
//! not raw channels: they get no presence hash (raw `presence` never shows
//! them), only their number of local subscribers, all in one hash per node,
//! `<prefix>:pusher:counts:<node>` (field: hub name, value: count), which the
//! Pusher HTTP API sums over the live nodes.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use redis::RedisResult;
use redis::aio::MultiplexedConnection;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::link::{FIRST_BACKOFF, Link, MAX_BACKOFF, Role, send_pipeline};
use super::{Query, RemoteMember, valid_node_id};
use crate::hub::ConnId;
use crate::pusher::HUB_PREFIX;

/// Is `channel` a Pusher hub channel (counted, not mirrored member by member)?
fn is_pusher(channel: &str) -> bool {
    channel.starts_with(HUB_PREFIX)
}

/// Presence keys written or refreshed per round trip at most.
const KEYS_PER_TRIP: usize = 512;

impl Link {
    pub(super) async fn presence(self, mut queries: mpsc::Receiver<Query>) {
        let token = format!("{:016x}", super::random_u64());
        let mut backoff = FIRST_BACKOFF;
        let mut written: HashSet<Arc<str>> = HashSet::new();
        let mut lookups = JoinSet::new();
        let mut generation = self.health.generation();
        loop {
            generation.borrow_and_update();
            let mut conn = match self.connect().await {
                Ok(conn) => conn,
                Err(e) => {
                    self.health.down(Role::Presence, &e);
                    let pause = tokio::time::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    tokio::pin!(pause);
                    loop {
                        tokio::select! {
                            () = &mut pause => break,
                            () = self.stop.cancelled() => return,
                            // No Redis: other nodes' members are unknown; answer at once.
                            query = queries.recv() => if query.is_none() { return },
                        }
                    }
                    continue;
                }
            };
            let result = async {
                self.check_node_id(&mut conn, &token).await?;
                self.rewrite(&mut conn, &mut written).await?;
                self.heartbeat(&mut conn, &token, &mut written).await
            }
            .await;
            if let Err(e) = result {
                self.health.down(Role::Presence, &e);
                if !self.pause(&mut backoff).await {
                    return;
                }
                continue;
            }
            self.health.up(Role::Presence);
            backoff = FIRST_BACKOFF;
            let mut heartbeat = tokio::time::interval(self.cluster.node_ttl / 3);
            heartbeat.tick().await;
            let tracker = self.cluster.tracker.clone();
            let failed = loop {
                let step = tokio::select! {
                    () = self.stop.cancelled() => {
                        self.clean_up(&mut conn, &mut written).await;
                        return;
                    }
                    () = tracker.wake.notified() => self.write_changes(&mut conn, &mut written).await,
                    _ = heartbeat.tick() => self.heartbeat(&mut conn, &token, &mut written).await,
                    Some(query) = queries.recv() => {
                        let link = self.clone();
                        let conn = conn.clone();
                        lookups.spawn(async move {
                            match query {
                                Query::Presence { channel, reply } => {
                                    if let Ok(members) = link.lookup(conn, &channel).await {
                                        let _ = reply.send(members);
                                    }
                                }
                                Query::PusherCounts { reply } => {
                                    if let Ok(counts) = link.pusher_counts(conn).await {
                                        let _ = reply.send(counts);
                                    }
                                }
                            }
                        });
                        Ok(())
                    }
                    Some(_) = lookups.join_next() => Ok(()),
                    // Redis went away (and may come back empty): reconnect and rewrite.
                    _ = generation.changed() => Err(redis::RedisError::from(std::io::Error::other(
                        "the subscriber lost its connection",
                    ))),
                };
                if let Err(e) = step {
                    break e;
                }
            };
            self.health.down(Role::Presence, &failed);
        }
    }

    /// Warns when another live node holds this node's id.
    async fn check_node_id(
        &self,
        conn: &mut MultiplexedConnection,
        token: &str,
    ) -> RedisResult<()> {
        let key = self.alive_key(&self.cluster.node_id);
        let holder: Option<String> = redis::cmd("GET").arg(&key).query_async(conn).await?;
        if let Some(holder) = holder
            && holder != token
        {
            tracing::warn!(
                node_id = %self.cluster.node_id,
                "another instance announced this node_id less than node_ttl ago: \
                 either this node restarted, or two nodes share a node_id (they must not)"
            );
        }
        Ok(())
    }

    /// Rewrites every presence hash of this node from the hub.
    async fn rewrite(
        &self,
        conn: &mut MultiplexedConnection,
        written: &mut HashSet<Arc<str>>,
    ) -> RedisResult<()> {
        let _ = self.cluster.tracker.take();
        let (pusher, channels): (Vec<Arc<str>>, Vec<Arc<str>>) = self
            .cluster
            .tracker
            .channels()
            .into_iter()
            .partition(|c| is_pusher(c));
        let counts = self.counts_key(&self.cluster.node_id);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(&counts).ignore();
        for chunk in pusher.chunks(KEYS_PER_TRIP) {
            let hset = pipe.cmd("HSET").arg(&counts);
            for channel in chunk {
                hset.arg(&**channel)
                    .arg(self.cluster.tracker.count(channel));
            }
            hset.ignore();
        }
        pipe.cmd("PEXPIRE").arg(&counts).arg(self.ttl_ms()).ignore();
        pipe.query_async::<()>(conn).await?;
        let current: HashSet<&Arc<str>> = channels.iter().collect();
        let stale: Vec<Arc<str>> = written
            .iter()
            .filter(|c| !current.contains(c))
            .cloned()
            .collect();
        for chunk in stale.chunks(KEYS_PER_TRIP) {
            let mut pipe = redis::pipe();
            for channel in chunk {
                pipe.cmd("DEL")
                    .arg(self.presence_key(&self.cluster.node_id, channel))
                    .ignore();
            }
            pipe.query_async::<()>(conn).await?;
        }
        written.clear();
        for chunk in channels.chunks(KEYS_PER_TRIP) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for channel in chunk {
                let key = self.presence_key(&self.cluster.node_id, channel);
                pipe.cmd("DEL").arg(&key).ignore();
                let members = self.ctx.hub.presence(channel);
                if members.is_empty() {
                    continue;
                }
                let hset = pipe.cmd("HSET").arg(&key);
                for member in members {
                    let meta: Map<String, Value> = member
                        .meta
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect();
                    hset.arg(self.cluster.public_id(&member.id))
                        .arg(Value::Object(meta).to_string());
                }
                hset.ignore();
                pipe.cmd("PEXPIRE").arg(&key).arg(self.ttl_ms()).ignore();
                written.insert(channel.clone());
            }
            pipe.query_async::<()>(conn).await?;
        }
        Ok(())
    }

    /// Writes the memberships and metadata that changed, reading the hub as it is now.
    async fn write_changes(
        &self,
        conn: &mut MultiplexedConnection,
        written: &mut HashSet<Arc<str>>,
    ) -> RedisResult<()> {
        let changes = self.cluster.tracker.take();
        if changes.rewrite {
            return self.rewrite(conn, written).await;
        }
        let hub = &self.ctx.hub;
        let mut pipe = redis::pipe();
        let mut queued = 0;
        let mut writes: Vec<(ConnId, Arc<str>)> = Vec::new();
        let mut counted = HashSet::new();
        for (id, channel) in changes.memberships {
            if is_pusher(&channel) {
                counted.insert(channel);
                continue;
            }
            let member = hub
                .get(&id)
                .filter(|_| hub.channels_of(&id).iter().any(|c| **c == *channel));
            let key = self.presence_key(&self.cluster.node_id, &channel);
            match member {
                Some(_) => writes.push((id, channel)),
                None => {
                    pipe.cmd("HDEL")
                        .arg(&key)
                        .arg(self.cluster.public_id(&id))
                        .ignore();
                    queued += 1;
                }
            }
        }
        for id in changes.meta {
            for channel in hub.channels_of(&id) {
                if !is_pusher(&channel) {
                    writes.push((id, channel.into()));
                }
            }
        }
        if !counted.is_empty() {
            let counts = self.counts_key(&self.cluster.node_id);
            for channel in counted {
                match self.cluster.tracker.count(&channel) {
                    0 => pipe.cmd("HDEL").arg(&counts).arg(&*channel).ignore(),
                    n => pipe.cmd("HSET").arg(&counts).arg(&*channel).arg(n).ignore(),
                };
                queued += 1;
            }
            pipe.cmd("PEXPIRE").arg(&counts).arg(self.ttl_ms()).ignore();
        }
        for (id, channel) in writes {
            let Some(handle) = hub.get(&id) else { continue };
            let mut meta = Map::new();
            handle.for_each_meta(|k, v| {
                meta.insert(k.to_owned(), Value::String(v.to_owned()));
            });
            let key = self.presence_key(&self.cluster.node_id, &channel);
            pipe.cmd("HSET")
                .arg(&key)
                .arg(self.cluster.public_id(&id))
                .arg(Value::Object(meta).to_string())
                .ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(self.ttl_ms()).ignore();
            written.insert(channel);
            queued += 1;
            if queued >= KEYS_PER_TRIP {
                send_pipeline(&mut pipe, conn).await?;
                queued = 0;
            }
        }
        send_pipeline(&mut pipe, conn).await
    }

    /// Announces the node alive for `node_ttl` and extends its presence keys as long.
    async fn heartbeat(
        &self,
        conn: &mut MultiplexedConnection,
        token: &str,
        written: &mut HashSet<Arc<str>>,
    ) -> RedisResult<()> {
        let node = &self.cluster.node_id;
        let ttl = self.ttl_ms();
        let channels = self.cluster.tracker.channels();
        let current: HashSet<&Arc<str>> = channels.iter().collect();
        written.retain(|c| current.contains(c));
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.alive_key(node))
            .arg(token)
            .arg("PX")
            .arg(ttl)
            .ignore();
        pipe.cmd("SADD").arg(self.nodes_key()).arg(node).ignore();
        pipe.cmd("PEXPIRE")
            .arg(self.counts_key(node))
            .arg(ttl)
            .ignore();
        for chunk in channels.chunks(KEYS_PER_TRIP) {
            for channel in chunk.iter().filter(|c| !is_pusher(c)) {
                pipe.cmd("PEXPIRE")
                    .arg(self.presence_key(node, channel))
                    .arg(ttl)
                    .ignore();
            }
            send_pipeline(&mut pipe, conn).await?;
        }
        send_pipeline(&mut pipe, conn).await
    }

    /// Graceful stop: delete this node's keys so its presence goes at once.
    async fn clean_up(&self, conn: &mut MultiplexedConnection, written: &mut HashSet<Arc<str>>) {
        let node = &self.cluster.node_id;
        let changes = self.cluster.tracker.take();
        let mut channels: HashSet<Arc<str>> = std::mem::take(written);
        channels.extend(self.cluster.tracker.channels());
        channels.extend(changes.memberships.into_iter().map(|(_, c)| c));
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(self.alive_key(node)).ignore();
        pipe.cmd("SREM").arg(self.nodes_key()).arg(node).ignore();
        pipe.cmd("DEL").arg(self.counts_key(node)).ignore();
        for channel in channels.iter().filter(|c| !is_pusher(c)) {
            pipe.cmd("DEL")
                .arg(self.presence_key(node, channel))
                .ignore();
        }
        match pipe.query_async::<()>(conn).await {
            Ok(()) => tracing::info!(node_id = %node, "left the cluster; presence keys deleted"),
            Err(e) => {
                tracing::warn!(error = %e, "could not delete this node's keys; they expire within node_ttl")
            }
        }
    }

    /// `<prefix>:pusher:counts:<node>`: a node's subscribers per Pusher channel.
    fn counts_key(&self, node: &str) -> String {
        format!("{}:pusher:counts:{node}", self.cluster.prefix)
    }

    /// The subscribers of every Pusher hub channel on the other live nodes, summed.
    async fn pusher_counts(
        &self,
        mut conn: MultiplexedConnection,
    ) -> RedisResult<std::collections::HashMap<String, usize>> {
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.nodes_key())
            .query_async(&mut conn)
            .await?;
        let others: Vec<&String> = nodes
            .iter()
            .filter(|n| **n != self.cluster.node_id && valid_node_id(n))
            .collect();
        let mut sums = std::collections::HashMap::new();
        if others.is_empty() {
            return Ok(sums);
        }
        let mut pipe = redis::pipe();
        for node in &others {
            pipe.cmd("EXISTS").arg(self.alive_key(node));
            pipe.cmd("HGETALL").arg(self.counts_key(node));
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        for pair in replies.chunks(2) {
            let [alive, hash] = pair else { continue };
            if !matches!(alive, redis::Value::Int(1)) {
                continue;
            }
            let fields: BTreeMap<String, usize> =
                redis::from_redis_value_ref(hash).unwrap_or_default();
            for (channel, count) in fields {
                *sums.entry(channel).or_insert(0) += count;
            }
        }
        Ok(sums)
    }

    /// The members of `channel` on every other live node.
    async fn lookup(
        &self,
        mut conn: MultiplexedConnection,
        channel: &str,
    ) -> RedisResult<Vec<RemoteMember>> {
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.nodes_key())
            .query_async(&mut conn)
            .await?;
        let others: Vec<&String> = nodes
            .iter()
            .filter(|n| **n != self.cluster.node_id && valid_node_id(n))
            .collect();
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for node in &others {
            pipe.cmd("EXISTS").arg(self.alive_key(node));
            pipe.cmd("HGETALL").arg(self.presence_key(node, channel));
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let mut members = Vec::new();
        let mut gone = Vec::new();
        for (node, pair) in others.iter().zip(replies.chunks(2)) {
            let [alive, hash] = pair else { continue };
            if !matches!(alive, redis::Value::Int(1)) {
                gone.push(node.as_str());
                continue;
            }
            let fields: BTreeMap<String, String> =
                redis::from_redis_value_ref(hash).unwrap_or_default();
            for (id, meta) in fields {
                let meta = serde_json::from_str(&meta).unwrap_or_default();
                members.push(RemoteMember { id, meta });
            }
        }
        if !gone.is_empty() {
            // Nodes that died without cleaning up: forget them.
            let _ = redis::cmd("SREM")
                .arg(self.nodes_key())
                .arg(&gone)
                .query_async::<()>(&mut conn)
                .await;
        }
        Ok(members)
    }
}
