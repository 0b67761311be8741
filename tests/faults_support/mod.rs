//! A deliberately broken FastCGI server: a test double for the faults a real
//! php-fpm cannot be made to produce on demand.
//!
//! It listens on a temp Unix socket, reads each request (BEGIN_REQUEST,
//! PARAMS…, STDIN… up to the empty STDIN record), and answers it with the
//! next [`Misbehaviour`] the test queued, or with a good answer when the
//! queue is empty. A good answer echoes the request's body (so a message
//! event is answered with its own text). After a well-framed answer (a good
//! one, or garbage inside proper records) the connection stays open for the
//! next request, as php-fpm keeps it with FCGI_KEEP_CONN; every other
//! misbehaviour ends the connection. The double never closes a connection
//! between requests, so each planned misbehaviour meets exactly one request.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;

/// How the double answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// A proper answer (the default): 200, the request body echoed.
    Good,
    /// A record whose version byte is 2.
    BadVersion,
    /// A STDOUT record header announcing 100 bytes, 10 of them sent, then close.
    TruncatedRecord,
    /// Half a record header, then close.
    CloseMidHeader,
    /// Close right after reading the request, without a byte.
    CloseSilently,
    /// A good STDOUT, then the END_REQUEST for request id 2.
    WrongRequestId,
    /// END_REQUEST with protocol status FCGI_OVERLOADED.
    Overloaded,
    /// END_REQUEST with a 2-byte body.
    ShortEndRequest,
    /// A PARAMS record: a type a responder never sends back.
    UnexpectedType,
    /// STDOUT records without end, until the client hangs up.
    EndlessStdout,
    /// STDERR records without end, until the client hangs up.
    EndlessStderr,
    /// Bytes that are not a CGI response (no header block).
    GarbageStdout,
    /// Reads the request, never answers, keeps the connection open.
    Silent,
    /// A good answer with one stray byte after END_REQUEST.
    StrayByteAfterEnd,
    /// A good answer, then what a php-fpm worker does once it has served
    /// `pm.max_requests` (main/fastcgi.c `fcgi_close`), 100 ms late as on a
    /// loaded machine: shuts its side down and reads and discards every byte
    /// until the client closes. A request written in between is never run.
    RetireLate,
}

/// The double; stops accepting when dropped.
pub struct BrokenFpm {
    _dir: tempfile::TempDir,
    /// Its socket.
    pub socket: PathBuf,
    plan: Arc<Mutex<VecDeque<Misbehaviour>>>,
    seen: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl BrokenFpm {
    /// Binds a temp socket and starts answering.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("broken-fpm.sock");
        let listener = UnixListener::bind(&socket).expect("bind the double's socket");
        let plan: Arc<Mutex<VecDeque<Misbehaviour>>> = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let task = tokio::spawn({
            let (plan, seen) = (plan.clone(), seen.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, plan.clone(), seen.clone()));
                }
            }
        });
        Self {
            _dir: dir,
            socket,
            plan,
            seen,
            task,
        }
    }

    /// The address to hand ws2fcgi.
    pub fn addr(&self) -> ws2fcgi::config::FpmAddr {
        ws2fcgi::config::FpmAddr::Unix(self.socket.clone())
    }

    /// Queues misbehaviours for the next requests, in order.
    pub fn plan(&self, next: &[Misbehaviour]) {
        self.plan.lock().unwrap().extend(next.iter().copied());
    }

    /// The WS_EVENT of every request read so far.
    pub fn events(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for BrokenFpm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: UnixStream,
    plan: Arc<Mutex<VecDeque<Misbehaviour>>>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    while let Some((event, body)) = read_request(&mut stream).await {
        seen.lock().unwrap().push(event.clone());
        let next = plan.lock().unwrap().pop_front();
        let answered = match next.unwrap_or(Misbehaviour::Good) {
            Misbehaviour::Good => stream.write_all(&good_answer(&event, &body)).await,
            Misbehaviour::GarbageStdout => stream.write_all(&garbage_answer()).await,
            Misbehaviour::RetireLate => {
                if stream.write_all(&good_answer(&event, &body)).await.is_ok() {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    let _ = stream.shutdown().await;
                    let mut sink = [0u8; 4096];
                    while let Ok(1..) = stream.read(&mut sink).await {}
                }
                return;
            }
            misbehaviour => {
                let _ = misbehave(&mut stream, misbehaviour, &event, &body).await;
                return;
            }
        };
        if answered.is_err() {
            return;
        }
    }
}

