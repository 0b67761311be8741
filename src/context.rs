//! What every task of the daemon shares: settings, the hub, the FastCGI pool,
//! and the shutdown flag.

use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::Config;
use crate::fpm::FpmPool;
use crate::hub::{Hub, Stats};
use crate::limits::{OriginPolicy, Slots};
use crate::metrics::Metrics;

/// Shared state; one per daemon, behind an `Arc`.
pub struct Context {
    /// The validated configuration.
    pub config: Config,
    /// Live connections and channels.
    pub hub: Hub,
    /// Counters and histograms for `/metrics`.
    pub metrics: Metrics,
    /// Connections to PHP-FPM.
    pub fpm: FpmPool,
    /// tungstenite's settings for every client, derived once from `config`.
    pub ws_config: WebSocketConfig,
    /// Connection counters for `max_connections` and `max_connections_per_ip`.
    pub slots: Slots,
    /// `allowed_origins`, compiled.
    pub origins: OriginPolicy,
    shutdown: watch::Sender<bool>,
    started: std::time::Instant,
}

impl Context {
    /// Builds the shared state from a validated configuration.
    pub fn new(config: Config) -> Self {
        let ws = &config.websocket;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(ws.read_buffer_size)
            // Frames are queued in the outbox, never in tungstenite.
            .write_buffer_size(0)
            .max_message_size(Some(ws.max_message_size))
            .max_frame_size(Some(ws.max_frame_size));
        let metrics = Metrics::new();
        let slots = Slots::new(
            max_connections(ws.max_connections),
            ws.max_connections_per_ip,
        );
        // Validated before; an invalid list here would allow everyone, so refuse all instead.
        let origins = OriginPolicy::new(&ws.allowed_origins).unwrap_or_else(|_| {
            OriginPolicy::new(&["invalid://configuration".into()]).unwrap_or_default()
        });
        Self {
            slots,
            origins,
            fpm: FpmPool::new(&config.fpm),
            hub: Hub::new(Stats::from_metrics(&metrics)),
            metrics,
            ws_config,
            config,
            shutdown: watch::channel(false).0,
            started: std::time::Instant::now(),
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
