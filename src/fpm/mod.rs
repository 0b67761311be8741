//! A pool of keep-alive FastCGI connections to PHP-FPM.
//!
//! PHP-FPM runs one request per connection at a time and every open keep-alive
//! connection pins one FPM worker, so the pool holds at most
//! `fpm.pool_size` connections (keep it ≤ `pm.max_children`). An event waits
//! for a free connection for at most `fpm.queue_timeout`, PHP gets
//! `fpm.request_timeout` to answer, idle connections are closed after
//! `fpm.idle_timeout`, and a connection PHP-FPM closed (`pm.max_requests`, a
//! restart) is noticed before reuse and replaced.
//!
//! During the shutdown drain (`drain::Clock`), an event waits for a free
//! connection until the drain's deadline instead, also one that was already
//! waiting when the drain began (it keeps its place in the queue); past the
//! deadline no event is started, and one PHP is still running is cut off.
//!
//! When `fpm.pool_size` is larger than the pool's `pm.max_children`, idle
//! keep-alive connections can pin every worker while a new connection waits
//! in php-fpm's backlog for one. So when a request on a fresh connection has
//! had no byte back for [`STALL_AFTER`], it is taken to be stuck in that
//! backlog: the idle connections are closed at once, and until it is answered
//! a connection that finishes is closed instead of pooled, freeing workers.
//!
//! A pooled connection is checked with a non-blocking `MSG_PEEK` before it is
//! reused, so one php-fpm closed (`pm.max_requests`, a restart) is replaced.
//! A worker reaching `pm.max_requests` shuts its side down some 25 µs after its
//! last answer (measured) and discards whatever it reads meanwhile; a request
//! written in that gap is never run. So a request on a *reused* connection is
//! sent once more on a fresh connection when no byte came back and either
//! writing failed, or the connection closed less than [`RECYCLE_WINDOW`] after
//! its previous answer ended. In every other case — a worker killed or
//! crashing while it runs the script — the event is not sent again: PHP sees
//! an event at most once.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Semaphore;

use crate::config::{FpmAddr, FpmConfig};
use crate::drain;
use crate::fcgi::{self, FcgiError, Record};

/// A reused connection that closes, unanswered, less than this after its
/// previous answer ended was a recycling worker discarding the request (see
/// the module docs). Far above the ~25 µs php-fpm takes, to allow for a busy
/// machine; far below the time a script runs before a worker running it dies.
pub const RECYCLE_WINDOW: Duration = Duration::from_millis(10);

/// How far a request got, for the retry rule.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// When the connection's previous answer ended.
    idle_since: Instant,
    /// Whether the request was written whole.
    written: bool,
    /// Whether any byte of an answer arrived.
    answered: bool,
}

impl Progress {
    fn new(idle_since: Instant) -> Self {
        Self {
            idle_since,
            written: false,
            answered: false,
        }
    }

    /// Did php-fpm certainly not run this request? Asked right after it failed.
    fn never_ran(&self) -> bool {
        !self.answered && (!self.written || self.idle_since.elapsed() < RECYCLE_WINDOW)
    }
}

/// First pause while no file descriptor is free for a new connection.
const DESCRIPTOR_WAIT_FIRST: Duration = Duration::from_millis(10);
/// Longest pause between those tries.
const DESCRIPTOR_WAIT_MAX: Duration = Duration::from_millis(500);

/// Did a connect fail for want of a file descriptor (the process's or the
/// system's open-files limit)? A resolver that could not open its files
/// reports the same errno.
fn out_of_descriptors(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error().map(nix::errno::Errno::from_raw),
        Some(nix::errno::Errno::EMFILE | nix::errno::Errno::ENFILE)
    )
}

/// Most of PHP's stderr kept per event for the log; the rest is counted, not kept.
pub const MAX_STDERR_BYTES: usize = 16 * 1024;