/// Bytes that are not a CGI response (no header block), in proper records.
fn garbage_answer() -> Vec<u8> {
    [
        record(STDOUT, 1, b"\x00\x01\x02 this is not a CGI response"),
        record(STDOUT, 1, b""),
        record(END_REQUEST, 1, &end_body(0)),
    ]
    .concat()
}

async fn misbehave(
    stream: &mut UnixStream,
    how: Misbehaviour,
    event: &str,
    body: &[u8],
) -> std::io::Result<()> {
    use Misbehaviour::*;
    let stdout = record(STDOUT, 1, b"Content-Type: text/plain\r\n\r\nbad");
    let bytes = match how {
        Good | GarbageStdout | RetireLate => unreachable!("answered in `serve`"),
        BadVersion => {
            let mut r = stdout.clone();
            r[0] = 2;
            r
        }
        TruncatedRecord => {
            let mut r = header(STDOUT, 1, 100);
            r.extend_from_slice(b"0123456789");
            r
        }
        CloseMidHeader => stdout[..4].to_vec(),
        CloseSilently => Vec::new(),
        WrongRequestId => [stdout, record(END_REQUEST, 2, &end_body(0))].concat(),
        Overloaded => record(END_REQUEST, 1, &end_body(2)),
        ShortEndRequest => record(END_REQUEST, 1, &[0, 0]),
        UnexpectedType => record(PARAMS, 1, b"\x01\x01ab"),
        StrayByteAfterEnd => [good_answer(event, body), vec![0x01]].concat(),
        EndlessStdout | EndlessStderr => {
            let kind = if how == EndlessStdout { STDOUT } else { STDERR };
            let mut first = record(kind, 1, b"Content-Type: text/plain\r\n\r\n");
            let chunk = record(kind, 1, &[b'z'; 65535]);
            loop {
                first.extend_from_slice(&chunk);
                stream.write_all(&first).await?;
                first.clear();
            }
        }
        Silent => {
            // Hold the connection until the client gives up.
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            return Ok(());
        }
    };
    stream.write_all(&bytes).await?;
    stream.flush().await
}

fn good_answer(event: &str, body: &[u8]) -> Vec<u8> {
    let text = if event == "open" {
        b"hello from the double".to_vec()
    } else {
        body.to_vec()
    };
    let mut stdout = b"Content-Type: text/plain\r\n\r\n".to_vec();
    stdout.extend_from_slice(&text);
    [
        record(STDOUT, 1, &stdout),
        record(STDOUT, 1, b""),
        record(END_REQUEST, 1, &end_body(0)),
    ]
    .concat()
}

fn header(kind: u8, id: u16, len: usize) -> Vec<u8> {
    let id = id.to_be_bytes();
    let len = (len as u16).to_be_bytes();
    vec![1, kind, id[0], id[1], len[0], len[1], 0, 0]
}

fn record(kind: u8, id: u16, content: &[u8]) -> Vec<u8> {
    [header(kind, id, content.len()), content.to_vec()].concat()
}

fn end_body(protocol_status: u8) -> [u8; 8] {
    [0, 0, 0, 0, protocol_status, 0, 0, 0]
}

/// Reads one request; returns its WS_EVENT and its STDIN, or `None` at EOF.
async fn read_request(stream: &mut UnixStream) -> Option<(String, Vec<u8>)> {
    let mut params = Vec::new();
    let mut stdin = Vec::new();
    loop {
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await.ok()?;
        let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
        let mut content = vec![0u8; len + usize::from(head[6])];
        stream.read_exact(&mut content).await.ok()?;
        content.truncate(len);
        match head[1] {
            PARAMS => params.extend_from_slice(&content),
            STDIN if len == 0 => break,
            STDIN => stdin.extend_from_slice(&content),
            _ => {}
        }
    }
    Some((param(&params, b"WS_EVENT").unwrap_or_default(), stdin))
}

/// The value of one FastCGI name-value pair.
fn param(mut pairs: &[u8], wanted: &[u8]) -> Option<String> {
    fn len(bytes: &mut &[u8]) -> Option<usize> {
        let first = *bytes.first()?;
        if first < 128 {
            *bytes = &bytes[1..];
            Some(usize::from(first))
        } else {
            let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
            *bytes = &bytes[4..];
            Some((u32::from_be_bytes(b) & 0x7fff_ffff) as usize)
        }
    }
    while !pairs.is_empty() {
        let name_len = len(&mut pairs)?;
        let value_len = len(&mut pairs)?;
        let name = pairs.get(..name_len)?;
        let value = pairs.get(name_len..name_len + value_len)?;
        if name == wanted {
            return Some(String::from_utf8_lossy(value).into_owned());
        }
        pairs = &pairs[name_len + value_len..];
    }
    None
}
