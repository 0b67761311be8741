//! The publisher and the subscriber: envelopes out and in.
//!
//! - The **publisher** sends the queued envelopes in order, pipelined in
//!   batches of at most [`BATCH`], one batch at a time over one connection.
//!   While it has no connection it drops what is queued (counted in
//!   `cluster_dropped`) rather than deliver it late. A request whose node
//!   channel has no subscriber (the node is gone) fails at once.
//! - The **subscriber** applies other nodes' publishes to local members, runs
//!   requests for this node's connections and answers them, and hands replies
//!   to the requests waiting for them; it pings Redis every `node_ttl/3` to
//!   notice a dead link.

use futures_util::StreamExt;
use redis::RedisResult;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::mpsc;

use super::link::{CONNECT_TIMEOUT, FIRST_BACKOFF, Link, MAX_BACKOFF, RESPONSE_TIMEOUT, Role};
use super::wire::{self, Body, Envelope};
use super::{Outgoing, split_public_id, valid_node_id};
use crate::frame;
use crate::hub::ConnId;

/// Envelopes pipelined in one round trip at most.
pub const BATCH: usize = 256;

impl Link {
    pub(super) async fn publisher(self, mut queue: mpsc::Receiver<Outgoing>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut backoff = FIRST_BACKOFF;
        let mut generation = self.health.generation();
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
                            let _ = self.send(&mut conn, &mut batch).await;
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
                if let Err(e) = self.send(&mut conn, &mut batch).await {
                    self.health.down(Role::Publisher, &e);
                    break;
                }
            }
        }
    }

    /// PUBLISHes a batch in one pipeline. A request whose node channel has no
    /// subscriber (the node is gone) fails at once.
    async fn send(
        &self,
        conn: &mut MultiplexedConnection,
        batch: &mut Vec<Outgoing>,
    ) -> RedisResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.dequeued(batch);
        let mut pipe = redis::pipe();
        for o in batch.iter() {
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
            let mut bad_envelopes = 0u64;
            // Deliveries queued since the last yield.
            let mut queued = 0u64;
            let lost = loop {
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    msg = stream.next() => match msg {
                        Some(msg) => {
                            queued += self.receive(msg.get_channel_name(), msg.get_payload_bytes(), &mut bad_envelopes);
                            if queued >= crate::hub::YIELD_AFTER_DELIVERIES {
                                // Let the members' writers catch up first.
                                queued = 0;
                                tokio::task::yield_now().await;
                            }
                        }
                        None => break "connection closed".to_owned(),
                    },
                    _ = ping.tick() => {
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
    fn receive(&self, channel: &str, bytes: &[u8], bad: &mut u64) -> u64 {
        let cluster = &self.cluster;
        match wire::peek_origin(bytes) {
            Ok(origin) if origin == cluster.node_id => return 0,
            Ok(_) => {}
            Err(e) => {
                self.bad_envelope(channel, &e, bad);
                return 0;
            }
        }
        let envelope = match wire::decode(bytes) {
            Ok(envelope) => envelope,
            Err(e) => {
                self.bad_envelope(channel, &e, bad);
                return 0;
            }
        };
        cluster.counters.inbound.inc();
        let on_bus = channel == &*cluster.bus;
        match envelope.body {
            Body::Publish {
                channel,
                except,
                kind,
                payload,
            } if on_bus => {
                let except: Vec<ConnId> = except
                    .iter()
                    .filter_map(|id| split_public_id(id))
                    .filter(|(node, _)| *node == cluster.node_id)
                    .map(|(_, id)| id)
                    .collect();
                let frame = frame::data(kind, &payload);
                return self.ctx.hub.publish(&channel, &frame, &except) as u64;
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
            _ => self.bad_envelope(channel, &"an envelope on the wrong channel", bad),
        }
        0
    }

    /// Logs the first bad envelope of a subscription as a warning, the rest at debug.
    fn bad_envelope(&self, channel: &str, error: &dyn std::fmt::Display, bad: &mut u64) {
        *bad += 1;
        if *bad == 1 {
            tracing::warn!(channel, error = %error, "ignored a message that is not a valid envelope (more at debug level)");
        } else {
            tracing::debug!(channel, error = %error, "ignored a message that is not a valid envelope");
        }
    }
}
