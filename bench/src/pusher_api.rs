//! A publisher through the Pusher HTTP API, signed as Pusher's server SDKs
//! sign (`ws2fcgi::pusher::api_signature::sign`: `auth_key`,
//! `auth_timestamp`, `auth_version`, `body_md5`, `auth_signature`):
//!
//! ```text
//! POST /apps/1001/events?auth_key=app-key&auth_timestamp=…&auth_version=1.0&body_md5=…&auth_signature=… HTTP/1.1
//! Content-Type: application/json
//!
//! {"name":"bench","channel":"bench","data":"t=…;s=0;q=17;the room is…"}
//! ← HTTP/1.1 200 OK … {}
//! ```
//!
//! `--window` keep-alive connections each carry one request at a time, as
//! an SDK's connection pool does; the paced schedule hands them their
//! payloads. A connection the server closes (`Connection: close`, as a
//! WebSocket listener answers) is opened again for the next request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use ws2fcgi::pusher::api_signature;

use crate::UsageError;
use crate::pace::Pacer;
use crate::payload::{self, Stamp};
use crate::publish::{Schedule, SenderStats, since};
use crate::pusher::{EVENT, PusherApp};
use crate::stats::ErrorTally;

/// Longest response head (status line and headers) we read.
const MAX_HEAD: usize = 16 * 1024;
/// Longest response body we read.
const MAX_BODY: usize = 64 * 1024;
/// A request unanswered after this long is an error, and its connection closed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the API is: `http://HOST:PORT` or `HOST:PORT`, on loopback.
///
/// ```
/// use ws2fcgi_bench::pusher_api::api_addr;
/// assert_eq!(api_addr("http://127.0.0.1:8092/").unwrap().port(), 8092);
/// assert!(api_addr("localhost:80").is_ok());
/// assert!(api_addr("http://10.0.0.1:8092").is_err());
/// assert!(api_addr("https://127.0.0.1:8092").is_err());
/// ```
pub fn api_addr(text: &str) -> Result<SocketAddr, UsageError> {
    let bad = |why: &str| UsageError(format!("--api {text}: {why}"));
    if text.starts_with("https://") {
        return Err(bad("only plain http on loopback"));
    }
    let hostport = text.strip_prefix("http://").unwrap_or(text);
    let hostport = hostport.trim_end_matches('/');
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| bad("expected HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
    let ip = crate::target::loopback_ip(host).map_err(|why| bad(&why))?;
    Ok(SocketAddr::new(ip, port))
}

/// The request line's target and the body of one event: what is signed and sent.
///
/// ```
/// use ws2fcgi_bench::pusher::PusherApp;
/// use ws2fcgi_bench::pusher_api::event_request;
/// let app: PusherApp = "1001:key:secret".parse().unwrap();
/// let (target, body) = event_request(&app, "bench", "sync", 1_700_000_000);
/// assert!(target.starts_with("/apps/1001/events?auth_key=key&auth_timestamp=1700000000&auth_version=1.0&body_md5="));
/// assert_eq!(body, r#"{"name":"bench","channel":"bench","data":"sync"}"#);
/// ```
pub fn event_request(app: &PusherApp, channel: &str, data: &str, now: u64) -> (String, String) {
    let path = format!("/apps/{}/events", app.id);
    let body = json!({"name": EVENT, "channel": channel, "data": data}).to_string();
    let query = api_signature::sign(
        &app.key,
        &app.secret,
        "POST",
        &path,
        body.as_bytes(),
        &[],
        now,
    );
    (format!("{path}?{query}"), body)
}

/// Unix seconds now (`auth_timestamp`).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One keep-alive HTTP/1.1 connection to the API.
pub struct ApiClient {
    addr: SocketAddr,
    app: Arc<PusherApp>,
    conn: Option<BufReader<TcpStream>>,
    request: Vec<u8>,
}

impl ApiClient {
    /// A client for `app` at `addr`; it connects on its first request.
    pub fn new(addr: SocketAddr, app: Arc<PusherApp>) -> Self {
        Self {
            addr,
            app,
            conn: None,
            request: Vec::new(),
        }
    }

    /// Publishes `data` on `channel`; `Err` names why it was not accepted.
    pub async fn publish(&mut self, channel: &str, data: &str) -> Result<(), String> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(channel, data)).await {
            Ok(Ok(200)) => Ok(()),
            Ok(Ok(status)) => Err(format!("HTTP {status}")),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err("no answer within 10 s".into())
            }
        }
    }

    async fn exchange(&mut self, channel: &str, data: &str) -> Result<u16, String> {
        let (target, body) = event_request(&self.app, channel, data, unix_now());
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "POST {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                self.addr,
                body.len()
            )
            .as_bytes(),
        );
        self.request.extend_from_slice(body.as_bytes());
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect(self.addr)
                    .await
                    .map_err(|e| format!("connect: {}", e.kind()))?;
                stream
                    .set_nodelay(true)
                    .map_err(|e| format!("connect: {}", e.kind()))?;
                self.conn.insert(BufReader::new(stream))
            }
        };
        conn.get_mut()
            .write_all(&self.request)
            .await
            .map_err(|e| format!("write: {}", e.kind()))?;
        let head = read_head(conn).await?;
        let status = parse_status(&head).ok_or("bad status line")?;
        let length = header(&head, "content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if length > MAX_BODY {
            return Err("response body too large".into());
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body)
            .await
            .map_err(|e| format!("read: {}", e.kind()))?;
        if header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            self.conn = None;
        }
        Ok(status)
    }
}

