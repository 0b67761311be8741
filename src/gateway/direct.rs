//! The direct path: a raw route's WebSocket handshake on a plain TCP or
//! Unix socket, read and answered by the gateway itself instead of hyper.
//!
//! Every handshake of a reconnect storm waits for PHP's open event, so
//! what serving it costs is held 10,000 times at once: hyper's connection
//! (an 8 KiB read buffer and an 8 KiB header buffer per socket), its
//! upgrade hand-off (a channel, a boxed socket), and a 101 written apart
//! from the first frames. Here the socket's first bytes are read with one
//! `recv` into the stack, at once (a client sends its head with the
//! connection, so it is there before the runtime would report the new
//! socket readable; only when it is not does the task wait for that). When
//! they are a whole `GET` upgrade to a raw route (`head::peek`), the head
//! is handled here, and the 101 goes out in one `writev` with the frames
//! the open queued (the `connected` message, PHP's body), on the socket the
//! connection then runs on; anything read past the head (a frame sent
//! before the 101) is the connection's first input:
//!
//! ```text
//! accepted ─ recv ─┬─ raw route, whole head ─▶ raw::handshake ─▶ writev(101 + frames)
//!                  └─ anything else ─────────▶ hyper (serve_http), the bytes read replayed first
//! ```
//!
//! Anything else — a partial or malformed head, another method, a Pusher
//! app's path, the Pusher HTTP API, a plain GET — goes to hyper, which reads
//! the bytes already taken first (`replay.rs`) and answers as before. The
//! head must arrive within `websocket.handshake_timeout`, as hyper's header
//! read timeout.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::{HeaderMap, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWriteExt as _, Interest};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{Instant, timeout_at};
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::raw::{self, Outcome};
use super::replay::Replay;
use super::{HttpResponse, head};
use crate::connection;
use crate::context::Context;
use crate::limits::Slot;
use crate::outbox::Outbox;
use crate::proxy::Origin;
use crate::transport::Socket;

/// Bytes of a socket read at first for a head the direct path serves (on
/// the stack; what is kept is copied out); a longer head goes to hyper.
const FIRST_READ: usize = 4096;

/// Frames written with the 101 in its `writev` at most; the rest is the
/// connection's writer's.
const FIRST_FRAMES: usize = 15;

/// A plain (not TLS) client socket.
pub(super) trait PlainSocket:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + AsFd + Unpin + Send + Sync + 'static
{
    /// Waits until the socket may be read.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Runs `f` if the socket is readable, clearing readiness on `WouldBlock`.
    fn try_read_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
    /// The socket, for the connection.
    fn into_socket(self) -> Socket;
}

impl PlainSocket for TcpStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        TcpStream::readable(self)
    }
    fn try_read_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(Interest::READABLE, f)
    }
    fn into_socket(self) -> Socket {
        Socket::Tcp(self)
    }
}

impl PlainSocket for UnixStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        UnixStream::readable(self)
    }
    fn try_read_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.try_io(Interest::READABLE, f)
    }
    fn into_socket(self) -> Socket {
        Socket::Unix(self)
    }
}

/// What the first read of a socket found.
enum Look {
    /// A whole head for the direct path, and what was read past it.
    Direct { head: Bytes, rest: Bytes },
    /// Anything else: hyper serves the socket, these bytes first.
    Hyper(Bytes),
    /// The client closed before sending anything.
    Closed,
}

/// Whether the first read waits for the runtime to report the socket
/// readable.
#[derive(Clone, Copy)]
enum Read {
    /// At once: the head usually came with the connection.
    Now,
    /// Once readable (the last read found nothing).
    WhenReady,
}

