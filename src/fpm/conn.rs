//! One keep-alive FastCGI connection to PHP-FPM: its socket, one request's
//! roundtrip (encode, write, read records until the end), PHP's raw answer,
//! and how far a failed request got, which decides whether the pool may
//! send it again (see the `fpm` module docs).

use std::io;
use std::time::{Duration, Instant};

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv, send};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{FpmError, FreshWait};
use crate::fcgi::{self, FcgiError, Record};

/// A reused connection that closes, unanswered, less than this after its
/// previous answer ended was a recycling worker discarding the request (see
/// the `fpm` module docs). Far above the ~25 µs php-fpm takes, to allow for a busy
/// machine; far below the time a script runs before a worker running it dies.
pub const RECYCLE_WINDOW: Duration = Duration::from_millis(10);

/// How far a request got, for the retry rule.
#[derive(Debug, Clone, Copy)]
pub(super) struct Progress {
    /// When the connection's previous answer ended.
    idle_since: Instant,
    /// Whether the request was written whole.
    written: bool,
    /// Whether any byte of an answer arrived.
    answered: bool,
    /// Whether, after the connection ended unanswered, its peer was still
    /// reading what it was sent: a worker retiring, never one that died
    /// ([`Stream::peer_discarding`]).
    discarding: bool,
}

impl Progress {
    pub(super) fn new(idle_since: Instant) -> Self {
        Self {
            idle_since,
            written: false,
            answered: false,
            discarding: false,
        }
    }

    /// Did php-fpm certainly not run this request? Asked right after it failed.
    pub(super) fn never_ran(&self) -> bool {
        !self.answered
            && (!self.written || self.discarding || self.idle_since.elapsed() < RECYCLE_WINDOW)
    }
}

/// Most of PHP's stderr kept per event for the log; the rest is counted, not kept.
pub const MAX_STDERR_BYTES: usize = 16 * 1024;

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

/// The socket itself, taken out of tokio's own stream types so that it can be
/// registered for readability only (see [`Stream`]).
pub(super) enum Socket {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(s) => s.as_fd(),
            Self::Unix(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// An owned descriptor: a [`Socket`], or a duplicate of one.
trait Owned: AsRawFd {}
impl Owned for Socket {}
impl Owned for OwnedFd {}

/// Registers `owned` with the runtime for `interest` alone.
///
/// tokio's only way to choose the interest is `AsyncFd`, whose registration
/// is `unsafe` since 1.54 because it cannot know that the descriptor stays
/// open and the same while registered (I/O safety).
// One of lib.rs's audited exceptions to `deny(unsafe_code)`.
#[allow(unsafe_code)]
fn register<T: Owned>(owned: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    // SAFETY: `T` is a `Socket` or an `OwnedFd`: each owns its descriptor,
    // which stays open and the same for as long as the value lives, and the
    // `AsyncFd` owns the value until it is dropped.
    unsafe { AsyncFd::register_with_interest(owned, interest) }.map_err(io::Error::from)
}

/// One connection's socket, registered with the runtime for **readability
/// only**.
///
/// tokio's `UnixStream` registers for reading and writing, edge-triggered.
/// On a Unix socket the kernel signals "writable" every time the peer reads
/// (`unix_write_space`): php-fpm reading each request woke the daemon's
/// idle worker thread for nothing, one extra `epoll_wait` and context
/// switch per event (docs/performance.md, "Echo: cost per round trip").
/// A request almost always fits the socket's send buffer and goes out in
/// one `send`; only when it does not is a duplicate of the descriptor
/// registered for writability, for the rest of that request.
pub(super) struct Stream {
    io: AsyncFd<Socket>,
}

impl Stream {
    pub(super) fn unix(stream: tokio::net::UnixStream) -> io::Result<Self> {
        Self::register(Socket::Unix(stream.into_std()?))
    }

    pub(super) fn tcp(stream: tokio::net::TcpStream) -> io::Result<Self> {
        Self::register(Socket::Tcp(stream.into_std()?))
    }

    fn register(socket: Socket) -> io::Result<Self> {
        Ok(Self {
            io: register(socket, Interest::READABLE)?,
        })
    }

    fn fd(&self) -> RawFd {
        self.io.get_ref().as_raw_fd()
    }

    /// Over a Unix socket: see [`Stream::peer_discarding`].
    pub(super) fn is_unix(&self) -> bool {
        matches!(self.io.get_ref(), Socket::Unix(_))
    }

    /// Has PHP-FPM closed (or written to) this idle connection?
    pub(super) fn is_stale(&self) -> bool {
        // Asks the kernel itself (the runtime's readiness may not have seen a
        // FIN yet). Idle means nothing to read: EOF, stray bytes or an error
        // all retire the connection.
        let mut byte = [0u8; 1];
        let peek = recv(
            self.fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        );
        !matches!(peek, Err(Errno::EAGAIN))
    }

    /// The connection ended without a byte of answer: is its peer still
    /// reading? A php-fpm worker retiring at `pm.max_requests` shuts its side
    /// down and then reads and discards whatever it is sent until the
    /// connection closes (`fcgi_close` in main/fastcgi.c), however late it
    /// got there; a worker that died (killed, crashed) cannot read, and on a
    /// Unix socket a send to a closed peer fails at once with `EPIPE`. The
    /// probe is an empty `FCGI_GET_VALUES`, harmless to any FastCGI server.
    /// Over TCP a send to a closed peer succeeds locally (the reset comes
    /// later), so there this tells nothing and the clock rule alone decides.
    fn peer_discarding(&self) -> bool {
        const PROBE: [u8; 8] = [1, fcgi::GET_VALUES, 0, 0, 0, 0, 0, 0];
        if !self.is_unix() {
            return false;
        }
        let sent = send(
            self.fd(),
            &PROBE,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        );
        matches!(sent, Ok(_) | Err(Errno::EAGAIN))
    }

    /// Writes all of `buf`: at once when the send buffer has room, the usual
    /// case; else waiting for room on a duplicate registered for writing.
    async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        let mut writable: Option<AsyncFd<OwnedFd>> = None;
        while !buf.is_empty() {
            match send(
                self.fd(),
                buf,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    if writable.is_none() {
                        let dup = self.io.get_ref().as_fd().try_clone_to_owned()?;
                        writable = Some(register(dup, Interest::WRITABLE)?);
                    }
                    if let Some(fd) = &writable {
                        // Cleared so the next wait is for new room.
                        fd.writable().await?.clear_ready();
                    }
                }
                Err(errno) => return Err(errno.into()),
            }
        }
        Ok(())
    }

