//! What PHP still gets after a client is gone: the close event of every
//! connection at shutdown (SIGTERM to the real binary), and the messages a
//! client sent before it left; and how the daemon accounts for what it could
//! not deliver (the drain's last log line, `/metrics`).
//!
//! Against the real binary and a real php-fpm; what PHP saw is read back from
//! the JSON-lines log `tests/php/record.php` appends to (`?log=`).

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// The real binary on 127.0.0.1:0 with its admin listener, for `faults.php`
/// on `fpm`; `sections` are added to its configuration file, and `fpm_keys`
/// to its `[fpm]` table.
struct Binary {
    process: Process,
    admin: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Binary {
    fn start(fpm: &Fpm, pool_size: usize, sections: &str, fpm_keys: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ws2fcgi.toml");
        std::fs::write(
            &file,
            format!(
                "listen = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nscript = \"{script}\"\n\
                 {sections}\n[fpm]\naddress = \"unix:{socket}\"\npool_size = {pool_size}\n{fpm_keys}\n",
                script = script("faults.php").display(),
                socket = fpm.socket.display(),
            ),
        )
        .expect("write config");
        let process = Process::start(&[
            "--config".to_owned(),
            file.display().to_string(),
            // Many clients on a shared machine: one runtime thread is plenty.
            "--worker-threads".to_owned(),
            "1".to_owned(),
        ]);
        let admin = admin_address(&process.stderr())
            .unwrap_or_else(|| panic!("no admin address logged:\n{}", process.stderr()));
        Self {
            process,
            admin,
            _dir: dir,
        }
    }

    async fn metrics(&self) -> String {
        let (status, _, text) = http_get(self.admin, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        text
    }
}

/// `serving /healthz and /metrics address=IP:PORT` in the log.
fn admin_address(log: &str) -> Option<std::net::SocketAddr> {
    let line = log
        .lines()
        .find(|l| l.contains("serving /healthz and /metrics"))?;
    let rest = &line[line.find("address=")? + "address=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// The number after `name=` in `line`.
fn field(line: &str, name: &str) -> Option<u64> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    let digits: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The close codes PHP saw, by connection id.
fn closes_by_id(log: &EventLog) -> std::collections::HashMap<String, Vec<String>> {
    let mut closes = std::collections::HashMap::<String, Vec<String>>::new();
    for event in log.events() {
        if event["WS_EVENT"] == "close" {
            let id = event["WS_CONNECTION_ID"].as_str().unwrap_or_default();
            let code = event["WS_CLOSE_CODE"].as_str().unwrap_or_default();
            closes
                .entry(id.to_owned())
                .or_default()
                .push(code.to_owned());
        }
    }
    closes
}

/// The drain's last line: the one that counts close events.
fn drain_line(log: &str) -> &str {
    log.lines()
        .rev()
        .find(|l| l.contains("drain") && l.contains("close_delivered="))
        .unwrap_or_else(|| panic!("no drain summary in the log:\n{log}"))
}

/// Opens `clients` connections to `url`, 50 handshakes at a time (the open
/// events share the small pool); returns their ids and a task per client
/// that reads until the server closes it (so each answers the server's
/// close frame) and returns the close code.
async fn open_clients(
    url: &str,
    clients: usize,
) -> (Vec<String>, Vec<tokio::task::JoinHandle<u16>>) {
    let mut ids = Vec::new();
    let mut readers = Vec::new();
    let mut left = clients;
    while left > 0 {
        let batch = left.min(50);
        left -= batch;
        let opened: Vec<_> = (0..batch)
            .map(|_| {
                let url = url.to_owned();
                tokio::spawn(async move {
                    // 50 opens at once on a pool of 1 or 2 can fill the
                    // admission queue on a loaded machine: retried as
                    // clients do, since the subject here is the drain.
                    let mut ws = connect_retrying_when_busy(&url).await;
                    let hello = recv_text(&mut ws).await;
                    (ws, hello)
                })
            })
            .collect();
        for task in opened {
            let (mut ws, hello) = task.await.expect("client");
            ids.push(hello.strip_prefix("hello ").expect("hello").to_owned());
            readers.push(tokio::spawn(async move {
                let frame = recv_close(&mut ws).await.expect("a close frame");
                u16::from(frame.code)
            }));
        }
    }
    (ids, readers)
}

/// Opens `clients` connections to `binary` (each recording its events in
/// `log`, with `query` added), then SIGTERM; every client gets 1001.
/// Returns the connection ids once the binary has exited 0.
async fn open_then_sigterm(
    binary: &mut Binary,
    clients: usize,
    log: &EventLog,
    query: &str,
) -> Vec<String> {
    let url = binary.process.url(&format!("/?{}&{query}", log.query()));
    let opening = std::time::Instant::now();
    let (ids, readers) = open_clients(&url, clients).await;
    eprintln!("{clients} clients opened in {:?}", opening.elapsed());
    let signalled = std::time::Instant::now();
    binary.process.signal("TERM");
    for reader in readers {
        assert_eq!(reader.await.expect("reader"), 1001);
    }
    let status = binary.process.wait_exit(Duration::from_secs(90)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "stderr:\n{}",
        binary.process.stderr()
    );
    eprintln!(
        "{clients} clients: SIGTERM to exit in {:?}",
        signalled.elapsed()
    );
    ids
}

/// Close events that wait for a busy pool at shutdown wait until the drain
/// deadline, not `fpm.queue_timeout` / `fpm.retry_window`: the issue's case
/// (pool of 2, a 300 ms close handler, 60 clients, 60 s of drain) scaled
/// down to 100 ms handlers and 1 s timeouts, so that the ~3 s the pool needs
/// is three times `queue_timeout`. Every close event reaches PHP once, and
/// the drain's last line says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_close_event_waits_for_the_pool_until_the_drain_deadline() {
    drain_every_close_event(60, 100, "queue_timeout = \"1s\"\nretry_window = \"1s\"").await;
}

/// The issue's case as reported (pool of 2, a 300 ms close handler, 60
/// clients, default timeouts): some 10 s. `cargo test --test drain -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: ~10 s; the scaled-down version runs in the suite"]
async fn the_issue_case_sixty_close_events_of_300ms_on_a_pool_of_two() {
    drain_every_close_event(60, 300, "").await;
}

async fn drain_every_close_event(clients: usize, close_ms: u64, fpm_toml: &str) {
    let fpm = Fpm::start(2);
    let log = EventLog::new();
    let sections = "[shutdown]\ndrain_timeout = \"60s\"";
    let mut binary = Binary::start(&fpm, 2, sections, fpm_toml);
    let started = std::time::Instant::now();
    let ids = open_then_sigterm(&mut binary, clients, &log, &format!("close_ms={close_ms}")).await;
    let stderr = binary.process.stderr();
    let closes = closes_by_id(&log);
    for id in &ids {
        let codes = closes.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(codes, ["1001"], "close events of {id}\nstderr:\n{stderr}");
    }
    assert!(
        !stderr.contains("close event not delivered"),
        "stderr:\n{stderr}"
    );
    let line = drain_line(&stderr);
    assert_eq!(
        field(line, "close_delivered"),
        Some(clients as u64),
        "{line}"
    );
    assert_eq!(field(line, "close_not_delivered"), Some(0), "{line}");
    eprintln!(
        "{clients} close events of {close_ms} ms drained in {:?}: {line}",
        started.elapsed()
    );
}

/// A drain deadline too short for the pool: the close events PHP had not
/// started by then are not delivered, and the drain's last line counts
/// them: those PHP saw (delivered, or cut off while PHP ran them: failed)
/// plus those it did not add up to every connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_deadline_too_short_for_the_pool_counts_what_php_never_saw() {
    const CLIENTS: usize = 12;
    let fpm = Fpm::start(1);
    let log = EventLog::new();
    let sections = "[shutdown]\ndrain_timeout = \"1s\"";
    let mut binary = Binary::start(&fpm, 1, sections, "");
    let ids = open_then_sigterm(&mut binary, CLIENTS, &log, "close_ms=300").await;
    let stderr = binary.process.stderr();
    let line = drain_line(&stderr).to_owned();
    let delivered = field(&line, "close_delivered").expect("close_delivered");
    let failed = field(&line, "close_failed").expect("close_failed");
    let not_delivered = field(&line, "close_not_delivered").expect("close_not_delivered");
    // PHP records a close event first thing, so one cut off is recorded too.
    let seen = poll_until(Duration::from_secs(10), "php's records", || {
        let closes = closes_by_id(&log);
        let seen = ids.iter().filter(|id| closes.contains_key(*id)).count() as u64;
        (seen == delivered + failed).then_some(seen)
    })
    .await;
    eprintln!("PHP saw {seen} of {CLIENTS} close events: {line}");
    assert!(seen >= 1 && failed <= 1, "{line}");
    assert_eq!(not_delivered, CLIENTS as u64 - seen, "{line}");
    assert!(
        not_delivered > 0,
        "a 1 s drain cannot run 12 handlers of 300 ms: {line}"
    );
    assert!(line.contains("WARN"), "{line}");
    assert!(
        stderr.contains("close event not delivered"),
        "each one is logged:\n{stderr}"
    );
}

/// The same in-process, where the metrics outlive the drain:
/// `ws2fcgi_close_events_total` counts the same outcomes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_close_events_metric_counts_what_the_drain_did_not_deliver() {
    const CLIENTS: usize = 12;
    let fpm = Fpm::start(1);
    let log = EventLog::new();
    let mut config = fpm.config("faults.php");
    config.shutdown.drain_timeout = Duration::from_secs(1);
    let daemon = Daemon::start(config).await;
    let ctx = daemon.ctx.clone();
    let url = daemon.url(&format!("/?{}&close_ms=300", log.query()));
    let (ids, readers) = open_clients(&url, CLIENTS).await;
    daemon.shutdown().await;
    for reader in readers {
        assert_eq!(reader.await.expect("reader"), 1001);
    }
    let text = ctx.metrics.render(&ws2fcgi::metrics::Snapshot {
        connections: 0,
        client_sockets: 0,
        channels: 0,
        fpm_busy: 0,
        fpm_idle: 0,
        history_publications: 0,
        history_bytes: 0,
    });
    let count = |outcome: &str| {
        metric(
            &text,
            &format!("ws2fcgi_close_events_total{{outcome=\"{outcome}\"}}"),
        ) as usize
    };
    let reached = count("delivered") + count("failed");
    poll_until(Duration::from_secs(10), "php's records", || {
        let closes = closes_by_id(&log);
        let seen = ids.iter().filter(|id| closes.contains_key(*id)).count();
        (seen == reached).then_some(())
    })
    .await;
    assert!(count("not_delivered") > 0, "{text}");
    assert_eq!(reached + count("not_delivered"), CLIENTS, "{text}");
}

/// A close event that was already waiting for the busy pool when SIGTERM
/// came keeps waiting, past `fpm.queue_timeout`, until a slot frees within
/// the drain: another client's 4 s message holds the only slot, a client
/// leaves, and the daemon is stopped while its close event waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_event_waiting_when_the_drain_begins_waits_on_until_the_deadline() {
    let fpm = Fpm::start(1);
    let log = EventLog::new();
    let mut binary = Binary::start(
        &fpm,
        1,
        "[shutdown]\ndrain_timeout = \"30s\"",
        "queue_timeout = \"2s\"\nretry_window = \"2s\"",
    );
    let url = binary.process.url(&format!("/?{}", log.query()));
    let mut leaver = connect(&url).await;
    let left = recv_text(&mut leaver)
        .await
        .strip_prefix("hello ")
        .expect("hello")
        .to_owned();
    let mut hog = connect(&url).await;
    let _hello = recv_text(&mut hog).await;
    send_text(&mut hog, "sleep 4000").await;
    poll_until(
        Duration::from_secs(10),
        "php to run the hog's message",
        || {
            log.events()
                .iter()
                .any(|e| e["body"] == "sleep 4000")
                .then_some(())
        },
    )
    .await;
    close_with(leaver, 1000, "bye").await;
    // Its close event now waits for the slot the hog holds.
    let mut text = String::new();
    for _ in 0..500 {
        text = binary.metrics().await;
        if metric(&text, "ws2fcgi_connections") == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&text, "ws2fcgi_connections"), 1.0, "{text}");
    binary.process.signal("TERM");
    let frame = recv_close(&mut hog).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1001);
    let status = binary.process.wait_exit(Duration::from_secs(30)).await;
    let stderr = binary.process.stderr();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(log.closes_of(&left).len(), 1, "{stderr}");
    let line = drain_line(&stderr);
    assert_eq!(field(line, "close_delivered"), Some(2), "{line}");
    assert_eq!(field(line, "close_not_delivered"), Some(0), "{line}");
    // The hog's message, still in PHP when its connection ended.
    assert_eq!(field(line, "messages_delivered"), Some(1), "{line}");
}

