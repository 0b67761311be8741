//! Helpers of the cluster tests (`tests/cluster.rs`): a real redis-server on
//! a free loopback port, and ws2fcgi nodes in-process, each with its own
//! Context, WebSocket listener, control socket and node id, in front of one
//! php-fpm running `tests/php/control.php`.
//!
//! Every wait polls with a deadline; nothing sleeps for readiness.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use ws2fcgi::config::ListenAddr;
use ws2fcgi::{Config, Context, Listener, Listeners};

use crate::control_support::{Control, DEADLINE};
use crate::support::{self, Client, EventLog, Fpm};

/// The `node_ttl` of test nodes: short, so expiry is seen quickly.
pub const NODE_TTL: Duration = Duration::from_secs(2);

/// The `cluster.request_timeout` of test nodes: long, so that "answered at
/// once" (well under it) and "waited for the timeout" stay apart on a loaded
/// machine.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A redis-server of our own: no persistence, loopback only, stopped on drop.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    /// Starts redis-server on a free port and waits until it answers.
    ///
    /// The port is found by binding port 0 and letting it go, so another
    /// process may take it before redis-server binds it: then redis-server
    /// exits (or someone else answers), and the start is tried again on a
    /// new port.
    pub fn start() -> Self {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("find a free port")
                .port();
            let mut redis = Self {
                port,
                dir: tempfile::tempdir().expect("tempdir"),
                child: None,
            };
            match redis.try_launch() {
                Ok(()) => return redis,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start on any of 5 free ports; last: {last_error}");
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server (again) on its port.
    pub fn launch(&mut self) {
        if let Err(e) = self.try_launch() {
            panic!("{e}");
        }
    }

    /// Starts the server on its port and waits until it answers as itself
    /// (its INFO names our child's pid); stops it and says why otherwise.
    fn try_launch(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (install it: apt-get install -y redis-server)");
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "redis-server exited ({status}) at start on port {}: taken?",
                    self.port
                ));
            }
            match self.server_pid() {
                Some(answered) if answered == pid => return Ok(()),
                Some(other) => {
                    self.stop();
                    return Err(format!(
                        "port {} is another redis-server's (pid {other})",
                        self.port
                    ));
                }
                None => {}
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "redis-server did not answer on port {} within {DEADLINE:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The `process_id` of the redis-server answering on the port, if one does.
    fn server_pid(&self) -> Option<u32> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        stream.write_all(b"INFO server\r\n").ok()?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        // A bulk string, `$<len>\r\n<text>\r\n`: read until the line is whole.
        loop {
            let text = String::from_utf8_lossy(&reply);
            if let Some(rest) = text.split("process_id:").nth(1)
                && let Some((pid, _)) = rest.split_once("\r\n")
            {
                return pid.trim().parse().ok();
            }
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 || reply.len() > 64 * 1024 {
                return None;
            }
            reply.extend_from_slice(&chunk[..n]);
        }
    }

    /// Kills the server (no goodbye to its clients, as a crash or restart).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A connection for the test's own commands.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One ws2fcgi node, in-process.
pub struct Node {
    /// Its node id.
    pub id: String,
    /// Where it accepts WebSocket clients.
    pub addr: SocketAddr,
    pub ctx: Arc<Context>,
    /// Its control socket.
    pub control: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts node `id` on `fpm` and `redis`, and waits until it is subscribed
    /// and announced alive.
    pub async fn start(fpm: &Fpm, redis: &Redis, id: &str) -> Self {
        Self::start_with(fpm, redis, id, |_| {}).await
    }

    /// As [`Node::start`], with `tweak` applied to the node's config last
    /// (a `cluster.secret`, a shorter `request_timeout`…).
    pub async fn start_with(
        fpm: &Fpm,
        redis: &Redis,
        id: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let control = dir.path().join("control.sock");
        let mut config: Config = fpm.config("control.php");
        config.fpm.pool_size = 3;
        config.control.socket = Some(control.clone());
        config.cluster.redis = Some(redis.url());
        config.cluster.node_id = Some(id.to_owned());
        config.cluster.node_ttl = NODE_TTL;
        config.cluster.request_timeout = REQUEST_TIMEOUT;
        tweak(&mut config);
        config.validate().expect("test config is valid");
        let listener = Listener::bind(&ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("tcp");
        let control_listener = ws2fcgi::control::bind(&control, &config.control)
            .await
            .expect("bind control socket");
        let ctx = Arc::new(Context::new(config));
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners {
            websocket: vec![listener],
            control: Some(control_listener),
            ..Default::default()
        };
        let task = tokio::spawn(ws2fcgi::serve(listeners, ctx.clone(), async move {
            let _ = stopped.await;
        }));
        let node = Self {
            id: id.to_owned(),
            addr,
            ctx,
            control,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        };
        node.wait_joined(redis).await;
        node
    }

    /// Polls Redis until this node's subscriber listens and its alive key is set.
    pub async fn wait_joined(&self, redis: &Redis) {
        let mut conn = redis.conn().await;
        let channel = format!("ws2fcgi:node:{}", self.id);
        let alive = format!("ws2fcgi:node:{}:alive", self.id);
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (_, subscribers): (String, u64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn)
                .await
                .expect("PUBSUB NUMSUB");
            let announced: bool = redis::cmd("EXISTS")
                .arg(&alive)
                .query_async(&mut conn)
                .await
                .expect("EXISTS");
            if subscribers > 0 && announced {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not join the cluster within {DEADLINE:?}",
                self.id
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The WebSocket URL with the event log and `query` (`join=room&meta_user=1`).
    pub fn url(&self, log: &EventLog, query: &str) -> String {
        format!("ws://{}/?{}&{query}", self.addr, log.query())
    }

    /// Connects a client with `query` and reads its id (control.php's open answer).
    pub async fn member(&self, log: &EventLog, query: &str) -> (Client, String) {
        let mut ws = support::connect(&self.url(log, query)).await;
        let id = support::recv_text(&mut ws).await;
        let prefix = format!("{}.", self.id);
        assert!(
            id.starts_with(&prefix) && id.len() == prefix.len() + 40,
            "WS_CONNECTION_ID names its node: {id:?}"
        );
        (ws, id)
    }

    /// A new control connection.
    pub async fn control(&self) -> Control {
        Control::connect(&self.control).await
    }

    /// The graceful shutdown (the node deletes its keys), awaited.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("serve task").expect("serve result");
        }
    }

    /// A crash, as far as the cluster can tell: the serve task is dropped, so
    /// its Redis tasks stop without cleaning up and its control socket closes.
    pub async fn crash(mut self) {
        self.stop.take();
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
