//! The handshake of a Pusher client: `GET /app/{key}?protocol=7&client=js&version=…`
//! on the same listeners as the raw contract, when `[[pusher.app]]` is set.
//!
//! PHP is asked only when the app has a `script`: its `open` event, with the
//! handshake's variables (cookies, so the session), before the upgrade is
//! answered. A refusal the client must understand comes after the upgrade,
//! as Pusher sends it, so pusher-js acts on its code:
//!
//! ```text
//! unknown app key                  pusher:error 4001, close 4001   (no reconnect)
//! protocol missing / not a number  pusher:error 4008 / 4006, close (no reconnect)
//! protocol other than 5, 6 or 7   pusher:error 4007, close 4007   (no reconnect)
//! max_connections_per_ip reached   pusher:error 4100, close 4100   (reconnect after a back-off)
//! the open events' queue is full   pusher:error 4100, close 4100   (reconnect after a back-off)
//! PHP refused the open (non-2xx)   pusher:error 4009, close 4009   (no reconnect)
//! PHP could not answer the open    pusher:error 4200, close 4200   (reconnect at once)
//! accepted                         pusher:connection_established {socket_id, activity_timeout}
//! ```
//!
//! What is refused before any upgrade is refused as on the raw path: not a
//! WebSocket request, an origin not allowed, shutting down, and, for an app
//! with a `script`, a `Host` header PHP must not see (400). An accepted
//! client that offers permessage-deflate gets it as a raw client does
//! (`websocket.compression`, see `deflate.rs`).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{HttpResponse, check_upgrade, plain};
use crate::context::Context;
use crate::event::{ConnEnv, EnvSource, connection_env};
use crate::host;
use crate::hub::ConnHandle;
use crate::limits::Slot;
use crate::php::EventError;
use crate::proxy::{self, Origin};
use crate::pusher::php::ConnEvent;
use crate::pusher::protocol::codes;
use crate::pusher::{self, SocketId, connection, frame};
use crate::response::PhpResponse;

/// The app key of a Pusher path (`/app/{key}`), if it is one.
pub(super) fn app_key(path: &str) -> Option<&str> {
    path.strip_prefix("/app/")
        .filter(|key| !key.is_empty() && !key.contains('/'))
}

