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
//! reused, so one php-fpm closed (`pm.max_requests`, a restart) is replaced;
//! under load a Unix-socket connection used within [`PEEK_AFTER`] is not
//! checked, and the retry below catches a closed one instead.
//! A worker reaching `pm.max_requests` shuts its side down some 25 µs after its
//! last answer (measured; much later on a loaded machine) and then reads and
//! discards whatever it is sent until the connection closes; a request
//! written before that is never run. So a request on a *reused* connection is
//! sent once more on a fresh connection when no byte came back and either
//! writing failed, or the connection closed less than [`RECYCLE_WINDOW`] after
//! its previous answer ended, or (Unix sockets) the peer was still reading
//! after it closed its side — a retiring worker, however late, never one that
//! died. In every other case — a worker killed or crashing while it runs the
//! script — the event is not sent again: PHP sees an event at most once.
//!
//! This file is the pool (slots, the idle list, connecting, retrying);
//! `conn.rs` is one FastCGI connection and a request's roundtrip on it,
//! `error.rs` the ways an event can fail.

mod conn;
mod error;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Semaphore;

use crate::config::{FpmAddr, FpmConfig};
use crate::drain;

use conn::{Conn, Progress, Stream};
pub use conn::{FpmOutput, MAX_STDERR_BYTES, RECYCLE_WINDOW};
pub use error::FpmError;

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

struct Inner {
    addr: FpmAddr,
    /// Timeouts and limits; replaced on reload (address and size are fixed).
    config: ArcSwap<FpmConfig>,
    size: usize,
    permits: Semaphore,
    idle: Arc<Mutex<Vec<Conn>>>,
    /// Requests on a fresh connection with no byte back after [`STALL_AFTER`];
    /// shared by the pools of one php-fpm ([`FpmPool::split`]).
    fresh_waiting: Arc<AtomicUsize>,
    /// The idle lists of every pool of one php-fpm, this one's included: a
    /// stalled fresh connection frees the workers any of them pins.
    all_idle: Vec<Arc<Mutex<Vec<Conn>>>>,
    /// The shutdown drain: its deadline bounds every wait and request.
    drain: drain::Clock,
    /// The recent fastest time an event held a slot, in µs (0: none yet),
    /// for the admission queue's estimate (`admission.rs`).
    fast_event_us: std::sync::atomic::AtomicU64,
}

/// Folds the time a slot was held into [`Inner::fast_event_us`] when dropped:
/// a decaying minimum, which falls at once to a faster event and otherwise
/// rises by 1/64 per event towards what events take now.
///
/// Not a mean: while a reconnect storm's handshakes keep the runtime busy,
/// an event's answer waits to be read and the time a slot is held grows
/// far past what PHP takes, exactly when every storming client is placed.
/// A mean of those times turned most of a storm away for tens of seconds
/// while the pool sat idle; the minimum is what the pool does once the
/// handshakes are parsed. A handler that really became slower is followed
/// within a few hundred events (2 ms to 50 ms: ~210).
struct EventTiming<'a> {
    fast_us: &'a std::sync::atomic::AtomicU64,
    started: Instant,
}

impl<'a> EventTiming<'a> {
    fn start(fast_us: &'a std::sync::atomic::AtomicU64) -> Self {
        Self {
            fast_us,
            started: Instant::now(),
        }
    }
}

impl Drop for EventTiming<'_> {
    fn drop(&mut self) {
        let sample = u64::try_from(self.started.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let old = self.fast_us.load(Ordering::Relaxed);
        // Racy on purpose: a lost update only delays the estimate a little.
        self.fast_us
            .store(decayed_minimum(old, sample), Ordering::Relaxed);
    }
}

/// The next decaying minimum (µs) after an event of `sample` µs; `old` 0
/// is none yet.
fn decayed_minimum(old: u64, sample: u64) -> u64 {
    if old == 0 {
        return sample.max(1);
    }
    sample.min(old + old / 64 + 1).max(1)
}