/// Serves a plain socket just accepted (holding `slot`): directly when its
/// first bytes are a raw route's whole WebSocket handshake, else by hyper.
pub(super) async fn serve<S: PlainSocket>(
    mut stream: S,
    peer: Origin,
    mut slot: Slot,
    ctx: Arc<Context>,
    tracker: TaskTracker,
) {
    let deadline = Instant::now() + ctx.config().websocket.handshake_timeout;
    // In shutdown the wait decides (a socket that sent nothing is closed).
    let now = if ctx.is_shutting_down() {
        None
    } else {
        match look(&stream, &ctx, Read::Now) {
            Ok(look) => Some(look),
            Err(e) if would_block(&e) => None,
            Err(e) => {
                tracing::debug!(error = %e, "socket failed before its request");
                return;
            }
        }
    };
    let look = match now {
        Some(look) => look,
        None => match wait_for_head(&stream, &ctx, deadline).await {
            Some(look) => look,
            None => return,
        },
    };
    let (request_head, rest) = match look {
        Look::Direct { head, rest } => (head, rest),
        Look::Closed => return,
        Look::Hyper(read) => {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let io = TokioIo::new(Replay::new(read, stream));
            super::serve_http(io, peer, slot, None, left, ctx, tracker).await;
            return;
        }
    };
    slot.head_received();
    let parts = match head::parts(&request_head) {
        Ok(parts) => parts,
        Err(e) => {
            // httparse took it, `http` does not (a target or header value
            // outside its grammar): hyper would refuse it too.
            tracing::debug!(error = %e, "request head refused");
            let response = super::plain(StatusCode::BAD_REQUEST, "malformed request\n");
            answer(stream, response, None, &ctx).await;
            return;
        }
    };
    match raw::handshake(&ctx, peer, None, slot, &parts).await {
        Outcome::Answer { response, hold } => answer(stream, response, hold, &ctx).await,
        Outcome::TurnAway {
            response,
            code,
            reason,
            slot,
        } => {
            let _slot = slot;
            let head = encode_head(response.status(), response.headers(), None);
            if stream.write_all(&head).await.is_ok() {
                super::turn_away::close_now(stream, code, reason).await;
            }
        }
        Outcome::Open {
            response,
            accepted,
            span,
        } => open(stream, &response, rest, accepted, span, &ctx, &tracker).await,
    }
}

/// Waits until the socket is readable and reads its first bytes, until
/// `deadline`; `None` when the socket is to be closed (it failed, sent no
/// head in time, or shutdown began before it sent anything).
async fn wait_for_head<S: PlainSocket>(
    stream: &S,
    ctx: &Context,
    deadline: Instant,
) -> Option<Look> {
    let mut answer_in_shutdown = false;
    loop {
        let readable = tokio::select! {
            readable = timeout_at(deadline, stream.readable()) => readable,
            // As hyper's graceful shutdown: a socket that sent nothing yet
            // is closed, unless this process handed over (then it still
            // gets its answer, a 1012 close: reconnect).
            () = ctx.shutdown_started(), if !answer_in_shutdown => {
                if !ctx.handed_over() {
                    return None;
                }
                answer_in_shutdown = true;
                continue;
            }
        };
        match readable {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "socket failed before its request");
                return None;
            }
            Err(_) => {
                tracing::debug!("no request head within handshake_timeout");
                return None;
            }
        }
        match look(stream, ctx, Read::WhenReady) {
            Ok(look) => return Some(look),
            Err(e) if would_block(&e) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "socket failed before its request");
                return None;
            }
        }
    }
}

/// The first read of a socket: one `recv` into the stack. [`Read::Now`]
/// reads the socket whether or not the runtime has seen it readable yet;
/// [`Read::WhenReady`] goes through its readiness, which a read that finds
/// nothing clears.
fn look<S: PlainSocket>(stream: &S, ctx: &Context, when: Read) -> io::Result<Look> {
    use nix::sys::socket::{MsgFlags, recv};
    let mut buf = [0u8; FIRST_READ];
    let fd = stream.as_fd().as_raw_fd();
    let mut read = || recv(fd, &mut buf, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from);
    let n = match when {
        Read::Now => read()?,
        Read::WhenReady => stream.try_read_io(read)?,
    };
    if n == 0 {
        return Ok(Look::Closed);
    }
    let read = &buf[..n];
    Ok(match head::peek(read) {
        Some(peeked) if routes_direct(ctx, peeked.path) => Look::Direct {
            head: Bytes::copy_from_slice(&read[..peeked.len]),
            rest: Bytes::copy_from_slice(&read[peeked.len..]),
        },
        _ => Look::Hyper(Bytes::copy_from_slice(read)),
    })
}

/// Did a read find nothing to read (or get interrupted): try again later?
fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Is `path` a raw route the direct path serves? A Pusher app's path and
/// the Pusher HTTP API are hyper's (while `[pusher]` has apps).
fn routes_direct(ctx: &Context, path: &str) -> bool {
    if !ctx.pusher_apps().is_empty()
        && (super::pusher::app_key(path).is_some() || crate::pusher::api::is_api_path(path))
    {
        return false;
    }
    ctx.config().script_for(path).is_some()
}

