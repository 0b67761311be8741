//! `churn`: connect → one message → its reply → close, over and over.
//!
//! C workers each cycle one connection at a time. A cycle counts when all four
//! steps succeed, including the close handshake (we send Close, the server
//! answers Close and ends the stream). With ws2fcgi every cycle is one PHP
//! request per event the script handles (open, message, close).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::cli::ChurnArgs;
use crate::echo::{await_reply, padded};
use crate::stats::{ErrorTally, Latencies, LatencyBatch, LatencySummary, per_sec};
use crate::target::{Ws, WsTarget};
use crate::{Report, take};

/// Pause after a failed cycle, so a refusing server is not hammered in a tight loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// What `churn` measured.
#[derive(Debug, Serialize)]
struct Figures {
    cycles: u64,
    cycles_per_s: f64,
    elapsed_secs: f64,
    /// Whole cycle: connect, handshake, message, reply, close handshake.
    cycle_latency: LatencySummary,
    /// Failed cycles by step and cause.
    errors: ErrorTally,
    other_messages: u64,
}

#[derive(Default)]
struct WorkerResult {
    cycles: u64,
    other: u64,
    errors: ErrorTally,
}

struct Worker {
    target: Arc<WsTarget>,
    deadline: Instant,
    used: Arc<AtomicU64>,
    count: u64,
    /// Next connection index (picks the source address).
    next_index: Arc<AtomicU64>,
    reply_timeout: Duration,
}

/// Runs `churn`.
pub async fn run(args: ChurnArgs) -> anyhow::Result<Report> {
    let target = Arc::new(WsTarget::new(&args.ws)?);
    let latencies = Latencies::new();
    let used = Arc::new(AtomicU64::new(0));
    let next_index = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..args.connections {
        let worker = Worker {
            target: Arc::clone(&target),
            deadline: start + args.duration,
            used: Arc::clone(&used),
            count: args.count,
            next_index: Arc::clone(&next_index),
            reply_timeout: args.reply_timeout,
        };
        let payload = Utf8Bytes::from(padded(format!("churn:{i};"), args.size));
        tasks.spawn(worker.run(payload, latencies.batch()));
    }
    let mut total = WorkerResult::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => {
                total.cycles += result.cycles;
                total.other += result.other;
                total.errors.merge(result.errors);
            }
            Err(e) => total.errors.add(format!("task: {e}")),
        }
    }
    let elapsed = start.elapsed();
    let figures = Figures {
        cycles: total.cycles,
        cycles_per_s: per_sec(total.cycles, elapsed),
        elapsed_secs: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        cycle_latency: latencies.summary(),
        errors: total.errors,
        other_messages: total.other,
    };
    let human = format!(
        "churn {}: {} workers, {} cycles in {:.2} s = {} cycles/s\n\
         cycle {}\n\
         errors {}, other messages {}",
        target.url(),
        args.connections,
        figures.cycles,
        figures.elapsed_secs,
        figures.cycles_per_s,
        figures.cycle_latency.human(),
        figures.errors.human(),
        figures.other_messages
    );
    Ok(Report::new("churn", &args, &figures, human))
}

impl Worker {
    async fn run(self, payload: Utf8Bytes, mut batch: LatencyBatch) -> WorkerResult {
        let mut result = WorkerResult::default();
        while Instant::now() < self.deadline && take(&self.used, self.count) {
            let began = Instant::now();
            match self.cycle(&payload, &mut result.other).await {
                Ok(()) => {
                    batch.record(began.elapsed());
                    result.cycles += 1;
                }
                Err(e) => {
                    result.errors.add(e);
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
        }
        result
    }

    async fn cycle(&self, payload: &Utf8Bytes, other: &mut u64) -> Result<(), String> {
        let index = self.next_index.fetch_add(1, Ordering::Relaxed);
        let mut ws = self
            .target
            .connect(index)
            .await
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + self.reply_timeout;
        ws.send(Message::Text(payload.clone()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        *other += await_reply(&mut ws, payload, deadline).await?;
        close(&mut ws, Instant::now() + self.reply_timeout).await
    }
}

/// Sends Close and reads until the server's Close and the end of the stream.
async fn close(ws: &mut Ws, deadline: Instant) -> Result<(), String> {
    ws.close(None).await.map_err(|e| format!("close: {e}"))?;
    let drain = async {
        loop {
            match ws.next().await {
                None => return Ok(()),
                Some(Ok(_)) => {}
                // tungstenite reports the end after a completed close handshake this way.
                Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => {
                    return Ok(());
                }
                Some(Err(e)) => return Err(format!("close: {e}")),
            }
        }
    };
    tokio::time::timeout_at(deadline, drain)
        .await
        .unwrap_or_else(|_| Err("close timeout".into()))
}
