//! `storm`: N clients connect at once, as after a restart, each retrying the
//! way ws2fcgi.js does until it is admitted; then, with `--signal-pid`, the
//! server is sent a signal (SIGUSR2: a handover) and every client, closed
//! with 1012, reconnects while `--churn` workers connect and close in a loop.
//!
//! A client is *admitted* when its handshake got a 101 and a first message
//! that is not a close (the daemon's `connected` frame with ws2fcgi.v1, or
//! PHP's first message). On its way it may be turned away:
//!
//! ```text
//! 101 then close 1013 "… retry after N"   waits N to 2N s (ws2fcgi.js)
//! HTTP 503/429 with Retry-After: N         the same
//! 101 then close 1012                      reconnects within --min-delay
//! anything else (refused, reset, timeout)  a failure: waits within --min-delay
//! ```
//!
//! Reported per phase: the time until every client was admitted, attempts
//! and the extra ones they caused, turned away (1013, HTTP by status) and
//! failures by kind; for the restart, the churn workers' failed connects.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::Report;
use crate::cli::StormArgs;
use crate::stats::ErrorTally;
use crate::target::{ConnectError, Ws, WsTarget};

/// One phase's counts, shared by its clients.
#[derive(Default)]
struct Phase {
    admitted: AtomicU64,
    attempts: AtomicU64,
    turned_away_1013: AtomicU64,
    closed_1012: AtomicU64,
    http_503: AtomicU64,
    http_429: AtomicU64,
    failures: std::sync::Mutex<ErrorTally>,
    /// Milliseconds from the phase's start to the last admission.
    last_admitted_ms: AtomicU64,
}

/// What one phase measured.
#[derive(Debug, Serialize)]
struct PhaseFigures {
    admitted: u64,
    /// From the phase's start until the last client was admitted.
    time_to_admit_all_secs: Option<f64>,
    attempts: u64,
    /// Attempts beyond one per client.
    extra_attempts: u64,
    turned_away_1013: u64,
    closed_1012: u64,
    http_503: u64,
    http_429: u64,
    failures: ErrorTally,
}

/// The churn workers' connects during the restart.
#[derive(Debug, Serialize, Default)]
struct ChurnFigures {
    accepted: u64,
    failed: u64,
    errors: ErrorTally,
}

#[derive(Debug, Serialize)]
struct Figures {
    clients: u64,
    storm: PhaseFigures,
    restart: Option<PhaseFigures>,
    churn: Option<ChurnFigures>,
}

