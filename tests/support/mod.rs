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
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use ws2fcgi::config::{Config, FpmAddr, ListenAddr};
use ws2fcgi::{Context, Listener, Listeners};

pub mod raw;

/// The PHP scripts the tests run, `tests/php/`.
pub fn php_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/php")
}

/// A script in `tests/php/`.
pub fn script(name: &str) -> PathBuf {
    php_dir().join(name)
}

/// The php-fpm binary: `$PHP_FPM`, else what the daemon's managed mode would use.
pub fn php_fpm_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("PHP_FPM") {
        return bin.into();
    }
    ws2fcgi::managed::find_php_fpm()
        .expect("php-fpm not found: install it (scripts/test does) or set PHP_FPM")
}

/// A real php-fpm master with a static pool, on a temp Unix socket.
pub struct Fpm {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Option<Child>,
    conf: PathBuf,
    /// pm.max_children.
    children: usize,
}

impl Fpm {
    /// Starts php-fpm with `children` workers and waits until its socket accepts.
    pub fn start(children: usize) -> Self {
        Self::start_with(children, "")
    }

    /// As [`Fpm::start`], with extra pool settings (e.g. `pm.max_requests = 5`).
    pub fn start_with(children: usize, extra_pool: &str) -> Self {
        let mut fpm = Self::configure(children, extra_pool);
        fpm.launch();
        fpm
    }

    /// Writes the configuration but starts nothing: [`Fpm::addr`] is known,
    /// nothing listens on it until [`Fpm::launch`].
    pub fn configure(children: usize, extra_pool: &str) -> Self {
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
        Self {
            dir,
            socket,
            child: None,
            conf,
            children,
        }
    }

    /// Starts php-fpm (again) on its socket and waits until the socket accepts.
    pub fn launch(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let mut cmd = Command::new(php_fpm_binary());
        cmd.arg("--nodaemonize").arg("--fpm-config").arg(&self.conf);
        if is_root() {
            cmd.arg("--allow-to-run-as-root");
        }
        // With clear_env = no the workers' environment shows in $_SERVER;
        // keep a proxy setting of the test runner from posing as a header.
        cmd.env_remove("HTTP_PROXY");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start php-fpm");
        self.child = Some(child);
        wait_for_unix(&self.socket);
    }

    /// A test config (see [`config`]) for `script_name` on this php-fpm, with
    /// one pooled FastCGI connection per worker: each idle keep-alive
    /// connection pins a worker, so a larger pool leaves requests waiting
    /// behind idle connections.
    pub fn config(&self, script_name: &str) -> Config {
        let mut config = config(self.addr(), script_name);
        config.fpm.pool_size = self.children;
        config
    }

    /// The address to hand ws2fcgi.
    pub fn addr(&self) -> FpmAddr {
        FpmAddr::Unix(self.socket.clone())
    }

    /// Stops php-fpm: SIGTERM to the master (it ends its workers), SIGKILL after 5 s.
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
        self.launch();
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

/// Polls until a Unix socket accepts, for up to 30 s (php-fpm starts in
/// well under a second, but a loaded machine can be slow).
pub fn wait_for_unix(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} did not start accepting within 30 s", path.display());
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
    config.runtime = runtime_under_test();
    config
}

