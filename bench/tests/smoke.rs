//! Runs the `ws2fcgi-bench` binary for about a second per mode against a tiny
//! in-test server, and checks that its JSON line parses and counts something.
//!
//! The server is a test double of ws2fcgi with bench/php/bench.php: it echoes
//! every message, joins a connection to `?channel=NAME`, publishes what
//! follows "pub:" to that channel, and serves the control protocol (one JSON
//! line each way) on a Unix socket. It keeps the bench's tests independent of
//! the daemon and PHP-FPM, which have their own tests; `fcgi` mode needs a
//! real PHP-FPM and is tried by hand (see bench/README.md).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// Channel name → its members' outbound queues.
type Channels = Arc<Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Message>>>>>;

/// The test double, on its own thread; stopped when dropped.
struct Server {
    addr: SocketAddr,
    control: PathBuf,
    /// Dropping it ends the server's runtime, and with it every task.
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: TempDir,
}

impl Server {
    fn start() -> Self {
        let dir = TempDir::new();
        let control = dir.0.join("control.sock");
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let control_path = control.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let control = UnixListener::bind(&control_path).unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let channels = Channels::default();
                tokio::spawn(serve_control(control, channels.clone()));
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        tokio::spawn(serve_ws(stream, channels.clone()));
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stopped => {}
                }
            });
        });
        let addr = rx.recv().unwrap();
        Self {
            addr,
            control,
            _stop: stop,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
}

async fn serve_ws(stream: tokio::net::TcpStream, channels: Channels) {
    let mut channel = None;
    // The error type is tungstenite's `ErrorResponse`, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        channel = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("channel=")))
            .map(str::to_owned);
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    if let Some(name) = &channel {
        let mut map = channels.lock().unwrap();
        map.entry(name.clone()).or_default().push(out_tx);
    }
    loop {
        tokio::select! {
            out = out_rx.recv() => {
                let Some(message) = out else { return };
                if ws.send(message).await.is_err() {
                    return;
                }
            }
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(data) = text.as_str().strip_prefix("pub:") {
                        publish(&channels, channel.as_deref().unwrap_or(""), data);
                    } else if ws.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Binary(data))) => {
                    if ws.send(Message::Binary(data)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    }
}

fn publish(channels: &Channels, channel: &str, data: &str) -> usize {
    let mut map = channels.lock().unwrap();
    let Some(members) = map.get_mut(channel) else {
        return 0;
    };
    members.retain(|m| m.send(Message::text(data)).is_ok());
    members.len()
}

async fn serve_control(listener: UnixListener, channels: Channels) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_control_client(stream, channels.clone()));
    }
}

