//! The optional HTTP publish endpoint, for publishers that are not PHP.
//!
//! Off unless `control.http` (`--http-control`) is set. Takes the control
//! socket's JSON requests as POST bodies and gives the same replies:
//!
//! ```text
//! POST /            {"op":"publish","channel":"room","data":"hi"}
//! POST /publish     {"channel":"room","data":"hi"}          (op from the path)
//! Authorization: Bearer <control.http_token>                  (when a token is set)
//! → 200 {"ok":true,"delivered":3}     400 {"ok":false,"error":"…"}
//!   401 wrong or missing token         404 unknown path   405 not POST   413 body too large
//! ```
//!
//! Keep it private: bind it to loopback (or a private interface) and set a token.

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

const OPS: &[&str] = &[
    "publish", "send", "join", "leave", "close", "meta", "presence", "stats",
];

/// Serves the HTTP endpoint on `listener` until the task set is aborted.
pub fn spawn(listener: TcpListener, ctx: Arc<Context>, tasks: &mut JoinSet<()>) {
    crate::local_http::spawn(
        listener,
        "http control",
        ctx,
        tasks,
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

/// Compares without an early exit, so timing does not reveal the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn handle(ctx: &Context, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let control = &ctx.config().control;
    if let Some(token) = &control.http_token {
        let expected = format!("Bearer {token}");
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !same(given, expected.as_bytes()) {
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
    let max = control.max_line_bytes;
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request longer than {max} bytes"),
            );
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
            let answer = exec::execute(ctx, cmd).await;
            let ok = answer.get("ok").and_then(Value::as_bool).unwrap_or(false);
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            };
            reply(status, &answer)
        }
        Err(e) => reply(StatusCode::BAD_REQUEST, &exec::error_reply(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn token_comparison() {
        assert!(same(b"Bearer x", b"Bearer x"));
        assert!(!same(b"Bearer x", b"Bearer y"));
        assert!(!same(b"Bearer", b"Bearer x"));
    }
}
