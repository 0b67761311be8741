//! `broadcast`: N members of one channel, K senders, every message to all N.
//!
//! 1. **Join.** N connections to `URL?channel=NAME`; the server's script joins
//!    them (bench/php/bench.php answers the open event with `X-WS-Join`).
//!    With `--pusher`, N Pusher clients of the app (`/app/{key}`) each
//!    subscribe to the channel (see [`crate::pusher`]). With
//!    `--also-url` (other nodes of a cluster) the N are split evenly over the
//!    URLs, and messages published on the first node reach the others through
//!    Redis; the via-PHP senders are the first node's members.
//! 2. **Sync.** "sync" is published every 100 ms until every member has seen
//!    one (at most [`SYNC_TIMEOUT`]), so no measured message races a join.
//! 3. **Publish.** K senders at R msgs/s each for `--duration` (or `--count`
//!    each), straight to the control socket or as `pub:` messages through PHP
//!    (Pusher members: `pusher_publish` on the control socket, or signed
//!    `POST /apps/{id}/events` to the HTTP API with `--api`).
//!    Payloads carry send time, sender and sequence (see [`crate::payload`]).
//! 4. **Drain.** Wait until every expected delivery arrived, at most `--drain`.
//!
//! Expected deliveries = messages published × members connected; loss is
//! what did not arrive. Deliveries/s counts unique deliveries from the first
//! publish to the last delivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{BroadcastArgs, WsArgs};
use crate::connect::connect_many;
use crate::payload::{self, Seen, SeqTracker};
use crate::publish::{self, ControlClient, Schedule, SenderStats, since};
use crate::pusher_api::{self, ApiClient, api_addr};
use crate::stats::{ErrorTally, Latencies, LatencyBatch, LatencySummary, per_sec};
use crate::target::{Ws, WsTarget};
use crate::{CLOSE_GRACE, Report, UsageError, stopped};

/// Give up waiting for every member to see a sync message after this long.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// How often "sync" is published while waiting.
const SYNC_EVERY: Duration = Duration::from_millis(100);
/// No join attempt starts later than this after the first.
const JOIN_PHASE_MAX: Duration = Duration::from_secs(120);
/// The payload of sync messages.
const SYNC: &str = "sync";
/// Messages queued for a via-PHP sender's connection.
const OUTBOUND_QUEUE: usize = 1024;

/// What `broadcast` measured.
#[derive(Debug, Serialize)]
struct Figures {
    members: u64,
    /// Members per URL (`--url` first, then each `--also-url`), when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    members_by_url: Vec<u64>,
    join_errors: ErrorTally,
    /// Handshake times of `--url`'s members.
    join_latency: LatencySummary,
    /// Handshake times of each `--also-url`'s members.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    join_latency_also: Vec<LatencySummary>,
    /// Members that saw a sync message before publishing began.
    synced: u64,
    sync_secs: f64,
    published: u64,
    publish_per_s: f64,
    publish_errors: ErrorTally,
    /// Sum of the control socket's `delivered` counts (control mode only).
    server_delivered: Option<u64>,
    expected: u64,
    /// Unique deliveries.
    received: u64,
    lost: u64,
    loss_ratio: f64,
    duplicates: u64,
    out_of_order: u64,
    deliveries_per_s: f64,
    /// From the first publish to the last delivery.
    delivery_secs: f64,
    latency: LatencySummary,
    /// Bytes the members read from their sockets (WebSocket frames, the
    /// handshakes included): what `--deflate` saves shows here.
    wire_bytes: u64,
    /// The server's CPU time (`--server-pid`) from the first publish until
    /// the deliveries were in (or the drain ended), seconds.
    server_cpu_s: Option<f64>,
    /// That per delivery received, and per publish acknowledged, µs.
    server_cpu_us_per_delivery: Option<f64>,
    server_cpu_us_per_publish: Option<f64>,
    /// Members that ended before the run did, by reason.
    members_ended: ErrorTally,
    other_messages: u64,
    per_sender: Vec<PerSender>,
}

/// One sender's messages, summed over all members.
#[derive(Debug, Clone, Default, Serialize)]
struct PerSender {
    sent: u64,
    expected: u64,
    received: u64,
    duplicates: u64,
    out_of_order: u64,
}