/// The runtime the tests run the daemon with: `WS2FCGI_RUNTIME` (as the
/// binary reads it), `shared` when unset; `scripts/test` runs the suites
/// in both.
pub fn runtime_under_test() -> ws2fcgi::config::RuntimeKind {
    use clap::ValueEnum as _;
    std::env::var("WS2FCGI_RUNTIME")
        .ok()
        .and_then(|v| ws2fcgi::config::RuntimeKind::from_str(&v, true).ok())
        .unwrap_or_default()
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
        Self::launch(config, None, None).await
    }

    /// Serves `config` on 127.0.0.1:0, its control socket when configured, and
    /// the given HTTP control and admin listeners.
    async fn launch(
        config: Config,
        http_control: Option<tokio::net::TcpListener>,
        admin: Option<tokio::net::TcpListener>,
    ) -> Self {
        config.validate().expect("test config is valid");
        let any_port = "127.0.0.1:0".parse().unwrap();
        let address = if config.has_tls_listener() {
            ListenAddr::Tls(any_port)
        } else {
            ListenAddr::Tcp(any_port)
        };
        let listener = Listener::bind(&address).await.expect("bind");
        let addr = listener.local_addr().expect("tcp");
        let control = match &config.control.socket {
            Some(path) => Some(
                ws2fcgi::control::bind(path, &config.control)
                    .await
                    .expect("bind control socket"),
            ),
            None => None,
        };
        let ctx = Arc::new(Context::new(config));
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners {
            websocket: vec![listener],
            control,
            http_control,
            admin,
            pusher_api: None,
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

/// Connects as a well-behaved client does when the server is busy: a 503
/// with `Retry-After` (the admission queue is full, issue 15) is retried
/// after the seconds it names, for up to a minute; any other failure panics.
/// For tests whose subject is not admission but that open many clients at
/// once, which a loaded machine's slow PHP can turn into a full queue.
pub async fn connect_retrying_when_busy(url: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio_tungstenite::connect_async(url).await {
            Ok((client, _)) => return client,
            Err(WsError::Http(response))
                if response.status() == 503 && Instant::now() < deadline =>
            {
                let secs = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .expect("a 503 from the admission queue names its Retry-After");
                tokio::time::sleep(Duration::from_secs(secs.min(5))).await;
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
}

/// Connects with a handshake request of the test's making (extra headers,
/// subprotocols); returns the client and the server's 101 response.
pub async fn connect_with(request: http::Request<()>) -> (Client, Response) {
    tokio_tungstenite::connect_async(request)
        .await
        .expect("connect")
}

/// A handshake request for `url` with the given extra headers.
pub fn request(url: &str, headers: &[(&str, &str)]) -> http::Request<()> {
    let mut request = url.into_client_request().expect("valid ws:// url");
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            http::HeaderValue::from_str(value).expect("header value"),
        );
    }
    request
}

/// Attempts a handshake the server must refuse; returns its HTTP answer
/// (status, headers, body). Panics if the handshake succeeds.
pub async fn refused(request: http::Request<()>) -> http::Response<Option<Vec<u8>>> {
    match tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("no answer to the handshake within 10 s")
    {
        Err(WsError::Http(response)) => *response,
        Err(other) => panic!("expected an HTTP refusal, got error {other}"),
        Ok((_, response)) => panic!("expected a refusal, got {}", response.status()),
    }
}

/// The client's local port (REMOTE_PORT as the daemon sees it).
pub fn local_port(ws: &Client) -> u16 {
    match ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("local addr").port(),
        _ => unreachable!("tests connect over plain TCP"),
    }
}

/// Next data message as text, with a 10 s deadline; panics on close or timeout.
pub async fn recv_text(ws: &mut Client) -> String {
    match recv(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {}", describe(&other)),
    }
}

/// Reads text messages on a task until one is `end`; the task returns `id`
/// with the texts before it, in the order they came.
#[allow(dead_code)]
pub fn read_until_end<I: Send + 'static>(
    ws: Client,
    id: I,
) -> tokio::task::JoinHandle<(I, Vec<String>)> {
    read_until_end_counting(ws, id, Arc::default())
}

/// [`read_until_end`], adding one to `count` for each text read, so that a
/// test can watch the readers' progress while they run.
#[allow(dead_code)]
pub fn read_until_end_counting<I: Send + 'static>(
    mut ws: Client,
    id: I,
    count: Arc<std::sync::atomic::AtomicUsize>,
) -> tokio::task::JoinHandle<(I, Vec<String>)> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let text = recv_text(&mut ws).await;
            if text == "end" {
                return (id, got);
            }
            got.push(text);
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    })
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

/// Next data message as bytes, which must be a binary message.
pub async fn recv_binary(ws: &mut Client) -> Vec<u8> {
    match recv(ws).await {
        Message::Binary(b) => b.to_vec(),
        other => panic!("expected binary, got {}", describe(&other)),
    }
}

