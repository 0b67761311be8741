//! The Pusher modes against the real daemon (in-process, `ws2fcgi::serve`,
//! no PHP: a daemon with only a Pusher app): `broadcast --pusher` published
//! through the signed HTTP API and through `pusher_publish`, with and
//! without permessage-deflate, and `client-events` on private and presence
//! channels. Each run is about a second; the JSON line must show every
//! delivery arrived, nothing refused.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use ws2fcgi::config::{Config, ListenAddr};
use ws2fcgi::{Context, Listener, Listeners};

const APP: &str = "1001:bench-key:bench-secret";

/// The daemon on its own thread and runtime; stopped when dropped.
struct Daemon {
    ws: std::net::SocketAddr,
    api: std::net::SocketAddr,
    control: PathBuf,
    ctx: Arc<Context>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A temporary directory, removed on drop.
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!(
                "ws2fcgi-bench-pusher-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Daemon {
    fn start() -> Self {
        let dir = tempdir::Dir::new();
        let control = dir.0.join("control.sock");
        // Pusher connections ask no PHP: the pool's address is never used.
        let fpm = dir.0.join("no-php-fpm.sock");
        let config = Config::from_toml(&format!(
            "listen = [\"127.0.0.1:0\"]\n\
             [fpm]\naddress = \"unix:{}\"\n\
             [control]\nsocket = {control:?}\n\
             [pusher]\nclient_events_per_second = 100000\n\
             [[pusher.app]]\nid = \"1001\"\nkey = \"bench-key\"\nsecret = \"bench-secret\"\n",
            fpm.display()
        ))
        .expect("config");
        config.validate().expect("valid config");
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = Listener::bind(&ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()))
                    .await
                    .unwrap();
                let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let control = ws2fcgi::control::bind(
                    config.control.socket.as_ref().expect("a control socket"),
                    &config.control,
                )
                .await
                .unwrap();
                let ctx = Arc::new(Context::new(config));
                tx.send((
                    listener.local_addr().unwrap(),
                    api.local_addr().unwrap(),
                    ctx.clone(),
                ))
                .unwrap();
                let listeners = Listeners {
                    websocket: vec![listener],
                    control: Some(control),
                    http_control: None,
                    admin: None,
                    pusher_api: Some(api),
                };
                let _ = ws2fcgi::serve(listeners, ctx, async move {
                    let _ = stopped.await;
                })
                .await;
            });
        });
        let (ws, api, ctx) = rx.recv().unwrap();
        Self {
            ws,
            api,
            control,
            ctx,
            _stop: stop,
            _dir: dir,
        }
    }
}

/// Runs the built `ws2fcgi-bench` with `args` and `--json`; its JSON line.
fn bench(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_ws2fcgi-bench"))
        .args(["--threads", "2"])
        .args(args)
        .arg("--json")
        .output()
        .expect("run ws2fcgi-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {}: {stderr}", output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

/// Every delivery of a broadcast arrived and nothing was refused.
fn all_delivered(line: &Value, members: u64) -> &Value {
    let f = &line["figures"];
    assert_eq!(f["members"], members, "{line}");
    assert_eq!(f["synced"], members, "{line}");
    assert_eq!(f["join_errors"], serde_json::json!({}), "{line}");
    assert_eq!(f["publish_errors"], serde_json::json!({}), "{line}");
    let published = f["published"].as_u64().unwrap();
    assert!(published >= 5, "{line}");
    assert_eq!(f["expected"].as_u64(), Some(published * members), "{line}");
    assert_eq!(f["received"], f["expected"], "{line}");
    assert_eq!(f["lost"], 0, "{line}");
    f
}

#[test]
fn pusher_broadcast_through_the_http_api_and_the_control_socket() {
    let daemon = Daemon::start();
    let url = format!("ws://{}/", daemon.ws);
    let api = format!("http://{}", daemon.api);
    let control = daemon.control.to_str().unwrap();
    let common = [
        "broadcast",
        "--url",
        &url,
        "--pusher",
        APP,
        "-n",
        "20",
        "--rate",
        "20",
        "--duration",
        "1s",
        "--drain",
        "5s",
    ];
    let line = bench(&[&common[..], &["--api", &api, "--window", "2"]].concat());
    let f = all_delivered(&line, 20);
    assert_eq!(
        line["params"]["pusher"],
        serde_json::json!({"id": "1001", "key": "bench-key"})
    );
    assert!(
        f["server_delivered"].is_null(),
        "the API answers {{}}: {line}"
    );
    let line = bench(&[&common[..], &["--control", control]].concat());
    let f = all_delivered(&line, 20);
    assert_eq!(f["server_delivered"], f["received"], "{line}");
}

#[test]
fn pusher_broadcast_compressed_reads_fewer_bytes() {
    let daemon = Daemon::start();
    let url = format!("ws://{}/", daemon.ws);
    let api = format!("http://{}", daemon.api);
    let run = |deflate: bool| {
        let mut args = vec![
            "broadcast",
            "--url",
            &url,
            "--pusher",
            APP,
            "-n",
            "10",
            "--rate",
            "10",
            "--count",
            "8",
            "--size",
            "1024",
            "--duration",
            "2s",
            "--drain",
            "5s",
            "--api",
            &api,
        ];
        if deflate {
            args.push("--deflate");
        }
        let compressions = || daemon.ctx.metrics.compression.compressions.get();
        let before = compressions();
        let line = bench(&args);
        let f = all_delivered(&line, 10);
        (
            f["wire_bytes"].as_u64().unwrap(),
            f["published"].as_u64().unwrap(),
            compressions() - before,
        )
    };
    let (plain, _, none) = run(false);
    assert_eq!(
        none, 0,
        "members that did not offer it get nothing compressed"
    );
    let (compressed, published, compressions) = run(true);
    assert!(
        compressed * 2 < plain,
        "1 KiB of words compress well: {compressed} bytes read compressed, {plain} plain"
    );
    // One compression per publish for all 10 members (the 4-byte sync
    // messages are under compression_min_size).
    assert_eq!(compressions, published);
}

#[test]
fn client_events_on_private_and_presence_channels() {
    let daemon = Daemon::start();
    let url = format!("ws://{}/", daemon.ws);
    for presence in [false, true] {
        let mut args = vec![
            "client-events",
            "--url",
            &url,
            "--pusher",
            APP,
            "-c",
            "3",
            "--duration",
            "1s",
        ];
        if presence {
            args.push("--presence");
        }
        let line = bench(&args);
        let f = &line["figures"];
        assert_eq!(f["pairs"], 3, "{line}");
        assert_eq!(f["join_errors"], serde_json::json!({}), "{line}");
        assert_eq!(f["errors"], serde_json::json!({}), "{line}");
        assert!(f["round_trips"].as_u64().unwrap() >= 3, "{line}");
    }
}
