//! Broadcast publishers: JSON lines to the control socket, or `pub:` messages through PHP.
//!
//! The control protocol is one JSON object per line each way:
//!
//! ```text
//! → {"op":"publish","channel":"bench","data":"t=…;s=0;q=17;xxx"}
//! ← {"ok":true,"delivered":1000}
//! ← {"ok":false,"error":"…"}
//! ```
//!
//! For Pusher members (`--pusher`) the op is `pusher_publish`:
//!
//! ```text
//! → {"op":"pusher_publish","app":"1001","channels":["bench"],"event":"bench","data":"t=…"}
//! ```
//!
//! A control publisher pipelines: it keeps up to `--window` requests
//! unanswered, reading replies on a separate task, and flushes its buffered
//! writes before every pause so a paced message is not held back.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::pace::Pacer;
use crate::payload::{self, Stamp};
use crate::stats::ErrorTally;

/// Longest reply line we accept from the control socket.
pub const MAX_REPLY_LINE: usize = 64 * 1024;
/// Write buffer of a control publisher.
const WRITE_BUFFER: usize = 64 * 1024;

#[derive(Serialize)]
struct Publish<'a> {
    op: &'static str,
    channel: &'a str,
    data: &'a str,
}

#[derive(Serialize)]
struct PusherPublish<'a> {
    op: &'static str,
    app: &'a str,
    channels: [&'a str; 1],
    event: &'static str,
    data: &'a str,
}

#[derive(Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default)]
    delivered: u64,
    #[serde(default)]
    error: Option<String>,
}

/// Reads one reply line: how many members it was delivered to, or the error.
///
/// ```
/// use ws2fcgi_bench::publish::parse_reply;
/// assert_eq!(parse_reply(b"{\"ok\":true,\"delivered\":3}\n"), Ok(3));
/// assert!(parse_reply(b"{\"ok\":false,\"error\":\"bad channel\"}").is_err());
/// ```
pub fn parse_reply(line: &[u8]) -> Result<u64, String> {
    match serde_json::from_slice::<Reply>(line) {
        Ok(Reply {
            ok: true,
            delivered,
            ..
        }) => Ok(delivered),
        Ok(Reply { error, .. }) => Err(format!(
            "refused: {}",
            error.unwrap_or_else(|| "no reason given".into())
        )),
        Err(e) => Err(format!("bad reply: {e}")),
    }
}

/// When and what one sender sends.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Sender number, carried in every payload.
    pub sender: u32,
    /// Messages per second (0: unpaced).
    pub rate: f64,
    /// At most this many messages.
    pub count: u64,
    /// No message after this.
    pub deadline: Instant,
    /// Payload size.
    pub size: usize,
    /// The run's clock origin, shared with the receivers.
    pub base: Instant,
}

/// What one sender did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SenderStats {
    /// Messages written.
    pub sent: u64,
    /// Control replies with ok=true (None when publishing through PHP).
    pub acknowledged: Option<u64>,
    /// Sum of `delivered` over those replies.
    pub server_delivered: Option<u64>,
    /// Refusals, bad replies, write errors.
    pub errors: ErrorTally,
}

/// One connection to the daemon's control socket.
pub struct ControlClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Publish Pusher events of this app (`pusher_publish`) instead of raw messages.
    pusher_app: Option<Arc<str>>,
}

impl ControlClient {
    /// Connects to the control socket at `path`.
    pub async fn connect(path: &Path) -> std::io::Result<Self> {
        let (read, writer) = UnixStream::connect(path).await?.into_split();
        Ok(Self {
            reader: BufReader::new(read),
            writer,
            pusher_app: None,
        })
    }

    /// Publishes Pusher events of app `app_id` (`pusher_publish`) from now on.
    pub fn for_pusher(mut self, app_id: Option<&str>) -> Self {
        self.pusher_app = app_id.map(Into::into);
        self
    }

    /// Publishes one message and waits for its reply.
    pub async fn publish(&mut self, channel: &str, data: &str) -> Result<u64, String> {
        let mut line = Vec::new();
        encode(&mut line, self.pusher_app.as_deref(), channel, data);
        self.writer
            .write_all(&line)
            .await
            .map_err(|e| format!("write: {e}"))?;
        read_line(&mut self.reader, &mut line).await?;
        parse_reply(&line)
    }