/// Thousands of connections (the issue's restart through systemd): every
/// close event of a fast (10 ms) handler reaches PHP within the drain, also
/// when the pool needs longer than `fpm.queue_timeout` for them all. 400
/// here (some 2 s of drain on a pool of 2); by hand,
/// `DRAIN_CLIENTS=2000 cargo test --test drain thousands -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_connections_drain_with_every_close_event_delivered() {
    let clients = std::env::var("DRAIN_CLIENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400);
    drain_every_close_event(clients, 10, "queue_timeout = \"1s\"\nretry_window = \"1s\"").await;
}

/// The events PHP recorded for connection `id`: `WS_EVENT` and the body (a
/// message) or the close code.
fn events_of(log: &EventLog, id: &str) -> Vec<String> {
    log.events()
        .into_iter()
        .filter(|e| e["WS_CONNECTION_ID"] == id)
        .map(|e| match e["WS_EVENT"].as_str().unwrap_or_default() {
            "message" => format!("message {}", e["body"].as_str().unwrap_or_default()),
            "close" => format!("close {}", e["WS_CLOSE_CODE"].as_str().unwrap_or_default()),
            other => other.to_owned(),
        })
        .collect()
}

/// Opens a client on `binary` recording into `log`, sends `slow` and waits
/// until PHP runs it, then sends `more` (which queue behind it) and closes
/// (1000). Returns the connection id.
async fn leave_with_queued_messages(
    binary: &Binary,
    log: &EventLog,
    slow: &str,
    more: &[&str],
) -> String {
    let mut ws = connect(&binary.process.url(&format!("/?{}", log.query()))).await;
    let id = recv_text(&mut ws)
        .await
        .strip_prefix("hello ")
        .expect("hello")
        .to_owned();
    send_text(&mut ws, slow).await;
    let running = format!("message {slow}");
    poll_until(
        Duration::from_secs(10),
        "php to run the slow message",
        || events_of(log, &id).contains(&running).then_some(()),
    )
    .await;
    for text in more {
        ws.send(Message::text(*text)).await.expect("send");
    }
    close_with(ws, 1000, "bye").await;
    id
}

