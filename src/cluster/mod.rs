//! Several ws2fcgi nodes sharing channels through Redis (`[cluster]`).
//!
//! Off unless `cluster.redis` is set; a single node needs none of this. With
//! it, every node talks to one Redis over a few connections of its own:
//!
//! ```text
//! publisher   one connection; PUBLISHes this node's envelopes, in the
//!             order they were queued (publishes, requests, replies)
//! subscriber  SUBSCRIBE <prefix>:bus (every node's publishes)
//!                       <prefix>:node:<node_id> (requests and replies for this node)
//! presence    HSET/HDEL <prefix>:presence:<node_id>:<channel>, and every
//!             node_ttl/3: SET <prefix>:node:<node_id>:alive PX node_ttl,
//!             SADD <prefix>:nodes, PEXPIRE on the presence keys;
//!             answers presence queries (HGETALL of the other live nodes)
//! roster      Pusher presence per user: EVALSHA of the join/leave scripts,
//!             reaping dead nodes' users (roster.rs)
//! ```
//!
//! A publish is applied to local members first, then queued for the bus; a
//! send, close, join, leave or meta for a connection of another node (its id
//! says which: `<node_id>.<40 hex>`) is a request on that node's channel,
//! answered on ours within `cluster.request_timeout`. The queue is bounded
//! ([`QUEUE_MESSAGES`], [`QUEUE_BYTES`]): when Redis stalls, remote copies are
//! dropped and counted, and the control socket never waits for Redis.
//!
//! - `wire.rs` encodes and decodes envelopes (pure),
//! - `seal.rs` authenticates them with `cluster.secret` and refuses replays (pure),
//! - `presence.rs` notes local membership changes for the presence task,
//! - with the `cluster` feature only: `link.rs` starts and stops the Redis
//!   tasks, `bus.rs` is the publisher and subscriber, `presence_sync.rs` the
//!   presence task, `history.rs` the channels' history (`[history]`), kept
//!   in Redis, `roster.rs` the roster task (Pusher presence per user).
// Without the feature nothing reads the queues: a Cluster is never built then.
#![cfg_attr(not(feature = "cluster"), allow(dead_code))]

#[cfg(feature = "cluster")]
mod bus;
#[cfg(feature = "cluster")]
pub mod history;
#[cfg(feature = "cluster")]
mod link;
pub mod presence;
#[cfg(feature = "cluster")]
mod presence_sync;
#[cfg(feature = "cluster")]
pub mod roster;
pub mod seal;
#[cfg(feature = "cluster")]
pub mod url;
pub mod wire;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{mpsc, oneshot};

use crate::config::ClusterConfig;
use crate::frame::Kind;
use crate::hub::ConnId;
use crate::metrics::{KindLabel, Metrics};
use presence::Tracker;
use wire::{Body, Envelope, Op, Outcome};

#[cfg(feature = "cluster")]
pub use link::{Running, start};

/// Envelopes waiting for the publisher at most; past it a remote copy is
/// dropped (`cluster_dropped`) instead of the control socket waiting.
pub const QUEUE_MESSAGES: usize = 8192;
/// Bytes of envelopes waiting for the publisher at most.
pub const QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Requests to other nodes awaiting a reply at most; past it a request fails at once.
pub const MAX_PENDING: usize = 4096;
/// Longest node id.
pub const MAX_NODE_ID_LEN: usize = 32;

