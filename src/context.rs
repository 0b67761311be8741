//! What every task of the daemon shares: settings, the hub, the FastCGI pool,
//! the cluster (when there is one), and the shutdown drain.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::cluster::Cluster;
use crate::config::{Config, ConfigError};
use crate::drain;
use crate::hub::{ConnId, Hub, Observer, Stats};
use crate::limits::{DESCRIPTOR_RESERVE, OriginPolicy, SlotLimits, Slots};
use crate::metrics::{Metrics, Snapshot};
use crate::shard::FpmShards;

/// Shared state; one per daemon, behind an `Arc`.
pub struct Context {
    /// The configuration in force; replaced whole by [`Context::reload`].
    config: ArcSwap<Config>,
    /// Live connections and channels.
    pub hub: Hub,
    /// Counters and histograms for `/metrics`.
    pub metrics: Metrics,
    /// Connections to PHP-FPM: the calling shard's share of the pool
    /// (the whole pool with the shared runtime; `shard/pools.rs`).
    pub fpm: FpmShards,
    /// Client-socket counters: `max_connections` (sockets in their handshake
    /// and connections), `max_connections_per_ip`, `limits.max_handshakes_per_ip`.
    pub slots: Slots,
    /// The inbound byte budget (`limits.inbound_bytes`) every connection's
    /// read side and queued messages are charged to.
    pub inbound: Arc<crate::inbound::Budget>,
    /// One copy of each route's shared CGI variables.
    pub envs: crate::event::EnvInterner,
    /// The other nodes, through Redis; `None` on a single node.
    pub cluster: Option<Arc<Cluster>>,
    /// What connections that ended owe PHP, and what came of it.
    pub books: drain::Books,
    /// When the shutdown drain began and ends (the pool has a copy).
    pub drain: drain::Clock,
    /// Open events waiting for a PHP-FPM slot or running (`fpm.open_queue`).
    pub admission: crate::admission::Admission,
    /// Cancelled once a new process took over the listening sockets
    /// (SIGUSR2, `handover.rs`): the control, admin and API endpoints stop
    /// accepting, and the drain that follows closes clients with 1012.
    pub handover: tokio_util::sync::CancellationToken,
    /// Control requests pass it to run here; the handover closes it before
    /// it sends the channels' history to the new process (`handover/gate.rs`).
    pub control_gate: crate::handover::gate::Gate,
    /// The TLS configuration of `tls://` listeners, swapped on reload.
    pub tls: crate::tls::Certs,
    /// `allowed_origins`, compiled.
    origins: ArcSwap<OriginPolicy>,
    /// Pusher presence members and cache channels of this node.
    pub pusher: crate::pusher::State,
    /// The Pusher channels' changes on their way to the apps' scripts.
    pub pusher_events: Arc<crate::pusher::channel_events::ChannelEvents>,
    /// The Pusher apps (`[[pusher.app]]`), by key and by id.
    pusher_apps: ArcSwap<crate::pusher::Apps>,
    started: std::time::Instant,
}

/// Settings a reload cannot change: they are bound sockets, a started
/// php-fpm, the pool's size, or a budget already shared out. A reload that
/// changes one keeps the old value.
const RESTART_ONLY: &[&str] = &[
    "listen",
    "log.format",
    "listen_mode",
    "listen_group",
    "worker_threads",
    "runtime",
    "shards",
    "fanout_delay",
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
    "limits.inbound_bytes",
    "history",
    "pusher.api_listen",
];