/// Why an event did not get an answer from PHP.
#[derive(Debug, thiserror::Error)]
pub enum FpmError {
    /// PHP-FPM could not be reached: not running, socket missing, refused.
    /// The request never reached PHP.
    #[error("cannot connect to php-fpm at {addr}: {source}")]
    Connect {
        /// The configured address.
        addr: String,
        /// What connect said.
        source: io::Error,
    },
    /// Every pooled connection stayed busy for `fpm.queue_timeout`.
    /// The request never reached PHP.
    #[error("no free php-fpm connection within {0:?} (all {1} busy)")]
    PoolTimeout(Duration, usize),
    /// No file descriptor came free for a new connection within
    /// `fpm.queue_timeout` (the open-files limit is reached: EMFILE, ENFILE).
    /// The request never reached PHP.
    #[error(
        "no file descriptor free for a php-fpm connection within {0:?} (open-files limit reached)"
    )]
    NoDescriptor(Duration),
    /// PHP did not answer within `fpm.request_timeout`.
    #[error("php did not answer within {0:?}")]
    Timeout(Duration),
    /// The shutdown drain's deadline passed before a free connection was
    /// found (or before the event was started). The request never reached PHP.
    #[error("the shutdown drain's deadline passed before php-fpm could take the event")]
    DrainEnded,
    /// The shutdown drain's deadline passed while PHP ran the event.
    #[error("the shutdown drain's deadline passed while php ran the event")]
    DrainEndedInPhp,
    /// PHP-FPM closed the connection before the end of its answer (worker
    /// killed, crashed, or restarted mid-request).
    #[error("php-fpm closed the connection before the end of its answer")]
    Truncated,
    /// Reading or writing the FastCGI connection failed.
    #[error("i/o error talking to php-fpm: {0}")]
    Io(#[from] io::Error),
    /// PHP-FPM answered something that is not FastCGI.
    #[error("malformed FastCGI answer: {0}")]
    Protocol(#[from] FcgiError),
    /// PHP's output is larger than the headers and body limits allow.
    #[error("php's answer exceeds {0} bytes")]
    TooLarge(usize),
}

impl FpmError {
    /// True when the request certainly never reached PHP (safe to retry later).
    pub fn never_reached_php(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::PoolTimeout(..) | Self::NoDescriptor(_) | Self::DrainEnded
        )
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::PoolTimeout(..) => "pool_timeout",
            Self::NoDescriptor(_) => "no_descriptor",
            Self::Timeout(_) => "timeout",
            Self::DrainEnded | Self::DrainEndedInPhp => "drain_timeout",
            Self::Truncated => "truncated",
            Self::Io(_) => "io",
            Self::Protocol(_) => "protocol",
            Self::TooLarge(_) => "too_large",
        }
    }
}

/// PHP's raw answer to one event.
#[derive(Debug, Default)]
pub struct FpmOutput {
    /// The CGI response: headers, blank line, body.
    pub stdout: Vec<u8>,
    /// PHP's error output, at most [`MAX_STDERR_BYTES`].
    pub stderr: Vec<u8>,
    /// Bytes of stderr beyond [`MAX_STDERR_BYTES`] that were dropped.
    pub stderr_dropped: usize,
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Has PHP-FPM closed (or written to) this idle connection?
    fn is_stale(&self) -> bool {
        use nix::sys::socket::{MsgFlags, recv};
        use std::os::fd::AsRawFd;
        let fd = match self {
            Self::Tcp(s) => s.as_raw_fd(),
            Self::Unix(s) => s.as_raw_fd(),
        };
        // Asks the kernel itself (tokio's readiness may not have seen a FIN
        // yet). Idle means nothing to read: EOF, stray bytes or an error all
        // retire the connection.
        let mut byte = [0u8; 1];
        let peek = recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT);
        !matches!(peek, Err(nix::errno::Errno::EAGAIN))
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.write_all(buf).await,
            Self::Unix(s) => s.write_all(buf).await,
        }
    }

    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read_buf(buf).await,
            Self::Unix(s) => s.read_buf(buf).await,
        }
    }
}

struct Conn {
    stream: Stream,
    /// Reused for every request on this connection: encoded request out, records in.
    out: Vec<u8>,
    input: BytesMut,
    idle_since: Instant,
}

/// Receive buffer of a pooled connection; grows only for large answers.
const READ_CHUNK: usize = 16 * 1024;

