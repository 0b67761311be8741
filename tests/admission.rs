//! The admission queue of open events (`fpm.open_queue`, `admission.rs`)
//! against a real php-fpm: when it is full, a handshake is turned away at
//! once with the delay, as 503 + Retry-After, or, for a client that speaks
//! ws2fcgi.v1 (a browser cannot read a refused handshake's status), as a 101
//! closed with 1013 "busy; retry after N". PHP sees neither.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_admission_queue_answers_503_or_1013_with_the_delay() {
    let fpm = Fpm::start(1);
    let log = EventLog::new();
    let mut config = fpm.config("faults.php");
    config.fpm.pool_size = 1;
    config.fpm.open_queue = 2;
    config.fpm.queue_timeout = Duration::from_secs(60);
    let daemon = Daemon::start(config).await;

    // Two opens fill the queue: PHP sleeps in one, the other waits for the slot.
    let slow = daemon.url(&format!("/?open=sleep&ms=3000&{}", log.query()));
    let held: Vec<_> = (0..2)
        .map(|_| {
            let url = slow.clone();
            tokio::spawn(async move {
                let mut ws = connect(&url).await;
                recv_text(&mut ws).await
            })
        })
        .collect();
    let ctx = daemon.ctx.clone();
    poll_until(Duration::from_secs(10), "two opens queued", || {
        (ctx.admission.queued() == 2).then_some(())
    })
    .await;

    // Any client: 503 with the delay.
    let url = daemon.url(&format!("/?{}", log.query()));
    let answer = refused(request(&url, &[])).await;
    assert_eq!(answer.status(), 503);
    let retry_after: u64 = answer.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");

    // A ws2fcgi.v1 client: a 101 it can read, closed with 1013 and the delay.
    let (mut ws, response) = connect_with(request(
        &url,
        &[("Sec-WebSocket-Protocol", "ws2fcgi.v1, ws2fcgi.since.e30")],
    ))
    .await;
    assert_eq!(response.headers()["sec-websocket-protocol"], "ws2fcgi.v1");
    let frame = recv_close(&mut ws).await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1013);
    let reason = frame.reason.as_str().to_owned();
    let secs: u64 = reason
        .strip_prefix("busy; retry after ")
        .unwrap_or_else(|| panic!("{reason}"))
        .parse()
        .unwrap_or_else(|_| panic!("{reason}"));
    assert!((1..=60).contains(&secs), "{reason}");

    // The queued opens are admitted as PHP answers them; then there is room.
    for task in held {
        let hello = task.await.expect("held client");
        assert!(hello.starts_with("hello "), "{hello}");
    }
    let mut ws = connect(&url).await;
    assert!(recv_text(&mut ws).await.starts_with("hello "));
    close(ws).await;

    // PHP saw the three admitted opens, never the two turned away.
    let opens = poll_until(Duration::from_secs(10), "three open events", || {
        let n = log
            .events()
            .iter()
            .filter(|e| e["WS_EVENT"] == "open")
            .count();
        (n >= 3).then_some(n)
    })
    .await;
    assert_eq!(opens, 3);
    let text = daemon.ctx.metrics.render(&daemon.ctx.snapshot());
    assert_eq!(
        metric(
            &text,
            "ws2fcgi_handshakes_refused_total{kind=\"open_queue\"}"
        ),
        2.0,
        "{text}"
    );
    daemon.shutdown().await;
}
