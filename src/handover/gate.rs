//! The gate control requests pass to run in this process, and that a SIGUSR2
//! handover closes before it hands the channels' history to the successor:
//! once [`Gate::close`] returns, no request is running here and none will,
//! so the history the successor gets has every publication this process
//! made, and every later one is made by the successor (the control socket
//! relays the rest of its clients' requests to it, `control/relay.rs`).
//!
//! ```text
//! request:  pass() ──Some(pass)── run it ── drop(pass)
//!                 └─None──────── relay it to the successor (or refuse it)
//! handover: close() waits for every pass, then refuses new ones
//! ```

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{RwLock, RwLockReadGuard};

/// Open until a handover closes it; shared by every control endpoint.
#[derive(Debug, Default)]
pub struct Gate {
    running: RwLock<()>,
    closed: AtomicBool,
    /// Cancelled when the old process exits: relays finish.
    leaving: tokio_util::sync::CancellationToken,
}

/// A request's right to run in this process, until dropped.
pub type Pass<'a> = RwLockReadGuard<'a, ()>;

impl Gate {
    /// A pass for one request, or `None` once the gate is closed (the
    /// history went to a successor: the request must run there). Waits only
    /// while [`Gate::close`] does.
    pub async fn pass(&self) -> Option<Pass<'_>> {
        let pass = self.running.read().await;
        (!self.closed.load(Ordering::Acquire)).then_some(pass)
    }

    /// Waits until no request holds a pass, and closes the gate for good.
    pub async fn close(&self) {
        let _all = self.running.write().await;
        self.closed.store(true, Ordering::Release);
    }

    /// The old process is about to exit: relayed clients stop at a request
    /// boundary (`control/relay.rs`).
    pub fn leave(&self) {
        self.leaving.cancel();
    }

    /// Resolves once [`Gate::leave`] was called.
    pub async fn leaving(&self) {
        self.leaving.cancelled().await;
    }

    /// Has a handover closed it?
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn close_waits_for_the_running_request_and_refuses_later_ones() {
        let gate = Arc::new(Gate::default());
        let pass = gate.pass().await.expect("open");
        let closing = tokio::spawn({
            let gate = gate.clone();
            async move { gate.close().await }
        });
        // Not closed while a request runs (the closing task had its turns).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!gate.is_closed());
        assert!(!closing.is_finished());
        drop(pass);
        closing.await.unwrap();
        assert!(gate.is_closed());
        assert!(gate.pass().await.is_none());
    }
}
