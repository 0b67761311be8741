//! A core per shard (`runtime = "sharded"`): thread-per-core, shared-nothing
//! serving of WebSocket connections.
//!
//! With `runtime = "shared"` (the default) one work-stealing tokio runtime
//! runs everything: any of its threads may poll any connection, and a
//! connection's read, its FastCGI round trip and its write can each run on
//! another core. With `runtime = "sharded"` the daemon starts `shards`
//! threads (one per core by default, at most `fpm.pool_size`), each with a
//! current-thread runtime of its own that
//!
//! - accepts on its own copy of every WebSocket listener (a dup of the one
//!   listening socket, so the sockets systemd or a predecessor passes, and
//!   those handed over on SIGUSR2, serve every shard as they are);
//! - serves the connections it accepted, start to end, on its thread;
//! - calls PHP-FPM through its own share of the pool (`pools.rs`:
//!   `fpm.pool_size` split across the shards);
//! - wakes its members' writers for a broadcast from one list per publish
//!   (`hub/fanout.rs`), not one cross-thread wake-up per member.
//!
//! What is not a connection (the control socket, the HTTP endpoints, the
//! admin listener, the cluster, signals) runs on the main thread's runtime,
//! then a current-thread one as well; the hub, the limits and the drain are
//! shared by all, as in the shared runtime.

mod pools;

pub use pools::FpmShards;

use std::cell::Cell;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, RuntimeKind};
use crate::hub::Fanout;
use crate::listen::{Listener, Portable};
use crate::{Context, gateway};

thread_local! {
    /// The shard this thread runs; 0 on every thread that is not a shard's.
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The shard of the calling thread (0 outside the shards' threads, and
/// always 0 with the shared runtime).
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// How many shards `config` asks for: 1 with the shared runtime; with the
/// sharded one `shards`, or one per core when 0, never more than
/// `fpm.pool_size` (each shard needs a FastCGI connection of its own).
pub fn count(config: &Config) -> usize {
    if config.runtime == RuntimeKind::Shared {
        return 1;
    }
    let wanted = match config.shards {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    wanted.min(config.fpm.pool_size).max(1)
}

/// The shards' threads, serving until [`Shards::stop`].
pub struct Shards {
    stop: CancellationToken,
    done: Vec<tokio::sync::oneshot::Receiver<()>>,
}

/// Starts the shards of a sharded `ctx`: each accepts on a copy of every
/// listener in `listeners`, and its connections are tracked by `tracker`.
/// Broadcasts to their members are woken through one lane per shard.
pub fn start(
    listeners: Vec<Listener>,
    ctx: &Arc<Context>,
    tracker: &TaskTracker,
) -> std::io::Result<Shards> {
    let config = ctx.config();
    let shards = count(&config);
    let portable = listeners
        .into_iter()
        .map(Listener::into_portable)
        .collect::<std::io::Result<Vec<_>>>()?;
    let (fanout, lanes) = Fanout::new(shards, config.fanout_delay);
    let stop = CancellationToken::new();
    let mut done = Vec::with_capacity(shards);
    let mut threads = Vec::with_capacity(shards);
    for (index, lane) in lanes.into_iter().enumerate() {
        let copies = portable
            .iter()
            .map(Portable::try_clone)
            .collect::<std::io::Result<Vec<_>>>()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (finished, finished_rx) = tokio::sync::oneshot::channel();
        done.push(finished_rx);
        let (ctx, tracker, stop) = (ctx.clone(), tracker.clone(), stop.clone());
        threads.push((index, move || {
            CURRENT.with(|c| c.set(index));
            runtime.block_on(async move {
                for copy in copies {
                    match copy.into_listener() {
                        Ok(listener) => {
                            tracker.spawn(gateway::accept_loop(listener, ctx.clone(), tracker.clone()));
                        }
                        Err(e) => {
                            tracing::error!(shard = index, error = %e, "a shard cannot accept on a listener");
                        }
                    }
                }
                let lane = tokio::spawn(lane.run());
                stop.cancelled().await;
                lane.abort();
            });
            // What is left on the runtime (nothing, after a full drain) is
            // dropped with it; then the shard is done.
            drop(runtime);
            drop(finished);
        }));
    }
    ctx.hub.set_fanout(fanout);
    for (index, run) in threads {
        std::thread::Builder::new()
            .name(format!("ws2fcgi-shard-{index}"))
            .spawn(run)?;
    }
    tracing::info!(
        shards,
        fpm_per_shard = config.fpm.pool_size / shards,
        "sharded runtime: each shard accepts, serves and writes its own connections"
    );
    Ok(Shards { stop, done })
}

/// A lane for the shared runtime when `fanout_delay` is set: broadcasts'
/// wake-ups are held that long, on a task of the shared runtime.
pub fn shared_fanout(ctx: &Context) -> Option<tokio::task::JoinHandle<()>> {
    let delay = ctx.config().fanout_delay;
    if delay.is_zero() {
        return None;
    }
    let (fanout, lanes) = Fanout::new(1, delay);
    ctx.hub.set_fanout(fanout);
    lanes
        .into_iter()
        .next()
        .map(|lane| tokio::spawn(lane.run()))
}

impl Shards {
    /// Stops every shard's runtime (after the drain) and waits for their threads.
    pub async fn stop(self) {
        self.stop.cancel();
        for done in self.done {
            // An error only says the thread ended without a word: it ended.
            let _ = done.await;
        }
    }
}
