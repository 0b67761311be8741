//! The control socket: how PHP (and anything local) pushes to clients.
//!
//! A Unix stream socket speaking newline-delimited JSON: one request per line,
//! one reply line per request, in order. Requests may be pipelined and a
//! client may keep its connection open across many requests (PHP's persistent
//! `stream_socket_client`). A bad line gets `{"ok":false,"error":…}` and the
//! connection stays usable; a line over `control.max_line_bytes` is refused
//! and skipped up to its newline. Blank lines are ignored. A request counts
//! only once its newline arrives: a last line cut off by the client's
//! disconnect is discarded, never run (so a client that retries on a new
//! connection after a failed write can never have a request applied twice).
//!
//! The socket is served by the daemon itself, not by PHP-FPM, so an event
//! handler can publish while every FPM worker is busy without deadlocking.
//! It keeps serving while shutdown drains, so close-event handlers can still
//! publish. After a SIGUSR2 handover its clients' requests run in the new
//! process: each connection is relayed there from its next request on.
//!
//! - `command.rs` parses a line, `exec.rs` carries it out, `reply.rs`
//!   writes its reply,
//! - `http.rs` takes the same requests as HTTP POST bodies,
//! - `relay.rs` passes a client's requests on to the new process.

pub mod command;
pub mod exec;
pub mod http;
pub mod relay;
pub mod reply;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use crate::config::ControlConfig;
use crate::context::Context;
use command::CommandError;
use reply::Reply;

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Binding failed (directory missing, socket in use by a live daemon,
    /// chmod or chown refused, …).
    #[error("cannot bind control socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// The mode is invalid, or the owner or group does not exist.
    #[error("cannot set permissions of control socket {path}: {message}")]
    Permissions {
        /// The socket path.
        path: String,
        /// The cause.
        message: String,
    },
}

/// Binds the control socket with the configured mode, owner and group, which
/// it has before anyone can connect (see [`crate::listen::bind_unix`]).
pub async fn bind(path: &Path, config: &ControlConfig) -> Result<UnixListener, SetupError> {
    let shown = path.display().to_string();
    let perm_error = |message: String| SetupError::Permissions {
        path: shown.clone(),
        message,
    };
    let mode = config.mode_bits().map_err(|e| perm_error(e.to_string()))?;
    let permissions = crate::listen::UnixPermissions::resolve(
        mode,
        config.owner.as_deref(),
        config.group.as_deref(),
    )
    .map_err(perm_error)?;
    crate::listen::bind_unix(path, &permissions).map_err(|source| SetupError::Bind {
        path: shown.clone(),
        source,
    })
}

/// Serves control clients until the returned set is aborted (after the drain).
pub fn spawn(listener: UnixListener, ctx: Arc<Context>, tasks: &mut JoinSet<()>) {
    tasks.spawn(async move {
        let mut clients = JoinSet::new();
        let mut backoff = Duration::from_millis(10);
        loop {
            let accepted = tokio::select! {
                // The successor accepts from now on; our clients finish.
                () = ctx.handover.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(10);
                    clients.spawn(serve_client(stream, ctx.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
            // Reap finished clients so the set does not grow.
            while clients.try_join_next().is_some() {}
        }
        drop(listener);
        while clients.join_next().await.is_some() {}
    });
}

/// Serves one control client: a request per line, a reply per request, in
/// order. After requests that woke many connections (publishes to large
/// channels) the task yields, so the connections write before the next
/// request runs: under overload a publisher is slowed down by TCP
/// backpressure on this socket instead of members' queues filling up.
async fn serve_client(stream: UnixStream, ctx: Arc<Context>) {
    let max = ctx.config().control.max_line_bytes;
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut writer = BufWriter::new(write);
    let mut line = Vec::new();
    // The reply line being written (reused).
    let mut out = Vec::new();
    // Deliveries queued by this client since it last yielded.
    let mut queued = 0;
    loop {
        let reply = match read_line(&mut reader, &mut line, max).await {
            Ok(Line::Eof) => break,
            Ok(Line::TooLong) => Reply::Json(exec::error_reply(&CommandError::TooLong(max))),
            Ok(Line::Complete) => {
                if line.trim_ascii().is_empty() {
                    // No reply of its own, but replies held for pipelining
                    // must not wait behind it for a line that may never come.
                    if reader.buffer().is_empty() && writer.flush().await.is_err() {
                        break;
                    }
                    continue;
                }
                match command::parse(&line) {
                    Ok(cmd) => {
                        let Some(pass) = ctx.control_gate.pass().await else {
                            // Handed over: this request and every later
                            // one run in the new process.
                            let socket = ctx.config().control.socket.clone();
                            let gate = &ctx.control_gate;
                            relay::relay(&line, reader, writer, socket.as_deref(), gate, max).await;
                            return;
                        };
                        let reply = exec::execute(&ctx, cmd).await;
                        drop(pass);
                        queued += reply.delivered();
                        if queued >= crate::hub::YIELD_AFTER_DELIVERIES {
                            // The members' tasks were woken to write: let
                            // them run before this client's next request,
                            // so a pipelining publisher cannot outrun them.
                            queued = 0;
                            tokio::task::yield_now().await;
                        }
                        reply
                    }
                    Err(e) => Reply::Json(exec::error_reply(&e)),
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "control client read failed");
                break;
            }
        };
        out.clear();
        reply.write_line(&mut out);
        if writer.write_all(&out).await.is_err() {
            break;
        }
        // Pipelined requests get their replies in one write.
        if reader.buffer().is_empty() && writer.flush().await.is_err() {
            break;
        }
    }
    let _ = writer.flush().await;
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// `buf` holds a whole line (without its newline).
    Complete,
    /// The line was longer than the limit; it was skipped up to its newline.
    TooLong,
    /// The client closed the connection (an unterminated last line is dropped).
    Eof,
}

/// Reads one line of at most `max` bytes into `buf`, never buffering more.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            if !buf.is_empty() {
                tracing::debug!(
                    bytes = buf.len(),
                    "control request without newline discarded at EOF"
                );
            }
            return Ok(Line::Eof);
        }
        let (chunk, done) = match memchr::memchr(b'\n', available) {
            Some(at) => (&available[..at], Some(at + 1)),
            None => (available, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(available.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blank_line_does_not_hold_back_a_reply() {
        let (client, server) = UnixStream::pair().unwrap();
        let ctx = Arc::new(Context::new(crate::config::Config::default()));
        let served = tokio::spawn(serve_client(server, ctx));
        let (read, mut write) = client.into_split();
        // The blank line arrives with the request, so the request's reply is
        // not flushed right after it; the blank line must flush it.
        write.write_all(b"{\"op\":\"stats\"}\n\n").await.unwrap();
        let mut reply = String::new();
        let mut reader = BufReader::new(read);
        tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut reply))
            .await
            .expect("the reply is not held back")
            .unwrap();
        assert!(reply.starts_with("{\"ok\":true"), "{reply}");
        drop(write);
        served.await.unwrap();
    }

    #[tokio::test]
    async fn lines_are_bounded_and_oversize_lines_skipped() {
        let input: &[u8] = b"short\nthis line is too long\nok\nlast";
        let mut reader = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"short");
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).await.unwrap(),
            Line::TooLong
        );
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).await.unwrap(),
            Line::Complete
        );
        assert_eq!(buf, b"ok");
        // "last" is cut off by EOF: never run.
        assert_eq!(
            read_line(&mut reader, &mut buf, 10).await.unwrap(),
            Line::Eof
        );
    }
}
