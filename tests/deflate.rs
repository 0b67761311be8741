//! permessage-deflate (RFC 7692) against real peers: Debian's Python
//! `websockets` (tests/deflate/client.py) both ways, a publication shared
//! compressed by many members (one compression, read from the metric), and
//! a hand-written client for what a well-behaved peer never sends: a zip
//! bomb, corrupt data, invalid offers, a ping between compressed fragments.
//! Chromium is tests/js/deflate.test.mjs.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::raw::{self, RawClient, ServerFrame};
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use ws2fcgi::frame::Kind;

const PYTHON: &str = "/usr/bin/python3";
const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
const STEP: Duration = Duration::from_secs(20);

fn client_py() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deflate/client.py")
}

async fn start(fpm: &Fpm) -> Daemon {
    Daemon::start(fpm.config("deflate.php")).await
}

fn compressions(daemon: &Daemon) -> u64 {
    daemon.ctx.metrics.compression.compressions.get()
}

/// A client's compressed message in one frame: the daemon's own compressed
/// frame's payload, masked, RSV1 set.
fn compressed(opcode: u8, data: &[u8], fin: bool) -> Vec<u8> {
    let payload = deflated_payload(data);
    let mut frame = raw::frame(fin, opcode, &payload, true);
    frame[0] |= 0x40;
    frame
}

/// `data` compressed as permessage-deflate sends it (no tail).
fn deflated_payload(data: &[u8]) -> Vec<u8> {
    let stats = ws2fcgi::deflate::Stats::default();
    let frame = ws2fcgi::deflate::frame(Kind::Binary, &[data], &stats);
    let head = match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    frame[head..].to_vec()
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut d = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(16 << 20);
    d.decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync)
        .expect("the daemon's compressed frame inflates");
    out
}

/// A raw client that offered the extension; returns it and the 101's head.
async fn raw_client(daemon: &Daemon, offer: &str) -> (RawClient, String) {
    let (mut client, head) = raw::handshake_with(daemon.addr, "/", offer).await;
    let hello = client.next_frame(STEP).await.expect("hello");
    assert_eq!((hello.text().as_str(), hello.rsv1), ("hello", false));
    (client, head)
}

fn extension_line(head: &str) -> Option<String> {
    head.lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("sec-websocket-extensions:")
        })
        .map(|l| l.split_once(':').unwrap().1.trim().to_owned())
}

/// The next data frame (pongs skipped).
async fn next_data(client: &mut RawClient) -> ServerFrame {
    loop {
        let frame = client.next_frame(STEP).await.expect("a frame");
        if frame.opcode != 0xA {
            return frame;
        }
    }
}

