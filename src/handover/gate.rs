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

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The bit of [`Gate::state`] that [`Gate::close`] sets; the other bits
/// count the passes held.
const CLOSING: usize = 1 << (usize::BITS - 1);

/// Open until a handover closes it; shared by every control endpoint.
///
/// A pass is one atomic add and, when dropped, one atomic subtract: every
/// control request takes one, so it costs no lock (a `tokio::sync::RwLock`
/// read guard locks the lock's waiter list each time it is dropped).
#[derive(Debug, Default)]
pub struct Gate {
    /// Passes held, and [`CLOSING`] once a close began.
    state: AtomicUsize,
    /// Set when the close is done: no pass is held and none will be given.
    closed: AtomicBool,
    /// Woken when the last pass is dropped while closing, and when closed.
    changed: Notify,
    /// Cancelled when the old process exits: relays finish.
    leaving: tokio_util::sync::CancellationToken,
}

/// A request's right to run in this process, until dropped.
#[derive(Debug)]
pub struct Pass<'a> {
    gate: &'a Gate,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.gate.release();
    }
}

impl Gate {
    /// A pass for one request, or `None` once the gate is closed (the
    /// history went to a successor: the request must run there). Waits only
    /// while [`Gate::close`] does.
    pub async fn pass(&self) -> Option<Pass<'_>> {
        if self.state.fetch_add(1, Ordering::AcqRel) & CLOSING == 0 {
            return Some(Pass { gate: self });
        }
        // Closing: not run here. Wait until the close is done, as a request
        // queued behind the close did with the lock this replaced.
        self.release();
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.is_closed() {
                return None;
            }
            changed.await;
        }
    }

    fn release(&self) {
        if self.state.fetch_sub(1, Ordering::AcqRel) == CLOSING | 1 {
            // The last pass while closing: the close goes on.
            self.changed.notify_waiters();
        }
    }

    /// Waits until no request holds a pass, and closes the gate for good.
    pub async fn close(&self) {
        self.state.fetch_or(CLOSING, Ordering::AcqRel);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.state.load(Ordering::Acquire) == CLOSING {
                break;
            }
            changed.await;
        }
        self.closed.store(true, Ordering::Release);
        self.changed.notify_waiters();
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

    #[tokio::test]
    async fn a_pass_asked_for_while_closing_waits_for_the_close_and_gets_none() {
        let gate = Arc::new(Gate::default());
        let held = gate.pass().await.expect("open");
        let closing = tokio::spawn({
            let gate = gate.clone();
            async move { gate.close().await }
        });
        // The close has begun once it is waiting for the held pass.
        while gate.state.load(Ordering::Acquire) & CLOSING == 0 {
            tokio::task::yield_now().await;
        }
        let later = tokio::spawn({
            let gate = gate.clone();
            async move { gate.pass().await.is_none() }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!later.is_finished(), "waits while the close does");
        assert!(!gate.is_closed());
        drop(held);
        closing.await.unwrap();
        assert!(later.await.unwrap(), "refused once closed");
        assert_eq!(
            gate.state.load(Ordering::Acquire),
            CLOSING,
            "no pass left held"
        );
    }
}