/// A client sends messages while PHP is busy with an earlier one, then
/// leaves: PHP gets every message, in order, and then the close event; the
/// messages are counted as delivered after close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_a_client_that_left_reach_php_in_order_before_its_close() {
    let fpm = Fpm::start(1);
    let log = EventLog::new();
    let binary = Binary::start(&fpm, 1, "", "");
    let more = ["m1", "m2", "m3", "m4", "m5"];
    let id = leave_with_queued_messages(&binary, &log, "sleep 500", &more).await;
    let delivered = "ws2fcgi_close_events_total{outcome=\"delivered\"}";
    let mut text = String::new();
    for _ in 0..500 {
        text = binary.metrics().await;
        if metric(&text, delivered) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&text, delivered), 1.0, "{text}");
    assert_eq!(
        events_of(&log, &id),
        [
            "open",
            "message sleep 500",
            "message m1",
            "message m2",
            "message m3",
            "message m4",
            "message m5",
            "close 1000"
        ]
    );
    let after_close = |outcome: &str| {
        metric(
            &text,
            &format!("ws2fcgi_messages_after_close_total{{outcome=\"{outcome}\"}}"),
        )
    };
    // The one PHP was running when the client left, and the five queued.
    assert_eq!(after_close("delivered"), 6.0, "{text}");
    assert_eq!(after_close("not_delivered"), 0.0, "{text}");
}

