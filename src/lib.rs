//! ws2fcgi: WebSockets for plain PHP, keeping PHP-FPM's share-nothing model.
//!
//! Every WebSocket event (open, each message, close) becomes one FastCGI
//! request to PHP-FPM; PHP's answer accepts or rejects the handshake, sends a
//! message back, and gives directives (join a channel, set metadata, close).
//! PHP pushes at any time through a local control socket.
//!
//! The library takes sockets that are already bound ([`Listeners`]) so tests
//! and `main` alike can choose the addresses; [`run`] serves until the
//! `shutdown` future resolves, then closes every client with 1001 (1012
//! after a SIGUSR2 handover, see [`handover`]), lets PHP
//! see each close event (bounded by `shutdown.drain_timeout`), and returns.
// `deny`, not `forbid`: four audited exceptions, each without a safe API:
// the parent-death signal of the managed php-fpm (`managed/child.rs`), taking
// ownership of sockets passed by systemd (`activation.rs`), putting the
// listening sockets at fds 3.. of a successor (`handover/mod.rs`), and
// registering a FastCGI socket for readability only (`fpm/conn.rs`).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod activation;
pub mod admin;
pub mod admission;
pub mod cli;
pub mod client_frames;
pub mod cluster;
pub mod config;
pub mod conn_vars;
pub mod connection;
pub mod context;
pub mod contract;
pub mod control;
pub mod deflate;
pub mod drain;
pub mod error_line;
pub mod event;
pub mod fcgi;
pub mod fpm;
pub mod frame;
pub mod gateway;
pub mod handover;
pub mod history;
pub mod host;
pub mod hub;
pub mod inbound;
pub mod limits;
pub mod listen;
pub mod local_http;
pub mod managed;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod php;
pub mod proxy;
pub mod pusher;
pub mod reload;
pub mod response;
pub mod secret;
pub mod shard;
pub mod signals;
pub mod tls;
pub mod transport;
pub mod v1;

use std::future::Future;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

pub use config::Config;
pub use context::Context;
pub use listen::Listener;

/// The daemon's bound sockets.
#[derive(Default)]
pub struct Listeners {
    /// WebSocket listeners (TCP or Unix).
    pub websocket: Vec<Listener>,
    /// The control socket (see [`control::bind`]).
    pub control: Option<tokio::net::UnixListener>,
    /// The HTTP publish endpoint.
    pub http_control: Option<tokio::net::TcpListener>,
    /// The admin listener (`/healthz`, `/metrics`).
    pub admin: Option<tokio::net::TcpListener>,
    /// The Pusher HTTP API's own listener (`pusher.api_listen`).
    pub pusher_api: Option<tokio::net::TcpListener>,
}

/// Serves until `shutdown` resolves, then drains and returns.
///
/// `config` must have passed [`Config::validate`].
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let ctx = Arc::new(Context::new(config));
    serve(listeners, ctx, shutdown).await
}