/// A message for an assertion failure, without megabytes of payload.
pub fn describe(msg: &Message) -> String {
    match msg {
        Message::Text(t) if t.len() > 200 => format!("Text({} bytes)", t.len()),
        Message::Binary(b) if b.len() > 200 => format!("Binary({} bytes)", b.len()),
        other => format!("{other:?}"),
    }
}

/// Waits for the server's close frame, which must be the next message, lets
/// the client's reply go out, and waits for the server to end the
/// connection. Returns the server's close frame.
pub async fn recv_close(ws: &mut Client) -> Option<CloseFrame> {
    let frame = match recv(ws).await {
        Message::Close(frame) => frame,
        other => panic!("expected a close frame, got {}", describe(&other)),
    };
    drain(ws).await;
    frame
}

/// Closes the client with `code` and `reason` and waits until the server has
/// answered and ended the connection; returns the server's close frame.
pub async fn close_with(mut ws: Client, code: u16, reason: &str) -> Option<CloseFrame> {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    ws.close(Some(frame)).await.expect("send close");
    let mut reply = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next())
            .await
            .expect("server did not end the connection within 10 s")
        {
            Some(Ok(Message::Close(frame))) => reply = frame,
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return reply,
        }
    }
}

/// Closes the client normally (1000) and waits for the server to end the connection.
pub async fn close(ws: Client) {
    close_with(ws, 1000, "").await;
}

/// Reads until the stream ends (after a close handshake), within 10 s.
async fn drain(ws: &mut Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next())
            .await
            .expect("server did not end the connection within 10 s")
        {
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return,
        }
    }
}

/// Polls `check` every 20 ms until it yields a value, for up to `limit`;
/// panics naming `what` when the deadline passes.
pub async fn poll_until<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A JSON-lines file the test scripts append every event to (`record.php`),
/// named by the `log` query parameter of the WebSocket URL. It shows what PHP
/// saw on events whose answer never reaches the client, like close.
///
/// Tests poll it (for a close event, a message PHP ran), so it reads
/// incrementally: each call reads only what was appended since the last
/// one and parses only the new complete lines.
pub struct EventLog {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    /// The complete lines read so far, and where the next read starts.
    read: std::sync::Mutex<ReadSoFar>,
}

/// What an [`EventLog`] has read of its file.
#[derive(Default)]
struct ReadSoFar {
    /// Bytes of complete lines consumed: the next read starts here, at the
    /// start of a line (one half written is read again once it is whole).
    offset: u64,
    /// Lines consumed, for the line numbers of error messages.
    lines: usize,
    /// Their records, in file order.
    events: Vec<serde_json::Value>,
}

impl EventLog {
    /// A new, empty log in its own temp directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        Self {
            _dir: dir,
            path,
            read: Default::default(),
        }
    }

    /// `log=<path>`, percent-encoded, for a WebSocket URL's query string.
    pub fn query(&self) -> String {
        format!("log={}", percent_encode(&self.path.to_string_lossy()))
    }

    /// Every event recorded so far: the complete lines of the file.
    ///
    /// PHP appends each line with one `write` while the test reads, and a
    /// reader can see a line half written (the kernel publishes a write to
    /// readers page by page). A last line without its newline is therefore
    /// not a record yet and is left for a later call; a complete line that
    /// is not JSON is a real error and panics, naming the line.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.read_new().events.clone()
    }

    /// The close events of connection `id` recorded so far.
    pub fn closes_of(&self, id: &str) -> Vec<serde_json::Value> {
        self.read_new()
            .events
            .iter()
            .filter(|e| e["WS_EVENT"] == "close" && e["WS_CONNECTION_ID"] == id)
            .cloned()
            .collect()
    }

    /// Waits (10 s at most) until connection `id`'s close event is recorded; returns it.
    pub async fn close_of(&self, id: &str) -> serde_json::Value {
        poll_until(
            Duration::from_secs(10),
            &format!("the close event of {id}"),
            || self.closes_of(id).into_iter().next(),
        )
        .await
    }

    /// Reads what was appended since the last call and parses its complete
    /// lines; returns everything read so far.
    fn read_new(&self) -> std::sync::MutexGuard<'_, ReadSoFar> {
        use std::io::{Read, Seek, SeekFrom};
        let mut so_far = self.read.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return so_far,
            Err(e) => panic!("open {}: {e}", self.path.display()),
        };
        let mut appended = Vec::new();
        file.seek(SeekFrom::Start(so_far.offset))
            .and_then(|_| file.read_to_end(&mut appended))
            .unwrap_or_else(|e| panic!("read {}: {e}", self.path.display()));
        let Some(end) = appended.iter().rposition(|&b| b == b'\n') else {
            return so_far;
        };
        let complete = &appended[..=end];
        let first_line = so_far.lines + 1;
        let records = json_lines(complete, first_line, &self.path.display().to_string());
        so_far.offset += complete.len() as u64;
        so_far.lines += complete.iter().filter(|&&b| b == b'\n').count();
        so_far.events.extend(records);
        so_far
    }
}