impl Conn {
    async fn roundtrip(
        &mut self,
        params: &[&[u8]],
        stdin: &[u8],
        max_stdout: usize,
        progress: &mut Progress,
        fresh: &mut FreshWait<'_>,
    ) -> Result<FpmOutput, FpmError> {
        fcgi::encode_request(&mut self.out, params, stdin);
        self.stream.write_all(&self.out).await?;
        progress.written = true;
        if self.out.capacity() > 256 * 1024 {
            // A large body passed through; don't keep its buffer forever.
            self.out = Vec::new();
        }
        self.input.clear();
        let mut output = FpmOutput::default();
        loop {
            while let Some((record, used)) = fcgi::decode(&self.input)? {
                match record {
                    Record::Stdout(data) => {
                        if output.stdout.len() + data.len() > max_stdout {
                            return Err(FpmError::TooLarge(max_stdout));
                        }
                        output.stdout.extend_from_slice(data);
                    }
                    Record::Stderr(data) => {
                        let room = MAX_STDERR_BYTES.saturating_sub(output.stderr.len());
                        let keep = room.min(data.len());
                        output.stderr.extend_from_slice(&data[..keep]);
                        output.stderr_dropped += data.len() - keep;
                    }
                    Record::End { .. } => {
                        let rest = self.input.len() - used;
                        if rest != 0 {
                            // Bytes after the end belong to no request.
                            return Err(FcgiError::TrailingBytes(rest).into());
                        }
                        self.input.clear();
                        return Ok(output);
                    }
                }
                let _ = self.input.split_to(used);
            }
            self.input.reserve(READ_CHUNK);
            let n = if fresh.watching() {
                // read_buf is cancel-safe: losing the race reads nothing.
                tokio::select! {
                    n = self.stream.read_buf(&mut self.input) => n?,
                    () = tokio::time::sleep_until(fresh.stall_at.into()) => {
                        fresh.stalled();
                        self.stream.read_buf(&mut self.input).await?
                    }
                }
            } else {
                self.stream.read_buf(&mut self.input).await?
            };
            if n == 0 {
                return Err(FpmError::Truncated);
            }
            progress.answered = true;
            fresh.done();
        }
    }
}

struct Inner {
    addr: FpmAddr,
    /// Timeouts and limits; replaced on reload (address and size are fixed).
    config: ArcSwap<FpmConfig>,
    size: usize,
    permits: Semaphore,
    idle: Mutex<Vec<Conn>>,
    /// Requests on a fresh connection with no byte back after [`STALL_AFTER`].
    fresh_waiting: AtomicUsize,
    /// The shutdown drain: its deadline bounds every wait and request.
    drain: drain::Clock,
}

/// A fresh connection with no byte back after this long is taken to be
/// waiting in php-fpm's backlog for a worker that idle connections pin.
pub const STALL_AFTER: Duration = Duration::from_millis(100);

/// Watches a request on a fresh connection until its first byte: past
/// [`STALL_AFTER`] it counts in [`Inner::fresh_waiting`] and idle connections
/// are closed to free their workers.
struct FreshWait<'a> {
    inner: Option<&'a Inner>,
    stall_at: Instant,
    counted: bool,
}

impl<'a> FreshWait<'a> {
    fn new(inner: &'a Inner) -> Self {
        Self {
            inner: Some(inner),
            stall_at: Instant::now() + STALL_AFTER,
            counted: false,
        }
    }

    fn none() -> Self {
        Self {
            inner: None,
            stall_at: Instant::now(),
            counted: false,
        }
    }

    /// Still waiting for the first byte on a fresh connection?
    fn watching(&self) -> bool {
        self.inner.is_some() && !self.counted
    }

    /// The first byte is late: count it and free the workers idle connections hold.
    fn stalled(&mut self) {
        if let Some(inner) = self.inner
            && !self.counted
        {
            self.counted = true;
            inner.fresh_waiting.fetch_add(1, Ordering::AcqRel);
            let closed = {
                let mut idle = inner.idle.lock().unwrap_or_else(|e| e.into_inner());
                std::mem::take(&mut *idle).len()
            };
            tracing::debug!(
                closed,
                "a new php-fpm connection waits for a worker; closed idle ones"
            );
        }
    }

