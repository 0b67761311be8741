//! `fcgi`: drive PHP-FPM directly, the ceiling for everything through the bridge.
//!
//! C keep-alive FastCGI connections, one request in flight on each, every
//! request the one the daemon would send for a WebSocket event (the same CGI
//! variables, encoded by `ws2fcgi::fcgi`, names from `ws2fcgi::contract`). A
//! connection PHP-FPM closes (a worker reaching `pm.max_requests`) is reopened
//! and the request retried once; that is counted as a reconnect, not an error.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use ws2fcgi::contract as c;
use ws2fcgi::fcgi::{Record, decode, encode_request, push_param};

use crate::cli::{FcgiArgs, FcgiEvent};
use crate::stats::{ErrorTally, Latencies, LatencyBatch, LatencySummary, per_sec};
use crate::target::FpmAddr;
use crate::{Report, UsageError, take};

/// Largest answer we read; a bigger one is an error (a bench script answers briefly).
const MAX_ANSWER: usize = 1024 * 1024;
/// Pause after a failed connect, so a refusing PHP-FPM is not hammered.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// The port the CGI variables pretend the daemon listens on.
const SERVER_PORT: &str = "8090";

/// What `fcgi` measured.
#[derive(Debug, Serialize)]
struct Figures {
    requests: u64,
    requests_per_s: f64,
    elapsed_secs: f64,
    latency: LatencySummary,
    /// Failed requests by cause (HTTP status ≥ 400 included).
    errors: ErrorTally,
    /// Connections PHP-FPM closed between requests, reopened.
    reconnects: u64,
    /// Answers that carried STDERR records (PHP warnings).
    with_stderr: u64,
    /// Bytes of STDOUT per answer (headers and body) of the last answer.
    answer_bytes: usize,
}

#[derive(Default)]
struct WorkerResult {
    requests: u64,
    reconnects: u64,
    with_stderr: u64,
    answer_bytes: usize,
    errors: ErrorTally,
}

/// A connection to PHP-FPM, Unix or TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Runs `fcgi`.
pub async fn run(args: FcgiArgs) -> anyhow::Result<Report> {
    let addr = Arc::new(FpmAddr::parse(&args.fpm)?);
    if !args.script.is_absolute() {
        return Err(UsageError(format!(
            "--script {}: must be an absolute path",
            args.script.display()
        ))
        .into());
    }
    let latencies = Latencies::new();
    let used = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..args.connections {
        let worker = Worker {
            addr: Arc::clone(&addr),
            request: request(&args, i),
            deadline: start + args.duration,
            used: Arc::clone(&used),
            count: args.count,
            timeout: args.timeout,
            fresh: args.connection_per_request,
        };
        tasks.spawn(worker.run(latencies.batch()));
    }
    let mut total = WorkerResult::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(r) => {
                total.requests += r.requests;
                total.reconnects += r.reconnects;
                total.with_stderr += r.with_stderr;
                total.answer_bytes = total.answer_bytes.max(r.answer_bytes);
                total.errors.merge(r.errors);
            }
            Err(e) => total.errors.add(format!("task: {e}")),
        }
    }
    let elapsed = start.elapsed();
    let figures = Figures {
        requests: total.requests,
        requests_per_s: per_sec(total.requests, elapsed),
        elapsed_secs: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        latency: latencies.summary(),
        errors: total.errors,
        reconnects: total.reconnects,
        with_stderr: total.with_stderr,
        answer_bytes: total.answer_bytes,
    };
    let human = format!(
        "fcgi {} {}: {} connections, {} {} requests in {:.2} s = {} requests/s\n\
         latency {}\n\
         errors {}, reconnects {}, answers with stderr {}",
        args.fpm,
        args.script.display(),
        args.connections,
        figures.requests,
        format!("{:?}", args.event).to_lowercase(),
        figures.elapsed_secs,
        figures.requests_per_s,
        figures.latency.human(),
        figures.errors.human(),
        figures.reconnects,
        figures.with_stderr,
    );
    Ok(Report::new("fcgi", &args, &figures, human))
}

