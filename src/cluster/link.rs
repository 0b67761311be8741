//! The link to Redis: starting and stopping a node's four Redis tasks, and
//! what they share.
//!
//! Each task owns its connection and, when it fails, reconnects by itself
//! with a backoff ([`FIRST_BACKOFF`] doubling to [`MAX_BACKOFF`]), so Redis
//! restarting or vanishing never stops the node: it keeps serving its local
//! clients and local publishes. [`Health`] turns the states of the first
//! three into one log line per change of the link as a whole, and tells the
//! others when the subscriber (which always reads, so notices first) lost its
//! connection; the roster task follows it (it logs only when it has read
//! the Pusher state).
//!
//! - `bus.rs`: the **publisher** and the **subscriber**,
//! - `presence_sync.rs`: the **presence** task;
//! - `roster.rs`: the **roster** task (Pusher presence per user, cluster-wide).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Pipeline, RedisResult};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Cluster, lock};
use crate::context::Context;

/// First pause before reconnecting; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between reconnect attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a connect to Redis may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long Redis may take to answer a command (or a batch of them).
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a graceful stop waits for the last publishes and the key cleanup.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// The running Redis tasks. Dropping it aborts them without cleanup (as a
/// crash would); [`Running::stop`] stops them gracefully.
pub struct Running {
    tasks: JoinSet<()>,
    stop: CancellationToken,
}

impl Running {
    /// Sends what is queued, deletes this node's keys (presence disappears at
    /// once, not after `node_ttl`), and ends the tasks, within `STOP_TIMEOUT` (3 s).
    pub async fn stop(mut self) {
        self.stop.cancel();
        let tasks = &mut self.tasks;
        let done = tokio::time::timeout(STOP_TIMEOUT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if done.is_err() {
            tracing::warn!(
                "cluster tasks did not stop in time; this node's keys expire by themselves"
            );
        }
        self.tasks.shutdown().await;
    }
}

/// Starts the Redis tasks of `ctx`'s cluster; `None` on a single node.
pub fn start(ctx: Arc<Context>) -> Option<Running> {
    let cluster = ctx.cluster.clone()?;
    let receivers = lock(&cluster.receivers).take()?;
    if ctx.config().history.enabled() {
        let reader = super::history::TopReader::new(&ctx);
        ctx.hub.set_top_reader(Arc::new(reader));
    }
    let client = match Client::open(cluster.url.as_str()) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cluster.redis is not usable; this node runs alone");
            return None;
        }
    };
    tracing::info!(
        node_id = %cluster.node_id,
        prefix = %cluster.prefix,
        secret = cluster.keyed,
        "cluster node starting"
    );
    let health = Arc::new(Health::new(cluster.counters.reconnects.clone()));
    let stop = CancellationToken::new();
    let link = Link {
        ctx,
        cluster,
        client,
        health,
        stop: stop.clone(),
    };
    let mut tasks = JoinSet::new();
    tasks.spawn(link.clone().publisher(receivers.outgoing));
    tasks.spawn(link.clone().subscriber());
    tasks.spawn(link.clone().roster());
    tasks.spawn(link.presence(receivers.queries));
    Some(Running { tasks, stop })
}

/// What every task needs.
#[derive(Clone)]
pub(super) struct Link {
    pub(super) ctx: Arc<Context>,
    pub(super) cluster: Arc<Cluster>,
    pub(super) client: Client,
    pub(super) health: Arc<Health>,
    pub(super) stop: CancellationToken,
}

impl Link {
    pub(super) async fn connect(&self) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Waits out a backoff step; false when the node stops meanwhile.
    pub(super) async fn pause(&self, backoff: &mut Duration) -> bool {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = self.stop.cancelled() => false,
        }
    }

    fn key(&self, parts: std::fmt::Arguments<'_>) -> String {
        format!("{}:{parts}", self.cluster.prefix)
    }

    pub(super) fn presence_key(&self, node: &str, channel: &str) -> String {
        self.key(format_args!("presence:{node}:{channel}"))
    }

    pub(super) fn alive_key(&self, node: &str) -> String {
        self.key(format_args!("node:{node}:alive"))
    }

    pub(super) fn nodes_key(&self) -> String {
        self.key(format_args!("nodes"))
    }

    pub(super) fn ttl_ms(&self) -> u64 {
        u64::try_from(self.cluster.node_ttl.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Sends a pipeline (if it holds anything) and empties it.
pub(super) async fn send_pipeline(
    pipe: &mut Pipeline,
    conn: &mut MultiplexedConnection,
) -> RedisResult<()> {
    if pipe.cmd_iter().next().is_none() {
        return Ok(());
    }
    let result = pipe.query_async::<()>(conn).await;
    pipe.clear();
    result
}

/// The three tasks, for [`Health`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Role {
    Publisher = 1,
    Subscriber = 2,
    Presence = 4,
}

const ALL_UP: u8 = 7;

/// The link's state from its three tasks' states: logs once per change.
pub(super) struct Health {
    state: Mutex<HealthState>,
    reconnects: Counter,
    /// Bumped when the subscriber loses its connection (it notices first: it
    /// always reads), so the other tasks reconnect before they use theirs.
    generation: watch::Sender<u64>,
}

#[derive(Default)]
struct HealthState {
    up: u8,
    /// Was the link ever whole?
    ever_up: bool,
    /// A loss was logged and not yet followed by "restored".
    reported_down: bool,
}

impl Health {
    pub(super) fn new(reconnects: Counter) -> Self {
        Self {
            state: Mutex::default(),
            reconnects,
            generation: watch::channel(0).0,
        }
    }

    pub(super) fn generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub(super) fn lost_subscription(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    pub(super) fn up(&self, role: Role) {
        let mut s = lock(&self.state);
        s.up |= role as u8;
        if s.up != ALL_UP {
            return;
        }
        if !s.ever_up {
            s.ever_up = true;
            s.reported_down = false;
            tracing::info!("connected to redis: this node is part of the cluster");
        } else if s.reported_down {
            s.reported_down = false;
            self.reconnects.inc();
            tracing::info!("redis link restored: resubscribed, presence rewritten");
        }
    }

    pub(super) fn down(&self, role: Role, error: &dyn std::fmt::Display) {
        let mut s = lock(&self.state);
        s.up &= !(role as u8);
        if s.reported_down {
            tracing::debug!(?role, error = %error, "redis still unreachable");
            return;
        }
        s.reported_down = true;
        if s.ever_up {
            tracing::error!(?role, error = %error,
                "lost the link to redis: serving local clients only, reconnecting");
        } else {
            tracing::error!(?role, error = %error,
                "cannot reach redis: serving local clients only, retrying");
        }
    }
}
