//! The shutdown drain: when it began, its deadline, and the books of what
//! connections that ended still owe PHP.
//!
//! A connection PHP accepted owes PHP its close event and, when it ended with
//! messages PHP had not started, those messages first, in order. During the
//! drain they wait for a FastCGI slot until the drain deadline, not
//! `fpm.queue_timeout`; nothing outlives the deadline: the pool starts no
//! event past it and cuts off one PHP is still running then (see `fpm/`).
//!
//! Each of them is booked as delivered, failed or not delivered
//! (`ws2fcgi_close_events_total`, `ws2fcgi_messages_after_close_total`).
//! When the drain ends the books are closed: a close event still owed then
//! (its connection never got as far as asking PHP) and a message still
//! queued count as not delivered, and nothing is booked afterwards. Past the
//! deadline nothing can reach PHP, so the books, once closed, are final.
//!
//! ```text
//! SIGTERM ── begin(drain_timeout) ─────────────── deadline ── close books ── exit
//!            every event waits for a slot until ─┘  │
//!            the pool starts none, cuts off any ────┘
//! ```

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, OutcomeLabel};
use crate::php::EventError;

/// When the drain began and when it ends; cheap to clone, shared by the
/// context and the FastCGI pool.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    began: CancellationToken,
    deadline: Arc<OnceLock<Instant>>,
}

impl Clock {
    /// Starts the drain, ending `timeout` from now; returns its deadline.
    /// Only the first call counts.
    pub fn begin(&self, timeout: Duration) -> Instant {
        let deadline = *self.deadline.get_or_init(|| Instant::now() + timeout);
        self.began.cancel();
        deadline
    }

    /// The drain's deadline, once it began.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.get().copied()
    }

    /// Has the drain begun?
    pub fn is_draining(&self) -> bool {
        self.deadline.get().is_some()
    }

    /// Has the drain's deadline passed?
    pub fn is_over(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Resolves when the drain begins.
    pub async fn began(&self) {
        self.began.cancelled().await;
    }

    /// Resolves when the drain's deadline passes.
    pub async fn over(&self) {
        self.began().await;
        if let Some(deadline) = self.deadline() {
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// What came of an event handed to PHP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// PHP answered it (whatever the status).
    Delivered,
    /// It reached PHP-FPM but got no usable answer (a timeout, a crash, an
    /// unusable answer, the drain's deadline while PHP ran it): PHP may
    /// have acted on it.
    Failed,
    /// It never reached PHP: the pool stayed busy, PHP-FPM could not be
    /// reached, or the drain's deadline passed first.
    NotDelivered,
}

impl Outcome {
    /// The outcome of one call to PHP.
    pub fn of<T>(result: &Result<T, EventError>) -> Self {
        match result {
            Ok(_) => Self::Delivered,
            Err(e) if e.never_reached_php() => Self::NotDelivered,
            Err(_) => Self::Failed,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::NotDelivered => "not_delivered",
        }
    }
}

/// Counts by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// PHP answered.
    pub delivered: u64,
    /// Reached PHP-FPM without a usable answer.
    pub failed: u64,
    /// Never reached PHP.
    pub not_delivered: u64,
}

impl Counts {
    fn since(self, earlier: Self) -> Self {
        Self {
            delivered: self.delivered.saturating_sub(earlier.delivered),
            failed: self.failed.saturating_sub(earlier.failed),
            not_delivered: self.not_delivered.saturating_sub(earlier.not_delivered),
        }
    }
}

/// Close events and messages after close, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Close events.
    pub closes: Counts,
    /// Messages handed to PHP after their connection ended.
    pub messages: Counts,
}

impl Totals {
    /// What was booked after `earlier`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            closes: self.closes.since(earlier.closes),
            messages: self.messages.since(earlier.messages),
        }
    }
}

/// One metric family's counters, one per outcome.
struct Tally {
    delivered: Counter,
    failed: Counter,
    not_delivered: Counter,
}

impl Tally {
    fn new(family: &Family<OutcomeLabel, Counter>) -> Self {
        let counter = |outcome: Outcome| {
            family
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.label(),
                })
                .clone()
        };
        Self {
            delivered: counter(Outcome::Delivered),
            failed: counter(Outcome::Failed),
            not_delivered: counter(Outcome::NotDelivered),
        }
    }

    fn count(&self, outcome: Outcome, n: u64) {
        match outcome {
            Outcome::Delivered => self.delivered.inc_by(n),
            Outcome::Failed => self.failed.inc_by(n),
            Outcome::NotDelivered => self.not_delivered.inc_by(n),
        };
    }

    fn get(&self) -> Counts {
        Counts {
            delivered: self.delivered.get(),
            failed: self.failed.get(),
            not_delivered: self.not_delivered.get(),
        }
    }
}

/// A close event an accepted connection owes PHP; booked exactly once
/// ([`Calling::close`]). One that is never booked (a task that panicked)
/// counts as not delivered when the books close.
#[must_use = "a close event owed must be booked"]
#[derive(Debug)]
pub struct CloseDue(());

#[derive(Debug, Default)]
struct State {
    /// Close events owed and not booked yet.
    owed: usize,
    /// Events of ended connections in a call to PHP right now.
    calling: usize,
    /// The books are closed: nothing more is counted.
    closed: bool,
}