    /// Publishes per `schedule`, pipelined up to `window` requests, then waits
    /// at most `drain` for the outstanding replies.
    pub async fn run(
        self,
        channel: Arc<str>,
        schedule: Schedule,
        window: u32,
        drain: Duration,
    ) -> SenderStats {
        let window = window as usize;
        let permits = Arc::new(Semaphore::new(window));
        let acks = Arc::new(Acks::default());
        let reader = tokio::spawn(read_replies(
            self.reader,
            Arc::clone(&permits),
            Arc::clone(&acks),
        ));
        let mut writer = BufWriter::with_capacity(WRITE_BUFFER, self.writer);
        let mut pacer = Pacer::new(schedule.rate);
        let (mut data, mut line) = (String::new(), Vec::new());
        let pusher_app = self.pusher_app.clone();
        let mut sent = 0;
        let mut errors = ErrorTally::default();
        while sent < schedule.count {
            if let Some(due) = pacer.next_due() {
                if due >= schedule.deadline {
                    break;
                }
                if due > Instant::now() {
                    if let Err(e) = writer.flush().await {
                        errors.add(format!("write: {}", e.kind()));
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                }
            } else if Instant::now() >= schedule.deadline {
                break;
            }
            let permit = match permits.try_acquire() {
                Ok(permit) => permit,
                Err(_) => {
                    if let Err(e) = writer.flush().await {
                        errors.add(format!("write: {}", e.kind()));
                        break;
                    }
                    tokio::select! {
                        permit = permits.acquire() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break,
                        },
                        () = tokio::time::sleep_until(schedule.deadline) => break,
                    }
                }
            };
            permit.forget();
            let stamp = Stamp {
                sent_ns: since(schedule.base),
                sender: schedule.sender,
                seq: sent,
            };
            payload::write(&mut data, stamp, schedule.size);
            encode(&mut line, pusher_app.as_deref(), &channel, &data);
            if let Err(e) = writer.write_all(&line).await {
                errors.add(format!("write: {}", e.kind()));
                break;
            }
            sent += 1;
        }
        if let Err(e) = writer.flush().await {
            errors.add(format!("write: {}", e.kind()));
        }
        // Every permit back means every reply read.
        let all = u32::try_from(window).unwrap_or(u32::MAX);
        if tokio::time::timeout(drain, permits.acquire_many(all))
            .await
            .is_err()
        {
            errors.add("replies missing after --drain");
        }
        reader.abort();
        // Wait for the abort so the reader's handle on `acks` is gone.
        let _ = reader.await;
        let acks = Arc::into_inner(acks).unwrap_or_default();
        errors.merge(
            acks.errors
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner),
        );
        SenderStats {
            sent,
            acknowledged: Some(acks.ok.load(Ordering::Relaxed)),
            server_delivered: Some(acks.delivered.load(Ordering::Relaxed)),
            errors,
        }
    }
}

/// Reply counters shared between a publisher and its reply reader.
#[derive(Default)]
struct Acks {
    ok: AtomicU64,
    delivered: AtomicU64,
    errors: Mutex<ErrorTally>,
}

impl Acks {
    fn error(&self, kind: String) {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(kind);
    }
}

async fn read_replies(
    mut reader: BufReader<OwnedReadHalf>,
    permits: Arc<Semaphore>,
    acks: Arc<Acks>,
) {
    let mut line = Vec::new();
    loop {
        if let Err(e) = read_line(&mut reader, &mut line).await {
            acks.error(e);
            return;
        }
        match parse_reply(&line) {
            Ok(delivered) => {
                acks.ok.fetch_add(1, Ordering::Relaxed);
                acks.delivered.fetch_add(delivered, Ordering::Relaxed);
            }
            Err(e) => acks.error(e),
        }
        permits.add_permits(1);
    }
}

/// Reads one newline-terminated line of at most [`MAX_REPLY_LINE`] bytes.
async fn read_line(
    reader: &mut BufReader<OwnedReadHalf>,
    line: &mut Vec<u8>,
) -> Result<(), String> {
    line.clear();
    let limit = MAX_REPLY_LINE as u64;
    match reader.take(limit).read_until(b'\n', line).await {
        Ok(0) => Err("control socket closed".into()),
        Ok(_) if line.last() == Some(&b'\n') => Ok(()),
        Ok(_) => Err("reply line too long or cut off".into()),
        Err(e) => Err(format!("read: {}", e.kind())),
    }
}

/// One request line: a raw publish, or a Pusher event of `pusher_app`.
fn encode(line: &mut Vec<u8>, pusher_app: Option<&str>, channel: &str, data: &str) {
    line.clear();
    // Serializing a struct of strings into a Vec cannot fail.
    let _ = match pusher_app {
        None => serde_json::to_writer(
            &mut *line,
            &Publish {
                op: "publish",
                channel,
                data,
            },
        ),
        Some(app) => serde_json::to_writer(
            &mut *line,
            &PusherPublish {
                op: "pusher_publish",
                app,
                channels: [channel],
                event: crate::pusher::EVENT,
                data,
            },
        ),
    };
    line.push(b'\n');
}

/// Nanoseconds since `base`.
pub fn since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Publishes through PHP: sends `pub:<payload>` per `schedule` over a member's connection.
///
/// `outbound` is drained by that member's receiving task, which owns the socket.
pub async fn run_via_php(outbound: mpsc::Sender<Message>, schedule: Schedule) -> SenderStats {
    let mut pacer = Pacer::new(schedule.rate);
    let mut data = String::new();
    let mut stats = SenderStats::default();
    while stats.sent < schedule.count && pacer.wait(schedule.deadline).await {
        let stamp = Stamp {
            sent_ns: since(schedule.base),
            sender: schedule.sender,
            seq: stats.sent,
        };
        payload::write(&mut data, stamp, schedule.size);
        let message = Message::text(format!("pub:{data}"));
        if outbound.send(message).await.is_err() {
            stats.errors.add("sender's connection ended");
            break;
        }
        stats.sent += 1;
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_line() {
        let mut line = Vec::new();
        encode(&mut line, None, "room \"1\"", "t=1;s=0;q=0;");
        assert_eq!(
            line,
            b"{\"op\":\"publish\",\"channel\":\"room \\\"1\\\"\",\"data\":\"t=1;s=0;q=0;\"}\n"
        );
        encode(&mut line, Some("1001"), "bench", "sync");
        assert_eq!(
            line,
            b"{\"op\":\"pusher_publish\",\"app\":\"1001\",\"channels\":[\"bench\"],\"event\":\"bench\",\"data\":\"sync\"}\n"
        );
    }

    #[test]
    fn replies() {
        assert_eq!(
            parse_reply(b"{\"ok\":true,\"delivered\":0,\"extra\":1}"),
            Ok(0)
        );
        assert!(parse_reply(b"{\"ok\":false}").is_err());
        assert!(parse_reply(b"not json").is_err());
    }
}