impl Context {
    /// Builds the shared state from a validated configuration.
    pub fn new(config: Config) -> Self {
        let metrics = Metrics::new();
        let slots = Slots::new(slot_limits(&config));
        let cluster = Cluster::new(&config.cluster, &metrics);
        let observer = cluster.as_ref().map(|c| c.tracker() as Arc<dyn Observer>);
        let drain = drain::Clock::default();
        let apps = Arc::new(crate::pusher::Apps::new(&config.pusher));
        let pusher_events = Arc::new(crate::pusher::channel_events::ChannelEvents::new(
            apps.clone(),
            metrics.pusher_channel_events.clone(),
        ));
        let pusher = crate::pusher::State::with_changes(pusher_events.clone());
        if let Some(cluster) = &cluster {
            pusher.join_cluster(cluster.pusher_ops());
        }
        Self {
            slots,
            inbound: crate::inbound::Budget::new(config.limits.inbound_bytes, &metrics),
            envs: Default::default(),
            origins: ArcSwap::from_pointee(origin_policy(&config)),
            pusher,
            pusher_events,
            pusher_apps: ArcSwap::new(apps),
            tls: load_tls(&config),
            fpm: FpmShards::new(&config.fpm, crate::shard::count(&config), &drain),
            books: drain::Books::new(&metrics),
            drain,
            // In a cluster the history lives in Redis, not here.
            hub: Hub::with_history(
                Stats::from_metrics(&metrics),
                observer,
                cluster.is_none().then(|| config.history.clone()),
            ),
            cluster,
            metrics,
            config: ArcSwap::from_pointee(config),
            started: std::time::Instant::now(),
            handover: tokio_util::sync::CancellationToken::new(),
            control_gate: Default::default(),
            admission: Default::default(),
        }
    }

    /// Has a new process taken over the listening sockets?
    pub fn handed_over(&self) -> bool {
        self.handover.is_cancelled()
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

    /// The Pusher apps in force (a reload replaces them; connections keep theirs).
    pub fn pusher_apps(&self) -> Arc<crate::pusher::Apps> {
        self.pusher_apps.load_full()
    }

    /// Puts a new, validated configuration in force for everything that
    /// starts from now on (handshakes, events, limits); open connections keep
    /// theirs. Settings that need a restart (sockets, the php-fpm address and
    /// pool size) keep their old values; the names
    /// of those that differed are returned.
    ///
    /// The configuration put in force is validated again with the values
    /// kept: if a kept value does not fit the new ones, nothing changes and
    /// the error says why.
    pub fn reload(&self, mut next: Config) -> Result<Vec<&'static str>, ConfigError> {
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
        keep!("runtime", runtime);
        keep!("shards", shards);
        keep!("fanout_delay", fanout_delay);
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
        keep!("limits.inbound_bytes", limits.inbound_bytes);
        keep!("history", history);
        keep!("pusher.api_listen", pusher.api_listen);
        debug_assert!(kept.iter().all(|k| RESTART_ONLY.contains(k)));
        next.validate()?;
        if next.has_tls_listener() {
            // Read again after validate: a file replaced meanwhile is
            // checked as well, and a bad one still keeps the old.
            let loaded = crate::tls::server_config(&next.tls)?;
            loaded.log("TLS certificate reloaded");
            self.tls.replace(loaded.config);
        }
        self.slots.set_limits(slot_limits(&next));
        self.origins.store(Arc::new(origin_policy(&next)));
        let apps = Arc::new(crate::pusher::Apps::new(&next.pusher));
        self.pusher_events.set_apps(apps.clone());
        self.pusher_apps.store(apps);
        self.fpm.update(&next.fpm);
        self.config.store(Arc::new(next));
        Ok(kept)
    }

    /// This node's tag in Pusher socket ids: 0 on a single node, a hash of
    /// the node id in a cluster (`pusher/socket_id.rs`).
    pub fn socket_tag(&self) -> u32 {
        self.cluster
            .as_ref()
            .map_or(0, |c| crate::pusher::socket_id::node_tag(c.node_id()))
    }

    /// A connection's id as PHP and control clients see it (`WS_CONNECTION_ID`):
    /// 40 hex digits on a single node, `<node_id>.<40 hex>` in a cluster.
    pub fn public_id(&self, id: &ConnId) -> String {
        match &self.cluster {
            Some(cluster) => cluster.public_id(id),
            None => id.to_string(),
        }
    }

    /// Marks the daemon as shutting down: new handshakes are refused,
    /// connections accepted from now on close at once, and the drain's
    /// deadline, `shutdown.drain_timeout` from now, is set and returned.
    pub fn begin_shutdown(&self) -> std::time::Instant {
        self.drain.begin(self.config().shutdown.drain_timeout)
    }

