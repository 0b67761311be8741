//! The daemon's memory budgets, against the real binary and a real php-fpm:
//! the inbound byte budget (`limits.inbound_bytes`,
//! `websocket.inbound_queue_bytes`) holds clients back with TCP backpressure
//! and loses nothing; the outbound queue (`websocket.outbound_queue_bytes`)
//! charges each frame what it really costs, so tiny frames cannot grow the
//! daemon past it. Memory is the daemon's own VmRSS, sampled while the load
//! runs.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::Value;
use support::raw;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const MIB: u64 = 1024 * 1024;

/// The daemon's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

/// Samples a process's RSS every 5 ms on a thread of its own, until dropped;
/// keeps the highest value.
struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl PeakRss {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(rss(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    let kib = text
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next())
                        .and_then(|v| v.parse::<u64>().ok());
                    if let Some(kib) = kib {
                        p.fetch_max(kib * 1024, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The complete lines of `budget.php`'s log (a line being written is left
/// for the next read).
fn logged(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("budget.php writes JSON lines"))
        .collect()
}

/// A daemon started from a config file: `budget.php` on `fpm`, with `extra`
/// TOML appended (tables included; a `listen` on 127.0.0.1:0 when it has none).
fn start_daemon(dir: &Path, fpm: &Fpm, extra: &str) -> Process {
    let file = dir.join("ws2fcgi.toml");
    let listen = if extra.starts_with("listen") {
        ""
    } else {
        "listen = [\"127.0.0.1:0\"]\n"
    };
    std::fs::write(
        &file,
        format!(
            "{listen}admin = \"127.0.0.1:0\"\nscript = \"{}\"\n{extra}\n[fpm]\naddress = \"unix:{}\"\npool_size = 2\n",
            script("budget.php").display(),
            fpm.socket.display()
        ),
    )
    .expect("write config");
    let args: [&std::ffi::OsStr; 4] = [
        "--config".as_ref(),
        file.as_os_str(),
        "--log-level".as_ref(),
        "warn,ws2fcgi=info".as_ref(),
    ];
    Process::start(&args)
}

/// The admin address the daemon logged (`serving /healthz and /metrics`).
fn admin_addr(daemon: &Process) -> std::net::SocketAddr {
    let log = daemon.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("serving /healthz and /metrics"))
        .unwrap_or_else(|| panic!("no admin address logged:\n{log}"));
    let rest = &line[line.find("address=").expect("address=") + "address=".len()..];
    rest.split_whitespace()
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// The daemon's `/metrics`.
async fn metrics(daemon: &Process) -> String {
    let (status, _, body) = http_get(admin_addr(daemon), "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

fn log_query(log: &Path) -> String {
    format!("log={}", percent_encode(&log.to_string_lossy()))
}

/// Clients that send large messages faster than a slow PHP takes them: the
/// daemon holds at most `limits.inbound_bytes` (plus one message) of them
/// and stops reading the rest, and every message still reaches PHP, in
/// order. Before the budget each connection could queue `event_queue`
/// messages (8 × 512 KiB here) and the daemon read nearly everything at
/// once: its RSS grew by 64 MiB under this load (about 10 MiB now).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_memory_stays_within_the_budget_and_nothing_is_lost() {
    const CLIENTS: usize = 16;
    const MESSAGES: usize = 10;
    const SIZE: usize = 512 * 1024;
    const BUDGET: u64 = 4 * MIB;
    let fpm = Fpm::start(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let log: PathBuf = dir.path().join("events.jsonl");
    let daemon = start_daemon(
        dir.path(),
        &fpm,
        &format!(
            "[limits]\ninbound_bytes = {BUDGET}\n[websocket]\nmax_message_size = {SIZE}\n\
             max_frame_size = {SIZE}\ninbound_queue_bytes = {}\n",
            MIB
        ),
    );
    let url = daemon.url(&format!("/?ms=20&{}", log_query(&log)));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect(&url).await);
    }
    let before = rss(daemon.pid());
    let sampler = PeakRss::start(daemon.pid());

    // The budget's own count, sampled from /metrics while the load runs.
    let admin = admin_addr(&daemon);
    let counted = Arc::new(AtomicU64::new(0));
    let sampling = tokio::spawn({
        let counted = counted.clone();
        async move {
            loop {
                let (_, _, body) = http_get(admin, "/metrics").await;
                let now = metric(&body, "ws2fcgi_inbound_bytes") as u64;
                counted.fetch_max(now, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let mut senders = Vec::new();
    for (c, mut ws) in clients.into_iter().enumerate() {
        senders.push(tokio::spawn(async move {
            for m in 0..MESSAGES {
                let mut body = format!("c{c:02}-m{m:02}|").into_bytes();
                body.resize(SIZE, b'x' + (m % 3) as u8);
                ws.send(Message::Binary(body.into()))
                    .await
                    .expect("send a message");
            }
            ws
        }));
    }
    let total = CLIENTS * MESSAGES;
    let messages = poll_until(
        Duration::from_secs(120),
        "every message to reach PHP",
        || {
            let seen: Vec<Value> = logged(&log)
                .into_iter()
                .filter(|e| e["WS_EVENT"] == "message")
                .collect();
            (seen.len() >= total).then_some(seen)
        },
    )
    .await;
    let peak = sampler.peak();
    drop(sampler);
    sampling.abort();
    let mut clients = Vec::new();
    for sender in senders {
        clients.push(sender.await.expect("sender task"));
    }

    assert_eq!(messages.len(), total, "each message reaches PHP once");
    let mut by_conn: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for event in &messages {
        assert_eq!(event["len"], SIZE, "whole messages: {event}");
        let head = event["head"].as_str().expect("head");
        by_conn
            .entry(event["WS_CONNECTION_ID"].as_str().expect("id").to_owned())
            .or_default()
            .push(head[..7].to_owned());
    }
    assert_eq!(by_conn.len(), CLIENTS);
    for heads in by_conn.values() {
        let client = &heads[0][..3];
        let expected: Vec<String> = (0..MESSAGES).map(|m| format!("{client}-m{m:02}")).collect();
        assert_eq!(heads, &expected, "a client's messages, in order");
    }
    // Every charge came back once PHP was done, and the budget did hold
    // readers back.
    let mut text = String::new();
    for _ in 0..250 {
        text = metrics(&daemon).await;
        if metric(&text, "ws2fcgi_inbound_bytes") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&text, "ws2fcgi_inbound_bytes"), 0.0, "{text}");
    assert!(
        metric(&text, "ws2fcgi_inbound_paused_total{kind=\"budget\"}") > 0.0,
        "{text}"
    );
    let growth = peak.saturating_sub(before);
    let counted = counted.load(Ordering::Relaxed);
    eprintln!(
        "RSS {} MiB before the load, peak {} MiB: grew {:.1} MiB for {} MiB sent; \
         the budget counted {:.1} MiB at most",
        before / MIB,
        peak / MIB,
        growth as f64 / MIB as f64,
        (total * SIZE) as u64 / MIB,
        counted as f64 / MIB as f64,
    );
    // The budget, and one message past it (the overdraft: 2 ×
    // max_message_size, the read buffer, a header), give or take one read
    // per worker thread.
    let overdraft = 2 * SIZE as u64 + 16 * 1024 + 64;
    assert!(
        counted <= BUDGET + overdraft + 2 * 4096,
        "the budget counted {counted} bytes"
    );
    // In memory besides: the copies being written to PHP-FPM (pool_size of
    // them), and what the allocator keeps.
    let allowed = BUDGET + overdraft + 2 * SIZE as u64 + 12 * MIB;
    assert!(
        growth <= allowed,
        "RSS grew by {growth} bytes, more than the {allowed} the budget allows"
    );
    for ws in clients {
        close(ws).await;
    }
}

/// Messages in fragments, each larger than what the budget has left (one
/// fragmented message is charged twice its size, more than the whole budget
/// here): clients each holding part of one could wait for each other
/// forever. One connection at a time may finish its message past the budget,
/// so every message still reaches PHP, whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_messages_larger_than_the_budget_all_get_through() {
    use tokio::io::AsyncWriteExt;
    const CLIENTS: usize = 6;
    const MESSAGES: usize = 3;
    const SIZE: usize = 256 * 1024;
    const FRAGMENT: usize = 16 * 1024;
    let fpm = Fpm::start(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("events.jsonl");
    let daemon = start_daemon(
        dir.path(),
        &fpm,
        &format!(
            "[limits]\ninbound_bytes = {SIZE}\n[websocket]\nmax_message_size = {SIZE}\n\
             inbound_queue_bytes = 1024\n"
        ),
    );
    let path = format!("/?ms=10&{}", log_query(&log));
    let mut senders = Vec::new();
    for c in 0..CLIENTS {
        let mut client = raw::handshake(daemon.addr, &path).await;
        senders.push(tokio::spawn(async move {
            for m in 0..MESSAGES {
                let mut body = format!("c{c:02}-m{m:02}|").into_bytes();
                body.resize(SIZE, b'f');
                let last = SIZE / FRAGMENT - 1;
                for (i, part) in body.chunks(FRAGMENT).enumerate() {
                    let opcode = if i == 0 { 0x2 } else { 0x0 };
                    let frame = raw::frame(i == last, opcode, part, true);
                    client.tcp.write_all(&frame).await.expect("send a fragment");
                }
            }
            client
        }));
    }
    let total = CLIENTS * MESSAGES;
    let messages = poll_until(
        Duration::from_secs(60),
        "every fragmented message to reach PHP",
        || {
            let seen: Vec<Value> = logged(&log)
                .into_iter()
                .filter(|e| e["WS_EVENT"] == "message")
                .collect();
            (seen.len() >= total).then_some(seen)
        },
    )
    .await;
    let mut by_conn: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for event in &messages {
        assert_eq!(event["len"], SIZE, "whole messages: {event}");
        let head = event["head"].as_str().expect("head");
        by_conn
            .entry(event["WS_CONNECTION_ID"].as_str().expect("id").to_owned())
            .or_default()
            .push(head[..7].to_owned());
    }
    assert_eq!(by_conn.len(), CLIENTS);
    for heads in by_conn.values() {
        let client = &heads[0][..3];
        let expected: Vec<String> = (0..MESSAGES).map(|m| format!("{client}-m{m:02}")).collect();
        assert_eq!(heads, &expected, "a client's messages, in order");
    }
    for sender in senders {
        drop(sender.await.expect("sender task"));
    }
    let text = metrics(&daemon).await;
    assert!(
        metric(&text, "ws2fcgi_inbound_paused_total{kind=\"budget\"}") > 0.0,
        "the budget held readers back: {text}"
    );
}

/// A client on the Unix listener at `socket` that completes its handshake
/// (joining what `path` says) and never reads again. (On a Unix socket every
/// write is a buffer of its own in the kernel, so the daemon's sends fill the
/// kernel's buffers after a few thousand tiny frames; TCP would merge them
/// and take megabytes first.)
async fn silent_member(socket: &Path, path: &str) -> tokio::net::UnixStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect to the Unix listener");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("handshake");
    // The answer's head, a byte at a time so nothing after it is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(Duration::from_secs(10), stream.read_u8())
            .await
            .expect("a handshake answer within 10 s")
            .expect("read the handshake answer");
        head.push(byte);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Members of a channel that never read, and a publisher pushing tiny
/// messages as fast as the control socket takes them: each member is cut off
/// as a slow consumer once its queue holds `outbound_queue_bytes` of what
/// its frames really cost, PHP gets close 1008 for each, and the daemon's
/// memory stays near that (here: cut off after about 12,000 publishes, 1 MiB
/// of growth). When a frame was charged its bytes only (2 for an empty
/// message), a 1 MiB queue held half a million frames per member: under
/// this load the daemon grew by 25 MB and nobody was cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_publishes_to_members_that_never_read_cut_them_off_at_the_limit() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    const PUBLISHES: usize = 200_000;
    const LIMIT: u64 = MIB;
    let fpm = Fpm::start(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("events.jsonl");
    let control = dir.path().join("control.sock");
    let listener = dir.path().join("ws.sock");
    let daemon = start_daemon(
        dir.path(),
        &fpm,
        &format!(
            "listen = [\"127.0.0.1:0\", \"unix:{}\"]\n\
             [websocket]\noutbound_queue_bytes = {LIMIT}\n[control]\nsocket = \"{}\"\n",
            listener.display(),
            control.display()
        ),
    );
    let path = format!("/?join=room&{}", log_query(&log));
    let mut members = Vec::new();
    for _ in 0..2 {
        members.push(silent_member(&listener, &path).await);
    }
    poll_until(Duration::from_secs(10), "both open events", || {
        let opens = logged(&log)
            .iter()
            .filter(|e| e["WS_EVENT"] == "open")
            .count();
        (opens == 2).then_some(())
    })
    .await;

    let before = rss(daemon.pid());
    let sampler = PeakRss::start(daemon.pid());
    let stream = tokio::net::UnixStream::connect(&control)
        .await
        .expect("connect to the control socket");
    let (read, mut write) = stream.into_split();
    // Pipelined: every request written at once, the replies read meanwhile.
    let publisher = tokio::spawn(async move {
        let line = "{\"op\":\"publish\",\"channel\":\"room\",\"data\":\"\"}\n";
        let chunk = line.repeat(10_000);
        for _ in 0..PUBLISHES / 10_000 {
            write.write_all(chunk.as_bytes()).await.expect("publish");
        }
        write
    });
    let mut replies = BufReader::new(read).lines();
    let mut delivered = Vec::with_capacity(PUBLISHES);
    while delivered.len() < PUBLISHES {
        let line = tokio::time::timeout(Duration::from_secs(30), replies.next_line())
            .await
            .expect("a reply within 30 s")
            .expect("read a reply")
            .expect("the daemon answers every publish");
        let count = line
            .strip_prefix("{\"ok\":true,\"delivered\":")
            .and_then(|rest| rest.strip_suffix('}'))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("not a publish reply: {line}"));
        delivered.push(count);
    }
    let _write = publisher.await.expect("publisher");
    let peak = sampler.peak();
    drop(sampler);

    let closes = poll_until(Duration::from_secs(20), "two close events", || {
        let closes: Vec<Value> = logged(&log)
            .into_iter()
            .filter(|e| e["WS_EVENT"] == "close")
            .collect();
        (closes.len() == 2).then_some(closes)
    })
    .await;
    for close in &closes {
        assert_eq!(close["WS_CLOSE_CODE"], "1008", "{close}");
        assert_eq!(close["WS_CLOSE_REASON"], "slow consumer", "{close}");
    }
    let reached = delivered.iter().filter(|&&n| n > 0).count();
    let growth = peak.saturating_sub(before);
    eprintln!(
        "RSS grew {:.1} MiB for {PUBLISHES} publishes; members cut off after {reached}",
        growth as f64 / MIB as f64
    );
    assert_eq!(
        delivered.last(),
        Some(&0),
        "both cut off: {reached} reached them"
    );
    // Both queues at their limit, and room for the allocator.
    let allowed = 2 * LIMIT + 8 * MIB;
    assert!(
        growth <= allowed,
        "RSS grew by {growth} bytes, more than the {allowed} two full queues explain"
    );
    drop(members);
}

/// A client that sends pings without end and never reads costs one pong:
/// each newer ping's pong replaces the one waiting. Once every pong was
/// queued, so the flood filled the queue and the client was cut off as a
/// slow consumer (or, before that limit existed, grew memory without bound).
/// The connection lives through it and answers afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_from_a_client_that_never_reads_leaves_one_pong_waiting() {
    use tokio::io::AsyncWriteExt;
    let fpm = Fpm::start(1);
    let mut config = fpm.config("faults.php");
    config.websocket.outbound_queue_bytes = 64 * 1024;
    let daemon = Daemon::start(config).await;
    let mut flood = raw::handshake(daemon.addr, "/").await;
    let hello = flood
        .next_frame(Duration::from_secs(10))
        .await
        .expect("hello");
    let id: ws2fcgi::hub::ConnId = hello
        .text()
        .strip_prefix("hello ")
        .and_then(|id| id.parse().ok())
        .expect("hello <id>");
    let ping = raw::frame(true, 0x9, &[b'p'; 125], true);
    let burst: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 1024)
        .collect();
    let pong_cost = 2 + 125 + ws2fcgi::outbox::FRAME_COST;
    let mut peak = 0;
    for _ in 0..128 {
        flood
            .tcp
            .write_all(&burst)
            .await
            .expect("the daemon keeps reading pings");
        let handle = daemon.ctx.hub.get(&id).expect("still connected");
        peak = peak.max(handle.outbox.queued_bytes());
    }
    // One pong waiting; the writer may hold one more it has not begun
    // (replaced by the newer at its next turn) and one partly written.
    assert!(
        peak <= 3 * pong_cost,
        "{peak} bytes queued for a client that reads nothing"
    );
    flood
        .send(&raw::frame(true, 0x1, b"still here", true))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let frame = flood
            .next_frame(left)
            .await
            .expect("frames until the answer");
        if frame.opcode == 0x1 {
            break frame.text();
        }
        assert_eq!(frame.opcode, 0xA, "only pongs before the answer");
    };
    assert_eq!(answer, "still here");
    daemon.shutdown().await;
}