/// Answers a Pusher client's handshake and starts its connection.
pub(super) async fn handshake(
    ctx: Arc<Context>,
    peer: Origin,
    tls: Option<Arc<crate::tls::Session>>,
    mut slot: Slot,
    mut req: Request<Incoming>,
    tracker: TaskTracker,
    key: String,
) -> HttpResponse {
    let accept_key = match check_upgrade(&req) {
        Ok(key) => derive_accept_key(key.as_bytes()),
        Err(response) => return *response,
    };
    if ctx.handed_over() {
        // The successor serves: a reconnect, not a refusal (as for raw routes).
        return super::turn_away::close_at_once(
            &mut req,
            &accept_key,
            crate::contract::CLOSE_RESTART,
            crate::contract::REASON_RESTART.to_owned(),
            slot,
            &tracker,
        );
    }
    if ctx.is_shutting_down() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "server shutting down\n");
    }
    if let Some(refusal) = super::refuse_origin(&ctx, req.headers(), "pusher handshake") {
        return refusal;
    }
    let app = ctx.pusher_apps().by_key(&key).cloned();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _body) = req.into_parts();
    // Events to PHP: Host becomes SERVER_NAME, SERVER_PORT and HTTP_HOST,
    // so PHP never sees a malformed one.
    let script_host = match app.as_ref().and_then(|a| a.script.clone()) {
        None => None,
        Some(script) => match host::from_headers(&parts.headers) {
            Ok(host) => Some((script, host)),
            Err(e) => {
                ctx.metrics.refused("host");
                tracing::info!(error = %e, "pusher handshake refused: invalid Host header");
                return plain(StatusCode::BAD_REQUEST, "invalid Host header\n");
            }
        },
    };
    let config = ctx.config();
    let client = proxy::client_info(peer, &parts.headers, &config.trusted_proxies);

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept_key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }

    let refusal = match (&app, protocol_version(parts.uri.query())) {
        (None, _) => Some((
            codes::APP_DOES_NOT_EXIST,
            format!("App key {key} not in this server"),
        )),
        (_, Err(refusal)) => Some(refusal),
        (Some(_), Ok(())) => match slot.claim_client(client.remote_ip) {
            Ok(()) => None,
            Err(_) => Some((codes::OVER_CAPACITY, "Over capacity".to_string())),
        },
    };
    let app = match (app, refusal) {
        (Some(app), None) => app,
        (_, Some((code, message))) => {
            ctx.metrics.refused("pusher");
            tracing::info!(remote = %client.remote_ip, code, %message, "pusher connection refused");
            refuse_after_upgrade(&ctx, &tracker, slot, on_upgrade, code, message);
            return response;
        }
        (None, None) => unreachable!("an unknown app is refused"),
    };

    let handle = ctx.hub.register(config.websocket.outbound_queue_bytes);
    // permessage-deflate as on the raw endpoint: publications compressed
    // once for every member that agreed, the client's messages inflated.
    let deflate = super::agree_deflate(&config, &parts.headers, response.headers_mut(), &handle);
    let socket_id = SocketId::of(&handle.id, ctx.socket_tag()).to_string();
    let span = tracing::debug_span!("pusher", socket_id = %socket_id, app = %app.id, remote = %client.remote_ip);
    let php = match script_host {
        None => None,
        Some((script, host)) => {
            let conn_id = ctx.public_id(&handle.id);
            let env = connection_env(
                &EnvSource {
                    request: &parts,
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
            let env = pusher::php::connection_env(env, &app.id, &socket_id);
            let open = open_in_php(&ctx, &handle, &conn_id, &env)
                .instrument(span.clone())
                .await;
            match open {
                Ok(cookies) => {
                    for cookie in cookies {
                        response.headers_mut().append(header::SET_COOKIE, cookie);
                    }
                    Some(connection::PhpConn::new(env, ctx.books.owe()))
                }
                Err((code, message)) => {
                    ctx.hub.unregister(&handle.id);
                    refuse_after_upgrade(&ctx, &tracker, slot, on_upgrade, code, message);
                    return response;
                }
            }
        }
    };

    let activity = config.pusher.activity_timeout.as_secs().max(1);
    let _ = handle
        .outbox
        .push(frame::text(&frame::connection_established(
            &socket_id, activity,
        )));
    let accepted = connection::Accepted {
        ctx,
        handle,
        app,
        socket_id,
        slot,
        php,
        inflate_window: deflate.map(|d| d.client_window_bits),
    };
    let task = async move {
        match on_upgrade.await {
            Ok(upgraded) => connection::serve(accepted, upgraded).await,
            Err(e) => {
                tracing::info!(error = %e, "pusher client left during the upgrade");
                connection::abandon(accepted).await;
            }
        }
    }
    .instrument(span);
    tracker.spawn(task);
    response
}

/// Sends the open event to the app's script, through the admission queue
/// of open events (`admission.rs`, as on the raw path). `Ok`: PHP accepted;
/// its metadata is set, and its `Set-Cookie` values are returned for the
/// 101. `Err`: the code and message of the refusal.
async fn open_in_php(
    ctx: &Context,
    handle: &ConnHandle,
    conn_id: &str,
    env: &ConnEnv,
) -> Result<Vec<HeaderValue>, (u16, String)> {
    let config = ctx.config();
    let bounds = crate::admission::Bounds {
        open_queue: config.fpm.open_queue,
        pool_size: config.fpm.pool_size,
        queue_timeout: config.fpm.queue_timeout,
        event_time: ctx.fpm.event_time(),
    };
    // Turned away: Pusher's "over capacity", which pusher-js answers by
    // reconnecting after a back-off.
    let ticket = ctx.admission.enter(&bounds).map_err(|full| {
        ctx.metrics.refused("open_queue");
        let message = format!("Over capacity; retry after {}s", full.retry_after_secs);
        (codes::OVER_CAPACITY, message)
    })?;
    let open = pusher::php::ask(ctx, handle, env, ConnEvent::Open, None).await;
    drop(ticket);
    let answer = open_outcome(ctx, handle, conn_id, open)?;
    // As in the raw contract: PHP's cookies go out on the 101.
    let cookies = answer
        .headers
        .iter()
        .filter(|(name, _)| name == "set-cookie")
        .filter_map(|(_, value)| HeaderValue::from_bytes(value).ok())
        .collect();
    Ok(cookies)
}

/// What PHP's answer to the open event makes of the connection: `Ok` to
/// establish it (the answer's metadata set), else the code and message of
/// the refusal.
fn open_outcome(
    ctx: &Context,
    handle: &ConnHandle,
    conn_id: &str,
    open: Result<PhpResponse, EventError>,
) -> Result<PhpResponse, (u16, String)> {
    match open {
        Ok(answer) if answer.is_success() => {
            let meta = &answer.directives.meta;
            if !meta.is_empty()
                && let Err(problem) = handle.update_meta(meta)
            {
                tracing::warn!(conn = %conn_id, %problem, "metadata directive refused");
            }
            Ok(answer)
        }
        Ok(answer) => {
            ctx.metrics.refused("php");
            tracing::info!(conn = %conn_id, status = answer.status, "php refused the pusher connection");
            Err((
                codes::UNAUTHORIZED,
                format!("Refused by the app (status {})", answer.status),
            ))
        }
        Err(e) => {
            ctx.metrics.refused("php_unavailable");
            tracing::error!(conn = %conn_id, error = %e, kind = e.kind(), "pusher open event failed");
            Err((
                codes::RECONNECT,
                "The app could not be asked; try again".into(),
            ))
        }
    }
}

/// Lets the upgrade complete, then sends `pusher:error` and a close with
/// `code` (the slot is held until the socket closes).
fn refuse_after_upgrade(
    ctx: &Context,
    tracker: &TaskTracker,
    slot: Slot,
    on_upgrade: hyper::upgrade::OnUpgrade,
    code: u16,
    message: String,
) {
    let close_timeout = ctx.config().websocket.close_timeout;
    tracker.spawn(async move {
        let _slot = slot;
        if let Ok(upgraded) = on_upgrade.await {
            let _ = tokio::time::timeout(close_timeout, refuse(upgraded, code, &message)).await;
        }
    });
}

/// Checks the `protocol` query parameter: `Err((code, message))` unless 5 to 7.
fn protocol_version(query: Option<&str>) -> Result<(), (u16, String)> {
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("protocol="));
    let Some(value) = value else {
        return Err((
            codes::NO_PROTOCOL_VERSION,
            "No protocol version supplied".into(),
        ));
    };
    match value.parse::<u32>() {
        Ok(pusher::MIN_PROTOCOL_VERSION..=pusher::PROTOCOL_VERSION) => Ok(()),
        Ok(other) => Err((
            codes::UNSUPPORTED_PROTOCOL,
            format!(
                "Unsupported protocol version {other}; this server speaks {} to {}",
                pusher::MIN_PROTOCOL_VERSION,
                pusher::PROTOCOL_VERSION
            ),
        )),
        Err(_) => Err((
            codes::INVALID_VERSION_FORMAT,
            "Invalid version string format".into(),
        )),
    }
}