    fn done(&mut self) {
        if let Some(inner) = self.inner.take()
            && self.counted
        {
            inner.fresh_waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for FreshWait<'_> {
    fn drop(&mut self) {
        self.done();
    }
}

/// The pool; cheap to clone, shared by every connection task.
#[derive(Clone)]
pub struct FpmPool {
    inner: Arc<Inner>,
}

impl FpmPool {
    /// A pool for `config.address`; connects lazily, on the first event.
    /// `drain` tells it when the shutdown drain begins and ends.
    ///
    /// # Panics
    /// Never: `Config::validate` guarantees the address is set; a missing one
    /// falls back to an address nothing listens on, so events fail cleanly.
    pub fn new(config: &FpmConfig, drain: drain::Clock) -> Self {
        let addr = config
            .address
            .clone()
            .unwrap_or_else(|| FpmAddr::Unix("/nonexistent/php-fpm.sock".into()));
        Self {
            inner: Arc::new(Inner {
                addr,
                config: ArcSwap::from_pointee(config.clone()),
                size: config.pool_size,
                permits: Semaphore::new(config.pool_size),
                idle: Mutex::new(Vec::with_capacity(config.pool_size)),
                fresh_waiting: AtomicUsize::new(0),
                drain,
            }),
        }
    }

    /// Takes new timeouts and limits (a reload); the address and size stay.
    pub fn update(&self, config: &FpmConfig) {
        self.inner.config.store(Arc::new(config.clone()));
    }

    /// The address PHP-FPM is reached at.
    pub fn address(&self) -> &FpmAddr {
        &self.inner.addr
    }

    /// Runs one request: `params` are encoded name-value pairs (in pieces), `stdin` the body.
    pub async fn call(&self, params: &[&[u8]], stdin: &[u8]) -> Result<FpmOutput, FpmError> {
        let config = self.inner.config.load();
        let _permit = self.acquire(config.queue_timeout).await?;
        if self.inner.drain.is_over() {
            return Err(FpmError::DrainEnded);
        }
        let max_stdout = config.max_response_header_bytes + config.max_response_body_bytes;

        let (mut conn, reused) = match self.take_idle() {
            Some(conn) => (conn, true),
            None => (self.connect().await?, false),
        };
        let mut fresh = if reused {
            FreshWait::none()
        } else {
            FreshWait::new(&self.inner)
        };
        let mut progress = Progress::new(conn.idle_since);
        let first = self
            .run_on(
                &mut conn,
                params,
                stdin,
                max_stdout,
                &mut progress,
                &mut fresh,
            )
            .await;
        drop(fresh);
        match first {
            Ok(output) => {
                self.put_idle(conn);
                Ok(output)
            }
            Err(FpmError::Io(_) | FpmError::Truncated) if reused && progress.never_ran() => {
                tracing::debug!(
                    "reused php-fpm connection closed before running the request; sending on a new one"
                );
                let mut conn = self.connect().await?;
                let mut progress = Progress::new(Instant::now());
                let mut fresh = FreshWait::new(&self.inner);
                let output = self
                    .run_on(
                        &mut conn,
                        params,
                        stdin,
                        max_stdout,
                        &mut progress,
                        &mut fresh,
                    )
                    .await?;
                drop(fresh);
                self.put_idle(conn);
                Ok(output)
            }
            Err(err) => Err(err),
        }
    }

    /// Waits for a pool slot: at most `queue_timeout`, or, once the drain
    /// has begun, until its deadline. A wait the drain overtakes goes on in
    /// its place in the queue.
    async fn acquire(
        &self,
        queue_timeout: Duration,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, FpmError> {
        let drain = &self.inner.drain;
        if drain.is_over() {
            return Err(FpmError::DrainEnded);
        }
        // Never jumps the queue: a released slot goes to a waiter first.
        if let Ok(permit) = self.inner.permits.try_acquire() {
            return Ok(permit);
        }
        let started = Instant::now();
        let busy = |waited| FpmError::PoolTimeout(waited, self.inner.size);
        let acquire = self.inner.permits.acquire();
        tokio::pin!(acquire);
        if !drain.is_draining() {
            tokio::select! {
                biased;
                permit = &mut acquire => return permit.map_err(|_| busy(started.elapsed())),
                () = tokio::time::sleep(queue_timeout) => return Err(busy(queue_timeout)),
                () = drain.began() => {}
            }
        }
        tokio::select! {
            biased;
            permit = &mut acquire => permit.map_err(|_| busy(started.elapsed())),
            () = drain.over() => Err(FpmError::DrainEnded),
        }
    }

    async fn run_on(
        &self,
        conn: &mut Conn,
        params: &[&[u8]],
        stdin: &[u8],
        max_stdout: usize,
        progress: &mut Progress,
        fresh: &mut FreshWait<'_>,
    ) -> Result<FpmOutput, FpmError> {
        let timeout = self.inner.config.load().request_timeout;
        let request = tokio::time::timeout(
            timeout,
            conn.roundtrip(params, stdin, max_stdout, progress, fresh),
        );
        // One more waiter per request (the drain's token): nothing may
        // outlive the drain's deadline, also a request started before it.
        tokio::select! {
            biased;
            answer = request => answer.map_err(|_| FpmError::Timeout(timeout))?,
            () = self.inner.drain.over() => Err(FpmError::DrainEndedInPhp),
        }
    }

    /// Opens a connection. Out of file descriptors (EMFILE, ENFILE) is
    /// transient: it waits for one, retrying with backoff, for up to
    /// `fpm.queue_timeout`, as for a free pool connection.
    async fn connect(&self) -> Result<Conn, FpmError> {
        let budget = self.inner.config.load().queue_timeout;
        let deadline = Instant::now() + budget;
        let mut pause = DESCRIPTOR_WAIT_FIRST;
        let mut waiting = false;
        loop {
            match self.connect_once().await {
                Err(FpmError::Connect { source, .. }) if out_of_descriptors(&source) => {
                    if Instant::now() + pause > deadline {
                        return Err(FpmError::NoDescriptor(budget));
                    }
                    if !waiting {
                        waiting = true;
                        tracing::warn!(error = %source, "no file descriptor free for a php-fpm connection; waiting for one");
                    }
                    // Past the drain's deadline the next connect fails at once.
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.inner.drain.over() => {}
                    }
                    pause = (pause * 2).min(DESCRIPTOR_WAIT_MAX);
                }
                other => return other,
            }
        }
    }

    async fn connect_once(&self) -> Result<Conn, FpmError> {
        let addr = &self.inner.addr;
        let fail = |source: io::Error| FpmError::Connect {
            addr: addr.to_string(),
            source,
        };
        let connecting = async {
            match addr {
                FpmAddr::Managed => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "managed php-fpm has not been started",
                )),
                FpmAddr::Unix(path) => UnixStream::connect(path).await.map(Stream::Unix),
                FpmAddr::Tcp(hostport) => {
                    let stream = TcpStream::connect(hostport.as_str()).await?;
                    stream.set_nodelay(true)?;
                    Ok(Stream::Tcp(stream))
                }
            }
        };
        let connecting = tokio::time::timeout(self.inner.config.load().connect_timeout, connecting);
        let stream = tokio::select! {
            biased;
            stream = connecting => stream
                .map_err(|_| fail(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))?
                .map_err(fail)?,
            () = self.inner.drain.over() => return Err(FpmError::DrainEnded),
        };
        Ok(Conn {
            stream,
            out: Vec::new(),
            input: BytesMut::with_capacity(READ_CHUNK),
            idle_since: Instant::now(),
        })
    }