/// Like [`run`], with a [`Context`] the caller keeps (tests inspect the hub).
pub async fn serve(
    listeners: Listeners,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    // Control endpoints outlive the drain: close-event handlers may publish.
    let mut control_tasks = tokio::task::JoinSet::new();
    if let Some(listener) = listeners.control {
        if let Some(path) = &ctx.config().control.socket {
            tracing::info!(path = %path.display(), "accepting control clients");
        }
        control::spawn(listener, ctx.clone(), &mut control_tasks);
    }
    if let Some(listener) = listeners.http_control {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(address = %addr, "accepting HTTP control requests");
        }
        control::http::spawn(listener, ctx.clone(), &mut control_tasks);
    }
    if let Some(listener) = listeners.pusher_api {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(address = %addr, "serving the Pusher HTTP API");
        }
        pusher::api::spawn(listener, ctx.clone(), &mut control_tasks);
    }
    if let Some(listener) = listeners.admin {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(address = %addr, "serving /healthz and /metrics");
        }
        admin::spawn(listener, ctx.clone(), &mut control_tasks);
    }
    tracing::info!(
        max_sockets = ctx.slots.limit(),
        "client sockets at most, handshakes and connections together"
    );
    for listener in &listeners.websocket {
        tracing::info!(address = %listener.describe(), "accepting WebSocket clients");
    }
    // Sharded: each shard's thread accepts and serves its own connections.
    let (shards, shared_lane) = if ctx.config().runtime == config::RuntimeKind::Sharded {
        let shards = shard::start(listeners.websocket, &ctx, &tracker)
            .map_err(|e| anyhow::anyhow!("cannot start the shards: {e}"))?;
        (Some(shards), None)
    } else {
        for listener in listeners.websocket {
            tracker.spawn(gateway::accept_loop(listener, ctx.clone(), tracker.clone()));
        }
        (None, shard::shared_fanout(&ctx))
    };
    let reaper = tokio::spawn(reap_fpm_idle(ctx.clone()));
    let mut channel_events = tokio::spawn(pusher::channel_events::run(ctx.clone()));
    let sweeper = ctx
        .hub
        .history_sweep_interval()
        .map(|every| tokio::spawn(sweep_history(ctx.clone(), every)));
    // Dropped with this future (a crash, as far as Redis can tell) or
    // stopped last, after the control endpoints: close-event handlers of the
    // drain may still publish to other nodes.
    #[cfg(feature = "cluster")]
    let cluster = cluster::start(ctx.clone());

    shutdown.await;
    let connections = ctx.hub.connection_count();
    let deadline = ctx.begin_shutdown();
    let before = ctx.books.totals();
    let (code, reason) = if ctx.handed_over() {
        (contract::CLOSE_RESTART, contract::REASON_RESTART)
    } else {
        (contract::CLOSE_SHUTDOWN, contract::REASON_SHUTDOWN)
    };
    tracing::info!(connections, code, "shutting down: closing every client");
    ctx.hub.close_all(code, reason);
    tracker.close();
    let drained = tokio::time::timeout_at(deadline.into(), tracker.wait())
        .await
        .is_ok();
    // The connections are gone: what they changed in Pusher channels is
    // queued; it is sent until the deadline.
    ctx.pusher_events.finish();
    if tokio::time::timeout_at(deadline.into(), &mut channel_events)
        .await
        .is_err()
    {
        channel_events.abort();
    }
    ctx.pusher_events.abandon();
    // Past the deadline nothing reaches PHP any more: the books are final.
    let queued = u64::try_from(ctx.metrics.events_queued.get()).unwrap_or(0);
    let owed = ctx.books.close(queued, SETTLE_GRACE).await;
    log_drain(drained, owed, ctx.books.totals().since(before), &ctx);
    reaper.abort();
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    if ctx.handed_over() {
        // Control clients relayed to the successor end at a request boundary.
        ctx.control_gate.leave();
        let _ = tokio::time::timeout(RELAY_GRACE, async {
            while control_tasks.join_next().await.is_some() {}
        })
        .await;
    }
    control_tasks.shutdown().await;
    #[cfg(feature = "cluster")]
    if let Some(cluster) = cluster {
        cluster.stop().await;
    }
    ctx.fpm.close_idle();
    if let Some(shards) = shards {
        shards.stop().await;
    }
    if let Some(lane) = shared_lane {
        lane.abort();
    }
    Ok(())
}

/// How long an old process waits, after a handover's drain, for the control
/// clients it relays to the successor to get the replies still owed.
const RELAY_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How long the books wait, after the drain's deadline, for connection tasks
/// to book what they have (see [`drain::Books::close`]).
const SETTLE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The drain's last line: how many close events (and messages of clients
/// that had left) reached PHP during the drain, and how many did not.
fn log_drain(drained: bool, owed: u64, t: drain::Totals, ctx: &Context) {
    let (c, m) = (t.closes, t.messages);
    macro_rules! summary {
        ($level:ident, $text:literal) => {
            tracing::$level!(
                close_delivered = c.delivered,
                close_failed = c.failed,
                close_not_delivered = c.not_delivered,
                messages_delivered = m.delivered,
                messages_failed = m.failed,
                messages_not_delivered = m.not_delivered,
                $text
            )
        };
    }
    if !drained {
        tracing::warn!(
            drain = ?ctx.config().shutdown.drain_timeout,
            left = ctx.hub.connection_count(),
            close_owed = owed,
            "drain timeout: what had not reached php by now is not delivered"
        );
    }
    if c.failed + c.not_delivered + m.failed + m.not_delivered > 0 {
        summary!(
            warn,
            "drained: not every close event and message was delivered to php"
        );
    } else {
        summary!(info, "drained: every close event and message reached php");
    }
}

/// Drops expired channel history now and then (it is also dropped when met).
async fn sweep_history(ctx: Arc<Context>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        ctx.hub.sweep_history();
    }
}

async fn reap_fpm_idle(ctx: Arc<Context>) {
    let every = (ctx.config().fpm.idle_timeout / 2).max(std::time::Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        ctx.fpm.reap_idle();
    }
}
