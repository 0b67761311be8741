//! The admin listener against a real php-fpm: `/healthz` follows PHP-FPM and
//! the shutdown, `/metrics` counts what happened; and `check-config` names
//! the limit settings it refuses (the example file's cases are in
//! `tests/example_config.rs`).

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

async fn health(admin: std::net::SocketAddr) -> (u16, Value) {
    let (status, head, body) = http_get(admin, "/healthz").await;
    assert!(head.contains("content-type: application/json"), "{head}");
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_php_fpm_and_the_shutdown() {
    let mut fpm = Fpm::start(2);
    let (daemon, admin) = Daemon::start_with_admin(fpm.config("faults.php")).await;
    let (status, json) = health(admin).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["status"], "ok");
    assert_eq!(json["fpm"], "reachable");

    // A client leaves an idle keep-alive FastCGI connection in the pool; it
    // must not pass for a live PHP-FPM once PHP-FPM is gone.
    let mut ws = connect(&daemon.url("/")).await;
    recv_text(&mut ws).await;
    assert!(daemon.ctx.fpm.idle_count() > 0);
    fpm = tokio::task::spawn_blocking(move || {
        fpm.stop();
        fpm
    })
    .await
    .unwrap();
    let (status, json) = health(admin).await;
    assert_eq!(status, 503, "{json}");
    assert_eq!(json["status"], "unavailable");
    assert_eq!(json["fpm"], "unreachable");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect to php-fpm"),
        "{json}"
    );

    fpm = tokio::task::spawn_blocking(move || {
        fpm.launch();
        fpm
    })
    .await
    .unwrap();
    let (status, _) = health(admin).await;
    assert_eq!(status, 200, "back up");

    // During the drain (a close event that takes 1.5 s): 503, shutting_down.
    let log = EventLog::new();
    let mut slow = connect(&daemon.url(&format!("/?close_ms=1500&{}", log.query()))).await;
    recv_text(&mut slow).await;
    let closing = tokio::spawn(async move { recv_close(&mut slow).await });
    drop(ws);
    let shutdown = tokio::spawn(daemon.shutdown());
    let deadline = Instant::now() + Duration::from_secs(5);
    let json = loop {
        let (status, json) = health(admin).await;
        if status == 503 {
            break json;
        }
        assert!(
            Instant::now() < deadline,
            "healthz still {status} in the drain: {json}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(json["status"], "shutting_down", "{json}");
    assert!(
        !shutdown.is_finished(),
        "the drain ended before healthz was asked"
    );
    closing.await.unwrap();
    shutdown.await.unwrap();
    assert_eq!(log.events().last().unwrap()["WS_EVENT"], "close");
    drop(fpm);
}

#[tokio::test]
async fn metrics_count_events_refusals_and_bytes() {
    let fpm = Fpm::start(2);
    let mut config = fpm.config("faults.php");
    config.websocket.allowed_origins = vec!["https://app.example".into()];
    let (daemon, admin) = Daemon::start_with_admin(config).await;

    let mut ws = connect(&daemon.url("/")).await;
    let hello = recv_text(&mut ws).await;
    for text in ["one", "three"] {
        send_text(&mut ws, text).await;
        assert_eq!(recv_text(&mut ws).await, text);
    }
    close(ws).await;
    let refused_origin = refused(request(
        &daemon.url("/"),
        &[("Origin", "https://evil.example")],
    ))
    .await;
    assert_eq!(refused_origin.status(), 403);
    let refused_php = refused(request(&daemon.url("/?open=status&status=403"), &[])).await;
    assert_eq!(refused_php.status(), 403);

    poll_until(Duration::from_secs(5), "the close event's answer", || {
        let text = daemon.metrics();
        (metric(&text, "ws2fcgi_events_total{event=\"close\"}") == 1.0).then_some(())
    })
    .await;
    let (status, head, text) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    let count = |series: &str| metric(&text, series);
    assert_eq!(count("ws2fcgi_events_total{event=\"open\"}"), 2.0, "{text}");
    assert_eq!(count("ws2fcgi_events_total{event=\"message\"}"), 2.0);
    assert_eq!(count("ws2fcgi_events_total{event=\"close\"}"), 1.0);
    assert_eq!(
        count("ws2fcgi_handshakes_refused_total{kind=\"origin\"}"),
        1.0
    );
    assert_eq!(count("ws2fcgi_handshakes_refused_total{kind=\"php\"}"), 1.0);
    assert_eq!(count("ws2fcgi_messages_in_total"), 2.0);
    assert_eq!(count("ws2fcgi_bytes_in_total"), "onethree".len() as f64);
    // Three text frames out (hello and two echoes, 2-byte headers) and the
    // close frame (2-byte header, 2-byte code).
    let frames_out = (2 + hello.len() + 2 + 3 + 2 + 5 + 4) as f64;
    assert_eq!(count("ws2fcgi_bytes_out_total"), frames_out);
    assert_eq!(count("ws2fcgi_connections"), 0.0);
    assert!(
        count("ws2fcgi_fastcgi_duration_seconds_count") >= 5.0,
        "{text}"
    );

    let (status, _, _) = http_get(admin, "/nope").await;
    assert_eq!(status, 404);
    daemon.shutdown().await;
}

/// A handshake PHP refuses is not an accepted connection. (`Hub::register`,
/// which the gateway calls before PHP's open answer, once counted it.)
#[tokio::test]
async fn connections_accepted_counts_only_accepted_handshakes() {
    let fpm = Fpm::start(1);
    let daemon = Daemon::start(fpm.config("faults.php")).await;
    let mut ws = connect(&daemon.url("/")).await;
    recv_text(&mut ws).await;
    let response = refused(request(&daemon.url("/?open=status&status=403"), &[])).await;
    assert_eq!(response.status(), 403);
    let text = daemon.metrics();
    assert_eq!(
        metric(&text, "ws2fcgi_connections_accepted_total"),
        1.0,
        "{text}"
    );
    close(ws).await;
    daemon.shutdown().await;
}

/// `ws2fcgi_events_queued` ("Events waiting for PHP in per-connection
/// queues") follows the queues. (It was registered but never set.)
#[tokio::test]
async fn events_queued_shows_messages_waiting_for_php() {
    let fpm = Fpm::start(1);
    let daemon = Daemon::start(fpm.config("faults.php")).await;
    let mut ws = connect(&daemon.url("/")).await;
    recv_text(&mut ws).await;
    for text in ["sleep 2000", "a", "b", "c"] {
        send_text(&mut ws, text).await;
    }
    let ctx = daemon.ctx.clone();
    poll_until(Duration::from_secs(5), "the first message in PHP", || {
        (ctx.fpm.busy_count() == 1).then_some(())
    })
    .await;
    // Within PHP's 2 s, with room for a loaded machine.
    let queued = poll_until(Duration::from_millis(1500), "three queued events", || {
        let text = daemon.metrics();
        let queued = metric(&text, "ws2fcgi_events_queued");
        (queued == 3.0).then_some(queued)
    })
    .await;
    assert_eq!(queued, 3.0);
    for want in ["slept 2000", "a", "b", "c"] {
        assert_eq!(recv_text(&mut ws).await, want);
    }
    assert_eq!(metric(&daemon.metrics(), "ws2fcgi_events_queued"), 0.0);
    close(ws).await;
    daemon.shutdown().await;
}

#[test]
fn check_config_names_the_limit_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "script = \"{}\"\n[fpm]\naddress = \"unix:/run/php/fpm.sock\"\n[websocket]\n",
        script("faults.php").display()
    );
    let cases = [
        ("", None),
        (
            "allowed_origins = [\"https://a.example\", \"https://*.b.example\"]\nmax_connections = 10\n\
             max_connections_per_ip = 2\n[websocket.rate_limit]\nmessages_per_second = 5.0\nburst = 10\n",
            None,
        ),
        (
            "allowed_origins = [\"example.com\"]\n",
            Some("websocket.allowed_origins"),
        ),
        (
            "max_handshake_bytes = 4096\n",
            Some("websocket.max_handshake_bytes"),
        ),
        (
            "handshake_timeout = \"0s\"\n",
            Some("websocket.handshake_timeout"),
        ),
        (
            "[websocket.rate_limit]\nmessages_per_second = 5.0\nburst = 0\n",
            Some("websocket.rate_limit.burst"),
        ),
        (
            "[websocket.rate_limit]\nmessages_per_second = -1.0\nburst = 1\n",
            Some("websocket.rate_limit.messages_per_second"),
        ),
        (
            "[websocket.rate_limit]\nmessages_per_second = 1.0\nburst = 1\naction = \"ignore\"\n",
            Some("action"),
        ),
    ];
    for (extra, named) in cases {
        let path = dir.path().join("ws2fcgi.toml");
        std::fs::write(&path, format!("{base}{extra}")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ws2fcgi"))
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("run check-config");
        let stderr = String::from_utf8_lossy(&out.stderr);
        match named {
            None => assert_eq!(out.status.code(), Some(0), "{extra}: {stderr}"),
            Some(setting) => {
                assert_eq!(out.status.code(), Some(64), "{extra}: {stderr}");
                assert!(
                    stderr.contains(setting),
                    "{extra}: `{setting}` not in {stderr}"
                );
            }
        }
    }
}
