//! `client-events`: Pusher client events relayed between pairs of connections.
//!
//! Each of `-c` pairs joins its own private channel (`private-bench-<i>`,
//! or `presence-bench-<i>` with `--presence`, the two as users `a<i>` and
//! `b<i>`), authorized with the app's secret. Then, one event in flight per
//! pair: A sends `client-bench` with a stamped payload, the server relays
//! it to B (never back to A), B sends it back, the server relays it to A.
//! A round trip is two relays through the daemon; its latency is measured
//! at A. The daemon's `pusher.client_events_per_second` must allow the rate
//! (the run's configuration raises it), or events are dropped with 4301.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::ClientEventsArgs;
use crate::connect::connect_many;
use crate::payload::{self, Stamp};
use crate::publish::since;
use crate::pusher::{self, Member, PusherApp};
use crate::stats::{ErrorTally, Latencies, LatencyBatch, LatencySummary, per_sec};
use crate::target::{Ws, WsTarget};
use crate::{CLOSE_GRACE, Report, take};

/// What `client-events` measured.
#[derive(Debug, Serialize)]
struct Figures {
    /// Pairs that joined their channel.
    pairs: u64,
    join_errors: ErrorTally,
    round_trips: u64,
    round_trips_per_s: f64,
    /// Client events relayed by the server (two per round trip).
    relays_per_s: f64,
    elapsed_secs: f64,
    /// From A's send to A's receipt of B's answer.
    latency: LatencySummary,
    errors: ErrorTally,
    /// Frames that were not the awaited event (member_added, pings, errors).
    other_messages: u64,
}

#[derive(Default)]
struct PairResult {
    round_trips: u64,
    other: u64,
    error: Option<String>,
}