    /// The live figures `/metrics` shows besides its counters.
    pub fn snapshot(&self) -> Snapshot {
        let (history_publications, history_bytes) = self.hub.history_size();
        Snapshot {
            history_publications,
            history_bytes,
            connections: self.hub.connection_count(),
            client_sockets: self.slots.in_use(),
            channels: self.hub.channel_count(),
            fpm_busy: self.fpm.busy_count(),
            fpm_idle: self.fpm.idle_count(),
        }
    }

    /// Time since the daemon started.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Is the daemon shutting down?
    pub fn is_shutting_down(&self) -> bool {
        self.drain.is_draining()
    }

    /// `wait` from now, or the drain's deadline if that comes first.
    pub fn within_drain(&self, wait: std::time::Duration) -> std::time::Instant {
        let until = std::time::Instant::now() + wait;
        self.drain.deadline().map_or(until, |d| d.min(until))
    }

    /// Resolves when shutdown begins.
    pub async fn shutdown_started(&self) {
        self.drain.began().await;
    }
}

/// The limits of [`Slots`] from `config`: client sockets at most are
/// `websocket.max_connections`, but never more than the open-files limit
/// less [`DESCRIPTOR_RESERVE`] and less `fpm.pool_size` (0 means exactly
/// that), so `accept` and the FastCGI pool always find a descriptor.
/// The TLS configuration at start, when a listener is `tls://` (it was
/// validated already; should its files have gone bad since, TLS handshakes
/// fail until a reload fixes them).
fn load_tls(config: &Config) -> crate::tls::Certs {
    let certs = crate::tls::Certs::default();
    if config.has_tls_listener() {
        match crate::tls::server_config(&config.tls) {
            Ok(loaded) => {
                loaded.log("TLS certificate loaded");
                certs.replace(loaded.config);
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate not loaded; TLS clients are refused")
            }
        }
    }
    certs
}

fn slot_limits(config: &Config) -> SlotLimits {
    let open_files = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    let configured = config.websocket.max_connections;
    let sockets = socket_ceiling(open_files, config.fpm.pool_size, configured);
    if configured > sockets {
        tracing::warn!(
            max_connections = configured,
            open_files,
            lowered_to = sockets,
            "websocket.max_connections is more than the open-files limit allows; lowered"
        );
    }
    SlotLimits {
        sockets,
        per_ip: config.websocket.max_connections_per_ip,
        handshakes_per_ip: config.limits.max_handshakes_per_ip,
        ipv6_prefix: config.limits.ipv6_prefix,
    }
}

/// Client sockets at most, for an open-files limit, a FastCGI pool size and
/// `max_connections` (0: as many as the descriptors allow); at least 16.
fn socket_ceiling(open_files: u64, pool_size: usize, configured: usize) -> usize {
    let kept = DESCRIPTOR_RESERVE.saturating_add(u64::try_from(pool_size).unwrap_or(u64::MAX));
    let ceiling = usize::try_from(open_files.saturating_sub(kept))
        .unwrap_or(usize::MAX)
        .max(16);
    match configured {
        0 => ceiling,
        n => n.min(ceiling),
    }
}

fn origin_policy(config: &Config) -> OriginPolicy {
    // Validated before; should it fail anyway, refuse every origin rather than allow all.
    OriginPolicy::new(&config.websocket.allowed_origins).unwrap_or_else(|_| {
        OriginPolicy::new(&["invalid://configuration".into()]).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::socket_ceiling;

    #[test]
    fn sockets_stay_under_the_open_files_limit() {
        assert_eq!(socket_ceiling(400, 2, 0), 142);
        assert_eq!(socket_ceiling(65536, 8, 0), 65272);
        assert_eq!(socket_ceiling(65536, 8, 1000), 1000);
        assert_eq!(socket_ceiling(400, 2, 100_000), 142, "lowered to what fits");
        assert_eq!(
            socket_ceiling(100, 8, 0),
            16,
            "a tiny limit still serves some"
        );
        assert!(socket_ceiling(u64::MAX, 8, 0) > 1 << 40, "no limit");
    }
}