/// Is `id` a valid node id: 1 to [`MAX_NODE_ID_LEN`] of `A-Z a-z 0-9 _ -`?
///
/// ```
/// assert!(ws2fcgi::cluster::valid_node_id("web-1"));
/// assert!(!ws2fcgi::cluster::valid_node_id("web.1"));
/// assert!(!ws2fcgi::cluster::valid_node_id(""));
/// ```
pub fn valid_node_id(id: &str) -> bool {
    (1..=MAX_NODE_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Splits a public id `<node>.<40 hex>` into its node and local id; `None`
/// unless both parts are valid.
///
/// ```
/// let public = format!("web-1.{}", "0".repeat(40));
/// let (node, id) = ws2fcgi::cluster::split_public_id(&public).unwrap();
/// assert_eq!(node, "web-1");
/// assert_eq!(id.to_string(), "0".repeat(40));
/// ```
pub fn split_public_id(text: &str) -> Option<(&str, ConnId)> {
    let (node, local) = text.rsplit_once('.')?;
    let id = local.parse().ok()?;
    valid_node_id(node).then_some((node, id))
}

/// A node id for a node configured without one: `<hostname>-<6 random hex>`.
pub fn default_node_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let host: String = host
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(MAX_NODE_ID_LEN - 7)
        .collect();
    let host = if host.is_empty() { "node".into() } else { host };
    format!("{host}-{:06x}", random_u64() & 0xff_ffff)
}

/// A random number for ids and tokens (not for secrets): std's per-process random hash keys.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}

/// An envelope on its way to Redis.
pub(crate) struct Outgoing {
    /// The pub/sub channel.
    channel: Arc<str>,
    bytes: Vec<u8>,
    /// The request this envelope carries, failed at once if it is dropped.
    request: Option<u64>,
    /// Also `SET` the sealed envelope at this key, expiring after this many
    /// milliseconds (a Pusher cache channel's last event).
    keep: Option<(String, u64)>,
}

/// A query for the presence task, and where to answer.
pub(crate) enum Query {
    /// The members of a raw channel on the other nodes.
    Presence {
        channel: String,
        reply: oneshot::Sender<Vec<RemoteMember>>,
    },
    /// The members of every Pusher hub channel on the other nodes.
    PusherCounts {
        reply: oneshot::Sender<HashMap<String, usize>>,
    },
}

/// A member of a channel on another node.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteMember {
    /// Its public id.
    pub id: String,
    /// Its metadata.
    pub meta: serde_json::Map<String, serde_json::Value>,
}

/// The receiving ends of the queues, taken by the tasks once.
pub(crate) struct Receivers {
    outgoing: mpsc::Receiver<Outgoing>,
    queries: mpsc::Receiver<Query>,
}

/// Counters shared with [`Metrics`].
#[derive(Clone)]
pub(crate) struct Counters {
    out: Counter,
    inbound: Counter,
    dropped: Counter,
    reconnects: Counter,
    rejected: Family<KindLabel, Counter>,
}

/// The cluster as the rest of the daemon sees it; one per daemon, in the [`crate::Context`].
pub struct Cluster {
    node_id: String,
    prefix: String,
    url: String,
    node_ttl: Duration,
    request_timeout: Duration,
    /// `cluster.secret`'s key (empty without one): seals what this node sends
    /// and opens what it receives.
    key: seal::Key,
    /// Was `cluster.secret` set (else the key is empty and anyone can forge)?
    keyed: bool,
    /// `<prefix>:bus`.
    bus: Arc<str>,
    outgoing: mpsc::Sender<Outgoing>,
    queued_bytes: AtomicUsize,
    /// Held across a local publish and its queueing, so local and remote
    /// members see this node's publishes in the same order.
    order: Mutex<()>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Option<Outcome>>>>,
    next_request: AtomicU64,
    queries: mpsc::Sender<Query>,
    tracker: Arc<Tracker>,
    /// This node's Pusher presence users' changes, for the roster task.
    pusher_ops: Arc<crate::pusher::roster::Ops>,
    counters: Counters,
    receivers: Mutex<Option<Receivers>>,
    /// The channels' history in Redis, and its connection.
    #[cfg(feature = "cluster")]
    history: history::Store,
}

