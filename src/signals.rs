//! The daemon's signals, held from its first instruction and handled from
//! the moment its runtime runs.
//!
//! Until a handler exists, SIGHUP, SIGTERM, SIGINT and SIGUSR2 would end the
//! process (their default action), leaving a managed php-fpm without its
//! parent.
//! So `main` blocks them before anything else ([`hold`]); once the runtime
//! runs, [`install`] creates their handlers and unblocks them, and a signal
//! that arrived meanwhile is delivered then:
//!
//! - SIGHUP is kept: the reload runs once the daemon serves.
//! - SIGUSR2 is kept: the handover to a new process (`handover.rs`) starts
//!   once the daemon serves.
//! - SIGTERM or SIGINT during the start ends it: a managed php-fpm being
//!   started is stopped, or the drain runs at once, and the daemon exits 0.
//!
//! Only the main thread unblocks them. The runtime's threads are spawned
//! after [`hold`] and keep them blocked, so the kernel delivers these signals
//! to the main thread, which lives as long as the process; the handler only
//! wakes the runtime.

use tokio::signal::unix::{Signal, SignalKind, signal};

use nix::sys::signal::{SigSet, Signal as Sig};

/// The signals held back until [`install`].
fn held() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Sig::SIGHUP);
    set.add(Sig::SIGTERM);
    set.add(Sig::SIGINT);
    set.add(Sig::SIGUSR2);
    set
}

/// Blocks SIGHUP, SIGTERM, SIGINT and SIGUSR2 in the calling thread and every thread
/// it spawns from now on: call first in `main`. Children get a clean signal
/// mask (std resets it before exec).
pub fn hold() -> nix::Result<()> {
    held().thread_block()
}

/// SIGTERM and SIGINT: the request to drain and exit.
pub struct Stop {
    terminate: Signal,
    interrupt: Signal,
}

impl Stop {
    /// Resolves on the next SIGTERM or SIGINT (or one that came before),
    /// logging it.
    pub async fn requested(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM received"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
        }
    }
}

/// The daemon's signal streams, from [`install`].
pub struct Installed {
    /// SIGHUP: reload.
    pub hangup: Signal,
    /// SIGTERM, SIGINT: drain and exit.
    pub stop: Stop,
    /// SIGUSR2: hand the listening sockets to a new process.
    pub handover: Signal,
}

/// Creates the handlers, then unblocks the held signals in this thread (the
/// main thread, inside `block_on`).
pub fn install() -> std::io::Result<Installed> {
    let hangup = signal(SignalKind::hangup())?;
    let handover = signal(SignalKind::user_defined2())?;
    let stop = Stop {
        terminate: signal(SignalKind::terminate())?,
        interrupt: signal(SignalKind::interrupt())?,
    };
    held().thread_unblock()?;
    Ok(Installed {
        hangup,
        stop,
        handover,
    })
}
