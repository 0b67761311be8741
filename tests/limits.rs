//! Every limit of `[websocket]` and `[fpm]` crossed against a real php-fpm:
//! what the client gets, and that PHP never sees what the limit kept out
//! (read back from `tests/php/record.php`'s event log and the metrics).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::Value;
use support::raw;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use ws2fcgi::config::{RateLimitAction, RateLimitConfig};

/// The outcome of a handshake from a chosen source address: the client, or
/// the refusal's status and body.
async fn connect_from(source: &str, addr: SocketAddr, url: &str) -> Result<Client, (u16, String)> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().unwrap())
        .expect("bind the source address");
    let tcp = socket.connect(addr).await.expect("tcp connect");
    let handshake = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp));
    match tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .expect("handshake answered within 10 s")
    {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => Err((
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(other) => panic!("handshake failed without an HTTP answer: {other}"),
    }
}

/// The events of one kind PHP saw.
fn events_of(log: &EventLog, kind: &str) -> Vec<Value> {
    log.events()
        .into_iter()
        .filter(|e| e["WS_EVENT"] == kind)
        .collect()
}

/// The open answer of `faults.php`: "hello <id>"; returns the id.
async fn hello(ws: &mut Client) -> String {
    let text = recv_text(ws).await;
    text.strip_prefix("hello ")
        .unwrap_or_else(|| panic!("not a hello: {text}"))
        .to_owned()
}

#[tokio::test]
async fn connection_limits_refuse_before_php_and_free_the_slot_on_close() {
    let fpm = Fpm::start(2);
    let mut config = fpm.config("faults.php");
    config.websocket.max_connections = 3;
    config.websocket.max_connections_per_ip = 2;
    let daemon = Daemon::start(config).await;
    let log = EventLog::new();
    let url = daemon.url(&format!("/?{}", log.query()));
    let (a, b, c) = ("127.0.0.1", "127.0.0.2", "127.0.0.3");

    let mut a1 = connect_from(a, daemon.addr, &url).await.expect("a1");
    let a1_id = hello(&mut a1).await;
    let mut a2 = connect_from(a, daemon.addr, &url).await.expect("a2");
    hello(&mut a2).await;
    let (status, body) = connect_from(a, daemon.addr, &url)
        .await
        .expect_err("a3 refused");
    assert_eq!(status, 429, "third connection from one address: {body}");
    assert!(
        body.contains("too many connections from this address"),
        "{body}"
    );

    let mut b1 = connect_from(b, daemon.addr, &url).await.expect("b1");
    hello(&mut b1).await;
    let (status, body) = connect_from(c, daemon.addr, &url)
        .await
        .expect_err("c1 refused");
    assert_eq!(status, 503, "fourth connection in total: {body}");
    assert!(body.contains("too many connections"), "{body}");

    assert_eq!(
        events_of(&log, "open").len(),
        3,
        "refused handshakes reached PHP"
    );
    let metrics = daemon.metrics();
    assert_eq!(
        metric(
            &metrics,
            "ws2fcgi_handshakes_refused_total{kind=\"max_connections_per_ip\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "ws2fcgi_handshakes_refused_total{kind=\"max_connections\"}"
        ),
        1.0
    );

    // A closed connection gives its slot back (after its close event).
    close(a1).await;
    log.close_of(&a1_id).await;
    let slots = daemon.ctx.slots.clone();
    poll_until(Duration::from_secs(5), "the slot to be freed", || {
        (slots.in_use() == 2).then_some(())
    })
    .await;
    let mut c1 = connect_from(c, daemon.addr, &url)
        .await
        .expect("c1 after a close");
    hello(&mut c1).await;
    let (status, _) = connect_from(a, daemon.addr, &url)
        .await
        .expect_err("full again");
    assert_eq!(status, 503);
    assert_eq!(events_of(&log, "open").len(), 4);

    for ws in [a2, b1, c1] {
        close(ws).await;
    }
    daemon.shutdown().await;
}

/// Sends `request` on a fresh TCP connection and returns everything the
/// server answers until it closes (a reset counts as the end), within 10 s.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline.into(), tcp.read(&mut chunk))
            .await
            .expect("server answered and closed within 10 s")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn upgrade_request(addr: SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn an_oversized_handshake_gets_431_before_php() {
    let fpm = Fpm::start(1);
    let mut config = fpm.config("faults.php");
    config.websocket.max_handshake_bytes = 8192;
    let daemon = Daemon::start(config).await;
    let log = EventLog::new();
    let path = format!("/?{}", log.query());

    let big = format!("X-Padding: {}\r\n", "p".repeat(9000));
    let answer = raw_exchange(
        daemon.addr,
        upgrade_request(daemon.addr, &path, &big).as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(log.events().is_empty(), "PHP saw {:?}", log.events());

    // Just under the limit is fine.
    let fits = format!("X-Padding: {}\r\n", "p".repeat(6000));
    let mut ws = connect_with(request(
        &daemon.url(&path),
        &[("X-Padding", &fits[11..fits.len() - 2])],
    ))
    .await
    .0;
    hello(&mut ws).await;
    close(ws).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_dropped() {
    let fpm = Fpm::start(1);
    let mut config = fpm.config("faults.php");
    let limit = Duration::from_millis(300);
    config.websocket.handshake_timeout = limit;
    let daemon = Daemon::start(config).await;
    let log = EventLog::new();

    let half = format!(
        "GET /?{} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n",
        log.query()
    );
    for sent in [half.as_bytes(), b""] {
        let started = Instant::now();
        let mut tcp = TcpStream::connect(daemon.addr).await.unwrap();
        tcp.write_all(sent).await.unwrap();
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(limit + Duration::from_secs(2), tcp.read_to_end(&mut answer))
                .await
                .unwrap_or_else(|_| {
                    panic!("still open {:?} after sending {sent:?}", started.elapsed())
                });
        assert!(read.is_ok() && answer.is_empty(), "{read:?} {answer:?}");
        assert!(
            started.elapsed() >= limit,
            "dropped early: {:?}",
            started.elapsed()
        );
    }
    assert!(log.events().is_empty(), "PHP saw {:?}", log.events());
    daemon.shutdown().await;
}

#[tokio::test]
async fn origins_outside_the_list_get_403_before_php() {
    let fpm = Fpm::start(1);
    let mut config = fpm.config("faults.php");
    config.websocket.allowed_origins =
        vec!["https://app.example".into(), "https://*.example.org".into()];
    let daemon = Daemon::start(config).await;
    let log = EventLog::new();
    let url = daemon.url(&format!("/?{}", log.query()));

    for origin in [
        "https://evil.example",
        "https://example.org",
        "http://chat.example.org",
        "https://app.example.evil",
        "https://chatexample.org",
        "null",
    ] {
        let response = refused(request(&url, &[("Origin", origin)])).await;
        assert_eq!(response.status(), 403, "Origin: {origin}");
        let body =
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
        assert!(body.contains("origin not allowed"), "{body}");
    }
    assert!(log.events().is_empty(), "PHP saw {:?}", log.events());
    assert_eq!(
        metric(
            &daemon.metrics(),
            "ws2fcgi_handshakes_refused_total{kind=\"origin\"}"
        ),
        6.0
    );

    for origin in [
        Some("https://app.example"),
        Some("HTTPS://App.Example/"),
        Some("https://chat.example.org"),
        Some("https://a.b.example.org"),
        None,
    ] {
        let headers: Vec<(&str, &str)> = origin.iter().map(|o| ("Origin", *o)).collect();
        let (mut ws, _) = connect_with(request(&url, &headers)).await;
        hello(&mut ws).await;
        close(ws).await;
    }
    assert_eq!(events_of(&log, "open").len(), 5);
    daemon.shutdown().await;
}

/// Pusher clients (`/app/{key}`) are held to the same Origin list.
#[tokio::test]
async fn pusher_clients_from_origins_outside_the_list_get_403() {
    let fpm = Fpm::start(1);
    let mut config = fpm.config("faults.php");
    config.websocket.allowed_origins = vec!["https://app.example".into()];
    config.pusher.apps = vec![ws2fcgi::config::PusherApp {
        id: "1".into(),
        key: "origin-key".into(),
        secret: "origin-secret".into(),
        script: None,
        auth: Default::default(),
    }];
    let daemon = Daemon::start(config).await;
    let url = daemon.url("/app/origin-key?protocol=7");

    let response = refused(request(&url, &[("Origin", "https://evil.example")])).await;
    assert_eq!(response.status(), 403);
    let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
    assert!(body.contains("origin not allowed"), "{body}");
    assert_eq!(
        metric(
            &daemon.metrics(),
            "ws2fcgi_handshakes_refused_total{kind=\"origin\"}"
        ),
        1.0
    );

    let (mut ws, _) = connect_with(request(&url, &[("Origin", "https://app.example")])).await;
    let established = recv_text(&mut ws).await;
    assert!(
        established.contains("pusher:connection_established"),
        "{established}"
    );
    close(ws).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn oversized_messages_and_frames_close_1009_and_never_reach_php() {
    let fpm = Fpm::start(2);
    let mut config = fpm.config("faults.php");
    config.websocket.max_message_size = 1000;
    config.websocket.max_frame_size = 500;
    let daemon = Daemon::start(config).await;
    let log = EventLog::new();
    let url = daemon.url(&format!("/?{}", log.query()));

    // One frame over max_frame_size.
    let mut ws = connect(&url).await;
    let frame_id = hello(&mut ws).await;
    send_text(&mut ws, &"f".repeat(501)).await;
    let close_frame = recv_close(&mut ws).await.expect("a close code");
    assert_eq!(u16::from(close_frame.code), 1009);

    // Frames within the limit adding up to a message over max_message_size.
    let mut ws = connect(&url).await;
    let message_id = hello(&mut ws).await;
    let part = "m".repeat(400);
    ws.send(Message::Frame(Frame::message(
        part.clone(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        part.clone(),
        OpCode::Data(Data::Continue),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        part,
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    let close_frame = recv_close(&mut ws).await.expect("a close code");
    assert_eq!(u16::from(close_frame.code), 1009);

    for id in [&frame_id, &message_id] {
        let closed = log.close_of(id).await;
        assert_eq!(closed["WS_CLOSE_CODE"], "1009", "{closed}");
    }
    assert!(events_of(&log, "message").is_empty(), "PHP saw a message");

    // Exactly at the limits is fine.
    let mut ws = connect(&url).await;
    hello(&mut ws).await;
    let exact = "e".repeat(500);
    send_text(&mut ws, &exact).await;
    assert_eq!(recv_text(&mut ws).await, exact);
    close(ws).await;
    daemon.shutdown().await;
}

fn rate_limited(action: RateLimitAction) -> RateLimitConfig {
    RateLimitConfig {
        messages_per_second: 1.0,
        burst: 2,
        action,
        notice: r#"{"error":"rate limited"}"#.into(),
    }
}

#[tokio::test]
async fn rate_limit_drop_tells_the_client_and_php_sees_only_the_allowed() {
    let fpm = Fpm::start(2);
    let mut config = fpm.config("faults.php");
    config.websocket.rate_limit = Some(rate_limited(RateLimitAction::Drop));
    let daemon = Daemon::start(config).await;
    let log = EventLog::new();
    let mut ws = connect(&daemon.url(&format!("/?{}", log.query()))).await;
    hello(&mut ws).await;
    for i in 0..5 {
        send_text(&mut ws, &format!("m{i}")).await;
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(recv_text(&mut ws).await);
    }
    let notices = got
        .iter()
        .filter(|m| *m == r#"{"error":"rate limited"}"#)
        .count();
    let echoes: Vec<_> = got.iter().filter(|m| m.starts_with('m')).collect();
    assert_eq!(notices, 3, "{got:?}");
    assert_eq!(echoes, ["m0", "m1"], "{got:?}");
    let seen: Vec<_> = events_of(&log, "message")
        .iter()
        .map(|e| e["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["m0", "m1"]);
    assert_eq!(
        metric(&daemon.metrics(), "ws2fcgi_rate_limited_messages_total"),
        3.0
    );

    // The connection stays; the bucket refills at its rate.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send_text(&mut ws, "later").await;
    assert_eq!(recv_text(&mut ws).await, "later");
    close(ws).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn rate_limit_close_closes_1008() {
    let fpm = Fpm::start(2);
    let mut config = fpm.config("faults.php");
    config.websocket.rate_limit = Some(rate_limited(RateLimitAction::Close));
    let daemon = Daemon::start(config).await;
    let log = EventLog::new();
    let mut ws = connect(&daemon.url(&format!("/?{}", log.query()))).await;
    let id = hello(&mut ws).await;
    for i in 0..3 {
        send_text(&mut ws, &format!("m{i}")).await;
    }
    let mut echoes = Vec::new();
    let code = loop {
        match recv(&mut ws).await {
            Message::Text(t) => echoes.push(t.to_string()),
            Message::Close(frame) => {
                break frame.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
            other => panic!("unexpected {}", describe(&other)),
        }
    };
    assert_eq!(code, Some((1008, "rate limit exceeded".into())));
    assert!(echoes.iter().all(|e| e == "m0" || e == "m1"), "{echoes:?}");
    let closed = log.close_of(&id).await;
    assert_eq!(closed["WS_CLOSE_CODE"], "1008");
    let seen: Vec<_> = events_of(&log, "message")
        .iter()
        .map(|e| e["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["m0", "m1"], "PHP saw the message over the limit");
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_closed_3008() {
    let fpm = Fpm::start(2);
    let mut config = fpm.config("faults.php");
    // The reading client must answer a ping within idle_timeout less
    // ping_interval: 750 ms, room for a loaded machine's scheduling.
    config.websocket.ping_interval = Duration::from_millis(250);
    config.websocket.idle_timeout = Duration::from_millis(1000);
    let daemon = Daemon::start(config).await;
    let log = EventLog::new();

    // A raw client: reads, never answers a ping.
    let started = Instant::now();
    let mut silent = raw::handshake(daemon.addr, &format!("/?{}", log.query())).await;
    let hello = silent
        .next_frame(Duration::from_secs(10))
        .await
        .expect("hello");
    let id = hello.text().strip_prefix("hello ").unwrap().to_owned();
    // Meanwhile a client that reads (and so answers pings) stays connected.
    let mut alive = connect(&daemon.url("/")).await;
    recv_text(&mut alive).await;
    let alive = tokio::spawn(async move {
        let next = tokio::time::timeout(Duration::from_millis(2500), recv(&mut alive)).await;
        assert!(
            next.is_err(),
            "the reading client got {:?}",
            next.map(|m| describe(&m))
        );
        alive
    });

    let frames = silent.frames_until_eof(Duration::from_secs(10)).await;
    let elapsed = started.elapsed();
    let pings = frames.iter().filter(|f| f.opcode == 0x9).count();
    assert!(pings >= 2, "pings before the cut: {frames:?}");
    let last = frames.last().expect("a close frame");
    assert_eq!(last.close_code(), Some(3008), "{frames:?}");
    assert_eq!(&last.payload[2..], b"idle timeout");
    assert!(
        elapsed >= Duration::from_millis(1000),
        "cut after {elapsed:?}"
    );
    let closed = log.close_of(&id).await;
    assert_eq!(closed["WS_CLOSE_CODE"], "3008");
    assert_eq!(closed["WS_CLOSE_REASON"], "idle timeout");

    let mut alive = alive.await.expect("the reading client");
    send_text(&mut alive, "still here").await;
    assert_eq!(recv_text(&mut alive).await, "still here");
    close(alive).await;
    daemon.shutdown().await;
}

/// While a connection's event queue is full the daemon stops reading it, so
/// the client's frames and pongs wait in the socket: that silence is the
/// daemon's own backpressure, not an idle client. (It was once closed 3008.)
#[tokio::test]
async fn a_busy_client_behind_a_full_event_queue_is_not_idle() {
    let fpm = Fpm::start(2);
    let mut config = fpm.config("faults.php");
    config.websocket.event_queue = 1;
    config.websocket.ping_interval = Duration::from_millis(150);
    config.websocket.idle_timeout = Duration::from_millis(500);
    let daemon = Daemon::start(config).await;
    let mut ws = connect(&daemon.url("/")).await;
    hello(&mut ws).await;
    for _ in 0..4 {
        send_text(&mut ws, "sleep 700").await;
    }
    for i in 0..4 {
        match recv(&mut ws).await {
            Message::Text(t) => assert_eq!(t.as_str(), "slept 700"),
            other => panic!("answer {i}: got {}", describe(&other)),
        }
    }
    close(ws).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn php_answers_over_the_limits_are_refused() {
    let fpm = Fpm::start(2);
    let mut config = fpm.config("faults.php");
    config.fpm.max_response_header_bytes = 2048;
    config.fpm.max_response_body_bytes = 4096;
    let daemon = Daemon::start(config).await;
    let log = EventLog::new();
    let url = |query: &str| daemon.url(&format!("/?{query}&{}", log.query()));

    // Open events: the handshake fails with 502, the client never connects.
    for query in [
        "open=header&bytes=3000",
        "open=body&bytes=5000",
        "open=body&bytes=9000",
    ] {
        let response = refused(request(&url(query), &[])).await;
        assert_eq!(response.status(), 502, "{query}");
        let body =
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
        assert!(body.contains("could not be used"), "{query}: {body}");
    }
    assert_eq!(daemon.ctx.hub.connection_count(), 0);

    // Message events: no answer, the connection stays usable.
    let mut ws = connect(&url("")).await;
    hello(&mut ws).await;
    for command in ["header 3000", "body 5000", "body 9000"] {
        send_text(&mut ws, command).await;
        send_text(&mut ws, "next").await;
        assert_eq!(recv_text(&mut ws).await, "next", "after {command}");
    }
    // Exactly at the limits is fine.
    send_text(&mut ws, "body 4096").await;
    assert_eq!(recv_text(&mut ws).await.len(), 4096);
    close(ws).await;

    let metrics = daemon.metrics();
    // 3000-byte headers and 5000-byte bodies are parsed and refused; a
    // 9000-byte answer is cut off while it is read (headers + body limits).
    assert_eq!(
        metric(
            &metrics,
            "ws2fcgi_event_errors_total{kind=\"bad_response\"}"
        ),
        4.0
    );
    assert_eq!(
        metric(&metrics, "ws2fcgi_event_errors_total{kind=\"too_large\"}"),
        2.0
    );
    daemon.shutdown().await;
}

/// The same refusals, in the log of the real binary.
#[tokio::test]
async fn php_answers_over_the_limits_are_logged() {
    let fpm = Fpm::start(2);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ws2fcgi.toml");
    std::fs::write(
        &file,
        format!(
            "listen = [\"127.0.0.1:0\"]\nscript = \"{}\"\n[fpm]\naddress = \"unix:{}\"\npool_size = 2\n\
             max_response_header_bytes = 2048\nmax_response_body_bytes = 4096\n",
            script("faults.php").display(),
            fpm.socket.display()
        ),
    )
    .unwrap();
    let daemon = Process::start(&["--config".as_ref(), file.as_os_str()]);
    let mut ws = connect(&daemon.url("/")).await;
    hello(&mut ws).await;
    for command in ["header 3000", "body 5000", "body 9000"] {
        send_text(&mut ws, command).await;
    }
    send_text(&mut ws, "next").await;
    assert_eq!(recv_text(&mut ws).await, "next");
    close(ws).await;
    for line in [
        "response headers exceed 2048 bytes",
        "response body exceeds 4096 bytes",
        "php's answer exceeds 6144 bytes",
    ] {
        daemon.logged(line).await;
    }
}
