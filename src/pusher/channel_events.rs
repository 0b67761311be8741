//! The changes of Pusher channels — Pusher's webhooks `channel_occupied`,
//! `channel_vacated`, `member_added`, `member_removed` — as FastCGI requests
//! to the app's `script`, in the order they happened.
//!
//! The state reports each [`Change`] under its lock ([`ChannelEvents`] is
//! its [`Changes`] sink): an app without a `script` costs nothing more; for
//! one with a script the change is queued without blocking. One task
//! ([`run`]) sends them, one at a time per app (so PHP sees an app's
//! changes in order) and the apps side by side (a slow app does not hold up
//! another):
//!
//! ```text
//! state (under its lock) ─ report ─▶ queue (≤ MAX_QUEUED) ─▶ run: per app, one request at a time
//!                          full: dropped, counted, logged
//! ```
//!
//! What came of each is counted in
//! `ws2fcgi_pusher_channel_events_total{outcome}`: `delivered` (PHP
//! answered, whatever the status), `failed` (it reached PHP-FPM without a
//! usable answer), `not_delivered` (PHP-FPM could not take it within
//! `fpm.retry_window`, or the shutdown drain ended first) and `dropped`
//! (the queue was full). At shutdown the queue is worked off until the
//! drain's deadline ([`ChannelEvents::finish`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::php::{change_name, channel_event_env};
use super::state::{Change, Changes};
use super::{App, Apps};
use crate::context::Context;
use crate::drain::Outcome;
use crate::metrics::OutcomeLabel;
use crate::php::{Request, send_retrying};

/// Most changes that wait for PHP at once, all apps together; past it a
/// change is dropped (counted as `dropped`, and logged).
pub const MAX_QUEUED: usize = 10_000;

/// At most one log line per this long about dropped changes.
const DROP_LOG_EVERY: Duration = Duration::from_secs(1);

/// One change to send.
struct Job {
    app: Arc<App>,
    channel: String,
    change: Change,
}

/// The queue of channel changes for PHP; the state's [`Changes`] sink.
pub struct ChannelEvents {
    /// The apps in force (a reload replaces them).
    apps: ArcSwap<Apps>,
    tx: mpsc::UnboundedSender<Job>,
    /// Taken by [`run`].
    rx: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    /// Changes reported and not yet sent or dropped: bounds the queue.
    queued: AtomicUsize,
    /// Changes queued or in a call to PHP (those not counted yet).
    pending: AtomicUsize,
    /// Dropped since the last log line, and when that was.
    dropped: Mutex<(u64, Option<Instant>)>,
    /// Set at shutdown: work off the queue, then end.
    finishing: CancellationToken,
    outcomes: Family<OutcomeLabel, Counter>,
}

impl ChannelEvents {
    /// A queue for `apps`, counting into `outcomes`
    /// (`ws2fcgi_pusher_channel_events_total`).
    pub fn new(apps: Arc<Apps>, outcomes: Family<OutcomeLabel, Counter>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            apps: ArcSwap::new(apps),
            tx,
            rx: Mutex::new(Some(rx)),
            queued: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            dropped: Mutex::new((0, None)),
            finishing: CancellationToken::new(),
            outcomes,
        }
    }

    /// Puts a reloaded app list in force for changes from now on.
    pub fn set_apps(&self, apps: Arc<Apps>) {
        self.apps.store(apps);
    }

    /// Changes waiting or in a call to PHP.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Starts the end: [`run`] works off what is queued and returns.
    pub fn finish(&self) {
        self.finishing.cancel();
    }

    /// Counts what is still pending as not delivered (the drain ended first).
    pub fn abandon(&self) -> usize {
        let left = self.pending.swap(0, Ordering::AcqRel);
        if left > 0 {
            self.count(Outcome::NotDelivered.label(), left as u64);
            tracing::warn!(
                left,
                "pusher channel events not sent to php: the shutdown drain ended first"
            );
        }
        left
    }

    fn count(&self, outcome: &'static str, n: u64) {
        self.outcomes
            .get_or_create(&OutcomeLabel { outcome })
            .inc_by(n);
    }

    fn dropped(&self, app_id: &str, channel: &str) {
        self.count("dropped", 1);
        let mut dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        dropped.0 += 1;
        let now = Instant::now();
        if dropped
            .1
            .is_none_or(|at| now.duration_since(at) >= DROP_LOG_EVERY)
        {
            tracing::warn!(
                app = app_id,
                channel,
                dropped = dropped.0,
                most = MAX_QUEUED,
                "pusher channel events dropped: the queue to php is full"
            );
            *dropped = (0, Some(now));
        }
    }
}