/// Reads a response head up to its blank line, at most [`MAX_HEAD`] bytes.
async fn read_head(conn: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = conn
            .read_until(b'\n', &mut head)
            .await
            .map_err(|e| format!("read: {}", e.kind()))?;
        if n == 0 {
            return Err("connection closed before an answer".into());
        }
        if head.len() > MAX_HEAD {
            return Err("response head too large".into());
        }
        if head[before..] == *b"\r\n" || head[before..] == *b"\n" {
            return String::from_utf8(head).map_err(|_| "response head not UTF-8".into());
        }
    }
}

/// The status code of `HTTP/1.1 200 OK`.
fn parse_status(head: &str) -> Option<u16> {
    head.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// A header's value (first one, name case-insensitive).
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Publishes per `schedule` over `window` keep-alive connections, each
/// with one request in flight.
pub async fn run(
    addr: SocketAddr,
    app: Arc<PusherApp>,
    channel: Arc<str>,
    schedule: Schedule,
    window: u32,
) -> SenderStats {
    let (tx, rx) = mpsc::channel::<String>(1);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut workers = JoinSet::new();
    for _ in 0..window.max(1) {
        let rx = Arc::clone(&rx);
        let mut client = ApiClient::new(addr, Arc::clone(&app));
        let channel = Arc::clone(&channel);
        workers.spawn(async move {
            let (mut ok, mut errors) = (0u64, ErrorTally::default());
            loop {
                let next = rx.lock().await.recv().await;
                let Some(data) = next else { break };
                match client.publish(&channel, &data).await {
                    Ok(()) => ok += 1,
                    Err(e) => errors.add(e),
                }
            }
            (ok, errors)
        });
    }
    let mut pacer = Pacer::new(schedule.rate);
    let mut sent = 0;
    let mut errors = ErrorTally::default();
    while sent < schedule.count && pacer.wait(schedule.deadline).await {
        let stamp = Stamp {
            sent_ns: since(schedule.base),
            sender: schedule.sender,
            seq: sent,
        };
        let mut data = String::new();
        payload::write(&mut data, stamp, schedule.size);
        let queued = tokio::select! {
            queued = tx.send(data) => queued.is_ok(),
            () = tokio::time::sleep_until(schedule.deadline) => break,
        };
        if !queued {
            errors.add("every API connection ended");
            break;
        }
        sent += 1;
    }
    drop(tx);
    let mut acknowledged = 0;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok((ok, worker_errors)) => {
                acknowledged += ok;
                errors.merge(worker_errors);
            }
            Err(e) => errors.add(format!("task: {e}")),
        }
    }
    SenderStats {
        sent,
        acknowledged: Some(acknowledged),
        server_delivered: None,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_verify_with_the_daemons_checker() {
        let app: PusherApp = "1001:app-key:app-secret".parse().unwrap();
        let (target, body) = event_request(&app, "bench", "t=1;s=0;q=0;", 1_700_000_000);
        let (path, query) = target.split_once('?').unwrap();
        let query = api_signature::Query::parse(query).unwrap();
        assert_eq!(
            query.get("body_md5"),
            Some(api_signature::body_md5(body.as_bytes()).as_str())
        );
        let signed = api_signature::string_to_sign("POST", path, &query.signed_part());
        let expected = ws2fcgi::pusher::auth::sign("app-secret", &signed);
        assert_eq!(query.get("auth_signature"), Some(expected.as_str()));
    }

    #[test]
    fn response_heads() {
        let head = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\nConnection: close\r\n\r\n";
        assert_eq!(parse_status(head), Some(401));
        assert_eq!(header(head, "content-length"), Some("12"));
        assert_eq!(header(head, "Connection"), Some("close"));
        assert_eq!(header(head, "x-none"), None);
        assert_eq!(parse_status("garbage"), None);
    }
}
