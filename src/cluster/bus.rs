//! The publisher and the subscriber: envelopes out and in.
//!
//! - The **publisher** seals the queued envelopes (`seal.rs`: a sequence
//!   number in send order and an HMAC) and sends them in order, pipelined in
//!   batches of at most [`BATCH`], one batch at a time over one connection.
//!   While it has no connection it drops what is queued (counted in
//!   `cluster_dropped`) rather than deliver it late. A request whose node
//!   channel has no subscriber (the node is gone) fails at once.
//! - The **subscriber** opens each message's seal and refuses (counted in
//!   `cluster_rejected{kind}`, logged at most every [`REJECT_LOG_INTERVAL`])
//!   what is malformed, unauthenticated, stale, replayed or on the wrong
//!   channel; then it applies other nodes' publishes to local members, runs
//!   requests for this node's connections and answers them, and hands replies
//!   to the requests waiting for them. It pings Redis every `node_ttl/3` to
//!   notice a dead link.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::RedisResult;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::mpsc;

use super::history::{self, Delivered};
use super::link::{CONNECT_TIMEOUT, FIRST_BACKOFF, Link, MAX_BACKOFF, RESPONSE_TIMEOUT, Role};
use super::roster;
use super::seal::{self, Replay, SealError, Sequence};
use super::wire::{self, Body, Envelope};
use super::{Outgoing, split_public_id, valid_node_id};
use crate::hub::ConnId;
use crate::pusher::roster::Order;