async fn serve_control_client(stream: UnixStream, channels: Channels) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(v) if v["op"] == "publish" => {
                let channel = v["channel"].as_str().unwrap_or("");
                let delivered = publish(&channels, channel, v["data"].as_str().unwrap_or(""));
                format!("{{\"ok\":true,\"delivered\":{delivered}}}\n")
            }
            _ => "{\"ok\":false,\"error\":\"bad request\"}\n".to_string(),
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ws2fcgi-bench-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the bench with `args` plus `--json`; returns the parsed JSON line.
fn bench(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_ws2fcgi-bench"))
        .args(args)
        .args(["--json", "--threads", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?} failed:\n{stderr}");
    assert!(!stderr.trim().is_empty(), "no human summary on stderr");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout must be one JSON line: {stdout}");
    let json: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(json["mode"], args[0]);
    assert!(json["params"].is_object() && json["figures"].is_object());
    eprintln!("{stderr}");
    json
}

fn count(json: &Value, figure: &str) -> u64 {
    json["figures"][figure]
        .as_u64()
        .unwrap_or_else(|| panic!("no figure {figure} in {json}"))
}

#[test]
fn echo_counts_round_trips() {
    let server = Server::start();
    let json = bench(&[
        "echo",
        "--url",
        &server.url(),
        "-c",
        "4",
        "--duration",
        "1s",
    ]);
    assert!(count(&json, "round_trips") > 0, "{json}");
    assert_eq!(count(&json, "connected"), 4);
    assert!(json["figures"]["latency"]["p99_us"].as_f64().unwrap() > 0.0);
    assert!(
        json["figures"]["errors"].as_object().unwrap().is_empty(),
        "{json}"
    );
}

#[test]
fn churn_counts_cycles() {
    let server = Server::start();
    let json = bench(&[
        "churn",
        "--url",
        &server.url(),
        "-c",
        "4",
        "--duration",
        "1s",
    ]);
    assert!(count(&json, "cycles") > 0, "{json}");
    assert!(
        json["figures"]["errors"].as_object().unwrap().is_empty(),
        "{json}"
    );
}

#[test]
fn idle_holds_and_weighs_connections() {
    let server = Server::start();
    let pid = std::process::id().to_string();
    let json = bench(&[
        "idle",
        "--url",
        &server.url(),
        "-n",
        "200",
        "--rate",
        "1000",
        "--hold",
        "500ms",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(count(&json, "connected"), 200, "{json}");
    assert_eq!(count(&json, "still_open"), 200, "{json}");
    assert!(count(&json, "server_rss_before_kib") > 0);
    assert!(json["figures"]["server_rss_per_conn_bytes"].is_number());
    assert!(json["figures"]["connect_rate"].as_f64().unwrap() > 0.0);
}

#[test]
fn broadcast_through_the_control_socket_loses_nothing() {
    let server = Server::start();
    let control = server.control.to_str().unwrap();
    let json = bench(&[
        "broadcast",
        "--url",
        &server.url(),
        "-n",
        "50",
        "--senders",
        "2",
        "--rate",
        "200",
        "--duration",
        "1s",
        "--control",
        control,
    ]);
    let expected = count(&json, "expected");
    assert!(expected > 0, "{json}");
    assert_eq!(count(&json, "received"), expected, "{json}");
    assert_eq!(count(&json, "lost"), 0);
    assert_eq!(count(&json, "duplicates"), 0);
    assert_eq!(count(&json, "synced"), 50);
    assert_eq!(json["figures"]["server_delivered"].as_u64(), Some(expected));
    assert_eq!(json["figures"]["per_sender"].as_array().unwrap().len(), 2);
}

#[test]
fn broadcast_through_php_messages() {
    let server = Server::start();
    let json = bench(&[
        "broadcast",
        "--url",
        &server.url(),
        "-n",
        "20",
        "--senders",
        "2",
        "--rate",
        "100",
        "--duration",
        "1s",
        "--via-php",
    ]);
    let expected = count(&json, "expected");
    assert!(expected > 0, "{json}");
    assert_eq!(count(&json, "received"), expected, "{json}");
}

#[test]
fn non_loopback_targets_are_refused() {
    for args in [
        &["echo", "--url", "ws://192.0.2.1:8090/"][..],
        &["fcgi", "--fpm", "192.0.2.1:9000", "--script", "/x.php"][..],
        &[
            "fcgi",
            "--fpm",
            "unix:/nonexistent",
            "--script",
            "relative.php",
        ][..],
    ] {
        let status = Command::new(env!("CARGO_BIN_EXE_ws2fcgi-bench"))
            .args(args)
            .output()
            .unwrap()
            .status;
        assert_eq!(status.code(), Some(64), "{args:?}");
    }
}

#[test]
fn an_unreachable_control_socket_fails_the_run() {
    let server = Server::start();
    let missing = Path::new(&server.control).with_file_name("missing.sock");
    let status = Command::new(env!("CARGO_BIN_EXE_ws2fcgi-bench"))
        .args(["broadcast", "--url", &server.url(), "-n", "1", "--control"])
        .arg(missing)
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(1));
}
