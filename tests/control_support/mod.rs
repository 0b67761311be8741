//! Helpers of the control-socket tests (`tests/control.rs`): a daemon with a
//! control socket in front of a real php-fpm running `tests/php/control.php`,
//! a line-protocol client for the socket, a raw HTTP/1.1 client for the HTTP
//! endpoint, and a WebSocket client that never reads.
//!
//! Every wait has a deadline; nothing sleeps to wait for readiness.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixStream};
use ws2fcgi::Config;

use crate::support::{self, Client, Daemon, EventLog, Fpm};

/// How long any single reply may take.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A connection to the control socket: request lines out, reply lines in.
pub struct Control {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Control {
    /// Connects to the control socket at `path`.
    pub async fn connect(path: &std::path::Path) -> Self {
        let stream = UnixStream::connect(path)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
        let (read, writer) = stream.into_split();
        Self {
            reader: BufReader::new(read),
            writer,
        }
    }

    /// Writes `bytes` as they are (one or many lines, or part of one).
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .await
            .expect("write to control socket");
    }

    /// Reads the next reply line, within [`DEADLINE`].
    pub async fn reply(&mut self) -> Value {
        let mut line = String::new();
        let n = tokio::time::timeout(DEADLINE, self.reader.read_line(&mut line))
            .await
            .expect("no control reply within 10 s")
            .expect("read control reply");
        assert!(n > 0, "the daemon closed the control connection");
        assert!(line.ends_with('\n'), "reply line without newline: {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?} is not JSON: {e}"))
    }

    /// Sends one request line (`request` + newline) and returns its reply.
    pub async fn call(&mut self, request: &Value) -> Value {
        let mut line = serde_json::to_vec(request).expect("encode request");
        line.push(b'\n');
        self.write_raw(&line).await;
        self.reply().await
    }

    /// As [`Control::call`], asserting `"ok":true`.
    pub async fn ok(&mut self, request: &Value) -> Value {
        let reply = self.call(request).await;
        assert_eq!(reply["ok"], true, "{request} was refused: {reply}");
        reply
    }

    /// Sends a raw line (newline added) that must be refused; returns the error text.
    pub async fn refused(&mut self, line: &[u8]) -> String {
        let mut bytes = line.to_vec();
        bytes.push(b'\n');
        self.write_raw(&bytes).await;
        let reply = self.reply().await;
        let shown = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        assert_eq!(reply["ok"], false, "{shown:?} was accepted: {reply}");
        let error = reply["error"].as_str().unwrap_or_default().to_owned();
        assert!(
            !error.is_empty(),
            "{shown:?}: refusal without an error: {reply}"
        );
        assert_eq!(
            reply.as_object().map(|o| o.len()),
            Some(2),
            "a refusal is exactly {{ok, error}}: {reply}"
        );
        error
    }

    /// Ends the request stream (shutdown of the write half) and reads
    /// whatever the daemon still sends until it closes the connection.
    pub async fn finish(mut self) -> Vec<u8> {
        self.writer
            .shutdown()
            .await
            .expect("shutdown control write half");
        let mut rest = Vec::new();
        tokio::time::timeout(DEADLINE, self.reader.read_to_end(&mut rest))
            .await
            .expect("the daemon did not close the control connection within 10 s")
            .expect("read control connection");
        rest
    }

    /// Publishes text to `channel`; returns `delivered`.
    pub async fn publish(&mut self, channel: &str, data: &str) -> u64 {
        let reply = self
            .ok(&json!({"op": "publish", "channel": channel, "data": data}))
            .await;
        reply["delivered"].as_u64().expect("delivered is a number")
    }

    /// Sends text to the connections `to` (an id or a list); returns `delivered`.
    pub async fn send(&mut self, to: Value, data: &str) -> u64 {
        let reply = self
            .ok(&json!({"op": "send", "to": to, "data": data}))
            .await;
        reply["delivered"].as_u64().expect("delivered is a number")
    }

    /// The members of `channel` as (id, meta) pairs, sorted by id.
    pub async fn presence(&mut self, channel: &str) -> Vec<(String, Value)> {
        let reply = self
            .ok(&json!({"op": "presence", "channel": channel}))
            .await;
        members(&reply["members"])
    }

    /// The `stats` reply.
    pub async fn stats(&mut self) -> Value {
        self.ok(&json!({"op": "stats"})).await
    }
}

/// A presence `members` list as (id, meta) pairs, sorted by id.
pub fn members(list: &Value) -> Vec<(String, Value)> {
    let mut members: Vec<(String, Value)> = list
        .as_array()
        .unwrap_or_else(|| panic!("members is not a list: {list}"))
        .iter()
        .map(|m| {
            (
                m["id"].as_str().expect("member id").to_owned(),
                m["meta"].clone(),
            )
        })
        .collect();
    members.sort_by(|a, b| a.0.cmp(&b.0));
    members
}

/// A deadline for polling a condition the test cannot await directly.
pub struct Deadline {
    what: String,
    at: std::time::Instant,
}

