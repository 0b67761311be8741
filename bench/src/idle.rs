//! `idle`: open N connections at R/s, hold them, and weigh them.
//!
//! Given the server's pid, its VmRSS is read before the first connection (the
//! empty baseline) and after holding all of them for `--hold`; the difference
//! divided by the connections still open is the server's memory per idle
//! connection. Our own RSS is reported the same way, so a reader can see the
//! load tool is not the bottleneck.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::IdleArgs;
use crate::connect::connect_many;
use crate::stats::{ErrorTally, LatencySummary, per_sec, round1};
use crate::target::{Ws, WsTarget};
use crate::{CLOSE_GRACE, Report, UsageError, rss, stopped};

/// What `idle` measured.
#[derive(Debug, Serialize)]
struct Figures {
    attempted: u64,
    connected: u64,
    failed: u64,
    errors: ErrorTally,
    /// Seconds from the first attempt to the last successful handshake.
    open_secs: f64,
    /// Successful connections per second over `open_secs`.
    connect_rate: f64,
    /// TCP connect plus handshake.
    connect_latency: LatencySummary,
    /// Connections the server closed while we held them.
    dropped: u64,
    /// Connections open when the RSS was read.
    still_open: u64,
    /// Data messages the server sent while we held (greetings).
    server_messages: u64,
    server_rss_before_kib: Option<u64>,
    server_rss_after_kib: Option<u64>,
    /// (after − before) / still_open.
    server_rss_per_conn_bytes: Option<f64>,
    client_rss_per_conn_bytes: Option<f64>,
}

#[derive(Default)]
struct Held {
    dropped: AtomicU64,
    messages: AtomicU64,
}

/// Runs `idle`.
pub async fn run(args: IdleArgs) -> anyhow::Result<Report> {
    let target = Arc::new(WsTarget::new(&args.ws)?);
    let server_rss = |pid: u32| {
        rss::vm_rss(Some(pid)).map_err(|e| UsageError(format!("--server-pid {pid}: {e}")))
    };
    let server_before = args.server_pid.map(server_rss).transpose()?;
    let client_before = rss::vm_rss(None).ok();

    let deadline = Instant::now() + args.duration;
    let opened = connect_many(
        &target,
        0,
        args.connections,
        args.rate,
        args.concurrency,
        deadline,
    )
    .await;
    let connected = opened.conns.len() as u64;

    let (stop_tx, stop_rx) = watch::channel(false);
    let held = Arc::new(Held::default());
    let mut holders = JoinSet::new();
    for ws in opened.conns {
        holders.spawn(hold(ws, stop_rx.clone(), Arc::clone(&held)));
    }
    tokio::time::sleep(args.hold).await;
    // The server may have died meanwhile: that shows as a missing figure, not a failed run.
    let server_after = args.server_pid.and_then(|pid| server_rss(pid).ok());
    let client_after = rss::vm_rss(None).ok();
    let dropped = held.dropped.load(Ordering::Relaxed);
    let still_open = connected - dropped;

    let _ = stop_tx.send(true);
    let closing = async { while holders.join_next().await.is_some() {} };
    if tokio::time::timeout(CLOSE_GRACE * 2, closing)
        .await
        .is_err()
    {
        holders.abort_all();
    }

    let per_conn = |before: Option<u64>, after: Option<u64>| {
        let (before, after) = (before?, after?);
        (still_open > 0).then(|| round1((after as f64 - before as f64) / still_open as f64))
    };
    let figures = Figures {
        attempted: opened.attempted,
        connected,
        failed: opened.failures.total(),
        errors: opened.failures,
        open_secs: (opened.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        connect_rate: per_sec(connected, opened.elapsed),
        connect_latency: opened.latency,
        dropped,
        still_open,
        server_messages: held.messages.load(Ordering::Relaxed),
        server_rss_before_kib: server_before.map(|b| b / 1024),
        server_rss_after_kib: server_after.map(|b| b / 1024),
        server_rss_per_conn_bytes: per_conn(server_before, server_after),
        client_rss_per_conn_bytes: per_conn(client_before, client_after),
    };
    let human = human(&args, target.url(), &figures);
    Ok(Report::new("idle", &args, &figures, human))
}

/// Holds one connection until the stop flag, noting whether the server dropped it.
async fn hold(mut ws: Ws, stop: watch::Receiver<bool>, held: Arc<Held>) {
    let stop = stopped(stop);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => {
                let _ = tokio::time::timeout(CLOSE_GRACE, ws.close(None)).await;
                return;
            }
            message = ws.next() => match message {
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    held.messages.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    held.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

fn human(args: &IdleArgs, url: &str, f: &Figures) -> String {
    let mut out = format!(
        "idle {url}: {} of {} connected in {:.2} s ({} conn/s), failed {}\n\
         connect {}\n\
         held {:.1} s: {} still open, {} dropped by the server",
        f.connected,
        args.connections,
        f.open_secs,
        f.connect_rate,
        f.errors.human(),
        f.connect_latency.human(),
        args.hold.as_secs_f64(),
        f.still_open,
        f.dropped,
    );
    if let (Some(before), Some(after)) = (f.server_rss_before_kib, f.server_rss_after_kib) {
        out.push_str(&format!(
            "\nserver RSS {before} KiB empty → {after} KiB: {} bytes per connection",
            f.server_rss_per_conn_bytes
                .map_or("n/a".into(), |b| format!("{b:.0}"))
        ));
    }
    if let Some(b) = f.client_rss_per_conn_bytes {
        out.push_str(&format!("\nload tool RSS: {b:.0} bytes per connection"));
    }
    out
}
