//! What every task of the daemon shares: settings, the hub, the FastCGI pool,
//! the cluster (when there is one), and the shutdown flag.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::fpm::FpmPool;
use crate::hub::{ConnId, Hub, Observer, Stats};
use crate::limits::{OriginPolicy, Slots};
use crate::metrics::Metrics;

/// Shared state; one per daemon, behind an `Arc`.
pub struct Context {
    /// The configuration in force; replaced whole by [`Context::reload`].
    config: ArcSwap<Config>,
    /// Live connections and channels.
    pub hub: Hub,
    /// Counters and histograms for `/metrics`.
    pub metrics: Metrics,
    /// Connections to PHP-FPM.
    pub fpm: FpmPool,
    /// Connection counters for `max_connections` and `max_connections_per_ip`.
    pub slots: Slots,
    /// One copy of each route's shared CGI variables.
    pub envs: crate::event::EnvInterner,
    /// The other nodes, through Redis; `None` on a single node.
    pub cluster: Option<Arc<Cluster>>,
    /// `allowed_origins`, compiled.
    origins: ArcSwap<OriginPolicy>,
    shutdown: watch::Sender<bool>,
    started: std::time::Instant,
}

/// Settings a reload cannot change: they are bound sockets, a started
/// php-fpm, or the pool's size. A reload that changes one keeps the old value.
const RESTART_ONLY: &[&str] = &[
    "listen",
    "log.format",
    "listen_mode",
    "listen_group",
    "worker_threads",
    "admin",
    "fpm.address",
    "fpm.pool_size",
    "fpm.managed",
    "control.socket",
    "control.mode",
    "control.owner",
    "control.group",
    "control.http",
    "cluster",
];

impl Context {
    /// Builds the shared state from a validated configuration.
    pub fn new(config: Config) -> Self {
        let ws = &config.websocket;
        let metrics = Metrics::new();
        let slots = Slots::new(
            max_connections(ws.max_connections),
            ws.max_connections_per_ip,
        );
        let cluster = Cluster::new(&config.cluster, &metrics);
        let observer = cluster.as_ref().map(|c| c.tracker() as Arc<dyn Observer>);
        Self {
            slots,
            envs: Default::default(),
            origins: ArcSwap::from_pointee(origin_policy(&config)),
            fpm: FpmPool::new(&config.fpm),
            hub: Hub::with_observer(Stats::from_metrics(&metrics), observer),
            cluster,
            metrics,
            config: ArcSwap::from_pointee(config),
            shutdown: watch::channel(false).0,
            started: std::time::Instant::now(),
        }
    }

    /// The configuration in force. Cheap; a long-lived task should keep the
    /// `Arc` it got rather than ask again for every step.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// `allowed_origins` in force.
    pub fn origins(&self) -> Arc<OriginPolicy> {
        self.origins.load_full()
    }

    /// tungstenite's settings for a new client, from the configuration in force.
    pub fn ws_config(&self) -> WebSocketConfig {
        let config = self.config.load();
        let ws = &config.websocket;
        WebSocketConfig::default()
            .read_buffer_size(crate::transport::TUNGSTENITE_READ_BUFFER)
            // Frames are queued in the outbox, never in tungstenite.
            .write_buffer_size(0)
            .max_message_size(Some(ws.max_message_size))
            .max_frame_size(Some(ws.max_frame_size))
    }

    /// Puts a new, validated configuration in force for everything that
    /// starts from now on (handshakes, events, limits); open connections keep
    /// theirs. Settings that need a restart (sockets, the php-fpm address and
    /// pool size) keep their old values; the names
    /// of those that differed are returned.
    pub fn reload(&self, mut next: Config) -> Vec<&'static str> {
        let current = self.config.load_full();
        let mut kept = Vec::new();
        macro_rules! keep {
            ($name:literal, $($field:tt)+) => {
                if next.$($field)+ != current.$($field)+ {
                    kept.push($name);
                    next.$($field)+ = current.$($field)+.clone();
                }
            };
        }
        keep!("listen", listen);
        keep!("log.format", log.format);
        keep!("listen_mode", listen_mode);
        keep!("listen_group", listen_group);
        keep!("worker_threads", worker_threads);
        keep!("admin", admin);
        keep!("fpm.address", fpm.address);
        keep!("fpm.pool_size", fpm.pool_size);
        keep!("fpm.managed", fpm.managed);
        keep!("control.socket", control.socket);
        keep!("control.mode", control.mode);
        keep!("control.owner", control.owner);
        keep!("control.group", control.group);
        keep!("control.http", control.http);
        keep!("cluster", cluster);
        debug_assert!(kept.iter().all(|k| RESTART_ONLY.contains(k)));
        let ws = &next.websocket;
        self.slots.set_limits(
            max_connections(ws.max_connections),
            ws.max_connections_per_ip,
        );
        self.origins.store(Arc::new(origin_policy(&next)));
        self.fpm.update(&next.fpm);
        self.config.store(Arc::new(next));
        kept
    }

    /// A connection's id as PHP and control clients see it (`WS_CONNECTION_ID`):
    /// 40 hex digits on a single node, `<node_id>.<40 hex>` in a cluster.
    pub fn public_id(&self, id: &ConnId) -> String {
        match &self.cluster {
            Some(cluster) => cluster.public_id(id),
            None => id.to_string(),
        }
    }

    /// Marks the daemon as shutting down: new handshakes are refused, and
    /// connections accepted from now on close at once.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Time since the daemon started.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Is the daemon shutting down?
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves when shutdown begins.
    pub async fn shutdown_started(&self) {
        let mut rx = self.shutdown.subscribe();
        // The sender lives in `self`, so `wait_for` can only fail if it were dropped.
        let _ = rx.wait_for(|down| *down).await;
    }
}

/// Connections below which handshakes are accepted: the configured number,
/// or (for 0) the open-files limit less 256 descriptors for everything else.
fn max_connections(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(limit.saturating_sub(256))
        .unwrap_or(usize::MAX)
        .max(16)
}

fn origin_policy(config: &Config) -> OriginPolicy {
    // Validated before; should it fail anyway, refuse every origin rather than allow all.
    OriginPolicy::new(&config.websocket.allowed_origins).unwrap_or_else(|_| {
        OriginPolicy::new(&["invalid://configuration".into()]).unwrap_or_default()
    })
}
