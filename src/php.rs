//! Sending one event to PHP and reading its answer.
//!
//! Glues the pieces together: the event's CGI variables (`event.rs`), the
//! FastCGI pool (`fpm/`) and the answer's parser (`response.rs`). PHP's
//! stderr is logged here, in the connection's span.

use std::time::{Duration, Instant};

use crate::context::Context;
use crate::event::{ConnEnv, Event, event_env};
use crate::fpm::FpmError;
use crate::hub::{ConnHandle, ConnId};
use crate::response::{self, PhpResponse, ResponseError};

/// First pause before retrying an event PHP-FPM could not take.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between retries.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Why an event has no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// PHP-FPM could not be reached or did not answer properly.
    #[error(transparent)]
    Fpm(#[from] FpmError),
    /// PHP's answer could not be used.
    #[error("unusable answer from php: {0}")]
    Response(#[from] ResponseError),
}

impl EventError {
    /// True when the event certainly never reached PHP.
    pub fn never_reached_php(&self) -> bool {
        matches!(self, Self::Fpm(e) if e.never_reached_php())
    }

    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fpm(e) => e.kind(),
            Self::Response(_) => "bad_response",
        }
    }
}

/// What an event's own variables are written into first: room for a
/// connection's own variables and the event's, for most clients.
pub const VARS_CAPACITY: usize = 512;

/// Appends the connection's own variables (`env.own`) to `out`, with
/// `WS_CONNECTION_ID` written from the hub's id as [`Context::public_id`]
/// writes it, without formatting machinery or an allocation.
pub fn push_conn_vars(ctx: &Context, handle: &ConnHandle, env: &ConnEnv, out: &mut Vec<u8>) {
    let hex = handle.id.hex();
    match &ctx.cluster {
        Some(cluster) => env
            .own
            .push_to(&[cluster.node_id().as_bytes(), b".", &hex], out),
        None => env.own.push_to(&[&hex], out),
    }
}

/// Sends `event` once; `env` is the connection's fixed variables.
pub async fn call(
    ctx: &Context,
    handle: &ConnHandle,
    env: &ConnEnv,
    event: &Event,
) -> Result<PhpResponse, EventError> {
    let mut vars = Vec::with_capacity(VARS_CAPACITY);
    push_conn_vars(ctx, handle, env, &mut vars);
    event_env(event, handle, &mut vars);
    send(ctx, &request(handle, env, &vars, event)).await
}

/// One FastCGI request to PHP: an event's variables and body, for any
/// protocol (the raw contract's events above, the Pusher protocol's in
/// `pusher/php.rs`).
pub struct Request<'a> {
    /// `WS_EVENT`'s value, for metrics and logs.
    pub event: &'static str,
    /// The connection it is about, for logs (none for a channel's event).
    pub conn: Option<&'a ConnId>,
    /// The encoded variables, in parts: the route's shared part, then the
    /// connection's own and the event's.
    pub params: [&'a [u8]; 2],
    /// The request body.
    pub body: &'a [u8],
}

fn request<'a>(
    handle: &'a ConnHandle,
    env: &'a ConnEnv,
    vars: &'a [u8],
    event: &'a Event,
) -> Request<'a> {
    Request {
        event: event.name(),
        conn: Some(&handle.id),
        params: [&env.shared, vars],
        body: event.body(),
    }
}

