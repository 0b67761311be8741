//! HTTP accept and the WebSocket handshake.
//!
//! A request on a routed path that asks for a WebSocket upgrade becomes
//! PHP's **open** event; the client's 101 waits for PHP's answer:
//!
//! ```text
//! client ──GET /chat Upgrade──▶ gateway ──open event──▶ php-fpm
//!        ◀── 101 (2xx from PHP) ─┤        ◀── Status / X-WS-* / body
//!        ◀── PHP's status, headers, body (anything else)
//! ```
//!
//! Directives of the open answer (join, metadata) are applied *before* the
//! 101 goes out, and its body is queued as the first message.
//!
//! Every accepted socket first takes a [`Slot`] (see `limits.rs`): sockets
//! in their handshake and connections together stay within
//! `websocket.max_connections`, below the open-files limit, and one address
//! has at most `limits.max_handshakes_per_ip` sockets that have not sent
//! their request. A socket refused there is never served by hyper: it gets a
//! fixed answer at once and is closed, so the kernel never queues sockets
//! nobody will answer.
//!
//! ```text
//! no socket left        HTTP/1.1 503 Service Unavailable, Retry-After: 5, "too many connections"
//! too many unfinished   HTTP/1.1 429 Too Many Requests, Retry-After: 5, "too many unfinished handshakes …"
//! ```
//!
//! Each socket serves one request (no keep-alive): a handshake that is
//! refused, or any other request, closes its socket with the answer. That
//! holds for the Pusher HTTP API served here too (a request that is no
//! upgrade, to `/apps/…`, when `[pusher]` has apps; see `pusher/api.rs`):
//! a kept-alive idle API socket would hold a slot of
//! `websocket.max_connections` that no handshake limit counts. Publishers
//! that want keep-alive use `pusher.api_listen`.
//!
//! On a `tls://` listener the TLS handshake comes first, in the socket's own
//! task and within the same slot and `websocket.handshake_timeout` (see
//! `tls.rs`); a socket refused at `accept` there is closed without an answer
//! (it would not be readable before TLS).
//!
//! On a plain TCP or Unix listener the gateway reads and answers a raw
//! route's WebSocket handshake itself (`direct.rs`, its head parsed by
//! `head.rs`); every other request, and every request on a `tls://`
//! listener, is served by hyper's HTTP/1 server (on a plain listener
//! through `replay.rs`, which hands hyper the bytes the gateway read first).
//!
//! This file accepts and serves HTTP with hyper; `raw.rs` runs a raw
//! route's handshake for both; `refusal.rs`
//! answers and closes the sockets refused at `accept`; `turn_away.rs`
//! accepts a handshake only to close it at once with a code (1012 after a
//! SIGUSR2 handover); `pusher.rs` answers
//! a Pusher client's handshake (`/app/{key}`, when `[[pusher.app]]` is set:
//! that path is then never a raw route); `tls.rs` runs the TLS handshake
//! of `tls://` listeners.

mod direct;
// The request head the direct path reads: public for its fuzz target.
pub mod head;
mod pusher;
mod raw;
mod refusal;
// Read by `transport::socket`, which takes an upgraded socket back out.
pub(crate) mod replay;
mod tls;
mod turn_away;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::task::TaskTracker;

use crate::connection;
use crate::context::Context;
use crate::limits::Slot;
use crate::listen::{self, Listener};
use crate::proxy::{self, Origin};
use raw::Outcome;
use refusal::RefusalLog;

/// Longest pause between retries after `accept` fails (EMFILE and the like).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
type HttpResponse = Response<Full<Bytes>>;

/// A socket's slot, shared with the request handler, which takes it once the
/// request has arrived; dropped with the socket unless a connection took it.
type SlotCell = Arc<Mutex<Option<Slot>>>;