/// Envelopes pipelined in one round trip at most.
pub const BATCH: usize = 256;
/// At most one warning per this long about refused messages; the rest at debug level.
pub const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Link {
    pub(super) async fn publisher(self, mut queue: mpsc::Receiver<Outgoing>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut backoff = FIRST_BACKOFF;
        let mut generation = self.health.generation();
        let mut sequence = Sequence::default();
        loop {
            generation.borrow_and_update();
            let mut conn = match self.connect().await {
                Ok(conn) => {
                    self.health.up(Role::Publisher);
                    backoff = FIRST_BACKOFF;
                    conn
                }
                Err(e) => {
                    self.health.down(Role::Publisher, &e);
                    // Until the next attempt, what is queued is dropped: late
                    // deliveries would come out of order with local ones.
                    self.dropped(&mut batch);
                    let pause = tokio::time::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    tokio::pin!(pause);
                    loop {
                        tokio::select! {
                            () = &mut pause => break,
                            () = self.stop.cancelled() => return,
                            n = queue.recv_many(&mut batch, BATCH) => {
                                if n == 0 {
                                    return;
                                }
                                self.dropped(&mut batch);
                            }
                        }
                    }
                    continue;
                }
            };
            loop {
                if batch.is_empty() {
                    let n = tokio::select! {
                        biased;
                        n = queue.recv_many(&mut batch, BATCH) => n,
                        () = self.stop.cancelled() => {
                            // Last publishes of the drain (close events) still go out.
                            while let Ok(o) = queue.try_recv() {
                                batch.push(o);
                            }
                            let _ = self.send(&mut conn, &mut batch, &mut sequence).await;
                            return;
                        }
                    };
                    if n == 0 {
                        return;
                    }
                }
                if generation.has_changed().unwrap_or(false) {
                    // The subscriber saw Redis go: this connection is stale
                    // too. Reconnect before sending; the batch waits.
                    break;
                }
                if let Err(e) = self.send(&mut conn, &mut batch, &mut sequence).await {
                    self.health.down(Role::Publisher, &e);
                    break;
                }
            }
        }
    }

    /// Seals a batch in order and PUBLISHes it in one pipeline. A request
    /// whose node channel has no subscriber (the node is gone) fails at once.
    async fn send(
        &self,
        conn: &mut MultiplexedConnection,
        batch: &mut Vec<Outgoing>,
        sequence: &mut Sequence,
    ) -> RedisResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.dequeued(batch);
        let now = seal::now_ns();
        for o in batch.iter_mut() {
            seal::seal(
                &self.cluster.key,
                &o.channel,
                sequence.next(now),
                &mut o.bytes,
            );
        }
        let mut pipe = redis::pipe();
        for o in batch.iter() {
            if let Some((key, ttl_ms)) = &o.keep {
                pipe.cmd("SET")
                    .arg(key)
                    .arg(&o.bytes)
                    .arg("PX")
                    .arg(*ttl_ms)
                    .ignore();
            }
            pipe.cmd("PUBLISH").arg(&*o.channel).arg(&o.bytes);
        }
        let result: RedisResult<Vec<i64>> = pipe.query_async(conn).await;
        match result {
            Ok(receivers) => {
                self.cluster.counters.out.inc_by(batch.len() as u64);
                for (o, receivers) in batch.iter().zip(receivers) {
                    if let (Some(id), 0) = (o.request, receivers) {
                        self.cluster.resolve(id, None);
                    }
                }
                batch.clear();
                Ok(())
            }
            Err(e) => {
                self.fail(batch);
                Err(e)
            }
        }
    }

    fn dequeued(&self, batch: &[Outgoing]) {
        let bytes: usize = batch.iter().map(|o| o.bytes.len()).sum();
        self.cluster
            .queued_bytes
            .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Drops a batch that was taken off the queue but not sent.
    fn dropped(&self, batch: &mut Vec<Outgoing>) {
        self.dequeued(batch);
        self.fail(batch);
    }

    fn fail(&self, batch: &mut Vec<Outgoing>) {
        self.cluster.counters.dropped.inc_by(batch.len() as u64);
        for o in batch.drain(..) {
            if let Some(id) = o.request {
                self.cluster.resolve(id, None);
            }
        }
    }

    pub(super) async fn subscriber(self) {
        let mut backoff = FIRST_BACKOFF;
        // Kept across reconnects: a replay after one is still a replay.
        let mut inbound = Inbound::default();
        loop {
            let opened = tokio::select! {
                opened = self.subscribe() => opened,
                () = self.stop.cancelled() => return,
            };
            let (mut sink, mut stream) = match opened {
                Ok(pair) => pair,
                Err(e) => {
                    self.health.down(Role::Subscriber, &e);
                    if !self.pause(&mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            self.health.up(Role::Subscriber);
            backoff = FIRST_BACKOFF;
            let mut ping = tokio::time::interval(self.cluster.node_ttl / 3);
            ping.tick().await;
            // Deliveries queued since the last yield.
            let mut queued = 0u64;
            let lost = loop {
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    msg = stream.next() => match msg {
                        Some(msg) => {
                            queued += self.receive(msg.get_channel_name(), msg.get_payload_bytes(), &mut inbound);
                            if queued >= crate::hub::YIELD_AFTER_DELIVERIES {
                                // Let the members' writers catch up first.
                                queued = 0;
                                tokio::task::yield_now().await;
                            }
                        }
                        None => break "connection closed".to_owned(),
                    },
                    _ = ping.tick() => {
                        inbound.replay.prune(seal::now_ns());
                        inbound.history.prune(seal::now_ns());
                        match tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<redis::Value>()).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => break e.to_string(),
                            Err(_) => break "no answer to PING".to_owned(),
                        }
                    }
                }
            };
            self.health.down(Role::Subscriber, &lost);
            self.health.lost_subscription();
        }
    }

    async fn subscribe(&self) -> RedisResult<(PubSubSink, PubSubStream)> {
        let connect = self.client.get_async_pubsub();
        let mut pubsub = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(pubsub) => pubsub?,
            Err(_) => {
                return Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )));
            }
        };
        let node = self.cluster.node_channel(&self.cluster.node_id);
        pubsub
            .subscribe(&[&*self.cluster.bus, node.as_str()])
            .await?;
        Ok(pubsub.split())
    }

    /// One pub/sub message: another node's publish, a request for this node,
    /// or a reply to one of ours. Returns the deliveries it queued.
    fn receive(&self, channel: &str, bytes: &[u8], inbound: &mut Inbound) -> u64 {
        let cluster = &self.cluster;
        if channel == &*cluster.bus && bytes.starts_with(history::BUS_MAGIC) {
            return self.receive_history(channel, bytes, inbound);
        }
        if channel == &*cluster.bus && bytes.starts_with(roster::BUS_MAGIC) {
            return self.receive_announcement(channel, bytes, inbound);
        }
        // This node's own publishes come back on the bus: skipped unopened.
        // A forgery naming this node as origin is skipped too.
        match wire::peek_origin(bytes) {
            Ok(origin) if origin == cluster.node_id => return 0,
            Ok(_) => {}
            Err(e) => {
                self.reject(channel, "malformed", &e, inbound);
                return 0;
            }
        }
        let (body, seq) = match seal::open(&cluster.key, channel, bytes) {
            Ok(opened) => opened,
            Err(e) => {
                self.reject(channel, "unauthenticated", &e, inbound);
                return 0;
            }
        };
        let envelope = match wire::decode(body) {
            Ok(envelope) => envelope,
            Err(e) => {
                self.reject(channel, "malformed", &e, inbound);
                return 0;
            }
        };
        if let Err(e) = inbound.replay.check(&envelope.origin, seq, seal::now_ns()) {
            let kind = match e {
                SealError::Stale => "stale",
                SealError::Replayed => "replayed",
                SealError::Unsealed | SealError::BadMac => "unauthenticated",
            };
            self.reject(channel, kind, &e, inbound);
            return 0;
        }
        cluster.counters.inbound.inc();
        let on_bus = channel == &*cluster.bus;
        match envelope.body {
            Body::Publish {
                channel,
                except,
                kind,
                payload,
            } if on_bus => {
                if channel.starts_with(crate::pusher::HUB_PREFIX) {
                    return crate::pusher::cluster::receive(&self.ctx, &channel, &payload, &except)
                        as u64;
                }
                let except: Vec<ConnId> = except
                    .iter()
                    .filter_map(|id| split_public_id(id))
                    .filter(|(node, _)| *node == cluster.node_id)
                    .map(|(_, id)| id)
                    .collect();
                return self
                    .ctx
                    .hub
                    .publish(&channel, kind, &payload, &except)
                    .delivered as u64;
            }
            Body::Request { id, op } if !on_bus && valid_node_id(&envelope.origin) => {
                let outcome = crate::control::exec::run_request(&self.ctx, op);
                let reply = Envelope {
                    origin: cluster.node_id.clone(),
                    body: Body::Reply { id, outcome },
                };
                match wire::encode(&reply) {
                    Ok(bytes) => {
                        let to = cluster.node_channel(&envelope.origin);
                        cluster.enqueue(to.into(), bytes, None);
                    }
                    Err(e) => tracing::warn!(error = %e, "reply not sent"),
                }
            }
            Body::Reply { id, outcome } if !on_bus => cluster.resolve(id, Some(outcome)),
            _ => self.reject(
                channel,
                "misrouted",
                &"an envelope on the wrong channel",
                inbound,
            ),
        }
        0
    }

    /// A publication to a channel with history, PUBLISHed by the script that
    /// gave its offset (`history.rs`): delivered by every node, this node's
    /// own too, so each node sends a channel's publications in offset order.
    fn receive_history(&self, channel: &str, bytes: &[u8], inbound: &mut Inbound) -> u64 {
        let cluster = &self.cluster;
        let incoming = match history::open_bus(&cluster.key, &cluster.prefix, bytes) {
            Ok(incoming) => incoming,
            Err(e) => {
                self.reject(channel, "unauthenticated", &e, inbound);
                return 0;
            }
        };
        let Body::Publish {
            channel: name,
            except,
            kind,
            payload,
        } = incoming.envelope.body
        else {
            return 0;
        };
        let now = seal::now_ns();
        let Some(missed) = inbound.history.first_time(&name, &incoming.position, now) else {
            let e = "a history publication already delivered";
            self.reject(channel, "replayed", &e, inbound);
            return 0;
        };
        if missed > 0 {
            // Lost while the subscription was down: members see the gap
            // (ws2fcgi.js reports the channel lost), reconnecting recovers.
            tracing::warn!(channel = %name, missed, offset = incoming.position.offset,
                "history publications never reached this node");
        }
        if incoming.envelope.origin != cluster.node_id {
            cluster.counters.inbound.inc();
        }
        let except: Vec<ConnId> = except
            .iter()
            .filter_map(|id| split_public_id(id))
            .filter(|(node, _)| *node == cluster.node_id)
            .map(|(_, id)| id)
            .collect();
        let delivered = self
            .ctx
            .hub
            .publish_at(&name, kind, &payload, Some(incoming.position), &except)
            .delivered;
        if incoming.envelope.origin == cluster.node_id {
            cluster.history.delivered(incoming.seq, delivered);
        }
        delivered as u64
    }

    /// A Pusher presence announcement, PUBLISHed by the roster scripts
    /// (`roster.rs`): applied by every node, this node's own too, in the
    /// order of its number; a gap makes the node load the roster again.
    fn receive_announcement(&self, channel: &str, bytes: &[u8], inbound: &mut Inbound) -> u64 {
        let cluster = &self.cluster;
        let (seq, hub, frame) = match roster::open_bus(&cluster.key, &cluster.prefix, bytes) {
            Ok(opened) => opened,
            Err(e) => {
                self.reject(channel, "unauthenticated", &e, inbound);
                return 0;
            }
        };
        let Ok(frame) = std::str::from_utf8(&frame) else {
            self.reject(channel, "malformed", &"not UTF-8", inbound);
            return 0;
        };
        match self.ctx.pusher.announce(&self.ctx.hub, seq, &hub, frame) {
            None => self.reject(channel, "malformed", &"not a member announcement", inbound),
            Some(Order::Old) => {
                let e = "a presence announcement already applied";
                self.reject(channel, "replayed", &e, inbound);
            }
            Some(Order::New { missed }) => {
                cluster.counters.inbound.inc();
                if missed > 0 {
                    tracing::warn!(
                        missed,
                        seq,
                        "pusher presence announcements never reached this node; reloading"
                    );
                    cluster.pusher_ops.resync();
                }
            }
        }
        0
    }

    /// Counts a refused message by `kind` and logs it, as a warning at most
    /// once per [`REJECT_LOG_INTERVAL`].
    fn reject(
        &self,
        channel: &str,
        kind: &'static str,
        error: &dyn std::fmt::Display,
        inbound: &mut Inbound,
    ) {
        use crate::metrics::KindLabel;
        self.cluster
            .counters
            .rejected
            .get_or_create(&KindLabel { kind })
            .inc();
        inbound.refused += 1;
        let now = Instant::now();
        if inbound
            .warned
            .is_some_and(|at| now.duration_since(at) < REJECT_LOG_INTERVAL)
        {
            tracing::debug!(channel, kind, error = %error, "refused a message on the cluster's channels");
            return;
        }
        tracing::warn!(
            channel,
            kind,
            error = %error,
            refused = inbound.refused,
            "refused a message on the cluster's channels (counted in ws2fcgi_cluster_rejected_total; \
             `refused` since the last warning; more at debug level)"
        );
        inbound.warned = Some(now);
        inbound.refused = 0;
    }
}

/// What the subscriber keeps from one message to the next.
#[derive(Default)]
struct Inbound {
    /// The last sequence accepted from each node.
    replay: Replay,
    /// The last offset delivered of each channel with history.
    history: Delivered,
    /// When the last warning about a refused message was logged.
    warned: Option<Instant>,
    /// Messages refused since then.
    refused: u64,
}
