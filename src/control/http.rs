//! The optional HTTP publish endpoint, for publishers that are not PHP.
//!
//! Off unless `control.http` (`--http-control`) is set. Takes the control
//! socket's JSON requests as POST bodies and gives the same replies:
//!
//! ```text
//! POST /            {"op":"publish","channel":"room","data":"hi"}
//! POST /publish     {"channel":"room","data":"hi"}          (op from the path)
//! Host: 127.0.0.1:8091                                        (this endpoint, or loopback)
//! Content-Type: application/json
//! Authorization: Bearer <control.http_token>                  (when a token is set)
//! → 200 {"ok":true,"delivered":3}     400 {"ok":false,"error":"…"}
//! ```
//!
//! A browser must not be able to use it, with or without a token: a page on
//! any site can POST to `http://127.0.0.1:8091/` (cross-site request
//! forgery), and a name of the attacker's that resolves to 127.0.0.1 makes
//! the browser treat the endpoint as the attacker's own site (DNS
//! rebinding). So, checked in this order before the body is read:
//!
//! ```text
//! 400  no Host, or not a valid one       421  a Host other than this endpoint's address or loopback
//! 403  an Origin header (a browser)      401  wrong or missing token
//! 404  unknown path   405  not POST      415  Content-Type other than application/json
//! 408  body not complete within control.http_timeout (the head has the same time; then the
//!      connection is closed)             413  body over control.max_line_bytes
//! ```
//!
//! A page can send neither a JSON content type nor a request without an
//! `Origin` to another site without the browser asking first (CORS
//! preflight, which is refused too), and after a DNS rebinding its requests
//! name the attacker's host. Keep it private all the same: bind it to
//! loopback (or a private interface) and set a token.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::{command, exec};
use crate::context::Context;
use crate::host;
use crate::local_http::LocalAddr;
use crate::proxy::canonical;

const OPS: &[&str] = &[
    "publish", "send", "join", "leave", "close", "meta", "presence", "stats",
];

/// Connections the endpoint serves at a time; more wait to be accepted.
pub const MAX_CLIENTS: usize = 64;

/// Serves the HTTP endpoint on `listener` until the task set is aborted.
pub fn spawn(listener: TcpListener, ctx: Arc<Context>, tasks: &mut JoinSet<()>) {
    crate::local_http::spawn(
        listener,
        "http control",
        MAX_CLIENTS,
        ctx,
        tasks,
        |ctx| ctx.config().control.http_timeout,
        |ctx, req| async move { handle(&ctx, req).await },
    );
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn refuse(status: StatusCode, error: &str) -> Response<Full<Bytes>> {
    reply(status, &json!({"ok": false, "error": error}))
}

/// The connection ends after this answer: what is left of the body is not read.
fn closing(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Is `host` this endpoint, as a program on the machine would name it: the
/// address the connection came in on, or loopback (`localhost`, `127.0.0.1`,
/// `[::1]`), with the port it came in on (none meaning 80)?
fn addressed_to_us(host: &host::Host<'_>, local: SocketAddr) -> bool {
    if host.port.unwrap_or(80) != local.port() {
        return false;
    }
    if host.name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let literal = host.name.trim_start_matches('[').trim_end_matches(']');
    match literal.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || canonical(ip) == canonical(local.ip()),
        Err(_) => false,
    }
}

/// `application/json`, with any parameters (`; charset=utf-8`)?
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// The refusal of what a browser (cross-site request, DNS rebinding) could
/// send, if `req` is that; looked at before the token.
fn browser_refusal(req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    let host = match host::from_headers(req.headers()) {
        Ok(host) => host,
        Err(e) => {
            let error = format!("invalid Host header: {e}");
            return Some(refuse(StatusCode::BAD_REQUEST, &error));
        }
    };
    let local = req.extensions().get::<LocalAddr>().map(|l| l.0);
    if !local.is_some_and(|local| addressed_to_us(&host, local)) {
        return Some(refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "Host must be this endpoint's address or localhost, with its port",
        ));
    }
    if req.headers().contains_key(header::ORIGIN) {
        return Some(refuse(
            StatusCode::FORBIDDEN,
            "requests with an Origin header (from web pages) are refused",
        ));
    }
    None
}