/// The encoded request connection `i` sends over and over.
fn request(args: &FcgiArgs, i: u64) -> Vec<u8> {
    let mut conn = Vec::with_capacity(1024);
    let mut p = |name: &str, value: &[u8]| push_param(&mut conn, name.as_bytes(), value);
    let document_root = args.script.parent().unwrap_or(Path::new("/"));
    let request_uri = if args.query.is_empty() {
        "/".to_string()
    } else {
        format!("/?{}", args.query)
    };
    p("GATEWAY_INTERFACE", b"CGI/1.1");
    p("SERVER_SOFTWARE", c::SERVER_SOFTWARE.as_bytes());
    p("SERVER_PROTOCOL", b"HTTP/1.1");
    p("SERVER_NAME", b"127.0.0.1");
    p("SERVER_PORT", SERVER_PORT.as_bytes());
    p("SERVER_ADDR", b"127.0.0.1");
    p("REMOTE_ADDR", b"127.0.0.1");
    p("REMOTE_PORT", (40000 + i % 20000).to_string().as_bytes());
    p("REQUEST_URI", request_uri.as_bytes());
    p("DOCUMENT_URI", b"/");
    p("QUERY_STRING", args.query.as_bytes());
    p(
        "SCRIPT_FILENAME",
        args.script.as_os_str().as_encoded_bytes(),
    );
    p("SCRIPT_NAME", b"/");
    p(
        "DOCUMENT_ROOT",
        document_root.as_os_str().as_encoded_bytes(),
    );
    p("REQUEST_SCHEME", b"http");
    p(c::VAR_CONNECTION_ID, format!("bench-{i}").as_bytes());
    if let Some(control) = &args.control_socket {
        p(
            c::VAR_CONTROL_SOCKET,
            control.as_os_str().as_encoded_bytes(),
        );
    }
    p("HTTP_HOST", format!("127.0.0.1:{SERVER_PORT}").as_bytes());
    p("HTTP_UPGRADE", b"websocket");
    p("HTTP_CONNECTION", b"Upgrade");
    p("HTTP_SEC_WEBSOCKET_KEY", b"dGhlIHNhbXBsZSBub25jZQ==");
    p("HTTP_SEC_WEBSOCKET_VERSION", b"13");

    let mut event = Vec::with_capacity(256);
    let mut p = |name: &str, value: &[u8]| push_param(&mut event, name.as_bytes(), value);
    let body: &[u8] = match args.event {
        FcgiEvent::Open => {
            p(c::VAR_EVENT, c::EVENT_OPEN.as_bytes());
            p("REQUEST_METHOD", b"GET");
            p("CONTENT_LENGTH", b"0");
            b""
        }
        FcgiEvent::Message => {
            p(c::VAR_EVENT, c::EVENT_MESSAGE.as_bytes());
            p("REQUEST_METHOD", b"POST");
            p(c::VAR_MESSAGE_TYPE, c::MESSAGE_TEXT.as_bytes());
            p("CONTENT_TYPE", c::CONTENT_TYPE_TEXT.as_bytes());
            p("CONTENT_LENGTH", args.body.len().to_string().as_bytes());
            args.body.as_bytes()
        }
        FcgiEvent::Close => {
            p(c::VAR_EVENT, c::EVENT_CLOSE.as_bytes());
            p("REQUEST_METHOD", b"GET");
            p("CONTENT_LENGTH", b"0");
            p(c::VAR_CLOSE_CODE, c::CLOSE_NORMAL.to_string().as_bytes());
            p(c::VAR_CLOSE_REASON, b"");
            b""
        }
    };
    let mut out = Vec::new();
    encode_request(&mut out, &[&conn, &event], body);
    out
}

struct Worker {
    addr: Arc<FpmAddr>,
    request: Vec<u8>,
    deadline: Instant,
    used: Arc<AtomicU64>,
    count: u64,
    timeout: Duration,
    /// A new connection for every request.
    fresh: bool,
}

/// PHP-FPM's answer to one request.
struct Answer {
    /// From the CGI headers (200 when absent).
    status: u16,
    stdout_len: usize,
    stderr: bool,
}