/// Writes the 101 and, in the same `writev`, the frames the open queued;
/// then runs the connection on the socket in a task of its own, `rest`
/// (what the client sent past its head) its first input. A client gone
/// before that still costs PHP its close event.
async fn open<S: PlainSocket>(
    mut stream: S,
    response: &HttpResponse,
    rest: Bytes,
    mut accepted: Box<connection::Accepted>,
    span: tracing::Span,
    ctx: &Context,
    tracker: &TaskTracker,
) {
    accepted.pre_read = rest;
    let outbox = &accepted.handle.outbox;
    let mut batch = VecDeque::new();
    batch.push_back(Bytes::from(encode_head(
        response.status(),
        response.headers(),
        None,
    )));
    outbox.drain_into(&mut batch, FIRST_FRAMES + 1, 0);
    let frames = batch.len() - 1;
    let frame_bytes: usize = batch.iter().skip(1).map(Bytes::len).sum();
    if let Err(e) = write_all(&mut stream, batch).await {
        tracing::info!(conn = %ctx.public_id(&accepted.handle.id), error = %e, "client left during the upgrade");
        tracker.spawn(connection::abandon(*accepted).instrument(span));
        return;
    }
    ctx.metrics.bytes_out.inc_by(frame_bytes as u64);
    // What was written leaves the queue's cost; nothing more is taken.
    outbox.drain_into(&mut VecDeque::new(), 0, Outbox::settle(frame_bytes, frames));
    connection::spawn_on_socket(tracker, accepted, stream.into_socket(), span);
}

/// Writes every buffer of `batch`, as few `writev` as the socket allows.
async fn write_all<S: PlainSocket>(stream: &mut S, mut batch: VecDeque<Bytes>) -> io::Result<()> {
    while !batch.is_empty() {
        let n = {
            let slices: Vec<IoSlice<'_>> = batch.iter().map(|b| IoSlice::new(b)).collect();
            stream.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut left = n;
        while left > 0 {
            let Some(front) = batch.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                batch.pop_front();
            } else {
                bytes::Buf::advance(front, left);
                left = 0;
            }
        }
    }
    Ok(())
}

/// Writes an answer that is not a 101 and closes the socket, holding
/// `hold` (the slot) until then. A shutdown stops a client that does not
/// read it.
async fn answer<S: PlainSocket>(
    mut stream: S,
    response: HttpResponse,
    hold: Option<Slot>,
    ctx: &Context,
) {
    let _hold = hold;
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let head = encode_head(parts.status, &parts.headers, Some(body.len()));
    let exchange = async {
        write_all(&mut stream, VecDeque::from([Bytes::from(head), body])).await?;
        stream.shutdown().await
    };
    tokio::select! {
        result = exchange => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "the handshake's answer could not be written");
            }
        }
        () = ctx.shutdown_started() => {}
    }
}

/// Response header names hyper would not pass as they are: the framing is
/// this module's (`content-length`, then the socket closes).
const HOP_BY_HOP: [&str; 4] = [
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
];

/// A response's status line and headers. With `body_len` (an answer that
/// is not a 101), its `content-length`, `connection: close` and a `date`,
/// as hyper writes them.
fn encode_head(status: StatusCode, headers: &HeaderMap, body_len: Option<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if body_len.is_some() && HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(len) = body_len {
        out.extend_from_slice(format!("content-length: {len}\r\nconnection: close\r\n").as_bytes());
        out.extend_from_slice(
            format!(
                "date: {}\r\n",
                httpdate::fmt_http_date(std::time::SystemTime::now())
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{self, HeaderValue};

    #[test]
    fn a_101_is_its_status_line_and_headers_only() {
        let mut response = super::super::plain(StatusCode::SWITCHING_PROTOCOLS, "");
        response.headers_mut().remove(header::CONTENT_TYPE);
        response
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(
            encode_head(response.status(), response.headers(), None),
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"
        );
    }

    #[test]
    fn an_answer_gets_its_own_framing_and_a_date() {
        let mut response = super::super::plain(StatusCode::FORBIDDEN, "no\n");
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        let head =
            String::from_utf8(encode_head(response.status(), response.headers(), Some(3))).unwrap();
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-type: text/plain; charset=utf-8\r\n"));
        assert!(head.contains("\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n"));
        assert!(head.contains("\r\ncontent-length: 3\r\nconnection: close\r\ndate: "));
        assert!(!head.contains("999") && !head.contains("chunked"), "{head}");
        assert!(head.ends_with(" GMT\r\n\r\n"), "{head}");
    }
}