/// Sends one request to PHP and reads its answer.
pub async fn send(ctx: &Context, req: &Request<'_>) -> Result<PhpResponse, EventError> {
    let started = Instant::now();
    let conn = || req.conn.map(|id| ctx.public_id(id)).unwrap_or_default();
    let output = ctx.fpm.call(&req.params, req.body).await;
    // Counted once it reached PHP-FPM: a retry of an event PHP-FPM could not
    // take is the same event, not another one.
    if !matches!(&output, Err(e) if e.never_reached_php()) {
        ctx.metrics.event(req.event);
    }
    let output = output.inspect_err(|e| ctx.metrics.event_error(e.kind()))?;
    ctx.metrics
        .fastcgi_seconds
        .observe(started.elapsed().as_secs_f64());
    if !output.stderr.is_empty() {
        tracing::warn!(
            conn = %conn(),
            event = req.event,
            dropped = output.stderr_dropped,
            "php stderr: {}",
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    let fpm = &ctx.config().fpm;
    let answer = response::parse(
        output.stdout,
        fpm.max_response_header_bytes,
        fpm.max_response_body_bytes,
    )
    .inspect_err(|_| ctx.metrics.event_error("bad_response"))?;
    for problem in &answer.problems {
        tracing::warn!(conn = %conn(), event = req.event, %problem, "ignored directive");
    }
    Ok(answer)
}

/// Sends `event`, retrying with backoff while PHP-FPM cannot take it (not
/// running, every connection busy, no file descriptor free), as long as the next attempt would start
/// within `fpm.retry_window` of the first (of the first that found PHP-FPM
/// unreachable, when that is what failed). Errors after the request reached
/// PHP (timeouts, crashes, bad answers) are not retried: PHP may have acted
/// on the event already.
///
/// During the shutdown drain an attempt waits for a free connection until
/// the drain's deadline, so a busy pool is no reason to give up before it;
/// an attempt that was already waiting when the drain began is retried at
/// once, and none is started past the deadline.
pub async fn call_retrying(
    ctx: &Context,
    handle: &ConnHandle,
    env: &ConnEnv,
    event: &Event,
) -> Result<PhpResponse, EventError> {
    let mut vars = Vec::with_capacity(VARS_CAPACITY);
    push_conn_vars(ctx, handle, env, &mut vars);
    event_env(event, handle, &mut vars);
    send_retrying(ctx, &request(handle, env, &vars, event)).await
}

/// Sends `req` as [`call_retrying`] sends an event.
pub async fn send_retrying(ctx: &Context, req: &Request<'_>) -> Result<PhpResponse, EventError> {
    let window = ctx.config().fpm.retry_window;
    let first = Instant::now();
    let mut unreachable_since = None;
    let mut pause = RETRY_FIRST;
    loop {
        let attempt = Instant::now();
        let result = send(ctx, req).await;
        let retry_in = match &result {
            // The next attempt waits for a slot until the drain's deadline.
            Err(EventError::Fpm(FpmError::PoolTimeout(..) | FpmError::NoDescriptor(_)))
                if ctx.drain.is_draining() =>
            {
                Duration::ZERO
            }
            Err(EventError::Fpm(FpmError::PoolTimeout(..) | FpmError::NoDescriptor(_)))
                if Instant::now() + pause < first + window =>
            {
                pause
            }
            Err(EventError::Fpm(FpmError::Connect { .. }))
                if Instant::now() + pause < *unreachable_since.get_or_insert(attempt) + window =>
            {
                pause
            }
            _ => return result,
        };
        if let Err(e) = &result {
            tracing::warn!(conn = %req.conn.map(|id| ctx.public_id(id)).unwrap_or_default(), event = req.event, error = %e, retry_in = ?retry_in, "php-fpm unavailable; retrying");
        }
        // Past the drain's deadline the next attempt fails at once.
        tokio::select! {
            () = tokio::time::sleep(retry_in) => {}
            () = ctx.drain.over() => {}
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_event_names_its_connection_as_its_public_id() {
        let mut config = crate::config::Config::default();
        config.fpm.address = Some(crate::config::FpmAddr::Unix("/nonexistent".into()));
        let ctx = Context::new(config);
        let handle = ctx.hub.register(1024);
        let mut own = crate::conn_vars::Builder::new();
        own.connection_id();
        let env = ConnEnv {
            own: own.finish(),
            ..ConnEnv::empty()
        };
        let mut vars = Vec::new();
        push_conn_vars(&ctx, &handle, &env, &mut vars);
        let vars = crate::fcgi::decode_params(&vars);
        let id = ctx.public_id(&handle.id);
        assert_eq!(vars, [("WS_CONNECTION_ID".to_owned(), id)]);
    }
}