impl Cluster {
    /// The cluster of `config`, or `None` for a single node (no `redis`, or a
    /// build without the `cluster` feature).
    pub fn new(config: &ClusterConfig, metrics: &Metrics) -> Option<Arc<Self>> {
        let url = config.redis.clone().filter(|_| cfg!(feature = "cluster"))?;
        let (outgoing, outgoing_rx) = mpsc::channel(QUEUE_MESSAGES);
        let (queries, queries_rx) = mpsc::channel(MAX_PENDING);
        let prefix = config.prefix.clone();
        Some(Arc::new(Self {
            node_id: config.node_id.clone().unwrap_or_else(default_node_id),
            bus: format!("{prefix}:bus").into(),
            prefix,
            node_ttl: config.node_ttl,
            request_timeout: config.request_timeout,
            key: seal::Key::new(
                config
                    .secret
                    .as_ref()
                    .map_or(&[][..], |s| s.expose().as_bytes()),
            ),
            keyed: config.secret.is_some(),
            outgoing,
            queued_bytes: AtomicUsize::new(0),
            order: Mutex::new(()),
            pending: Mutex::default(),
            next_request: AtomicU64::new(random_u64()),
            queries,
            tracker: Arc::new(Tracker::default()),
            pusher_ops: Arc::default(),
            counters: Counters {
                out: metrics.cluster_out.clone(),
                inbound: metrics.cluster_in.clone(),
                dropped: metrics.cluster_dropped.clone(),
                reconnects: metrics.cluster_reconnects.clone(),
                rejected: metrics.cluster_rejected.clone(),
            },
            receivers: Mutex::new(Some(Receivers {
                outgoing: outgoing_rx,
                queries: queries_rx,
            })),
            #[cfg(feature = "cluster")]
            history: history::Store::new(&url),
            url,
        }))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The hub observer that keeps this node's presence keys up to date.
    pub fn tracker(&self) -> Arc<Tracker> {
        self.tracker.clone()
    }

    /// The Redis key of a Pusher cache channel's last event.
    pub fn pusher_cache_key(&self, hub_channel: &str) -> String {
        format!("{}:pusher:cache:{hub_channel}", self.prefix)
    }

    /// Where this node's Pusher presence users' changes go (`pusher/state.rs`
    /// pushes, the roster task sends them to Redis).
    pub fn pusher_ops(&self) -> Arc<crate::pusher::roster::Ops> {
        self.pusher_ops.clone()
    }

    /// `id` as other nodes and PHP see it: `<node_id>.<40 hex>`.
    pub fn public_id(&self, id: &ConnId) -> String {
        format!("{}.{id}", self.node_id)
    }

    fn node_channel(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    /// Runs `local` (the publish to this node's members) and queues the same
    /// publish for every other node, both under one lock; returns what
    /// `local` returned. `except` holds the public ids of other nodes' connections.
    pub fn publish(
        &self,
        channel: &str,
        kind: Kind,
        payload: &Bytes,
        except: Vec<String>,
        local: impl FnOnce() -> usize,
    ) -> usize {
        self.publish_keeping(channel, kind, payload, except, None, local)
    }

    /// As [`Cluster::publish`], and keeps the sealed envelope in Redis at
    /// `keep`'s key for its time (`SET … PX`, pipelined with the `PUBLISH`).
    pub fn publish_keeping(
        &self,
        channel: &str,
        kind: Kind,
        payload: &Bytes,
        except: Vec<String>,
        keep: Option<(String, Duration)>,
        local: impl FnOnce() -> usize,
    ) -> usize {
        let keep = keep.map(|(key, ttl)| (key, u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)));
        let envelope = Envelope {
            origin: self.node_id.clone(),
            body: Body::Publish {
                channel: channel.to_owned(),
                except,
                kind,
                payload: payload.clone(),
            },
        };
        let bytes = wire::encode(&envelope);
        let _order = lock(&self.order);
        let delivered = local();
        match bytes {
            Ok(bytes) => {
                self.push(Outgoing {
                    channel: self.bus.clone(),
                    bytes,
                    request: None,
                    keep,
                });
            }
            Err(e) => {
                self.counters.dropped.inc();
                tracing::warn!(error = %e, channel, "publish not sent to other nodes");
            }
        }
        delivered
    }

    /// Asks node `node` to run `op` and waits for its outcome, at most
    /// `cluster.request_timeout`; `None` when it did not answer (gone, Redis
    /// down, queue full).
    pub async fn request(&self, node: &str, op: Op) -> Option<Outcome> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let bytes = wire::encode(&Envelope {
            origin: self.node_id.clone(),
            body: Body::Request { id, op },
        })
        .ok()?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if pending.len() >= MAX_PENDING {
                tracing::warn!(
                    limit = MAX_PENDING,
                    "too many requests to other nodes waiting; refused"
                );
                return None;
            }
            pending.insert(id, tx);
        }
        if !self.enqueue(self.node_channel(node).into(), bytes, Some(id)) {
            return None;
        }
        let outcome = tokio::time::timeout(self.request_timeout, rx).await;
        lock(&self.pending).remove(&id);
        match outcome {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => None,
            Err(_) => {
                tracing::debug!(node, "no answer from node within cluster.request_timeout");
                None
            }
        }
    }

    /// The members of `channel` on every other live node (empty when Redis
    /// cannot be asked within `cluster.request_timeout`).
    pub async fn presence(&self, channel: &str) -> Vec<RemoteMember> {
        let (reply, answer) = oneshot::channel();
        let query = Query::Presence {
            channel: channel.to_owned(),
            reply,
        };
        if self.queries.try_send(query).is_err() {
            return Vec::new();
        }
        tokio::time::timeout(self.request_timeout, answer)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// The connections subscribed to each Pusher hub channel on every
    /// other live node (empty when Redis cannot be asked within
    /// `cluster.request_timeout`).
    pub async fn pusher_counts(&self) -> HashMap<String, usize> {
        let (reply, answer) = oneshot::channel();
        if self
            .queries
            .try_send(Query::PusherCounts { reply })
            .is_err()
        {
            return HashMap::new();
        }
        tokio::time::timeout(self.request_timeout, answer)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// Queues an envelope for the publisher; false (and counted) when the
    /// queue is full or the publisher is gone.
    fn enqueue(&self, channel: Arc<str>, bytes: Vec<u8>, request: Option<u64>) -> bool {
        self.push(Outgoing {
            channel,
            bytes,
            request,
            keep: None,
        })
    }

    /// Queues an outgoing envelope; false (and counted) when the queue is
    /// full or the publisher is gone.
    fn push(&self, outgoing: Outgoing) -> bool {
        let len = outgoing.bytes.len();
        let request = outgoing.request;
        let queued = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let sent = queued + len <= QUEUE_BYTES && self.outgoing.try_send(outgoing).is_ok();
        if !sent {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.counters.dropped.inc();
            if let Some(id) = request {
                self.resolve(id, None);
            }
        }
        sent
    }

    /// Hands a reply (or `None`: failed) to the request waiting for it.
    fn resolve(&self, id: u64, outcome: Option<Outcome>) {
        if let Some(waiting) = lock(&self.pending).remove(&id) {
            let _ = waiting.send(outcome);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_node_ids_are_valid_and_differ() {
        let a = default_node_id();
        let b = default_node_id();
        assert!(valid_node_id(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn public_ids_split_only_when_both_parts_are_valid() {
        let hex = "0123456789abcdef0123456789abcdef01234567";
        assert!(split_public_id(&format!("n.{hex}")).is_some());
        assert!(split_public_id(hex).is_none());
        assert!(split_public_id(&format!(".{hex}")).is_none());
        assert!(split_public_id(&format!("a:b.{hex}")).is_none());
        assert!(split_public_id("n.xyz").is_none());
        assert!(split_public_id(&format!("{}.{hex}", "n".repeat(33))).is_none());
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let metrics = Metrics::new();
        let config = ClusterConfig {
            redis: Some("redis://127.0.0.1:1/".into()),
            ..ClusterConfig::default()
        };
        let Some(cluster) = Cluster::new(&config, &metrics) else {
            return; // built without the cluster feature
        };
        let payload = Bytes::from_static(b"x");
        for _ in 0..QUEUE_MESSAGES + 10 {
            assert_eq!(cluster.publish("c", Kind::Text, &payload, vec![], || 1), 1);
        }
        assert_eq!(metrics.cluster_dropped.get(), 10);
        // A request finds the queue full: it fails at once, not after the timeout.
        let started = std::time::Instant::now();
        let op = Op::Join {
            conn: "0".repeat(40),
            channel: "c".into(),
        };
        assert_eq!(cluster.request("other", op).await, None);
        assert!(started.elapsed() < config.request_timeout);
        assert!(lock(&cluster.pending).is_empty());
    }
}