    /// Reads into `buf`; 0 is the end of the stream.
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.io.readable().await?;
            match ready.try_io(|io| {
                recv(io.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    if n > 0 && n < buf.len() {
                        // The queue was drained: the next read waits for
                        // new data instead of trying and failing (as tokio's
                        // own streams do).
                        ready.clear_ready();
                    }
                    return Ok(n);
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                // Would block: readiness cleared, wait for the next edge.
                Err(_) => {}
            }
        }
    }
}

pub(super) struct Conn {
    pub(super) stream: Stream,
    /// Reused for every request on this connection: encoded request out, records in.
    pub(super) out: Vec<u8>,
    /// The receive buffer, all of it initialised: records are read into
    /// its free end and decoded from its front.
    pub(super) input: Vec<u8>,
    pub(super) idle_since: Instant,
}

/// Receive buffer of a pooled connection; grows only for records larger
/// than it (at most one record, 64 KiB and a header), and shrinks back after.
pub(super) const READ_CHUNK: usize = 16 * 1024;

impl Conn {
    pub(super) fn new(stream: Stream) -> Self {
        Self {
            stream,
            out: Vec::new(),
            input: vec![0; READ_CHUNK],
            idle_since: Instant::now(),
        }
    }

    pub(super) async fn roundtrip(
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
        if self.input.len() != READ_CHUNK {
            // A large record passed through last time.
            self.input = vec![0; READ_CHUNK];
        }
        // input[..filled] holds bytes read and not yet decoded.
        let mut filled = 0;
        let mut output = FpmOutput::default();
        loop {
            let mut at = 0;
            while let Some((record, used)) = fcgi::decode(&self.input[at..filled])? {
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
                        let rest = filled - at - used;
                        if rest != 0 {
                            // Bytes after the end belong to no request.
                            return Err(FcgiError::TrailingBytes(rest).into());
                        }
                        return Ok(output);
                    }
                }
                at += used;
            }
            // An incomplete record stays, moved to the front.
            self.input.copy_within(at..filled, 0);
            filled -= at;
            if filled == self.input.len() {
                // A record larger than the buffer: make room for all of it.
                self.input.resize(self.input.len() * 2, 0);
            }
            let free = &mut self.input[filled..];
            let n = if fresh.watching() {
                // `read` is cancel-safe: losing the race reads nothing.
                tokio::select! {
                    n = self.stream.read(free) => n?,
                    () = tokio::time::sleep_until(fresh.stall_at.into()) => {
                        fresh.stalled();
                        self.stream.read(free).await?
                    }
                }
            } else {
                self.stream.read(free).await?
            };
            if n == 0 {
                if !progress.answered {
                    progress.discarding = self.stream.peer_discarding();
                }
                return Err(FpmError::Truncated);
            }
            filled += n;
            progress.answered = true;
            fresh.done();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request larger than the socket's send buffer waits for room on the
    /// writable duplicate, and every byte arrives in order.
    #[tokio::test]
    async fn a_request_larger_than_the_send_buffer_goes_out_whole() {
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        let stream = Stream::unix(ours).unwrap();
        let sent: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            // Let the writer fill the buffer and wait first.
            tokio::task::yield_now().await;
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.map(|_| got)
        });
        tokio::time::timeout(Duration::from_secs(30), stream.write_all(&sent))
            .await
            .expect("the writer never got room again")
            .unwrap();
        drop(stream);
        let got = reader.await.unwrap().unwrap();
        assert!(got == sent, "{} bytes arrived of {}", got.len(), sent.len());
    }

    /// A short read clears readiness; data that comes later still wakes
    /// the next read.
    #[tokio::test]
    async fn a_read_after_a_short_read_waits_for_new_data() {
        use tokio::io::AsyncWriteExt;
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        let stream = Stream::unix(ours).unwrap();
        let mut buf = [0u8; 64];
        theirs.write_all(b"first").await.unwrap();
        assert_eq!(stream.read(&mut buf).await.unwrap(), 5);
        let later = tokio::spawn(async move {
            tokio::task::yield_now().await;
            theirs.write_all(b"second").await.unwrap();
            theirs
        });
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the second write never woke the read")
            .unwrap();
        assert_eq!(&buf[..n], b"second");
        drop(later.await.unwrap());
        assert_eq!(stream.read(&mut buf).await.unwrap(), 0, "end of stream");
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

    #[test]
    fn a_peer_still_reading_after_its_close_is_a_retiring_worker_however_late() {
        let mut p = Progress::new(Instant::now() - Duration::from_secs(60));
        p.written = true;
        p.discarding = true;
        assert!(p.never_ran());
        p.answered = true;
        assert!(!p.never_ran(), "an answer means PHP ran it");
    }
}