/// The JSON values of `complete`, whole lines each ending in a newline, the
/// first of them line `first_line` of `what`; empty lines are skipped, a
/// line that is not JSON panics, naming `what` and its line number.
fn json_lines(complete: &[u8], first_line: usize, what: &str) -> Vec<serde_json::Value> {
    complete
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!(
                    "{what} line {}: not a JSON record ({e}): {}",
                    first_line + i,
                    String::from_utf8_lossy(&line[..line.len().min(200)])
                )
            })
        })
        .collect()
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

/// Percent-encodes everything but unreserved characters and '/'.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The real `ws2fcgi` binary as a child process, killed on drop.
pub struct Process {
    child: Child,
    /// Where it accepts WebSocket clients (read from its log).
    pub addr: std::net::SocketAddr,
    /// Its stderr so far, collected by a thread so the pipe never fills.
    stderr: Arc<std::sync::Mutex<String>>,
    /// Addresses it logs as accepting WebSocket clients on.
    found: std::sync::mpsc::Receiver<std::net::SocketAddr>,
    /// Set when its stderr reached EOF: every line is in `stderr`.
    stderr_done: Arc<std::sync::atomic::AtomicBool>,
}

impl Process {
    /// Starts the binary with `args` (which must make it listen on 127.0.0.1:0)
    /// and waits, 10 s at most, for the log line naming its address.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Self {
        let mut process = Self::spawn(args, |_| {});
        process.wait_listening();
        process
    }

    /// As [`Process::start`], with an open-files limit (soft and hard) of
    /// `open_files`, set by prlimit(1), which then executes the binary (so
    /// [`Process::pid`] is the daemon's).
    pub fn start_with_open_files<S: AsRef<std::ffi::OsStr>>(open_files: u64, args: &[S]) -> Self {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={open_files}:{open_files}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_ws2fcgi"))
            .args(args);
        let mut process = Self::launch(command, |_| {});
        process.wait_listening();
        process
    }

    /// Starts the binary with `args`, after `configure` had its say on the
    /// command (environment, …); returns at once, without waiting for it
    /// to listen ([`Process::wait_listening`]).
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        args: &[S],
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ws2fcgi"));
        command.args(args);
        Self::launch(command, configure)
    }

    /// Runs `command` with the test environment (then `configure`), its
    /// stderr collected; does not wait.
    pub fn launch(mut command: Command, configure: impl FnOnce(&mut Command)) -> Self {
        use std::io::BufRead;
        command
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().expect("start ws2fcgi");
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let (found_tx, found) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("piped stderr");
        let collected = stderr.clone();
        let stderr_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = stderr_done.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = listening_address(&line) {
                    let _ = found_tx.send(addr);
                }
                let mut all = collected.lock().unwrap_or_else(|e| e.into_inner());
                all.push_str(&line);
                all.push('\n');
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        Self {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            stderr,
            stderr_done,
            found,
        }
    }

    /// Waits, 10 s at most, for the log line naming its address; sets [`Process::addr`].
    pub fn wait_listening(&mut self) {
        match self.found.recv_timeout(Duration::from_secs(10)) {
            Ok(addr) => self.addr = addr,
            Err(_) => panic!(
                "ws2fcgi logged no listening address within 10 s; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// Waits, 10 s at most, until it logs its address (`Ok`, sets
    /// [`Process::addr`]) or exits (`Err` with its status).
    pub fn listening_or_exit(&mut self) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(addr) = self.found.recv_timeout(Duration::from_millis(20)) {
                self.addr = addr;
                return Ok(());
            }
            if let Some(status) = self.try_wait() {
                return Err(status);
            }
            assert!(
                Instant::now() < deadline,
                "ws2fcgi neither listened nor exited within 10 s; stderr:\n{}",
                self.stderr()
            );
        }
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// ws://addr/path
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, polling for up to `limit`, then (5 s
    /// at most) for the last of its stderr, so [`Process::stderr`] has every
    /// line. (A child it leaves behind may hold the pipe open longer.)
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        let status = poll_until(limit, "ws2fcgi to exit", || {
            child.try_wait().expect("try_wait")
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.stderr_done.load(std::sync::atomic::Ordering::Acquire)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        status
    }

    /// File descriptors the process holds now (entries of /proc/PID/fd).
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    /// The `address=` of the first log line containing `what` (e.g. "serving
    /// /healthz"), waiting 10 s at most for it.
    pub async fn logged_address(&self, what: &str) -> std::net::SocketAddr {
        poll_until(Duration::from_secs(10), what, || {
            let log = strip_ansi(&self.stderr());
            let line = log.lines().find(|l| l.contains(what))?;
            let rest = &line[line.find("address=")? + "address=".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .await
    }

    /// Waits (10 s at most) until its log contains `what`; returns the log.
    ///
    /// A thread collects its stderr through a pipe, so a line the daemon
    /// wrote before something the test saw (an answer, a metric) can still
    /// be on its way: a running daemon's log is polled, not read once.
    pub async fn logged(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.stderr();
            if log.contains(what) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{what:?} not logged within 10 s:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything it logged so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in `accepting WebSocket clients address=127.0.0.1:PORT`
/// (or `tls://127.0.0.1:PORT`; human log format, ANSI colours tolerated).
fn listening_address(line: &str) -> Option<std::net::SocketAddr> {
    if !line.contains("accepting WebSocket clients") {
        return None;
    }
    let plain = strip_ansi(line);
    let rest = &plain[plain.find("address=")? + "address=".len()..];
    let rest = rest.strip_prefix("tls://").unwrap_or(rest);
    rest.split_whitespace().next()?.parse().ok()
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Daemon {
    /// As [`Daemon::start`], also serving the HTTP control endpoint on
    /// `http_control` (a listener the test bound, e.g. on 127.0.0.1:0).
    pub async fn start_with(config: Config, http_control: Option<tokio::net::TcpListener>) -> Self {
        Self::launch(config, http_control, None).await
    }
}

impl Daemon {
    /// As [`Daemon::start`], also serving the admin listener (`/healthz`,
    /// `/metrics`) on 127.0.0.1:0; returns the daemon and the admin address.
    pub async fn start_with_admin(config: Config) -> (Self, std::net::SocketAddr) {
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind admin");
        let admin_addr = admin.local_addr().expect("admin addr");
        (Self::launch(config, None, Some(admin)).await, admin_addr)
    }

    /// The metrics as `/metrics` renders them.
    pub fn metrics(&self) -> String {
        self.ctx.metrics.render(&self.ctx.snapshot())
    }
}

/// The value of one sample line (`name{labels} value`) of a Prometheus text
/// exposition; 0 when the series is absent (a counter never incremented).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("a number"))
        })
        .unwrap_or(0.0)
}

/// A plain HTTP/1.1 GET with `Connection: close`, within 10 s; returns the
/// status, the raw head (lower-cased) and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.expect("send");
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.expect("read");
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("HTTP answer within 10 s");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    (status, head.to_ascii_lowercase(), body.to_owned())
}