impl Deadline {
    /// A deadline [`DEADLINE`] from now for `what`.
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            at: std::time::Instant::now() + DEADLINE,
        }
    }

    /// Waits a moment before the next check; panics once the deadline passed.
    pub async fn tick(&self) {
        assert!(
            std::time::Instant::now() < self.at,
            "timed out after {DEADLINE:?} waiting for {}",
            self.what
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// php-fpm running `control.php`, and the daemon with a control socket in front of it.
pub struct Setup {
    pub daemon: Daemon,
    /// Kept running until the setup is dropped.
    _fpm: Fpm,
    pub log: EventLog,
    /// The control socket's path.
    pub control: PathBuf,
    /// The HTTP endpoint's address, when started with one.
    pub http: Option<std::net::SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// php-fpm with `children` workers; `tweak` adjusts the daemon's config.
    pub async fn start(children: usize, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::launch(children, tweak, false).await
    }

    /// As [`Setup::start`], with the HTTP endpoint on a port of 127.0.0.1.
    pub async fn start_http(children: usize, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::launch(children, tweak, true).await
    }

    async fn launch(children: usize, tweak: impl FnOnce(&mut Config), http: bool) -> Self {
        let fpm = Fpm::start(children);
        let dir = tempfile::tempdir().expect("tempdir");
        let control = dir.path().join("control.sock");
        let mut config = support::config(fpm.addr(), "control.php");
        config.control.socket = Some(control.clone());
        tweak(&mut config);
        let (listener, http) = if http {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
            let addr = listener.local_addr().expect("http addr");
            (Some(listener), Some(addr))
        } else {
            (None, None)
        };
        let daemon = Daemon::start_with(config, listener).await;
        Self {
            daemon,
            _fpm: fpm,
            log: EventLog::new(),
            control,
            http,
            _dir: dir,
        }
    }

    /// A new control connection.
    pub async fn control(&self) -> Control {
        Control::connect(&self.control).await
    }

    /// The WebSocket URL with the event log and `query` (`join=room&…`).
    pub fn url(&self, query: &str) -> String {
        let sep = if query.is_empty() { "" } else { "&" };
        self.daemon
            .url(&format!("/?{}{sep}{query}", self.log.query()))
    }

    /// Connects a client with `query` and reads its id (the open answer).
    pub async fn member(&self, query: &str) -> (Client, String) {
        let mut ws = support::connect(&self.url(query)).await;
        let id = support::recv_text(&mut ws).await;
        assert_eq!(id.len(), 40, "the open answer is the connection id: {id:?}");
        (ws, id)
    }
}

/// Asks PHP (a message to `control.php`) to call a client method; returns its
/// answer, `{"result":…}` or `{"error":…}`.
pub async fn php_call(ws: &mut Client, call: &str, args: Value) -> Value {
    let request = json!({"call": call, "args": args}).to_string();
    support::send_text(ws, &request).await;
    let answer = support::recv_text(ws).await;
    serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("answer to {request} is not JSON ({e}): {answer}"))
}

/// The next message of `ws` is the text `expected`.
pub async fn expect_text(ws: &mut Client, expected: &str, who: &str) {
    let got = support::recv_text(ws).await;
    assert_eq!(got, expected, "{who}: unexpected next message");
}

/// Proves `ws` received nothing since its last message: a marker sent to it
/// now over the control socket must be the very next message it reads.
pub async fn expect_quiet(control: &mut Control, ws: &mut Client, id: &str, who: &str) {
    let marker = format!("marker for {id}");
    assert_eq!(control.send(json!(id), &marker).await, 1, "{who} is gone");
    expect_text(ws, &marker, who).await;
}

/// A WebSocket client that completes the handshake, reads its id, and then
/// never reads again; its receive buffer is kept small so the daemon's send
/// path fills quickly.
pub struct Stalled {
    /// Held open, never read.
    pub _stream: TcpStream,
    /// The connection id.
    pub id: String,
}

impl Stalled {
    /// Connects to the daemon at `addr` with `path_and_query`.
    pub async fn connect(addr: std::net::SocketAddr, path_and_query: &str) -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut stream = socket.connect(addr).await.expect("connect");
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write handshake");
        // The response head, a byte at a time so nothing after it is consumed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = tokio::time::timeout(DEADLINE, stream.read_u8())
                .await
                .expect("no handshake response within 10 s")
                .expect("read handshake response");
            head.push(byte);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "handshake refused: {head}"
        );
        // The open answer: one unmasked text frame with the 40-byte id.
        let mut frame = [0u8; 42];
        tokio::time::timeout(DEADLINE, stream.read_exact(&mut frame))
            .await
            .expect("no id within 10 s")
            .expect("read id frame");
        assert_eq!(&frame[..2], &[0x81, 40], "a text frame of 40 bytes");
        let id = String::from_utf8(frame[2..].to_vec()).expect("ASCII id");
        Self {
            _stream: stream,
            id,
        }
    }
}

/// An HTTP response: status, head (status line and headers) and body.
pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpReply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body {:?} is not JSON: {e}", self.body))
    }

    /// Whether the head has the header line `name: value` (name case-insensitive).
    pub fn has_header(&self, name: &str, value: &str) -> bool {
        self.head.lines().skip(1).any(|line| {
            line.split_once(':')
                .is_some_and(|(n, v)| n.trim().eq_ignore_ascii_case(name) && v.trim() == value)
        })
    }
}

/// One HTTP/1.1 request (`Connection: close`) written by hand, headers and
/// body in one write.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> HttpReply {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{auth}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    http_exchange(addr, &request).await
}

/// Writes `request` (head and body, as given) in one write and reads the
/// response until the server closes the connection (10 s at most).
pub async fn http_exchange(addr: std::net::SocketAddr, request: &[u8]) -> HttpReply {
    let mut stream = TcpStream::connect(addr).await.expect("connect http");
    stream.write_all(request).await.expect("write http request");
    let mut response = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut response))
        .await
        .expect("no http response within 10 s")
        .expect("read http response");
    let text = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"));
    HttpReply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}
