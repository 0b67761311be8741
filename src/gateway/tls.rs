//! The TLS handshake of a socket accepted on a `tls://` listener, in the
//! socket's own task: the accept loop never waits for it.
//!
//! The socket holds its [`Slot`] from `accept`, so a client that opens TCP
//! and never finishes TLS counts as an unfinished handshake of its address
//! (`limits.max_handshakes_per_ip`) and is cut off at
//! `websocket.handshake_timeout`, which covers the TLS handshake and the
//! HTTP request together.
//!
//! ```text
//! accept ─Slot─▶ first byte ─0x16─▶ rustls handshake ─▶ HTTP (serve_http, the timeout's rest)
//!                   │ a letter: plain HTTP ─▶ 400 "this port speaks TLS", closed
//!                   └ anything else, a TLS error, the timeout, shutdown: closed
//! ```
//!
//! Every handshake that does not finish is counted in
//! `ws2fcgi_tls_handshakes_failed_total{kind}`: `timeout`, `plain_http`, `error`.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::context::Context;
use crate::limits::Slot;
use crate::proxy::Origin;
use crate::tls::Session;

/// First byte of a TLS record that carries a handshake (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The answer to a plain-HTTP request on a TLS port (as nginx gives one).
const ANSWER_PLAIN_HTTP: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 54\r\n\
Connection: close\r\n\r\nthis port speaks TLS: connect with https:// or wss://\n";

/// Request bytes read (and dropped) from a plain-HTTP client at most, so
/// that closing does not reset the connection before it read the answer.
const PLAIN_READ_MAX: usize = 16 * 1024;
/// How long a plain-HTTP client's socket stays open for its answer at most.
const PLAIN_LINGER: Duration = Duration::from_secs(2);

/// Why a TLS handshake did not finish: the metric's `kind`.
enum Failure {
    Timeout,
    PlainHttp(TcpStream),
    Error(String),
    Shutdown,
}

/// Runs the TLS handshake of `stream`, then serves its HTTP request.
pub(super) async fn serve(
    stream: TcpStream,
    peer: Origin,
    slot: Slot,
    ctx: Arc<Context>,
    tracker: TaskTracker,
) {
    let deadline = Instant::now() + ctx.config().websocket.handshake_timeout;
    let outcome = tokio::select! {
        outcome = tokio::time::timeout_at(deadline, handshake(stream, &ctx)) => {
            outcome.unwrap_or(Err(Failure::Timeout))
        }
        () = ctx.shutdown_started() => Err(Failure::Shutdown),
    };
    let (stream, session) = match outcome {
        Ok(done) => done,
        Err(failure) => {
            let remote = match peer {
                Origin::Tcp { remote, .. } => Some(remote),
                Origin::Unix => None,
            };
            match failure {
                Failure::Timeout => {
                    ctx.metrics.tls_failed("timeout");
                    tracing::debug!(?remote, "TLS handshake timed out");
                }
                Failure::PlainHttp(mut stream) => {
                    ctx.metrics.tls_failed("plain_http");
                    tracing::debug!(?remote, "plain HTTP on a TLS listener: answered 400");
                    let _ =
                        tokio::time::timeout(PLAIN_LINGER, answer_plain_http(&mut stream)).await;
                }
                Failure::Error(error) => {
                    ctx.metrics.tls_failed("error");
                    tracing::debug!(?remote, %error, "TLS handshake failed");
                }
                Failure::Shutdown => {}
            }
            return;
        }
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    super::serve_http(
        TokioIo::new(stream),
        peer,
        slot,
        Some(Arc::new(session)),
        left,
        ctx,
        tracker,
    )
    .await;
}

/// Looks at the first byte, then runs rustls's handshake.
async fn handshake(
    stream: TcpStream,
    ctx: &Context,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, Session), Failure> {
    let mut first = [0u8; 1];
    let n = stream
        .peek(&mut first)
        .await
        .map_err(|e| Failure::Error(e.to_string()))?;
    if n == 0 {
        return Err(Failure::Error("closed before a ClientHello".into()));
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        if first[0].is_ascii_uppercase() {
            return Err(Failure::PlainHttp(stream));
        }
        return Err(Failure::Error(format!(
            "not a TLS record (first byte {:#04x})",
            first[0]
        )));
    }
    let Some(config) = ctx.tls.current() else {
        return Err(Failure::Error("no TLS certificate loaded".into()));
    };
    let tls = tokio_rustls::TlsAcceptor::from(config)
        .accept(stream)
        .await
        .map_err(|e| Failure::Error(e.to_string()))?;
    let session = Session::of(tls.get_ref().1);
    Ok((tls, session))
}

/// Tells a plain-HTTP client where it is, then closes: reads what it sends
/// (bounded) until it closes, so the answer is not lost to a reset. The
/// caller bounds it in time.
async fn answer_plain_http(stream: &mut TcpStream) {
    if stream.write_all(ANSWER_PLAIN_HTTP).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 2048];
    let mut read = 0;
    while read < PLAIN_READ_MAX {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
}
