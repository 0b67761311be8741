//! The admin HTTP listener: health and metrics for operators.
//!
//! Off unless `admin` (`--admin`) is set; a bare port means `127.0.0.1:PORT`.
//! Keep it on loopback or a private interface: it has no authentication.
//!
//! ```text
//! GET /healthz  200 {"status":"ok","fpm":"reachable",…}
//!               503 {"status":"unavailable","fpm":"unreachable","error":"…"}  (or "shutting_down")
//! GET /metrics  Prometheus text format (see metrics.rs)
//! ```

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::context::Context;

/// Connections the admin listener serves at a time; more wait to be accepted.
/// Health checks and scrapes are short: a few connections are enough.
pub const MAX_CLIENTS: usize = 16;

/// Serves `/healthz` and `/metrics` until the task set is aborted.
pub fn spawn(listener: TcpListener, ctx: Arc<Context>, tasks: &mut JoinSet<()>) {
    crate::local_http::spawn(
        listener,
        "admin",
        MAX_CLIENTS,
        ctx,
        tasks,
        |_| crate::local_http::HEADER_READ_TIMEOUT,
        |ctx, req| async move { handle(&ctx, req).await },
    );
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn handle(ctx: &Context, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".into(),
        );
    }
    match req.uri().path() {
        "/healthz" => health(ctx).await,
        "/metrics" => {
            let body = ctx.metrics.render(&ctx.snapshot());
            respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            )
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /healthz or /metrics\n".into(),
        ),
    }
}

async fn health(ctx: &Context) -> Response<Full<Bytes>> {
    let connections = ctx.hub.connection_count();
    if ctx.is_shutting_down() {
        let body = json!({"status": "shutting_down", "connections": connections});
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            body.to_string(),
        );
    }
    // An idle pooled connection proves PHP-FPM was there a moment ago; else
    // dial it. Drop the idle ones PHP-FPM closed first: a stopped PHP-FPM
    // leaves them in the pool until the next reap.
    ctx.fpm.reap_idle();
    let probe = if ctx.fpm.idle_count() > 0 {
        Ok(())
    } else {
        ctx.fpm.probe().await
    };
    match probe {
        Ok(()) => {
            let body = json!({
                "status": "ok",
                "fpm": "reachable",
                "connections": connections,
                "uptime_seconds": ctx.uptime().as_secs(),
            });
            respond(StatusCode::OK, "application/json", body.to_string())
        }
        Err(e) => {
            let body = json!({
                "status": "unavailable",
                "fpm": "unreachable",
                "error": e.to_string(),
                "connections": connections,
            });
            respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                body.to_string(),
            )
        }
    }
}
