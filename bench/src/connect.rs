//! Opening many connections: paced, with a cap on handshakes in flight.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::pace::Pacer;
use crate::stats::{ErrorTally, Latencies, LatencySummary};
use crate::target::{Ws, WsTarget};

/// The result of opening a batch of connections.
pub struct Opened {
    /// The open connections, in no particular order.
    pub conns: Vec<Ws>,
    /// Connections attempted (fewer than asked when the deadline came first).
    pub attempted: u64,
    /// Why the others failed.
    pub failures: ErrorTally,
    /// TCP connect plus handshake times of the successful ones.
    pub latency: LatencySummary,
    /// From the first attempt to the last success (to the last answer if none succeeded).
    pub elapsed: Duration,
}

/// Opens up to `n` connections at `rate` per second (0: unpaced), at most
/// `concurrency` handshakes at a time, starting no attempt after `deadline`.
///
/// Connection `i` gets index `first + i`, which picks its source address.
pub async fn connect_many(
    target: &Arc<WsTarget>,
    first: u64,
    n: u64,
    rate: f64,
    concurrency: u32,
    deadline: Instant,
) -> Opened {
    let start = Instant::now();
    let permits = Arc::new(Semaphore::new(concurrency as usize));
    let latencies = Latencies::new();
    let mut pacer = Pacer::new(rate);
    let mut tasks = JoinSet::new();
    let mut attempted = 0;
    for i in 0..n {
        if !pacer.wait(deadline).await {
            break;
        }
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit,
            () = tokio::time::sleep_until(deadline) => break,
        };
        let Ok(permit) = permit else { break };
        let target = Arc::clone(target);
        let mut batch = latencies.batch();
        tasks.spawn(async move {
            let began = Instant::now();
            let result = target.connect(first + i).await;
            drop(permit);
            if result.is_ok() {
                batch.record(began.elapsed());
            }
            (result, Instant::now())
        });
        attempted += 1;
    }
    let mut conns = Vec::with_capacity(attempted as usize);
    let mut failures = ErrorTally::default();
    let mut last_success = None;
    let mut last_answer = start;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((Ok(ws), at)) => {
                conns.push(ws);
                last_success = last_success.max(Some(at));
            }
            Ok((Err(e), at)) => {
                failures.add(e.to_string());
                last_answer = last_answer.max(at);
            }
            Err(e) => failures.add(format!("task: {e}")),
        }
    }
    Opened {
        conns,
        attempted,
        failures,
        latency: latencies.summary(),
        elapsed: last_success.unwrap_or(last_answer) - start,
    }
}