/// The books of close events and of messages after close.
pub struct Books {
    state: Mutex<State>,
    /// Wakes [`Books::close`] when the state changes.
    changed: Notify,
    closes: Tally,
    messages: Tally,
}

impl Books {
    /// Books counting into `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            closes: Tally::new(&metrics.close_events),
            messages: Tally::new(&metrics.messages_after_close),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection was accepted: it owes PHP a close event.
    pub fn owe(&self) -> CloseDue {
        self.state().owed += 1;
        CloseDue(())
    }

    /// An event of an ended connection is about to be handed to PHP; book
    /// what came of it through the returned guard.
    pub fn calling(&self) -> Calling<'_> {
        self.state().calling += 1;
        Calling { books: self }
    }

    /// Books a message of an ended connection that was not handed to PHP.
    pub fn message(&self, outcome: Outcome) {
        let state = self.state();
        if !state.closed {
            self.messages.count(outcome, 1);
        }
    }

    /// Everything booked since start (the books' counters never go back).
    pub fn totals(&self) -> Totals {
        Totals {
            closes: self.closes.get(),
            messages: self.messages.get(),
        }
    }

    /// Closes the books at the end of the drain. Waits, at most `grace`,
    /// until no event of an ended connection is in a call to PHP and no
    /// close event is owed; then counts every close event still owed and
    /// the `queued` messages still waiting in connections' queues as not
    /// delivered. Returns how many close events were still owed.
    ///
    /// Call it only once the drain's deadline has passed or every connection
    /// task has ended: then nothing can reach PHP any more, and what would
    /// be booked later could only be "not delivered", which is counted here.
    pub async fn close(&self, queued: u64, grace: Duration) -> u64 {
        let until = tokio::time::Instant::now() + grace;
        loop {
            {
                let state = self.state();
                if state.calling == 0 && state.owed == 0 {
                    break;
                }
            }
            if tokio::time::timeout_at(until, self.changed.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        let mut state = self.state();
        if state.calling > 0 {
            tracing::debug!(
                calling = state.calling,
                "books closed with events still in a call to php"
            );
        }
        state.closed = true;
        let owed = std::mem::take(&mut state.owed) as u64;
        self.closes.count(Outcome::NotDelivered, owed);
        self.messages.count(Outcome::NotDelivered, queued);
        owed
    }
}

/// An event of an ended connection in a call to PHP; book its outcome with
/// [`Calling::message`] or [`Calling::close`].
pub struct Calling<'a> {
    books: &'a Books,
}

impl Calling<'_> {
    /// Books what came of a message.
    pub fn message(self, outcome: Outcome) {
        self.books.message(outcome);
    }

    /// Books what came of the close event `due`.
    pub fn close(self, due: CloseDue, outcome: Outcome) {
        let CloseDue(()) = due;
        let mut state = self.books.state();
        if !state.closed {
            state.owed = state.owed.saturating_sub(1);
            self.books.closes.count(outcome, 1);
        }
    }
}

impl Drop for Calling<'_> {
    fn drop(&mut self) {
        let mut state = self.books.state();
        state.calling = state.calling.saturating_sub(1);
        drop(state);
        self.books.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn booked_outcomes_are_counted_and_owed_ones_are_not_delivered_at_close() {
        let metrics = Metrics::new();
        let books = Books::new(&metrics);
        let before = books.totals();
        let delivered = books.owe();
        let _lost = books.owe();
        books.calling().close(delivered, Outcome::Delivered);
        books.calling().message(Outcome::Delivered);
        books.message(Outcome::NotDelivered);
        let owed = books.close(2, Duration::from_millis(10)).await;
        assert_eq!(owed, 1);
        let late = books.owe();
        books.calling().close(late, Outcome::Delivered);
        let t = books.totals().since(before);
        assert_eq!(
            t.closes,
            Counts {
                delivered: 1,
                failed: 0,
                not_delivered: 1
            }
        );
        assert_eq!(
            t.messages,
            Counts {
                delivered: 1,
                failed: 0,
                not_delivered: 3
            }
        );
        let text = metrics.render(&crate::metrics::Snapshot {
            connections: 0,
            client_sockets: 0,
            channels: 0,
            fpm_busy: 0,
            fpm_idle: 0,
            history_publications: 0,
            history_bytes: 0,
        });
        assert!(
            text.contains("ws2fcgi_close_events_total{outcome=\"not_delivered\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn closing_waits_for_a_call_in_progress() {
        let metrics = Metrics::new();
        let books = Arc::new(Books::new(&metrics));
        let due = books.owe();
        let calling = books.calling();
        let closer = {
            let books = books.clone();
            tokio::spawn(async move { books.close(0, Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        assert!(!closer.is_finished());
        calling.close(due, Outcome::Delivered);
        assert_eq!(closer.await.unwrap(), 0);
        assert_eq!(books.totals().closes.delivered, 1);
    }

    #[tokio::test]
    async fn the_clock_knows_the_deadline_once_the_drain_began() {
        let clock = Clock::default();
        assert!(!clock.is_draining() && !clock.is_over());
        let deadline = clock.begin(Duration::from_millis(20));
        assert_eq!(clock.begin(Duration::from_secs(60)), deadline, "first wins");
        assert!(clock.is_draining());
        clock.over().await;
        assert!(clock.is_over());
    }
}
