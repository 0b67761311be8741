//! HTTP accept and the WebSocket handshake.
//!
//! Each accepted socket is served by hyper's HTTP/1 server. A request on a
//! routed path that asks for a WebSocket upgrade becomes PHP's **open** event;
//! the client's 101 waits for PHP's answer:
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
//! This file accepts, serves HTTP and runs the handshake; `refusal.rs`
//! answers and closes the sockets refused at `accept`; `turn_away.rs`
//! accepts a handshake only to close it at once with a code (1012 after a
//! SIGUSR2 handover); `pusher.rs` answers
//! a Pusher client's handshake (`/app/{key}`, when `[[pusher.app]]` is set:
//! that path is then never a raw route); `tls.rs` runs the TLS handshake
//! of `tls://` listeners.

mod pusher;
mod refusal;
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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::connection::{self, Accepted};
use crate::context::Context;
use crate::event::{EnvSource, Event, connection_env};
use crate::fpm::FpmError;
use crate::host;
use crate::limits::Slot;
use crate::listen::{self, Listener};
use crate::php::{self, EventError};
use crate::proxy::{self, Origin};
use crate::response::PhpResponse;
use crate::v1;
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
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let counted = proxy::handshake_peer(peer, &ctx.config().trusted_proxies);
    match ctx.slots.admit(counted) {
        Ok(slot) => {
            tracker.spawn(serve_http(
                TokioIo::new(stream),
                peer,
                slot,
                None,
                ctx.config().websocket.handshake_timeout,
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

/// Is this a valid WebSocket upgrade request (RFC 6455 §4.2.1)? Else the answer to give.
fn check_upgrade(req: &Request<Incoming>) -> Result<&HeaderValue, Box<HttpResponse>> {
    let headers = req.headers();
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
    if req.method() != hyper::Method::GET {
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
    let config = ctx.config();
    let Some(script) = config.script_for(req.uri().path()).map(|s| s.to_owned()) else {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "no WebSocket route for this path\n",
        ));
    };
    let accept_key = match check_upgrade(&req) {
        Ok(key) => derive_accept_key(key.as_bytes()),
        Err(response) => return Ok(*response),
    };
    if ctx.handed_over() {
        // A handshake that reached this process as the successor took over:
        // not a refusal, a reconnect, which the successor serves.
        return Ok(turn_away::close_at_once(
            &mut req,
            &accept_key,
            crate::contract::CLOSE_RESTART,
            crate::contract::REASON_RESTART.to_owned(),
            slot,
            &tracker,
        ));
    }
    if ctx.is_shutting_down() {
        return Ok(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "server shutting down\n",
        ));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _body) = req.into_parts();

    // Host becomes SERVER_NAME, SERVER_PORT and HTTP_HOST: PHP never sees a malformed one.
    let host = match host::from_headers(&parts.headers) {
        Ok(host) => host,
        Err(e) => {
            ctx.metrics.refused("host");
            tracing::info!(error = %e, "handshake refused: invalid Host header");
            return Ok(plain(StatusCode::BAD_REQUEST, "invalid Host header\n"));
        }
    };
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("\u{fffd}"));
    if !ctx.origins().allows(origin) {
        ctx.metrics.refused("origin");
        tracing::info!(
            origin = origin.unwrap_or(""),
            "handshake refused: origin not allowed"
        );
        return Ok(plain(StatusCode::FORBIDDEN, "origin not allowed\n"));
    }
    // A client that offers ws2fcgi.v1 may give its positions. A token that
    // cannot be read is not refused (the client would retry it forever):
    // the channels PHP joins are reported lost instead, so no gap is silent.
    let (offers_v1, since) = v1::offer(
        parts
            .headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let (since, since_invalid) = match since.map(v1::parse_since) {
        None => (Vec::new(), false),
        Some(Ok(positions)) => (positions, false),
        Some(Err(e)) => {
            tracing::info!(error = %e, "unreadable ws2fcgi.since token: the channels joined are reported lost");
            (Vec::new(), true)
        }
    };
    let client = proxy::client_info(peer, &parts.headers, &config.trusted_proxies);
    if let Err(refusal) = slot.claim_client(client.remote_ip) {
        ctx.metrics.refused(refusal.kind());
        tracing::info!(remote = %client.remote_ip, "handshake refused: max_connections_per_ip reached");
        return Ok(plain(
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from this address\n",
        ));
    }

    // The admission queue (admission.rs): a place while the open event waits
    // for a slot and runs, or at once the time the queue needs.
    let bounds = crate::admission::Bounds {
        open_queue: config.fpm.open_queue,
        pool_size: config.fpm.pool_size,
        queue_timeout: config.fpm.queue_timeout,
        event_time: ctx.fpm.event_time(),
    };
    let ticket = match ctx.admission.enter(&bounds) {
        Ok(ticket) => ticket,
        Err(full) => {
            ctx.metrics.refused("open_queue");
            tracing::debug!(
                remote = %client.remote_ip,
                retry_after = full.retry_after_secs,
                queued = ctx.admission.queued(),
                "handshake turned away: the admission queue is full"
            );
            return Ok(queue_full(
                on_upgrade,
                &parts.headers,
                &accept_key,
                offers_v1,
                full,
                slot,
                &tracker,
            ));
        }
    };
    let handle = ctx.hub.register(config.websocket.outbound_queue_bytes);
    let id = ctx.public_id(&handle.id);
    // Debug-level: a live span costs every idle connection ~230 bytes in the
    // log subscriber; info+ lines of a connection carry `conn` themselves.
    let span = tracing::debug_span!("conn", id = %id, remote = %client.remote_ip);
    let env = connection_env(
        &EnvSource {
            request: &parts,
            host,
            server_name: config.server_name.as_deref(),
            client: &client,
            script: &script,
            document_root: config.document_root.as_deref(),
            conn_id: &id,
            control_socket: config.control.socket.as_deref(),
            tls: tls.as_deref(),
        },
        &ctx.envs,
    );

    let answer = php::call(&ctx, &handle, &env, &Event::Open)
        .instrument(span.clone())
        .await;
    let answer = match answer {
        Ok(answer) if answer.is_success() => answer,
        Ok(answer) => {
            ctx.hub.unregister(&handle.id);
            ctx.metrics.refused("php");
            tracing::info!(conn = %id, remote = %client.remote_ip, status = answer.status, "php rejected the handshake");
            hold_until_closed(&cell, slot);
            return Ok(rejection(&answer));
        }
        Err(e) => {
            hold_until_closed(&cell, slot);
            ctx.hub.unregister(&handle.id);
            ctx.metrics.refused("php_unavailable");
            tracing::error!(conn = %id, remote = %client.remote_ip, error = %e, kind = e.kind(), "open event failed");
            return Ok(upstream_failure(&e));
        }
    };
    // PHP answered: the place in the admission queue is free.
    drop(ticket);

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept_key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    let mut chosen = None;
    if let Some(choice) = answer.header("sec-websocket-protocol") {
        if offered(&parts.headers, choice) {
            chosen = Some(choice);
        } else {
            tracing::warn!(
                conn = %id,
                protocol = %String::from_utf8_lossy(choice),
                "php chose a subprotocol the client did not offer; none selected"
            );
        }
    }
    // PHP chose none: a client that offered ws2fcgi.v1 gets it.
    let chosen = chosen.or(offers_v1.then_some(v1::PROTOCOL.as_bytes()));
    let speaks_v1 = chosen == Some(v1::PROTOCOL.as_bytes());
    if let Some(value) = chosen.and_then(|c| HeaderValue::from_bytes(c).ok()) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    let deflate = agree_deflate(&config, &parts.headers, headers, &handle);
    for (name, value) in &answer.headers {
        if name == "set-cookie"
            && let Ok(value) = HeaderValue::from_bytes(value)
        {
            headers.append(header::SET_COOKIE, value);
        }
    }

    let open_v1 = speaks_v1.then(|| {
        handle.set_v1();
        connection::OpenV1 {
            public_id: &id,
            since: &since,
            since_invalid,
        }
    });
    let close_after_open = match open_v1 {
        // In a cluster what the client missed is read from Redis.
        #[cfg(feature = "cluster")]
        Some(open) if ctx.cluster.is_some() => {
            connection::open_in_cluster(&ctx, &handle, &answer, open).await
        }
        open_v1 => connection::apply_answer(&ctx, &handle, &answer, open_v1),
    };
    let close_due = ctx.books.owe();
    let accepted = Accepted {
        ctx,
        handle,
        env,
        close_after_open,
        slot,
        close_due,
        inflate_window: deflate.map(|d| d.client_window_bits),
    };
    connection::spawn(&tracker, Box::new(accepted), on_upgrade, span);
    Ok(response)
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

/// Did the client offer this subprotocol?
fn offered(headers: &hyper::HeaderMap, chosen: &[u8]) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().as_bytes() == chosen)
}

/// PHP's refusal, passed on: its status, headers and body.
fn rejection(answer: &PhpResponse) -> HttpResponse {
    let mut response = Response::new(Full::new(answer.body.clone()));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &answer.headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// The answer to a handshake the admission queue has no room for: a client
/// that speaks ws2fcgi.v1 gets a 101 closed at once with 1013 and the delay
/// in the reason (a browser cannot read a refused handshake's status or
/// headers); any other `503` with `Retry-After`.
fn queue_full(
    on_upgrade: hyper::upgrade::OnUpgrade,
    headers: &hyper::HeaderMap,
    accept_key: &str,
    offers_v1: bool,
    full: crate::admission::Full,
    slot: Slot,
    tracker: &TaskTracker,
) -> HttpResponse {
    let secs = full.retry_after_secs;
    if offers_v1 {
        return turn_away::close_upgrade_at_once(
            on_upgrade,
            headers,
            accept_key,
            crate::admission::CLOSE_TRY_AGAIN,
            crate::admission::reason(secs),
            slot,
            tracker,
        );
    }
    let mut r = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "ws2fcgi: busy, try again\n",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// The client's answer when PHP could not be asked.
fn upstream_failure(error: &EventError) -> HttpResponse {
    match error {
        EventError::Fpm(FpmError::PoolTimeout(..) | FpmError::NoDescriptor(_)) => {
            let mut r = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "ws2fcgi: php-fpm is busy, try again\n",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        EventError::Fpm(FpmError::Timeout(_)) => plain(
            StatusCode::GATEWAY_TIMEOUT,
            "ws2fcgi: php did not answer in time\n",
        ),
        EventError::Fpm(FpmError::Connect { .. }) => {
            plain(StatusCode::BAD_GATEWAY, "ws2fcgi: php-fpm is unavailable\n")
        }
        _ => plain(
            StatusCode::BAD_GATEWAY,
            "ws2fcgi: php's answer could not be used\n",
        ),
    }
}