/// Counters every member updates while the run is on.
#[derive(Default)]
struct Live {
    synced: AtomicU64,
    received: AtomicU64,
}

/// What one member saw.
#[derive(Default)]
struct MemberResult {
    per_sender: Vec<PerSender>,
    other: u64,
    last_ns: u64,
    ended: Option<String>,
}

/// Runs `broadcast`.
pub async fn run(args: BroadcastArgs) -> anyhow::Result<Report> {
    let pusher = args.pusher.clone().map(Arc::new);
    let channel: Arc<str> = args.channel.as_str().into();
    let member_target = |target: WsTarget| match &pusher {
        Some(app) => target.with_path(&crate::pusher::client_path(app)),
        None => target.with_query("channel", &args.channel),
    };
    let api = args.via.api.as_deref().map(api_addr).transpose()?;
    let target = Arc::new(member_target(WsTarget::new(&args.ws)?));
    let mut targets = vec![Arc::clone(&target)];
    for url in &args.also_urls {
        let ws = WsArgs {
            url: url.clone(),
            ..args.ws.clone()
        };
        let node = WsTarget::new(&ws).map_err(|e| UsageError(format!("--also-url: {}", e.0)))?;
        targets.push(Arc::new(member_target(node)));
    }
    if args.via.via_php && args.senders > args.connections {
        return Err(UsageError("--via-php needs --senders ≤ --connections".into()).into());
    }
    let senders = usize::try_from(args.senders).unwrap_or(usize::MAX);
    let mut control = match &args.via.control {
        Some(path) => Some(
            ControlClient::connect(path)
                .await
                .with_context(|| format!("control socket {}", path.display()))?
                .for_pusher(pusher.as_ref().map(|app| app.id.as_str())),
        ),
        None => None,
    };
    let mut api_client = match (api, &pusher) {
        (Some(addr), Some(app)) => Some(ApiClient::new(addr, Arc::clone(app))),
        _ => None,
    };
    let base = Instant::now();

    // 1. Join: --url's share first, so via-PHP senders are its members.
    let join_deadline = Instant::now() + JOIN_PHASE_MAX;
    let (mut conns, mut join_errors, mut join_latency) = (Vec::new(), ErrorTally::default(), None);
    let (mut members_by_url, mut join_latency_also) = (Vec::new(), Vec::new());
    let shares = split_evenly(args.connections, targets.len());
    let mut first = 0;
    for (node, share) in targets.iter().zip(shares) {
        let opened = connect_many(
            node,
            first,
            share,
            args.connect_rate,
            args.concurrency,
            join_deadline,
        )
        .await;
        first += share;
        let opened_conns = match &pusher {
            Some(app) => {
                let (joined, errors) = crate::pusher::join_all(
                    opened.conns,
                    app,
                    &channel,
                    args.concurrency,
                    args.ws.connect_timeout,
                )
                .await;
                join_errors.merge(errors);
                joined
            }
            None => opened.conns,
        };
        members_by_url.push(opened_conns.len() as u64);
        conns.extend(opened_conns);
        join_errors.merge(opened.failures);
        match join_latency {
            None => join_latency = Some(opened.latency),
            Some(_) => join_latency_also.push(opened.latency),
        }
    }
    if targets.len() == 1 {
        members_by_url.clear();
    }
    let members = conns.len() as u64;
    let live = Arc::new(Live::default());
    let latencies = Latencies::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut outbound = Vec::new();
    let mut member_tasks = JoinSet::new();
    for ws in conns {
        let queue = if args.via.via_php && outbound.len() < senders {
            let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
            outbound.push(tx);
            Some(rx)
        } else {
            None
        };
        let member = Member {
            base,
            pusher: pusher.is_some(),
            senders,
            live: Arc::clone(&live),
            batch: latencies.batch(),
        };
        member_tasks.spawn(member.run(ws, queue, stop_rx.clone()));
    }

    // 2. Sync.
    let sync_start = Instant::now();
    let mut publish_errors = ErrorTally::default();
    while members > 0
        && live.synced.load(Ordering::Relaxed) < members
        && sync_start.elapsed() < SYNC_TIMEOUT
    {
        if let Some(client) = &mut api_client {
            if let Err(e) = client.publish(&channel, SYNC).await {
                publish_errors.add(format!("sync: {e}"));
                break;
            }
        } else if let Some(control) = &mut control {
            if let Err(e) = control.publish(&channel, SYNC).await {
                publish_errors.add(format!("sync: {e}"));
                break;
            }
        } else if let Some(tx) = outbound.first() {
            let _ = tx.send(Message::text(format!("pub:{SYNC}"))).await;
        }
        tokio::time::sleep(SYNC_EVERY).await;
    }
    let sync_secs = sync_start.elapsed();
    drop(control);
    drop(api_client);

    // 3. Publish.
    let cpu_before = server_cpu(args.server_pid);
    let start = Instant::now();
    let schedule = |sender: u64| Schedule {
        sender: u32::try_from(sender).unwrap_or(u32::MAX),
        rate: args.rate,
        count: args.count,
        deadline: start + args.duration,
        size: args.size,
        base,
    };
    let mut publishers = JoinSet::new();
    if members > 0 || args.via.control.is_some() {
        if let (Some(addr), Some(app)) = (api, &pusher) {
            for sender in 0..args.senders {
                let task = pusher_api::run(
                    addr,
                    Arc::clone(app),
                    Arc::clone(&channel),
                    schedule(sender),
                    args.window,
                );
                publishers.spawn(async move { (sender, task.await) });
            }
        } else if let Some(path) = &args.via.control {
            for sender in 0..args.senders {
                let client = ControlClient::connect(path)
                    .await
                    .with_context(|| format!("control socket {}", path.display()))?
                    .for_pusher(pusher.as_ref().map(|app| app.id.as_str()));
                let task = client.run(
                    Arc::clone(&channel),
                    schedule(sender),
                    args.window,
                    args.drain,
                );
                publishers.spawn(async move { (sender, task.await) });
            }
        } else {
            for (sender, tx) in (0..).zip(outbound.drain(..)) {
                let task = publish::run_via_php(tx, schedule(sender));
                publishers.spawn(async move { (sender, task.await) });
            }
        }
    }
    let mut sent = vec![SenderStats::default(); senders.min(1 << 16)];
    while let Some(joined) = publishers.join_next().await {
        match joined {
            Ok((sender, stats)) => {
                if let Some(slot) = sent.get_mut(sender as usize) {
                    *slot = stats;
                }
            }
            Err(e) => publish_errors.add(format!("task: {e}")),
        }
    }
    let publish_secs = start.elapsed();
    drop(outbound);

    // 4. Drain.
    let published: u64 = sent.iter().map(|s| s.sent).sum();
    // Through the control socket a refused publish delivers nothing.
    let accepted: u64 = sent.iter().map(|s| s.acknowledged.unwrap_or(s.sent)).sum();
    let expected = accepted * members;
    let drain_until = Instant::now() + args.drain;
    while live.received.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let server_cpu_s = match (cpu_before, server_cpu(args.server_pid)) {
        (Some(before), Some(after)) => Some(((after - before) * 1000.0).round() / 1000.0),
        _ => None,
    };
    let _ = stop_tx.send(true);

    let mut per_sender = vec![PerSender::default(); sent.len()];
    let (mut other, mut last_ns, mut members_ended) = (0, 0, ErrorTally::default());
    while let Some(joined) = member_tasks.join_next().await {
        let Ok(member) = joined else { continue };
        for (total, one) in per_sender.iter_mut().zip(&member.per_sender) {
            total.received += one.received;
            total.duplicates += one.duplicates;
            total.out_of_order += one.out_of_order;
        }
        other += member.other;
        last_ns = last_ns.max(member.last_ns);
        if let Some(why) = member.ended {
            members_ended.add(why);
        }
    }
    for (total, stats) in per_sender.iter_mut().zip(&sent) {
        total.sent = stats.sent;
        total.expected = stats.acknowledged.unwrap_or(stats.sent) * members;
    }
    let server_delivered = args
        .via
        .control
        .as_ref()
        .map(|_| sent.iter().filter_map(|s| s.server_delivered).sum());
    for stats in sent {
        publish_errors.merge(stats.errors);
    }
    let received: u64 = per_sender.iter().map(|s| s.received - s.duplicates).sum();
    let start_ns = u64::try_from(start.duration_since(base).as_nanos()).unwrap_or(0);
    let delivery = Duration::from_nanos(last_ns.saturating_sub(start_ns));
    let lost = expected.saturating_sub(received);
    let figures = Figures {
        members,
        members_by_url,
        join_errors,
        join_latency: join_latency.unwrap_or_else(|| Latencies::new().summary()),
        join_latency_also,
        synced: live.synced.load(Ordering::Relaxed),
        sync_secs: secs3(sync_secs),
        published,
        publish_per_s: per_sec(published, publish_secs),
        publish_errors,
        server_delivered,
        expected,
        received,
        lost,
        loss_ratio: if expected > 0 {
            (lost as f64 / expected as f64 * 1e6).round() / 1e6
        } else {
            0.0
        },
        duplicates: per_sender.iter().map(|s| s.duplicates).sum(),
        out_of_order: per_sender.iter().map(|s| s.out_of_order).sum(),
        deliveries_per_s: per_sec(received, delivery),
        delivery_secs: secs3(delivery),
        latency: latencies.summary(),
        wire_bytes: targets.iter().map(|t| t.wire_bytes()).sum(),
        server_cpu_s,
        server_cpu_us_per_delivery: server_cpu_s.and_then(|s| micros_each(s, received)),
        server_cpu_us_per_publish: server_cpu_s.and_then(|s| micros_each(s, accepted)),
        members_ended,
        other_messages: other,
        per_sender,
    };
    let human = human(&args, target.url(), &figures);
    Ok(Report::new("broadcast", &args, &figures, human))
}