/// A small random number generator (xorshift), one per client: the jitter
/// needs no quality, only spread.
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A fraction in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The N of "retry after N" in a 1013 close's reason.
fn retry_after(reason: &str) -> Option<f64> {
    let at = reason.find("retry after ")? + "retry after ".len();
    let number: String = reason[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number.parse().ok()
}

impl Phase {
    fn fail(&self, kind: String) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(kind);
    }

    fn figures(&self, clients: u64, complete: bool) -> PhaseFigures {
        let admitted = self.admitted.load(Ordering::Relaxed);
        let attempts = self.attempts.load(Ordering::Relaxed);
        PhaseFigures {
            admitted,
            time_to_admit_all_secs: (complete && admitted == clients)
                .then(|| self.last_admitted_ms.load(Ordering::Relaxed) as f64 / 1000.0),
            attempts,
            extra_attempts: attempts.saturating_sub(admitted),
            turned_away_1013: self.turned_away_1013.load(Ordering::Relaxed),
            closed_1012: self.closed_1012.load(Ordering::Relaxed),
            http_503: self.http_503.load(Ordering::Relaxed),
            http_429: self.http_429.load(Ordering::Relaxed),
            failures: self
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// Connects until admitted, as ws2fcgi.js retries; `None` past `deadline`.
async fn admit(
    target: &WsTarget,
    index: u64,
    phase: &Phase,
    started: Instant,
    deadline: Instant,
    min_delay: Duration,
    jitter: &mut Jitter,
) -> Option<Ws> {
    while Instant::now() < deadline {
        phase.attempts.fetch_add(1, Ordering::Relaxed);
        let wait = match target.connect(index).await {
            Ok(mut ws) => {
                let first = tokio::time::timeout_at(deadline, ws.next()).await;
                match first {
                    Ok(Some(Ok(Message::Close(Some(frame))))) if u16::from(frame.code) == 1013 => {
                        phase.turned_away_1013.fetch_add(1, Ordering::Relaxed);
                        let secs = retry_after(frame.reason.as_str()).unwrap_or(1.0);
                        Duration::from_secs_f64(secs * (1.0 + jitter.next()))
                    }
                    Ok(Some(Ok(Message::Close(Some(frame))))) if u16::from(frame.code) == 1012 => {
                        phase.closed_1012.fetch_add(1, Ordering::Relaxed);
                        min_delay.mul_f64(jitter.next())
                    }
                    Ok(Some(Ok(Message::Close(_)))) => {
                        phase.fail("closed before a first message".into());
                        min_delay.mul_f64(1.0 + jitter.next())
                    }
                    Ok(Some(Ok(_))) => {
                        phase.admitted.fetch_add(1, Ordering::Relaxed);
                        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                        phase.last_admitted_ms.fetch_max(ms, Ordering::Relaxed);
                        return Some(ws);
                    }
                    Ok(Some(Err(e))) => {
                        phase.fail(format!("first message: {e}"));
                        min_delay.mul_f64(1.0 + jitter.next())
                    }
                    Ok(None) => {
                        phase.fail("ended before a first message".into());
                        min_delay.mul_f64(1.0 + jitter.next())
                    }
                    Err(_) => return None,
                }
            }
            Err(ConnectError::Handshake(WsError::Http(response))) => {
                let status = response.status().as_u16();
                match status {
                    503 => phase.http_503.fetch_add(1, Ordering::Relaxed),
                    429 => phase.http_429.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        phase.fail(format!("handshake: HTTP {status}"));
                        0
                    }
                };
                let secs = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok());
                match secs {
                    Some(secs) => Duration::from_secs_f64(secs * (1.0 + jitter.next())),
                    None => min_delay.mul_f64(1.0 + jitter.next()),
                }
            }
            Err(e) => {
                phase.fail(e.to_string());
                min_delay.mul_f64(1.0 + jitter.next())
            }
        };
        tokio::time::sleep(wait).await;
    }
    None
}

/// Reads until the server closes; the close code, if it sent one.
async fn until_closed(ws: &mut Ws) -> Option<u16> {
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Runs `storm`.
pub async fn run(args: StormArgs) -> anyhow::Result<Report> {
    let target = Arc::new(WsTarget::new(&args.ws)?);
    let storm = Arc::new(Phase::default());
    let restart = Arc::new(Phase::default());
    let (restart_tx, restart_rx) = tokio::sync::watch::channel::<Option<Instant>>(None);
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut clients = JoinSet::new();
    for i in 0..args.clients {
        let (target, storm, restart) = (target.clone(), storm.clone(), restart.clone());
        let mut restart_rx = restart_rx.clone();
        let (min_delay, duration, signalled) =
            (args.min_delay, args.duration, args.signal_pid.is_some());
        clients.spawn(async move {
            let mut jitter = Jitter::new(i + 1);
            let Some(mut ws) = admit(
                &target,
                i,
                &storm,
                started,
                deadline,
                min_delay,
                &mut jitter,
            )
            .await
            else {
                return;
            };
            if !signalled {
                // Held until the run ends (the task is dropped then).
                return std::future::pending().await;
            }
            let code = until_closed(&mut ws).await;
            drop(ws);
            let Ok(at) = restart_rx.wait_for(Option::is_some).await.map(|at| *at) else {
                return;
            };
            let Some(at) = at else { return };
            if code == Some(1012) {
                restart.closed_1012.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(min_delay.mul_f64(jitter.next())).await;
            } else {
                restart.fail(format!("closed with {code:?}, not 1012"));
            }
            if let Some(ws) = admit(
                &target,
                i,
                &restart,
                at,
                at + duration,
                min_delay,
                &mut jitter,
            )
            .await
            {
                std::future::pending::<()>().await;
                drop(ws);
            }
        });
    }
    let storm_done = wait_all(&storm, args.clients, deadline).await;
    let mut figures = Figures {
        clients: args.clients,
        storm: storm.figures(args.clients, storm_done),
        restart: None,
        churn: None,
    };
    if let (Some(pid), true) = (args.signal_pid, storm_done) {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut churners = JoinSet::new();
        for w in 0..args.churn {
            let (target, stop) = (target.clone(), stop.clone());
            churners.spawn(churn(target, args.clients + w, stop));
        }
        // A moment of churn before the signal, so the loop is running.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let at = Instant::now();
        let status = std::process::Command::new("kill")
            .arg(format!("-{}", args.signal))
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{} {pid} failed", args.signal);
        let _ = restart_tx.send(Some(at));
        let done = wait_all(&restart, args.clients, at + args.duration).await;
        // The churn goes on a moment against the new process alone.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        let mut total = ChurnFigures::default();
        while let Some(Ok(part)) = churners.join_next().await {
            total.accepted += part.accepted;
            total.failed += part.failed;
            total.errors.merge(part.errors);
        }
        figures.restart = Some(restart.figures(args.clients, done));
        figures.churn = Some(total);
    }
    clients.abort_all();
    let phase_line = |name: &str, p: &PhaseFigures| {
        format!(
            "{name}: {} of {} admitted, all in {}; {} attempts ({} extra): 1013 ×{}, 1012 ×{}, HTTP 503 ×{}, 429 ×{}, failures {}",
            p.admitted,
            args.clients,
            p.time_to_admit_all_secs
                .map_or("(not all)".into(), |s| format!("{s:.3} s")),
            p.attempts,
            p.extra_attempts,
            p.turned_away_1013,
            p.closed_1012,
            p.http_503,
            p.http_429,
            p.failures.human()
        )
    };
    let mut human = format!(
        "storm {}\n{}",
        target.url(),
        phase_line("storm", &figures.storm)
    );
    if let Some(restart) = &figures.restart {
        human.push('\n');
        human.push_str(&phase_line("restart", restart));
    }
    if let Some(churn) = &figures.churn {
        human.push_str(&format!(
            "\nchurn during the restart: {} connects accepted, {} failed {}",
            churn.accepted,
            churn.failed,
            churn.errors.human()
        ));
    }
    Ok(Report::new("storm", &args, &figures, human))
}

/// Waits until `clients` are admitted in `phase`, or `deadline`; whether all were.
async fn wait_all(phase: &Phase, clients: u64, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if phase.admitted.load(Ordering::Relaxed) >= clients {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    phase.admitted.load(Ordering::Relaxed) >= clients
}

/// Connects (a 101 is accepted, whatever follows) and drops, until `stop`.
async fn churn(
    target: Arc<WsTarget>,
    index: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> ChurnFigures {
    let mut figures = ChurnFigures::default();
    while !stop.load(Ordering::Relaxed) {
        match target.connect(index).await {
            Ok(mut ws) => {
                figures.accepted += 1;
                let _ = ws.close(None).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), until_closed(&mut ws)).await;
            }
            Err(e) => {
                figures.failed += 1;
                figures.errors.add(e.to_string());
            }
        }
    }
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_is_read_from_the_reason() {
        assert_eq!(retry_after("busy; retry after 3"), Some(3.0));
        assert_eq!(retry_after("retry after 2.5 s"), Some(2.5));
        assert_eq!(retry_after("try again later"), None);
    }

    #[test]
    fn jitter_stays_in_its_range() {
        let mut j = Jitter::new(7);
        for _ in 0..1000 {
            let x = j.next();
            assert!((0.0..1.0).contains(&x), "{x}");
        }
    }
}
