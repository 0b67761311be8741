//! One keep-alive FastCGI connection to PHP-FPM: its socket, one request's
//! roundtrip (encode, write, read records until the end), PHP's raw answer,
//! and how far a failed request got, which decides whether the pool may
//! send it again (see the `fpm` module docs).

use std::io;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

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

pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Has PHP-FPM closed (or written to) this idle connection?
    pub(super) fn is_stale(&self) -> bool {
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
        use nix::sys::socket::{MsgFlags, send};
        use std::os::fd::AsRawFd;
        const PROBE: [u8; 8] = [1, fcgi::GET_VALUES, 0, 0, 0, 0, 0, 0];
        let Self::Unix(stream) = self else {
            return false;
        };
        let sent = send(
            stream.as_raw_fd(),
            &PROBE,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        );
        matches!(sent, Ok(_) | Err(nix::errno::Errno::EAGAIN))
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

pub(super) struct Conn {
    pub(super) stream: Stream,
    /// Reused for every request on this connection: encoded request out, records in.
    pub(super) out: Vec<u8>,
    pub(super) input: BytesMut,
    pub(super) idle_since: Instant,
}

/// Receive buffer of a pooled connection; grows only for large answers.
pub(super) const READ_CHUNK: usize = 16 * 1024;

impl Conn {
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
                if !progress.answered {
                    progress.discarding = self.stream.peer_discarding();
                }
                return Err(FpmError::Truncated);
            }
            progress.answered = true;
            fresh.done();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