/// The server's CPU seconds so far, when `--server-pid` names a process we can read.
fn server_cpu(pid: Option<u32>) -> Option<f64> {
    crate::cpu::cpu_secs(pid?).ok()
}

/// `secs` of CPU per one of `count` things, in µs (two decimals).
fn micros_each(secs: f64, count: u64) -> Option<f64> {
    (count > 0).then(|| (secs * 1e6 / count as f64 * 100.0).round() / 100.0)
}

/// `n` split into `parts` shares that differ by at most one, larger first.
fn split_evenly(n: u64, parts: usize) -> Vec<u64> {
    let parts = parts.max(1) as u64;
    (0..parts)
        .map(|i| n / parts + u64::from(i < n % parts))
        .collect()
}

fn secs3(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// One channel member's receiving side.
struct Member {
    base: Instant,
    /// A Pusher client: the payload is its event frame's `data`.
    pusher: bool,
    senders: usize,
    live: Arc<Live>,
    batch: LatencyBatch,
}

impl Member {
    /// Reads deliveries until the stop flag; also writes `queue`'s messages
    /// (a via-PHP sender's `pub:` messages) to the same socket.
    async fn run(
        mut self,
        mut ws: Ws,
        mut queue: Option<mpsc::Receiver<Message>>,
        stop: watch::Receiver<bool>,
    ) -> MemberResult {
        let mut result = MemberResult {
            per_sender: vec![PerSender::default(); self.senders.min(1 << 16)],
            ..MemberResult::default()
        };
        let mut trackers = vec![SeqTracker::default(); result.per_sender.len()];
        let mut synced = false;
        let stop = stopped(stop);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => {
                    let _ = tokio::time::timeout(CLOSE_GRACE, ws.close(None)).await;
                    break;
                }
                out = next_queued(&mut queue) => match out {
                    Some(message) => {
                        if let Err(e) = ws.send(message).await {
                            result.ended = Some(format!("send: {e}"));
                            break;
                        }
                    }
                    None => queue = None,
                },
                message = ws.next() => {
                    let text = match message {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Binary(_))) => {
                            result.other += 1;
                            continue;
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let code = frame.map_or(1005, |f| u16::from(f.code));
                            result.ended = Some(format!("closed by the server ({code})"));
                            break;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => {
                            result.ended = Some(format!("read: {e}"));
                            break;
                        }
                        None => {
                            result.ended = Some("connection ended".into());
                            break;
                        }
                    };
                    // A ws2fcgi.v1 member's messages start with a header line;
                    // a Pusher member's are JSON frames around the payload.
                    let data = if self.pusher {
                        match crate::pusher::payload(&text) {
                            Some(data) => data,
                            None => {
                                result.other += 1;
                                continue;
                            }
                        }
                    } else {
                        text.split_once('\n').map_or(text.as_str(), |(_, d)| d)
                    };
                    if data == SYNC {
                        if !synced {
                            synced = true;
                            self.live.synced.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    self.delivered(data, &mut trackers, &mut result);
                }
            }
        }
        result
    }

    fn delivered(&mut self, text: &str, trackers: &mut [SeqTracker], result: &mut MemberResult) {
        let now = since(self.base);
        let Some(stamp) = payload::parse(text) else {
            result.other += 1;
            return;
        };
        let sender = stamp.sender as usize;
        let (Some(tracker), Some(counts)) =
            (trackers.get_mut(sender), result.per_sender.get_mut(sender))
        else {
            result.other += 1;
            return;
        };
        self.batch.record_ns(now.saturating_sub(stamp.sent_ns));
        result.last_ns = now;
        counts.received += 1;
        match tracker.observe(stamp.seq) {
            Seen::Duplicate => {
                counts.duplicates += 1;
                return;
            }
            Seen::Late => counts.out_of_order += 1,
            Seen::InOrder | Seen::Skipped(_) => {}
        }
        self.live.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// The next queued message, or never when there is no queue.
async fn next_queued(queue: &mut Option<mpsc::Receiver<Message>>) -> Option<Message> {
    match queue {
        Some(queue) => queue.recv().await,
        None => std::future::pending().await,
    }
}

fn human(args: &BroadcastArgs, url: &str, f: &Figures) -> String {
    let via = match (&args.via.api, &args.via.control) {
        (Some(api), _) => format!("the Pusher HTTP API at {api}"),
        (None, Some(path)) if args.pusher.is_some() => {
            format!("control socket {} (pusher_publish)", path.display())
        }
        (None, Some(path)) => format!("control socket {}", path.display()),
        (None, None) => "PHP (pub: messages)".into(),
    };
    let nodes = if f.members_by_url.is_empty() {
        String::new()
    } else {
        let also = args.also_urls.join(", ");
        format!(" (split {:?} over it and {also})", f.members_by_url)
    };
    let mut out = format!(
        "broadcast {url}{nodes}: {} members (join failures {}), {} synced in {:.2} s\n\
         published {} via {via} ({} msg/s from {} senders), errors {}\n\
         delivered {} of {} expected: lost {} ({:.4} %), {} duplicates, {} out of order\n\
         {} deliveries/s over {:.2} s, {} bytes read by the members\n\
         latency {}",
        f.members,
        f.join_errors.human(),
        f.synced,
        f.sync_secs,
        f.published,
        f.publish_per_s,
        args.senders,
        f.publish_errors.human(),
        f.received,
        f.expected,
        f.lost,
        f.loss_ratio * 100.0,
        f.duplicates,
        f.out_of_order,
        f.deliveries_per_s,
        f.delivery_secs,
        f.wire_bytes,
        f.latency.human(),
    );
    if let Some(n) = f.server_delivered {
        out.push_str(&format!("\nserver reported {n} deliveries"));
    }
    if let Some(secs) = f.server_cpu_s {
        out.push_str(&format!(
            "\nserver CPU while publishing {secs:.2} s: {} µs per delivery, {} µs per publish",
            f.server_cpu_us_per_delivery
                .map_or("–".into(), |x| x.to_string()),
            f.server_cpu_us_per_publish
                .map_or("–".into(), |x| x.to_string()),
        ));
    }
    if f.members_ended.total() > 0 || f.other_messages > 0 {
        out.push_str(&format!(
            "\nmembers ended early {}, other messages {}",
            f.members_ended.human(),
            f.other_messages
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::split_evenly;

    #[test]
    fn members_split_evenly_over_urls() {
        assert_eq!(split_evenly(2000, 2), [1000, 1000]);
        assert_eq!(split_evenly(7, 3), [3, 2, 2]);
        assert_eq!(split_evenly(5, 1), [5]);
        assert_eq!(split_evenly(1, 2), [1, 0]);
    }
}
