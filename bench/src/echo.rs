//! `echo`: C connections, each sending a message and waiting for its reply.
//!
//! The connections are opened first; the clock starts when all are open. Each
//! sends a text message of `--size` bytes (`echo:<i>;xxx…`) and waits for a
//! message equal to it; anything else the server sends (a greeting on open)
//! is counted and skipped. Round trips/s is completed round trips over the
//! time until the last connection finished.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::cli::EchoArgs;
use crate::connect::connect_many;
use crate::stats::{ErrorTally, Latencies, LatencyBatch, LatencySummary, per_sec};
use crate::target::{Ws, WsTarget};
use crate::{CLOSE_GRACE, Report, take};

/// What `echo` measured.
#[derive(Debug, Serialize)]
struct Figures {
    connected: u64,
    connect_errors: ErrorTally,
    round_trips: u64,
    round_trips_per_s: f64,
    /// Time from the start to the last connection finishing.
    elapsed_secs: f64,
    latency: LatencySummary,
    /// Connections that ended with an error (reply timeout, closed by the server).
    errors: ErrorTally,
    /// Data messages that were not the reply (e.g. greetings).
    other_messages: u64,
}

#[derive(Default)]
struct ConnResult {
    round_trips: u64,
    other: u64,
    error: Option<String>,
}

/// Runs `echo`.
pub async fn run(args: EchoArgs) -> anyhow::Result<Report> {
    let target = Arc::new(WsTarget::new(&args.ws)?);
    let opened = connect_many(
        &target,
        0,
        args.connections,
        0.0,
        256,
        Instant::now() + args.ws.connect_timeout,
    )
    .await;
    let connected = opened.conns.len() as u64;

    let latencies = Latencies::new();
    let used = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut tasks = JoinSet::new();
    for (i, ws) in opened.conns.into_iter().enumerate() {
        let payload = Utf8Bytes::from(padded(format!("echo:{i};"), args.size));
        let run = EchoLoop {
            deadline,
            used: Arc::clone(&used),
            count: args.count,
            reply_timeout: args.reply_timeout,
        };
        tasks.spawn(run.run(ws, payload, latencies.batch()));
    }
    let (mut round_trips, mut other, mut errors) = (0, 0, ErrorTally::default());
    while let Some(joined) = tasks.join_next().await {
        let result = joined.unwrap_or_else(|e| ConnResult {
            error: Some(format!("task: {e}")),
            ..ConnResult::default()
        });
        round_trips += result.round_trips;
        other += result.other;
        if let Some(e) = result.error {
            errors.add(e);
        }
    }
    let elapsed = start.elapsed();
    let figures = Figures {
        connected,
        connect_errors: opened.failures,
        round_trips,
        round_trips_per_s: per_sec(round_trips, elapsed),
        elapsed_secs: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        latency: latencies.summary(),
        errors,
        other_messages: other,
    };
    let human = format!(
        "echo {}: {} connections ({} failed), {} round trips in {:.2} s = {} round trips/s\n\
         latency {}\n\
         errors {}, other messages {}",
        target.url(),
        figures.connected,
        figures.connect_errors.human(),
        figures.round_trips,
        figures.elapsed_secs,
        figures.round_trips_per_s,
        figures.latency.human(),
        figures.errors.human(),
        figures.other_messages
    );
    Ok(Report::new("echo", &args, &figures, human))
}

struct EchoLoop {
    deadline: Instant,
    used: Arc<AtomicU64>,
    count: u64,
    reply_timeout: Duration,
}

impl EchoLoop {
    async fn run(self, mut ws: Ws, payload: Utf8Bytes, mut batch: LatencyBatch) -> ConnResult {
        let mut result = ConnResult::default();
        while Instant::now() < self.deadline && take(&self.used, self.count) {
            let began = Instant::now();
            if let Err(e) = ws.send(Message::Text(payload.clone())).await {
                result.error = Some(format!("send: {e}"));
                return result;
            }
            let wait = await_reply(&mut ws, &payload, began + self.reply_timeout);
            if let Err(e) = wait.await.map(|other| result.other += other) {
                result.error = Some(e);
                return result;
            }
            batch.record(began.elapsed());
            result.round_trips += 1;
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, ws.close(None)).await;
        result
    }
}

/// Reads until a text message equal to `payload` arrives, by `deadline`.
///
/// Returns how many other data messages were skipped, or why no reply came.
pub(crate) async fn await_reply(
    ws: &mut Ws,
    payload: &Utf8Bytes,
    deadline: Instant,
) -> Result<u64, String> {
    let mut other = 0;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "reply timeout".to_string())?;
        match message {
            Some(Ok(Message::Text(text))) if text == *payload => return Ok(other),
            Some(Ok(Message::Text(_) | Message::Binary(_))) => other += 1,
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                return Err(format!("closed by the server ({code})"));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("connection ended".into()),
        }
    }
}

/// `prefix` padded with 'x' to `size` bytes (never shorter than `prefix`).
pub(crate) fn padded(mut prefix: String, size: usize) -> String {
    while prefix.len() < size {
        prefix.push('x');
    }
    prefix
}