async fn handle(ctx: &Context, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(refusal) = browser_refusal(&req) {
        tracing::debug!(status = %refusal.status(), "http control request refused");
        return refusal;
    }
    let control = &ctx.config().control;
    if let Some(token) = &control.http_token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if !given.is_some_and(|given| token.matches(given)) {
            let mut r = refuse(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let path_op = match req.uri().path().trim_start_matches('/') {
        "" => None,
        op if OPS.contains(&op) => Some(op.to_owned()),
        _ => return refuse(StatusCode::NOT_FOUND, "unknown path; POST / or /<op>"),
    };
    if req.method() != Method::POST {
        let mut r = refuse(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if !is_json(req.headers().get(header::CONTENT_TYPE)) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    let max = control.max_line_bytes;
    let limit = control.http_timeout;
    let collect = Limited::new(req.into_body(), max).collect();
    let body = match tokio::time::timeout(limit, collect).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(_)) => {
            return closing(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request longer than {max} bytes"),
            ));
        }
        Err(_) => {
            return closing(refuse(
                StatusCode::REQUEST_TIMEOUT,
                &format!("body not received within {limit:?}"),
            ));
        }
    };
    let body: &[u8] = if body.trim_ascii().is_empty() && path_op.is_some() {
        b"{}" // POST /stats with no body
    } else {
        &body
    };
    let mut value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if let (Some(op), Some(object)) = (path_op, value.as_object_mut()) {
        match object.get("op") {
            None => {
                object.insert("op".into(), Value::String(op));
            }
            Some(given) if given.as_str() == Some(op.as_str()) => {}
            Some(_) => return refuse(StatusCode::BAD_REQUEST, "`op` differs from the path"),
        }
    }
    match command::parse_value(value) {
        Ok(cmd) => {
            let Some(pass) = ctx.control_gate.pass().await else {
                // Handed over: not run here; the new process serves it.
                return closing(refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "handed over to a new process: not run; send it again",
                ));
            };
            let answer = exec::execute(ctx, cmd).await;
            drop(pass);
            let status = if answer.is_ok() {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            };
            reply(status, &answer.into_value())
        }
        Err(e) => reply(StatusCode::BAD_REQUEST, &exec::error_reply(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_endpoint_and_loopback_are_our_hosts() {
        let ours = |host: &str, local: &str| {
            let host = host::parse(host.as_bytes()).unwrap();
            addressed_to_us(&host, local.parse().unwrap())
        };
        for host in [
            "127.0.0.1:8091",
            "localhost:8091",
            "LocalHost:8091",
            "[::1]:8091",
        ] {
            assert!(ours(host, "127.0.0.1:8091"), "{host}");
        }
        assert!(ours("10.0.0.5:8091", "10.0.0.5:8091"), "the bound address");
        assert!(
            ours("localhost:8091", "10.0.0.5:8091"),
            "loopback names too"
        );
        assert!(ours("10.0.0.5:8091", "[::ffff:10.0.0.5]:8091"), "mapped");
        assert!(ours("localhost", "127.0.0.1:80"), "no port is 80");
        for host in [
            "attacker.example:8091",
            "localhost.attacker.example:8091",
            "127.0.0.1:8092",
            "127.0.0.1",
            "10.0.0.6:8091",
            "[::2]:8091",
        ] {
            assert!(!ours(host, "10.0.0.5:8091"), "{host}");
            assert!(!ours(host, "127.0.0.1:8091"), "{host}");
        }
    }

    #[test]
    fn json_content_types() {
        let json = |v: &'static str| is_json(Some(&HeaderValue::from_static(v)));
        assert!(json("application/json"));
        assert!(json("Application/JSON; charset=utf-8"));
        assert!(!json("text/plain"));
        assert!(!json("application/x-www-form-urlencoded"));
        assert!(!json("application/jsonp"));
        assert!(!is_json(None));
    }
}