/// Sends `pusher:error` and a close frame with `code`, then waits for the
/// client to close (the caller bounds it).
async fn refuse(upgraded: hyper::upgrade::Upgraded, code: u16, message: &str) {
    let mut io = TokioIo::new(upgraded);
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(message.as_bytes().get(..120).unwrap_or(message.as_bytes()));
    let error = frame::text(&frame::error(Some(code), message));
    let close = crate::frame::close(&payload);
    if io.write_all(&error).await.is_err() || io.write_all(&close).await.is_err() {
        return;
    }
    let _ = io.flush().await;
    // The client answers with its close frame and closes; what it sends
    // meanwhile is read and dropped.
    let mut sink = [0u8; 512];
    while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_versions() {
        assert_eq!(app_key("/app/app-key"), Some("app-key"));
        for path in ["/app/", "/app", "/apps/1/events", "/app/a/b", "/chat"] {
            assert_eq!(app_key(path), None, "{path}");
        }
        assert!(protocol_version(Some("protocol=7&client=js&version=8.4.0")).is_ok());
        assert!(protocol_version(Some("client=js&protocol=7")).is_ok());
        let code = |q| protocol_version(q).unwrap_err().0;
        // pusher-websocket-java asks for 5, served as 7 (as Pusher does).
        assert!(protocol_version(Some("client=java-client&protocol=5&version=2.4.4")).is_ok());
        assert!(protocol_version(Some("protocol=6")).is_ok());
        assert_eq!(code(Some("protocol=4")), codes::UNSUPPORTED_PROTOCOL);
        assert_eq!(code(Some("protocol=8")), codes::UNSUPPORTED_PROTOCOL);
        assert_eq!(code(Some("protocol=x")), codes::INVALID_VERSION_FORMAT);
        assert_eq!(code(None), codes::NO_PROTOCOL_VERSION);
    }
}