impl Worker {
    async fn run(self, mut batch: LatencyBatch) -> WorkerResult {
        let mut result = WorkerResult::default();
        let mut conn: Option<Box<dyn Io>> = None;
        let mut buf = Vec::with_capacity(16 * 1024);
        while Instant::now() < self.deadline && take(&self.used, self.count) {
            let began = Instant::now();
            let mut retried = false;
            let outcome = loop {
                let io = match &mut conn {
                    Some(io) => io,
                    None => match self.connect().await {
                        Ok(io) => conn.insert(io),
                        Err(e) => break Err(format!("connect: {}", e.kind())),
                    },
                };
                let exchange = exchange(io.as_mut(), &self.request, &mut buf);
                // `None`: closed before any byte of the answer; reconnect and retry once.
                match tokio::time::timeout(self.timeout, exchange).await {
                    Ok(Ok(None)) if !retried => {
                        retried = true;
                        result.reconnects += 1;
                        conn = None;
                    }
                    Ok(Ok(None)) => break Err("closed without answering".into()),
                    Ok(Ok(Some(answer))) => break Ok(answer),
                    Ok(Err(e)) => break Err(e),
                    Err(_) => break Err("timeout".into()),
                }
            };
            match outcome {
                Ok(answer) => {
                    result.answer_bytes = answer.stdout_len;
                    result.with_stderr += u64::from(answer.stderr);
                    if answer.status >= 400 {
                        result.errors.add(format!("HTTP {}", answer.status));
                    } else {
                        batch.record(began.elapsed());
                        result.requests += 1;
                    }
                    if self.fresh {
                        conn = None;
                    }
                }
                Err(e) => {
                    result.errors.add(e);
                    conn = None;
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
        }
        result
    }

    async fn connect(&self) -> std::io::Result<Box<dyn Io>> {
        Ok(match &*self.addr {
            FpmAddr::Unix(path) => Box::new(UnixStream::connect(path).await?),
            FpmAddr::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
        })
    }
}

/// Sends one request and reads its answer up to END_REQUEST; `None` when the
/// connection turned out closed before the answer began.
async fn exchange(
    io: &mut dyn Io,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<Option<Answer>, String> {
    if io.write_all(request).await.is_err() {
        return Ok(None);
    }
    buf.clear();
    let mut at = 0;
    let (mut stdout_len, mut stderr) = (0, false);
    let mut head = Vec::new();
    loop {
        while let Some((record, used)) = decode(&buf[at..]).map_err(|e| format!("fastcgi: {e}"))? {
            at += used;
            match record {
                Record::Stdout(bytes) => {
                    if head.len() < 1024 {
                        head.extend_from_slice(&bytes[..bytes.len().min(1024)]);
                    }
                    stdout_len += bytes.len();
                }
                Record::Stderr(_) => stderr = true,
                Record::End { .. } => {
                    return Ok(Some(Answer {
                        status: cgi_status(&head),
                        stdout_len,
                        stderr,
                    }));
                }
            }
        }
        if buf.len() >= MAX_ANSWER {
            return Err("answer too large".into());
        }
        if buf.capacity() == buf.len() {
            buf.reserve(16 * 1024);
        }
        match io.read_buf(buf).await {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) => return Err("closed mid-answer".into()),
            Ok(_) => {}
            Err(_) if buf.is_empty() => return Ok(None),
            Err(e) => return Err(format!("read: {}", e.kind())),
        }
    }
}

/// The status a CGI answer's headers give (`Status: 404 Not Found`), 200 without one.
///
/// ```
/// use ws2fcgi_bench::fcgi::cgi_status;
/// assert_eq!(cgi_status(b"Status: 404 Not Found\r\nContent-type: text/html\r\n\r\nx"), 404);
/// assert_eq!(cgi_status(b"Content-type: text/html\r\n\r\nStatus: 500"), 200);
/// ```
pub fn cgi_status(head: &[u8]) -> u16 {
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.len() > 7 && line[..7].eq_ignore_ascii_case(b"status:") {
            let value = String::from_utf8_lossy(&line[7..]);
            return value
                .split_whitespace()
                .next()
                .and_then(|code| code.parse().ok())
                .unwrap_or(200);
        }
    }
    200
}