/// A pooled Unix-socket connection idle for less than this is reused without
/// the `MSG_PEEK` check (one syscall per event under load). A worker that
/// closed it meanwhile is still caught, by the retry rule: writing to a
/// closed Unix socket fails at once, and one retiring at `pm.max_requests`
/// is still reading when the request comes back unanswered, however late
/// (see the module docs). Over TCP the retry rests on [`RECYCLE_WINDOW`]
/// alone, so TCP connections are always checked; so is a connection idle
/// longer, which php-fpm may have closed for being idle.
pub const PEEK_AFTER: Duration = Duration::from_secs(1);

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
            let closed: usize = inner
                .all_idle
                .iter()
                .map(|idle| {
                    let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
                    std::mem::take(&mut *idle).len()
                })
                .sum();
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
        let mut pools = Self::split(config, &[config.pool_size], drain);
        pools.remove(0)
    }

    /// Pools of `sizes` connections each to the one php-fpm of `config`
    /// (a shard's share each, `shard/pools.rs`). They share the watch for
    /// stalled fresh connections: one waiting in php-fpm's backlog closes
    /// the idle connections of them all, as any of them may pin the worker.
    pub fn split(config: &FpmConfig, sizes: &[usize], drain: drain::Clock) -> Vec<Self> {
        let addr = config
            .address
            .clone()
            .unwrap_or_else(|| FpmAddr::Unix("/nonexistent/php-fpm.sock".into()));
        let fresh_waiting = Arc::new(AtomicUsize::new(0));
        let idles: Vec<_> = sizes
            .iter()
            .map(|&size| Arc::new(Mutex::new(Vec::with_capacity(size))))
            .collect();
        sizes
            .iter()
            .zip(&idles)
            .map(|(&size, idle)| Self {
                inner: Arc::new(Inner {
                    addr: addr.clone(),
                    config: ArcSwap::from_pointee(FpmConfig {
                        pool_size: size,
                        ..config.clone()
                    }),
                    size,
                    permits: Semaphore::new(size),
                    idle: idle.clone(),
                    fresh_waiting: fresh_waiting.clone(),
                    all_idle: idles.clone(),
                    fast_event_us: Default::default(),
                    drain: drain.clone(),
                }),
            })
            .collect()
    }

    /// Takes new timeouts and limits (a reload); the address and size stay.
    pub fn update(&self, config: &FpmConfig) {
        self.inner.config.store(Arc::new(config.clone()));
    }

    /// The address PHP-FPM is reached at.
    pub fn address(&self) -> &FpmAddr {
        &self.inner.addr
    }

    /// The recent fastest time an event held a slot (a decaying minimum),
    /// once any has run: the admission queue's time per event.
    pub fn event_time(&self) -> Option<Duration> {
        match self.inner.fast_event_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Is every slot taken now? Asked right after an event ended: its slot
    /// went straight to an event waiting for one (tokio's semaphore hands a
    /// released permit to the first waiter), whose task is woken to send
    /// its request.
    pub fn is_saturated(&self) -> bool {
        self.inner.permits.available_permits() == 0
    }

    /// Runs one request: `params` are encoded name-value pairs (in pieces), `stdin` the body.
    pub async fn call(&self, params: &[&[u8]], stdin: &[u8]) -> Result<FpmOutput, FpmError> {
        let config = self.inner.config.load();
        let _permit = self.acquire(config.queue_timeout).await?;
        let _timing = EventTiming::start(&self.inner.fast_event_us);
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
                FpmAddr::Unix(path) => Stream::unix(UnixStream::connect(path).await?),
                FpmAddr::Tcp(hostport) => {
                    let stream = TcpStream::connect(hostport.as_str()).await?;
                    stream.set_nodelay(true)?;
                    Stream::tcp(stream)
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
        Ok(Conn::new(stream))
    }

    fn take_idle(&self) -> Option<Conn> {
        let idle_timeout = self.inner.config.load().idle_timeout;
        let mut idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(conn) = idle.pop() {
            let idle_for = conn.idle_since.elapsed();
            if idle_for >= idle_timeout {
                continue;
            }
            // See PEEK_AFTER: a recent Unix-socket connection goes unchecked.
            if (conn.stream.is_unix() && idle_for < PEEK_AFTER) || !conn.stream.is_stale() {
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
    fn the_time_per_event_falls_at_once_and_rises_slowly() {
        // A storm: the first answers are read late (20 ms held), then one
        // comes in as fast as PHP is (2 ms): the estimate follows it at once.
        let mut fast = 0;
        for sample in [20_000, 25_000, 18_000, 2_000] {
            fast = decayed_minimum(fast, sample);
        }
        assert_eq!(fast, 2_000);
        // More late answers move it only 1/64 each.
        fast = decayed_minimum(fast, 20_000);
        assert_eq!(fast, 2_000 + 2_000 / 64 + 1);
        // A handler that became slower for good is followed.
        let events = (1..)
            .scan(2_000, |fast, _| {
                *fast = decayed_minimum(*fast, 50_000);
                Some(*fast)
            })
            .position(|fast| fast >= 50_000)
            .map(|n| n + 1);
        assert!(events.is_some_and(|n| n < 250), "{events:?}");
        assert_eq!(decayed_minimum(0, 0), 1, "0 means none yet, never stored");
    }

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
}