    fn take_idle(&self) -> Option<Conn> {
        let idle_timeout = self.inner.config.load().idle_timeout;
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.idle_since.elapsed() < idle_timeout && !conn.stream.is_stale() {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, mut conn: Conn) {
        if self.inner.fresh_waiting.load(Ordering::Acquire) > 0 {
            // A request waits in php-fpm's backlog for a worker; closing this
            // connection frees the one it pins.
            tracing::debug!("closing a finished php-fpm connection: a new one waits for a worker");
            return;
        }
        conn.idle_since = Instant::now();
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.push(conn);
    }

    /// Closes connections idle for longer than `fpm.idle_timeout` or closed by PHP-FPM.
    pub fn reap_idle(&self) {
        let idle_timeout = self.inner.config.load().idle_timeout;
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|c| c.idle_since.elapsed() < idle_timeout && !c.stream.is_stale());
    }

    /// Closes every idle connection (shutdown, reload).
    pub fn close_idle(&self) {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Pooled connections now idle.
    pub fn idle_count(&self) -> usize {
        self.inner.idle.lock().map(|i| i.len()).unwrap_or(0)
    }

    /// Pool slots now taken by a running request.
    pub fn busy_count(&self) -> usize {
        self.inner.size - self.inner.permits.available_permits()
    }

    /// Can PHP-FPM be reached right now? Opens (and closes) one connection.
    pub async fn probe(&self) -> Result<(), FpmError> {
        self.connect().await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_descriptor_exhaustion_is_waited_out() {
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(
            nix::errno::Errno::EMFILE as i32
        )));
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(
            nix::errno::Errno::ENFILE as i32
        )));
        assert!(!out_of_descriptors(&io::Error::from_raw_os_error(
            nix::errno::Errno::ECONNREFUSED as i32
        )));
        assert!(!out_of_descriptors(&io::Error::other("no errno")));
        assert!(FpmError::NoDescriptor(Duration::from_secs(1)).never_reached_php());
    }

    #[test]
    fn a_failed_write_never_ran() {
        let long_ago = Instant::now() - Duration::from_secs(60);
        assert!(Progress::new(long_ago).never_ran());
    }

    #[test]
    fn a_close_right_after_the_previous_answer_is_a_recycled_worker() {
        let mut p = Progress::new(Instant::now());
        p.written = true;
        assert!(p.never_ran());
        p.answered = true;
        assert!(!p.never_ran(), "an answer means PHP ran it");
    }

    #[test]
    fn a_later_close_may_have_run_the_script() {
        let mut p = Progress::new(Instant::now() - RECYCLE_WINDOW * 2);
        p.written = true;
        assert!(!p.never_ran());
    }
}