/// Accepts clients on `listener` until shutdown begins.
pub async fn accept_loop(listener: Listener, ctx: Arc<Context>, tracker: TaskTracker) {
    let local = listener.local_addr();
    let tls = listener.is_tls();
    let mut backoff = Duration::from_millis(10);
    let mut refusals = RefusalLog::default();
    let nodelay_inherited = listener.set_nodelay_for_accepted();
    loop {
        let accepted = tokio::select! {
            () = ctx.shutdown_started() => break,
            accepted = listener.accept(nodelay_inherited) => accepted,
        };
        match accepted {
            Ok(listen::Accepted::Tcp(stream, remote)) if tls => {
                backoff = Duration::from_millis(10);
                let peer = Origin::Tcp {
                    remote,
                    local,
                    tls: true,
                };
                admit_tls(stream, peer, &ctx, &tracker, &mut refusals);
            }
            Ok(listen::Accepted::Tcp(stream, remote)) => {
                backoff = Duration::from_millis(10);
                let peer = Origin::Tcp {
                    remote,
                    local,
                    tls: false,
                };
                admit(stream, peer, &ctx, &tracker, &mut refusals);
            }
            Ok(listen::Accepted::Unix(stream)) => {
                backoff = Duration::from_millis(10);
                admit(stream, Origin::Unix, &ctx, &tracker, &mut refusals);
            }
            Err(e) => {
                // Out of file descriptors or a transient error: never spin.
                tracing::warn!(error = %e, retry_in = ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

/// Serves a socket just accepted if it gets a slot; otherwise answers it
/// with its refusal and closes it.
fn admit<S>(
    stream: S,
    peer: Origin,
    ctx: &Arc<Context>,
    tracker: &TaskTracker,
    refusals: &mut RefusalLog,
) where
    S: direct::PlainSocket,
{
    let counted = proxy::handshake_peer(peer, &ctx.config().trusted_proxies);
    match ctx.slots.admit(counted) {
        Ok(slot) => {
            tracker.spawn(direct::serve(
                stream,
                peer,
                slot,
                ctx.clone(),
                tracker.clone(),
            ));
        }
        Err(refusal) => refusal::refuse(stream, refusal, counted, ctx, tracker, refusals),
    }
}

/// Like [`admit`] for a `tls://` listener: the TLS handshake runs in the
/// socket's task, holding the slot; a refused socket is closed at once.
fn admit_tls(
    stream: tokio::net::TcpStream,
    peer: Origin,
    ctx: &Arc<Context>,
    tracker: &TaskTracker,
    refusals: &mut RefusalLog,
) {
    let counted = proxy::handshake_peer(peer, &ctx.config().trusted_proxies);
    match ctx.slots.admit(counted) {
        Ok(slot) => {
            tracker.spawn(tls::serve(stream, peer, slot, ctx.clone(), tracker.clone()));
        }
        Err(refusal) => {
            ctx.metrics.refused(refusal.kind());
            refusals.note(refusal, counted, ctx);
        }
    }
}

/// Serves the HTTP request of a socket (its TLS handshake done, on a
/// `tls://` listener: `tls`); its head must arrive within `header_timeout`.
async fn serve_http<I>(
    io: TokioIo<I>,
    peer: Origin,
    slot: Slot,
    tls: Option<Arc<crate::tls::Session>>,
    header_timeout: Duration,
    ctx: Arc<Context>,
    tracker: TaskTracker,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let cell: SlotCell = Arc::new(Mutex::new(Some(slot)));
    let service = {
        let ctx = ctx.clone();
        service_fn(move |req| {
            let answer = handshake(
                ctx.clone(),
                peer,
                tls.clone(),
                cell.clone(),
                req,
                tracker.clone(),
            );
            async move {
                let mut response = answer.await?;
                if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                    // One request per socket: an idle keep-alive socket would
                    // hold a slot without counting as a handshake of its address.
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(ctx.config().websocket.max_handshake_bytes);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = ctx.shutdown_started() => {
            // After a handover a socket accepted just before it still gets
            // its answer (a 1012 close: reconnect), never a silent close.
            if !ctx.handed_over() {
                conn.as_mut().graceful_shutdown();
            }
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}

fn plain(status: StatusCode, text: impl Into<Bytes>) -> HttpResponse {
    let mut response = Response::new(Full::new(text.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The 403 for a handshake whose `Origin` the configuration does not allow
/// (counted and logged, `what` naming the handshake in the log line), or
/// `None` when it is allowed. An Origin that is not visible ASCII is
/// compared as U+FFFD, which matches no listed origin.
fn refuse_origin(
    ctx: &Context,
    headers: &hyper::HeaderMap,
    what: &'static str,
) -> Option<HttpResponse> {
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("\u{fffd}"));
    if ctx.origins().allows(origin) {
        return None;
    }
    ctx.metrics.refused("origin");
    tracing::info!(
        origin = origin.unwrap_or(""),
        "{what} refused: origin not allowed"
    );
    Some(plain(StatusCode::FORBIDDEN, "origin not allowed\n"))
}

/// Is this a valid WebSocket upgrade request (RFC 6455 §4.2.1)? Else the answer to give.
fn check_upgrade(req: &Request<Incoming>) -> Result<&HeaderValue, Box<HttpResponse>> {
    check_upgrade_parts(req.method(), req.headers())
}

/// [`check_upgrade`] of a request's method and headers.
fn check_upgrade_parts<'a>(
    method: &hyper::Method,
    headers: &'a hyper::HeaderMap,
) -> Result<&'a HeaderValue, Box<HttpResponse>> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        let mut r = plain(
            StatusCode::UPGRADE_REQUIRED,
            "this is a WebSocket endpoint: connect with a WebSocket client\n",
        );
        r.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        return Err(Box::new(r));
    }
    if method != hyper::Method::GET {
        return Err(Box::new(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket handshake must be a GET request\n",
        )));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut r = plain(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version; this server speaks 13\n",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(Box::new(r));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| k.len() == 24)
        .ok_or_else(|| {
            Box::new(plain(
                StatusCode::BAD_REQUEST,
                "missing or malformed Sec-WebSocket-Key\n",
            ))
        })
}

async fn handshake(
    ctx: Arc<Context>,
    peer: Origin,
    tls: Option<Arc<crate::tls::Session>>,
    cell: SlotCell,
    mut req: Request<Incoming>,
    tracker: TaskTracker,
) -> Result<HttpResponse, Infallible> {
    // A refusal before PHP gives the slot back as it answers (the answer is
    // small and the socket closes with it).
    let Some(mut slot) = cell.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        // Every answer but a 101 closes its socket: never reached.
        return Ok(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "one request per connection\n",
        ));
    };
    slot.head_received();
    // The Pusher HTTP API shares the listener: a plain request to `/apps/…`
    // (its socket keeps the slot until the answer is written; no keep-alive).
    if crate::pusher::api::is_api_path(req.uri().path())
        && !req.headers().contains_key(header::UPGRADE)
        && !ctx.pusher_apps().is_empty()
    {
        let response = crate::pusher::api::serve(ctx.clone(), req).await;
        drop(slot);
        return Ok(response);
    }
    if let Some(key) = pusher::app_key(req.uri().path())
        && !ctx.pusher_apps().is_empty()
    {
        let key = key.to_owned();
        return Ok(pusher::handshake(ctx, peer, tls, slot, req, tracker, key).await);
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _body) = req.into_parts();
    Ok(match raw::handshake(&ctx, peer, tls, slot, &parts).await {
        Outcome::Answer { response, hold } => {
            if let Some(slot) = hold {
                hold_until_closed(&cell, slot);
            }
            response
        }
        Outcome::TurnAway {
            response,
            code,
            reason,
            slot,
        } => {
            tracker.spawn(async move {
                let _slot = slot;
                if let Ok(upgraded) = on_upgrade.await {
                    turn_away::close_now(TokioIo::new(upgraded), code, reason).await;
                }
            });
            response
        }
        Outcome::Open {
            response,
            accepted,
            span,
        } => {
            connection::spawn(&tracker, accepted, on_upgrade, span);
            response
        }
    })
}

/// permessage-deflate, when `websocket.compression` is on and the client
/// offered it (an offer it cannot take is declined: the connection goes on
/// uncompressed): the answer's header is set and `handle`'s messages of at
/// least `compression_min_size` go compressed. The raw and the Pusher
/// handshakes both agree here.
pub(super) fn agree_deflate(
    config: &crate::config::Config,
    request: &hyper::HeaderMap,
    response: &mut hyper::HeaderMap,
    handle: &crate::hub::ConnHandle,
) -> Option<crate::deflate::Agreement> {
    if !config.websocket.compression {
        return None;
    }
    let agreed = crate::deflate::negotiate(
        request
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )?;
    let value = HeaderValue::from_str(&agreed.response).ok()?;
    response.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
    handle.set_deflate(config.websocket.compression_min_size);
    Some(agreed)
}

/// Keeps the slot with the socket until it closes: PHP's refusal may be
/// large, and a client that does not read it keeps its socket open.
fn hold_until_closed(cell: &SlotCell, slot: Slot) {
    *cell.lock().unwrap_or_else(|e| e.into_inner()) = Some(slot);
}
