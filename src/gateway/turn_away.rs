//! Handshakes answered with a WebSocket that is closed at once, with a close
//! code the client acts on, instead of an HTTP refusal: a browser's
//! WebSocket never shows the HTTP status of a refused handshake, but it does
//! show a close code and reason. PHP sees nothing of such a connection (no
//! open event, so no close event).
//!
//! ```text
//! client ──GET Upgrade──▶ gateway
//!        ◀── 101 Switching Protocols
//!        ◀── close 1012 "service restart"       (after a SIGUSR2 handover)
//!        ◀── close 1013 "busy; retry after N"   (the admission queue is full)
//! ```
//!
//! The socket keeps its slot until the client answers the close, or
//! [`TURN_AWAY_LINGER`] at most.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_util::task::TaskTracker;

use crate::limits::Slot;
use crate::v1;

/// How long a turned-away socket waits for the client's close frame.
const TURN_AWAY_LINGER: Duration = Duration::from_secs(5);

/// Accepts the upgrade of `req` and closes the WebSocket at once with
/// `code` and `reason`; returns the 101 to answer with. `accept_key` is the
/// derived `Sec-WebSocket-Accept`.
pub(super) fn close_at_once(
    req: &mut Request<Incoming>,
    accept_key: &str,
    code: u16,
    reason: String,
    slot: Slot,
    tracker: &TaskTracker,
) -> Response<Full<Bytes>> {
    let on_upgrade = hyper::upgrade::on(&mut *req);
    close_upgrade_at_once(
        on_upgrade,
        req.headers(),
        accept_key,
        code,
        reason,
        slot,
        tracker,
    )
}

/// [`close_at_once`] for a request already taken apart: its upgrade and headers.
pub(super) fn close_upgrade_at_once(
    on_upgrade: OnUpgrade,
    request_headers: &hyper::HeaderMap,
    accept_key: &str,
    code: u16,
    reason: String,
    slot: Slot,
    tracker: &TaskTracker,
) -> Response<Full<Bytes>> {
    tracker.spawn(async move {
        let _slot = slot;
        if let Ok(upgraded) = on_upgrade.await {
            close_now(TokioIo::new(upgraded), code, reason).await;
        }
    });
    response(request_headers, accept_key)
}

/// The 101 of a handshake that is turned away after it (the gateway's
/// direct path writes it itself, then calls [`close_now`]).
pub(super) fn response(
    request_headers: &hyper::HeaderMap,
    accept_key: &str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(accept_key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    if let Some(chosen) = subprotocol(request_headers)
        && let Ok(value) = HeaderValue::from_str(&chosen)
    {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    response
}

/// Closes the WebSocket on `io` (its 101 sent) with `code` and `reason`,
/// and waits for the client's close, [`TURN_AWAY_LINGER`] at most.
pub(super) async fn close_now<IO>(io: IO, code: u16, reason: String)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let frame = CloseFrame {
        code: code.into(),
        reason: reason.into(),
    };
    let exchange = async {
        ws.close(Some(frame)).await?;
        while let Some(message) = ws.next().await {
            message?;
        }
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    };
    let _ = tokio::time::timeout(TURN_AWAY_LINGER, exchange).await;
}

/// The subprotocol to select: ws2fcgi.v1 when offered, else the first offered.
fn subprotocol(headers: &hyper::HeaderMap) -> Option<String> {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    offered
        .iter()
        .find(|p| **p == v1::PROTOCOL)
        .or(offered.first())
        .map(|p| (*p).to_owned())
}