#[tokio::test]
async fn python_websockets_sends_and_receives_compressed_messages() {
    let fpm = Fpm::start(2);
    let daemon = start(&fpm).await;
    let out = tokio::process::Command::new(PYTHON)
        .arg(client_py())
        .arg(daemon.url("/"))
        .arg("echo")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("python client done within 60 s")
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("server_no_context_takeover; client_no_context_takeover"),
        "{stdout}"
    );
    // Echoed compressed: text, binary and both fragmented messages; "hello"
    // and "hi" are under compression_min_size (256 bytes).
    assert_eq!(compressions(&daemon), 4);
    let z = &daemon.ctx.metrics.compression;
    assert!(
        z.bytes_out.get() * 3 < z.bytes_in.get(),
        "JSON and repeated bytes shrink"
    );
    // websockets compresses every message it sends: all five came inflated.
    assert_eq!(z.inflated_messages.get(), 5);
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_publication_is_compressed_once_for_every_member() {
    const MEMBERS: usize = 40;
    let fpm = Fpm::start(2);
    let daemon = start(&fpm).await;
    let mut child = tokio::process::Command::new(PYTHON)
        .arg(client_py())
        .arg(daemon.url("/"))
        .arg("members")
        .arg(MEMBERS.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python3");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("members connected within 60 s")
        .expect("read");
    assert_eq!(ready.as_deref(), Some("ready"));
    let before = compressions(&daemon);
    let line = format!(
        r#"{{"user":"ann","text":"{}"}}"#,
        "hello everyone ".repeat(40)
    );
    let published = daemon
        .ctx
        .hub
        .publish("room", Kind::Text, line.as_bytes(), &[]);
    assert_eq!(published.delivered, MEMBERS);
    assert_eq!(
        compressions(&daemon) - before,
        1,
        "one compression per publish"
    );
    let result = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("members got it within 60 s")
        .expect("read")
        .expect("a result line");
    let result: serde_json::Value = serde_json::from_str(&result).unwrap();
    let received = result["received"].as_array().unwrap();
    assert_eq!(received.len(), MEMBERS);
    assert!(received.iter().all(|r| r == line.as_str()));
    assert!(child.wait().await.unwrap().success());
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_zip_bomb_gets_1009_without_inflating_past_the_limit() {
    let fpm = Fpm::start(1);
    let mut config = fpm.config("deflate.php");
    config.websocket.max_message_size = 64 * 1024;
    config.websocket.max_frame_size = 64 * 1024;
    let daemon = Daemon::start(config).await;
    let (mut client, _) = raw_client(&daemon, OFFER).await;
    // 16 MiB of zeros compress to ~16 KiB: far past the limit, inflated.
    let bomb = vec![0u8; 16 << 20];
    let frame = compressed(0x2, &bomb, true);
    assert!(frame.len() < 20_000, "{}", frame.len());
    client.send(&frame).await;
    let close = next_data(&mut client).await;
    assert_eq!(close.close_code(), Some(1009), "{close:?}");
    assert!(daemon.ctx.metrics.inbound_bytes.get() < 1 << 20);
    daemon.shutdown().await;
}

#[tokio::test]
async fn corrupt_compressed_data_gets_1002() {
    let fpm = Fpm::start(1);
    let daemon = start(&fpm).await;
    let (mut client, _) = raw_client(&daemon, OFFER).await;
    let mut frame = raw::frame(true, 0x1, &[0xff, 0xff, 0xff, 0xff], true);
    frame[0] |= 0x40;
    client.send(&frame).await;
    let close = next_data(&mut client).await;
    assert_eq!(close.close_code(), Some(1002), "{close:?}");
    assert!(
        close.text().contains("invalid compressed data"),
        "{}",
        close.text()
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn fragments_with_a_ping_between_them_and_plain_messages_too() {
    let fpm = Fpm::start(1);
    let daemon = start(&fpm).await;
    let (mut client, head) = raw_client(
        &daemon,
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10\r\n",
    )
    .await;
    assert_eq!(
        extension_line(&head).as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10"
        )
    );
    let text = "{\"say\":\"fragmented and compressed\"} ".repeat(30);
    let payload = deflated_payload(text.as_bytes());
    let (a, b) = payload.split_at(payload.len() / 2);
    let mut first = raw::frame(false, 0x1, a, true);
    first[0] |= 0x40;
    client.send(&first).await;
    client.send(&raw::frame(true, 0x9, b"ping!", true)).await;
    client.send(&raw::frame(true, 0x0, b, true)).await;
    let pong = client.next_frame(STEP).await.unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (0xA, &b"ping!"[..]));
    let echo = next_data(&mut client).await;
    assert!(echo.rsv1, "an answer of {} bytes is compressed", text.len());
    assert_eq!(inflate(&echo.payload), text.as_bytes());
    // A plain message on a connection that negotiated compression.
    client.send(&raw::frame(true, 0x1, b"plain", true)).await;
    let echo = next_data(&mut client).await;
    assert_eq!((echo.rsv1, echo.text().as_str()), (false, "plain"));
    // RSV1 on a continuation frame is a protocol error.
    client.send(&compressed(0x1, b"one", false)).await;
    let mut bad = raw::frame(true, 0x0, &deflated_payload(b"two"), true);
    bad[0] |= 0x40;
    client.send(&bad).await;
    let close = next_data(&mut client).await;
    assert_eq!(close.close_code(), Some(1002), "{close:?}");
    daemon.shutdown().await;
}

#[tokio::test]
async fn invalid_offers_and_compression_off_go_uncompressed() {
    let fpm = Fpm::start(1);
    let daemon = start(&fpm).await;
    for offer in [
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; unknown_parameter",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    ] {
        let (mut client, head) =
            raw_client(&daemon, &format!("Sec-WebSocket-Extensions: {offer}\r\n")).await;
        assert_eq!(extension_line(&head), None, "{offer}");
        // RSV1 without the extension is a protocol error.
        client.send(&compressed(0x1, b"x", true)).await;
        let close = next_data(&mut client).await;
        assert_eq!(close.close_code(), Some(1002), "{offer}: {close:?}");
    }
    daemon.shutdown().await;

    let mut config = fpm.config("deflate.php");
    config.websocket.compression = false;
    let daemon = Daemon::start(config).await;
    let (mut client, head) = raw_client(&daemon, OFFER).await;
    assert_eq!(extension_line(&head), None);
    let big = "x".repeat(1000);
    client
        .send(&raw::frame(true, 0x1, big.as_bytes(), true))
        .await;
    let echo = next_data(&mut client).await;
    assert_eq!((echo.rsv1, echo.payload.len()), (false, 1000));
    daemon.shutdown().await;
}

#[tokio::test]
async fn max_frame_size_bounds_compressed_frames_not_the_inflated_message() {
    let fpm = Fpm::start(1);
    let mut config = fpm.config("deflate.php");
    config.websocket.max_frame_size = 1024;
    let daemon = Daemon::start(config).await;
    let (mut client, _) = raw_client(&daemon, OFFER).await;
    // 20 KB inflated from a frame of ~100 bytes: handed on in frames of at
    // most 1024 bytes, so it gets through.
    let text = "{\"n\":1} ".repeat(2500);
    client.send(&compressed(0x1, text.as_bytes(), true)).await;
    let echo = next_data(&mut client).await;
    assert!(echo.rsv1);
    assert_eq!(inflate(&echo.payload), text.as_bytes());
    // A compressed frame over 1024 bytes (random data does not shrink).
    let mut x = 0x2545_f491_u32;
    let noise: Vec<u8> = (0..4000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let frame = compressed(0x2, &noise, true);
    assert!(frame.len() > 1024);
    client.send(&frame).await;
    let close = next_data(&mut client).await;
    assert_eq!(close.close_code(), Some(1009), "{close:?}");
    daemon.shutdown().await;
}