impl Changes for ChannelEvents {
    fn report(&self, app_id: &str, channel: &str, change: Change) {
        let apps = self.apps.load();
        let Some(app) = apps.by_id(app_id).filter(|a| a.script.is_some()) else {
            return;
        };
        let taken = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_QUEUED).then_some(n + 1)
            });
        if taken.is_err() {
            self.dropped(app_id, channel);
            return;
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        let job = Job {
            app: app.clone(),
            channel: channel.to_owned(),
            change,
        };
        if self.tx.send(job).is_err() {
            // `run` has ended (the daemon is stopping).
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.count(Outcome::NotDelivered.label(), 1);
        }
    }
}

type Sending = Pin<Box<dyn Future<Output = String> + Send>>;

/// Sends the queued changes until [`ChannelEvents::finish`] and the queue
/// is empty. Spawned once per daemon.
pub async fn run(ctx: Arc<Context>) {
    let events = &ctx.pusher_events;
    let taken = events.rx.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(mut rx) = taken else { return };
    // App id → its changes not started; an entry means one is in a call.
    let mut waiting: HashMap<String, VecDeque<Job>> = HashMap::new();
    let mut sending: FuturesUnordered<Sending> = FuturesUnordered::new();
    let mut receiving = true;
    let mut closed = false;
    while receiving || !sending.is_empty() {
        tokio::select! {
            () = events.finishing.cancelled(), if !closed => {
                // What is queued is still received; nothing more comes.
                rx.close();
                closed = true;
            }
            job = rx.recv(), if receiving => match job {
                Some(job) => match waiting.get_mut(&job.app.id) {
                    Some(queue) => queue.push_back(job),
                    None => {
                        waiting.insert(job.app.id.clone(), VecDeque::new());
                        sending.push(Box::pin(send(ctx.clone(), job)));
                    }
                },
                None => receiving = false,
            },
            Some(app_id) = sending.next(), if !sending.is_empty() => {
                match waiting.get_mut(&app_id).and_then(VecDeque::pop_front) {
                    Some(job) => sending.push(Box::pin(send(ctx.clone(), job))),
                    None => {
                        waiting.remove(&app_id);
                    }
                }
            }
        }
    }
}

/// Sends one change to its app's script; returns the app's id when done.
async fn send(ctx: Arc<Context>, job: Job) -> String {
    let events = &ctx.pusher_events;
    events.queued.fetch_sub(1, Ordering::AcqRel);
    let Job {
        app,
        channel,
        change,
    } = job;
    if let Some(script) = &app.script {
        let config = ctx.config();
        let params = channel_event_env(
            &app,
            script,
            config.document_root.as_deref(),
            config.control.socket.as_deref(),
            &channel,
            &change,
        );
        let event = change_name(&change);
        let request = Request {
            event,
            conn: None,
            params: [&params, b""],
            body: b"",
        };
        let result = send_retrying(&ctx, &request).await;
        let outcome = Outcome::of(&result);
        match &result {
            Ok(answer) if !answer.is_success() => tracing::warn!(
                app = %app.id,
                %channel,
                event,
                status = answer.status,
                "php answered a pusher channel event with an error status"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                app = %app.id,
                %channel,
                event,
                error = %e,
                kind = e.kind(),
                "pusher channel event not answered by php"
            ),
        }
        // Counted unless `abandon` counted it already.
        if events
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            events.count(outcome.label(), 1);
        }
    }
    app.id.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(apps: &str) -> ChannelEvents {
        let config = crate::Config::from_toml(apps).unwrap();
        ChannelEvents::new(Arc::new(Apps::new(&config.pusher)), Family::default())
    }

    fn counted(events: &ChannelEvents, outcome: &'static str) -> u64 {
        events
            .outcomes
            .get_or_create(&OutcomeLabel { outcome })
            .get()
    }

    #[test]
    fn the_queue_is_bounded_and_what_it_drops_is_counted() {
        let events = events(
            "[[pusher.app]]\nid = \"1\"\nkey = \"k1\"\nsecret = \"s\"\nscript = \"/srv/p.php\"\n\
             [[pusher.app]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s\"\n",
        );
        for _ in 0..MAX_QUEUED + 3 {
            events.report("1", "presence-a", Change::Occupied);
        }
        assert_eq!(events.pending(), MAX_QUEUED);
        assert_eq!(counted(&events, "dropped"), 3);
        // An app without a script, or an unknown one, queues nothing.
        events.report("2", "presence-a", Change::Vacated);
        events.report("3", "presence-a", Change::Vacated);
        assert_eq!(events.pending(), MAX_QUEUED);
        assert_eq!(counted(&events, "dropped"), 3);
        // What is left when the drain ends is counted as not delivered.
        assert_eq!(events.abandon(), MAX_QUEUED);
        assert_eq!(counted(&events, "not_delivered"), MAX_QUEUED as u64);
        assert_eq!(events.pending(), 0);
    }
}
