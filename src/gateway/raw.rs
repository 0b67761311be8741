//! The handshake of a raw route (a script of `routes`, not a Pusher app):
//! the checks, the admission queue and PHP's open event, up to the answer
//! the client gets. Both ways a request arrives use it: hyper's service
//! (`mod.rs`) and the direct path (`direct.rs`); each writes the answer and
//! starts the connection its own way.

use std::sync::Arc;

use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::{HttpResponse, agree_deflate, check_upgrade_parts, plain, turn_away};
use crate::connection::{self, Accepted};
use crate::context::Context;
use crate::event::{EnvSource, Event, connection_env};
use crate::fpm::FpmError;
use crate::host;
use crate::limits::Slot;
use crate::php::{self, EventError};
use crate::proxy::{self, Origin};
use crate::response::PhpResponse;
use crate::v1;
use bytes::Bytes;
use http_body_util::Full;
use tracing::Instrument as _;

/// What a raw route's handshake comes to.
pub(super) enum Outcome {
    /// An HTTP answer; its socket closes after it. `hold`: the slot stays
    /// with the socket until it closes (PHP's refusal may be large, and a
    /// client that does not read it keeps its socket open); otherwise it
    /// was given back already.
    Answer {
        response: HttpResponse,
        hold: Option<Slot>,
    },
    /// A 101 whose WebSocket is closed at once with `code` and `reason`
    /// (`turn_away.rs`: 1012 after a handover, 1013 when the admission
    /// queue is full), holding `slot` until then.
    TurnAway {
        response: HttpResponse,
        code: u16,
        reason: String,
        slot: Slot,
    },
    /// A 101 and the connection PHP accepted, to run in `span`.
    Open {
        response: HttpResponse,
        accepted: Box<Accepted>,
        span: tracing::Span,
    },
}

impl Outcome {
    /// An answer given before PHP: the slot is given back with it.
    fn answer(response: HttpResponse) -> Self {
        Self::Answer {
            response,
            hold: None,
        }
    }
}

/// Runs the handshake of `parts` (its head received, `slot.head_received()`
/// called) on a raw route: every check, the admission queue, PHP's open
/// event, and the answer.
pub(super) async fn handshake(
    ctx: &Arc<Context>,
    peer: Origin,
    tls: Option<Arc<crate::tls::Session>>,
    mut slot: Slot,
    parts: &Parts,
) -> Outcome {
    let config = ctx.config();
    let Some(script) = config.script_for(parts.uri.path()).map(|s| s.to_owned()) else {
        return Outcome::answer(plain(
            StatusCode::NOT_FOUND,
            "no WebSocket route for this path\n",
        ));
    };
    let accept_key = match check_upgrade_parts(&parts.method, &parts.headers) {
        Ok(key) => derive_accept_key(key.as_bytes()),
        Err(response) => return Outcome::answer(*response),
    };
    if ctx.handed_over() {
        // A handshake that reached this process as the successor took over:
        // not a refusal, a reconnect, which the successor serves.
        return Outcome::TurnAway {
            response: turn_away::response(&parts.headers, &accept_key),
            code: crate::contract::CLOSE_RESTART,
            reason: crate::contract::REASON_RESTART.to_owned(),
            slot,
        };
    }
    if ctx.is_shutting_down() {
        return Outcome::answer(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "server shutting down\n",
        ));
    }

    // Host becomes SERVER_NAME, SERVER_PORT and HTTP_HOST: PHP never sees a malformed one.
    let host = match host::from_headers(&parts.headers) {
        Ok(host) => host,
        Err(e) => {
            ctx.metrics.refused("host");
            tracing::info!(error = %e, "handshake refused: invalid Host header");
            return Outcome::answer(plain(StatusCode::BAD_REQUEST, "invalid Host header\n"));
        }
    };
    if let Some(refusal) = super::refuse_origin(ctx, &parts.headers, "handshake") {
        return Outcome::answer(refusal);
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
        return Outcome::answer(plain(
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
            return queue_full(&parts.headers, &accept_key, offers_v1, full, slot);
        }
    };
    let handle = ctx.hub.register(config.websocket.outbound_queue_bytes);
    let id = ctx.public_id(&handle.id);
    // Debug-level: a live span costs every idle connection ~230 bytes in the
    // log subscriber; info+ lines of a connection carry `conn` themselves.
    let span = tracing::debug_span!("conn", id = %id, remote = %client.remote_ip);
    let env = connection_env(
        &EnvSource {
            request: parts,
            host,
            server_name: config.server_name.as_deref(),
            client: &client,
            script: &script,
            document_root: config.document_root.as_deref(),
            control_socket: config.control.socket.as_deref(),
            tls: tls.as_deref(),
        },
        &ctx.envs,
    );

    let answer = php::call(ctx, &handle, &env, &Event::Open)
        .instrument(span.clone())
        .await;
    let answer = match answer {
        Ok(answer) if answer.is_success() => answer,
        Ok(answer) => {
            ctx.hub.unregister(&handle.id);
            ctx.metrics.refused("php");
            tracing::info!(conn = %id, remote = %client.remote_ip, status = answer.status, "php rejected the handshake");
            return Outcome::Answer {
                response: rejection(&answer),
                hold: Some(slot),
            };
        }
        Err(e) => {
            ctx.hub.unregister(&handle.id);
            ctx.metrics.refused("php_unavailable");
            tracing::error!(conn = %id, remote = %client.remote_ip, error = %e, kind = e.kind(), "open event failed");
            return Outcome::Answer {
                response: upstream_failure(&e),
                hold: Some(slot),
            };
        }
    };
    // PHP answered: the place in the admission queue is free.
    drop(ticket);
    // In a storm this open's FastCGI slot went on to a waiting one, whose
    // task was just woken (next on this thread). Let it send its request
    // first: starting this connection would put it behind every task queued
    // here, and a PHP worker would wait for all of them.
    if ctx.fpm.is_saturated() {
        tokio::task::yield_now().await;
    }

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
            connection::open_in_cluster(ctx, &handle, &answer, open).await
        }
        open_v1 => connection::apply_answer(ctx, &handle, &answer, open_v1),
    };
    let close_due = ctx.books.owe();
    let accepted = Accepted {
        ctx: ctx.clone(),
        handle,
        env,
        close_after_open,
        slot,
        close_due,
        inflate_window: deflate.map(|d| d.client_window_bits),
        pre_read: Bytes::new(),
    };
    Outcome::Open {
        response,
        accepted: Box::new(accepted),
        span,
    }
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
    headers: &hyper::HeaderMap,
    accept_key: &str,
    offers_v1: bool,
    full: crate::admission::Full,
    slot: Slot,
) -> Outcome {
    let secs = full.retry_after_secs;
    if offers_v1 {
        return Outcome::TurnAway {
            response: turn_away::response(headers, accept_key),
            code: crate::admission::CLOSE_TRY_AGAIN,
            reason: crate::admission::reason(secs),
            slot,
        };
    }
    let mut r = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "ws2fcgi: busy, try again\n",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    Outcome::answer(r)
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
