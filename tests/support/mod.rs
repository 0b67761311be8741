//! Shared test harness: a real php-fpm on a temporary Unix socket, the daemon
//! in-process on an ephemeral port, and WebSocket clients.
//!
//! Every server is started on a free loopback port or a temp path and stopped
//! on drop; readiness is polled with a deadline, never slept for.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use ws2fcgi::config::{Config, FpmAddr, ListenAddr};
use ws2fcgi::{Context, Listener, Listeners};

/// The PHP scripts the tests run, `tests/php/`.
pub fn php_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/php")
}

/// A script in `tests/php/`.
pub fn script(name: &str) -> PathBuf {
    php_dir().join(name)
}

/// The php-fpm binary: `$PHP_FPM`, else `php-fpm*` on PATH or in /usr/sbin.
pub fn php_fpm_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("PHP_FPM") {
        return bin.into();
    }
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin"])
    {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("php-fpm"))
            })
            .collect();
        found.sort();
        if let Some(bin) = found.pop() {
            return bin;
        }
    }
    panic!("php-fpm not found: install it (scripts/test does) or set PHP_FPM");
}

/// A real php-fpm master with a static pool, on a temp Unix socket.
pub struct Fpm {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Option<Child>,
    conf: PathBuf,
}

impl Fpm {
    /// Starts php-fpm with `children` workers and waits until its socket accepts.
    pub fn start(children: usize) -> Self {
        Self::start_with(children, "")
    }

    /// As [`Fpm::start`], with extra pool settings (e.g. `pm.max_requests = 5`).
    pub fn start_with(children: usize, extra_pool: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("fpm.sock");
        let conf = dir.path().join("php-fpm.conf");
        let user_line = if is_root() {
            "user = root\ngroup = root\n"
        } else {
            ""
        };
        std::fs::write(
            &conf,
            format!(
                "[global]\nerror_log = {log}\ndaemonize = no\npid = {pid}\n\n\
                 [test]\n{user_line}listen = {sock}\npm = static\npm.max_children = {children}\n\
                 catch_workers_output = yes\nclear_env = no\n\
                 php_admin_value[session.save_path] = {dir}\n\
                 php_admin_flag[display_errors] = off\nphp_admin_flag[log_errors] = on\n{extra_pool}\n",
                log = dir.path().join("fpm.log").display(),
                pid = dir.path().join("fpm.pid").display(),
                sock = socket.display(),
                dir = dir.path().display(),
            ),
        )
        .expect("write php-fpm.conf");
        let mut fpm = Self {
            dir,
            socket,
            child: None,
            conf,
        };
        fpm.spawn();
        fpm
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let mut cmd = Command::new(php_fpm_binary());
        cmd.arg("--nodaemonize").arg("--fpm-config").arg(&self.conf);
        if is_root() {
            cmd.arg("--allow-to-run-as-root");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start php-fpm");
        self.child = Some(child);
        wait_for_unix(&self.socket);
    }

    /// The address to hand ws2fcgi.
    pub fn addr(&self) -> FpmAddr {
        FpmAddr::Unix(self.socket.clone())
    }

    /// Kills php-fpm (SIGKILL to the master; workers exit with it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Starts it again on the same socket.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The php-fpm log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fpm.log")).unwrap_or_default()
    }
}

impl Drop for Fpm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Polls until a Unix socket accepts, for up to 10 s.
pub fn wait_for_unix(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} did not start accepting within 10 s", path.display());
}

/// A config for tests: one script, php-fpm at `fpm`, short timeouts.
pub fn config(fpm: FpmAddr, script_name: &str) -> Config {
    let mut config = Config {
        listen: vec![ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())],
        script: Some(script(script_name)),
        ..Config::default()
    };
    config.fpm.address = Some(fpm);
    config.websocket.close_timeout = Duration::from_secs(2);
    config.shutdown.drain_timeout = Duration::from_secs(10);
    config
}

/// The daemon running in-process on an ephemeral port.
pub struct Daemon {
    pub addr: std::net::SocketAddr,
    pub ctx: Arc<Context>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Daemon {
    /// Binds 127.0.0.1:0 and serves `config` until dropped or [`Daemon::shutdown`].
    pub async fn start(config: Config) -> Self {
        config.validate().expect("test config is valid");
        let listener = Listener::bind(&ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("tcp");
        let ctx = Arc::new(Context::new(config));
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners {
            websocket: vec![listener],
        };
        let task = tokio::spawn(ws2fcgi::serve(listeners, ctx.clone(), async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            ctx,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// ws://addr/path
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Starts the graceful shutdown and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("serve task").expect("serve result");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects a WebSocket client (panics on failure).
pub async fn connect(url: &str) -> Client {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

/// Next data message as text, with a 10 s deadline; panics on close or timeout.
pub async fn recv_text(ws: &mut Client) -> String {
    match recv(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Next data or close message, skipping pings and pongs, with a 10 s deadline.
pub async fn recv(ws: &mut Client) -> Message {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no message within 10 s")
            .expect("stream ended")
            .expect("read error");
        match msg {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

/// Sends a text message.
pub async fn send_text(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}
