//! ws2fcgi-bench: a load tool for ws2fcgi and any WebSocket server on loopback.
//!
//! Seven modes, one file each: `idle` (memory per held connection), `echo`
//! (round trips through PHP), `broadcast` (fan-out of one channel, raw or
//! Pusher clients), `churn` (connection set-up and tear-down),
//! `client-events` (Pusher client events relayed between pairs), `storm`
//! (every client reconnecting at once, and a restart under it) and `fcgi`
//! (PHP-FPM's raw capacity, the ceiling the bridge can at best approach). Each returns a [`Report`]: a
//! human summary and the figures that become one JSON line.
//!
//! Every loop is bounded by a count and by a duration; every target must be
//! this machine (see [`target`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod broadcast;
pub mod churn;
pub mod cli;
pub mod client_events;
pub mod connect;
pub mod cpu;
pub mod echo;
pub mod fcgi;
pub mod idle;
pub mod inflate;
pub mod pace;
pub mod payload;
pub mod publish;
pub mod pusher;
pub mod pusher_api;
pub mod rss;
pub mod stats;
pub mod storm;
pub mod target;

use std::fmt;

use serde::Serialize;
use serde_json::{Value, json};

use crate::cli::Mode;

/// A command-line mistake (bad URL, non-loopback target): exit code 64.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The outcome of one run.
#[derive(Debug)]
pub struct Report {
    /// The mode's name.
    pub mode: &'static str,
    /// The parameters, as given or defaulted.
    pub params: Value,
    /// The measured figures.
    pub figures: Value,
    /// A few lines for a person.
    pub human: String,
}

impl Report {
    /// Gathers a mode's parameters, figures and summary.
    pub fn new(
        mode: &'static str,
        params: &impl Serialize,
        figures: &impl Serialize,
        human: String,
    ) -> Self {
        Self {
            mode,
            params: serde_json::to_value(params).unwrap_or(Value::Null),
            figures: serde_json::to_value(figures).unwrap_or(Value::Null),
            human,
        }
    }

    /// The one JSON line for this run (no trailing newline).
    ///
    /// ```text
    /// {"mode":"echo","version":"0.1.0","nofile":20000,"threads":2,
    ///  "params":{…},"figures":{…}}
    /// ```
    pub fn json_line(&self, nofile: u64, threads: usize) -> String {
        json!({
            "mode": self.mode,
            "version": env!("CARGO_PKG_VERSION"),
            "nofile": nofile,
            "threads": threads,
            "params": self.params,
            "figures": self.figures,
        })
        .to_string()
    }
}

/// Runs one mode to completion.
pub async fn run(mode: Mode) -> anyhow::Result<Report> {
    match mode {
        Mode::Idle(args) => idle::run(args).await,
        Mode::Echo(args) => echo::run(args).await,
        Mode::Broadcast(args) => broadcast::run(args).await,
        Mode::Churn(args) => churn::run(args).await,
        Mode::ClientEvents(args) => client_events::run(args).await,
        Mode::Fcgi(args) => fcgi::run(args).await,
        Mode::Storm(args) => storm::run(args).await,
    }
}

/// How long a client waits to close politely at the end of a run.
pub const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Resolves once the run's stop flag turns `true` (or its sender is gone).
pub async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Takes one unit from a run's shared count; `false` once it is used up.
pub fn take(used: &std::sync::atomic::AtomicU64, count: u64) -> bool {
    used.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count
}