/// The same when the pool stays busy (another client's 5 s message holds
/// its only connection) past `fpm.queue_timeout` and `fpm.retry_window`:
/// the message that waited for it and the close event are not delivered,
/// the queued messages after it are not tried, and every one of them is
/// counted and logged, none silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_php_fpm_cannot_take_after_the_client_left_are_counted() {
    let fpm = Fpm::start(1);
    let log = EventLog::new();
    let binary = Binary::start(
        &fpm,
        1,
        "",
        "queue_timeout = \"300ms\"\nretry_window = \"500ms\"",
    );
    let url = binary.process.url(&format!("/?{}", log.query()));
    let mut ws = connect(&url).await;
    let id = recv_text(&mut ws)
        .await
        .strip_prefix("hello ")
        .expect("hello")
        .to_owned();
    let mut hog = connect(&url).await;
    let _hello = recv_text(&mut hog).await;
    send_text(&mut hog, "sleep 5000").await;
    poll_until(
        Duration::from_secs(10),
        "php to run the hog's message",
        || {
            log.events()
                .iter()
                .any(|e| e["body"] == "sleep 5000")
                .then_some(())
        },
    )
    .await;
    for text in ["m1", "m2", "m3"] {
        ws.send(Message::text(text)).await.expect("send");
    }
    close_with(ws, 1000, "bye").await;

    let not_delivered = "ws2fcgi_close_events_total{outcome=\"not_delivered\"}";
    let mut text = String::new();
    for _ in 0..500 {
        text = binary.metrics().await;
        if metric(&text, not_delivered) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&text, not_delivered), 1.0, "{text}");
    let after_close = |outcome: &str| {
        metric(
            &text,
            &format!("ws2fcgi_messages_after_close_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(after_close("not_delivered"), 3.0, "{text}");
    assert_eq!(
        after_close("delivered") + after_close("failed"),
        0.0,
        "{text}"
    );
    assert_eq!(events_of(&log, &id), ["open"], "PHP saw none of them");
    // The metrics moved; the log lines may still be in the pipe.
    for expected in [
        "event not delivered to php",
        "skipped=2",
        "close event not delivered to php",
    ] {
        binary.process.logged(expected).await;
    }
}