/// Runs `client-events`.
pub async fn run(args: ClientEventsArgs) -> anyhow::Result<Report> {
    let app = Arc::new(args.pusher.clone());
    let target = Arc::new(WsTarget::new(&args.ws)?.with_path(&pusher::client_path(&app)));
    let deadline = Instant::now() + args.ws.connect_timeout + Duration::from_secs(60);
    let opened = connect_many(&target, 0, args.pairs * 2, 0.0, 256, deadline).await;
    let mut join_errors = opened.failures;
    let mut conns = opened.conns.into_iter();
    let mut joins = JoinSet::new();
    for i in 0..args.pairs {
        let (Some(a), Some(b)) = (conns.next(), conns.next()) else {
            break;
        };
        let channel = if args.presence {
            format!("presence-bench-{i}")
        } else {
            format!("private-bench-{i}")
        };
        let (app, timeout) = (Arc::clone(&app), args.ws.connect_timeout);
        joins.spawn(async move {
            let joined = tokio::time::timeout(timeout, join_pair(a, b, &app, &channel, i)).await;
            match joined {
                Ok(Ok((a, b))) => Ok((a, b, channel)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("join timeout".to_string()),
            }
        });
    }
    let mut pairs = Vec::new();
    while let Some(joined) = joins.join_next().await {
        match joined {
            Ok(Ok(pair)) => pairs.push(pair),
            Ok(Err(e)) => join_errors.add(e),
            Err(e) => join_errors.add(format!("task: {e}")),
        }
    }

    let latencies = Latencies::new();
    let used = Arc::new(AtomicU64::new(0));
    let base = Instant::now();
    let start = Instant::now();
    let relay = Relay {
        base,
        deadline: start + args.duration,
        used,
        count: args.count,
        size: args.size,
        reply_timeout: args.reply_timeout,
    };
    let mut tasks = JoinSet::new();
    let joined = pairs.len() as u64;
    for (a, b, channel) in pairs {
        let relay = relay.clone();
        let batch = latencies.batch();
        tasks.spawn(async move { relay.run(a, b, &channel, batch).await });
    }
    let (mut round_trips, mut other, mut errors) = (0, 0, ErrorTally::default());
    while let Some(done) = tasks.join_next().await {
        let result = done.unwrap_or_else(|e| PairResult {
            error: Some(format!("task: {e}")),
            ..PairResult::default()
        });
        round_trips += result.round_trips;
        other += result.other;
        if let Some(e) = result.error {
            errors.add(e);
        }
    }
    let elapsed = start.elapsed();
    let figures = Figures {
        pairs: joined,
        join_errors,
        round_trips,
        round_trips_per_s: per_sec(round_trips, elapsed),
        relays_per_s: per_sec(round_trips * 2, elapsed),
        elapsed_secs: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        latency: latencies.summary(),
        errors,
        other_messages: other,
    };
    let human = format!(
        "client-events {} ({} channels): {} pairs joined (failures {}), {} round trips in {:.2} s \
         = {} round trips/s, {} relays/s\nlatency {}\nerrors {}, other messages {}",
        target.url(),
        if args.presence { "presence" } else { "private" },
        figures.pairs,
        figures.join_errors.human(),
        figures.round_trips,
        figures.elapsed_secs,
        figures.round_trips_per_s,
        figures.relays_per_s,
        figures.latency.human(),
        figures.errors.human(),
        figures.other_messages
    );
    Ok(Report::new("client-events", &args, &figures, human))
}

/// Joins A and B to `channel` (presence: as users `a<i>` and `b<i>`).
async fn join_pair(
    mut a: Ws,
    mut b: Ws,
    app: &PusherApp,
    channel: &str,
    i: u64,
) -> Result<(Ws, Ws), String> {
    let (user_a, user_b) = (format!("a{i}"), format!("b{i}"));
    // The member is only sent on presence channels.
    let member_a = Some(Member { user_id: &user_a });
    let member_b = Some(Member { user_id: &user_b });
    pusher::join(&mut a, app, channel, member_a)
        .await
        .map_err(|e| e.to_string())?;
    pusher::join(&mut b, app, channel, member_b)
        .await
        .map_err(|e| e.to_string())?;
    Ok((a, b))
}

/// One pair's ping-pong, with what the run shares.
#[derive(Clone)]
struct Relay {
    base: Instant,
    deadline: Instant,
    used: Arc<AtomicU64>,
    count: u64,
    size: usize,
    reply_timeout: Duration,
}

impl Relay {
    async fn run(self, mut a: Ws, mut b: Ws, channel: &str, mut batch: LatencyBatch) -> PairResult {
        let mut result = PairResult::default();
        let mut data = String::new();
        let mut seq = 0;
        while Instant::now() < self.deadline && take(&self.used, self.count) {
            let stamp = Stamp {
                sent_ns: since(self.base),
                sender: 0,
                seq,
            };
            payload::write(&mut data, stamp, self.size);
            let event = pusher::client_event(channel, &data);
            let reply_by = Instant::now() + self.reply_timeout;
            let step = async {
                a.send(Message::text(event.clone()))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
                result.other += await_event(&mut b, seq, reply_by).await?;
                b.send(Message::text(event))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
                result.other += await_event(&mut a, seq, reply_by).await?;
                Ok::<(), String>(())
            };
            if let Err(e) = step.await {
                result.error = Some(e);
                return result;
            }
            batch.record_ns(since(self.base).saturating_sub(stamp.sent_ns));
            result.round_trips += 1;
            seq += 1;
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, a.close(None)).await;
        let _ = tokio::time::timeout(CLOSE_GRACE, b.close(None)).await;
        result
    }
}

/// Reads until the relayed event with sequence `seq` arrives, by `deadline`;
/// returns how many other frames were skipped. A `pusher:error` (4301: the
/// rate limit) ends the pair.
async fn await_event(ws: &mut Ws, seq: u64, deadline: Instant) -> Result<u64, String> {
    let mut other = 0;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "relay timeout".to_string())?;
        match message {
            Some(Ok(Message::Text(text))) => {
                if pusher::payload(&text)
                    .and_then(payload::parse)
                    .is_some_and(|stamp| stamp.seq == seq)
                {
                    return Ok(other);
                }
                if text.contains(r#""event":"pusher:error""#) {
                    return Err(format!("server: {text}"));
                }
                other += 1;
            }
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
