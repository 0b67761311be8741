//! Sending one event to PHP and reading its answer.
//!
//! Glues the pieces together: the event's CGI variables (`event.rs`), the
//! FastCGI pool (`fpm.rs`) and the answer's parser (`response.rs`). PHP's
//! stderr is logged here, in the connection's span.

use std::time::{Duration, Instant};

use crate::context::Context;
use crate::event::{ConnEnv, Event, event_env};
use crate::fpm::FpmError;
use crate::hub::ConnHandle;
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
    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fpm(e) => e.kind(),
            Self::Response(_) => "bad_response",
        }
    }
}

/// Sends `event` once; `env` is the connection's fixed variables.
pub async fn call(
    ctx: &Context,
    handle: &ConnHandle,
    env: &ConnEnv,
    event: &Event,
) -> Result<PhpResponse, EventError> {
    let mut vars = Vec::with_capacity(256);
    event_env(event, handle, &mut vars);
    let started = Instant::now();
    let output = ctx
        .fpm
        .call(&[&env.shared, &env.own, &vars], event.body())
        .await;
    // Counted once it reached PHP-FPM: a retry of an event PHP-FPM could not
    // take is the same event, not another one.
    if !matches!(&output, Err(e) if e.never_reached_php()) {
        ctx.metrics.event(event.name());
    }
    let output = output.inspect_err(|e| ctx.metrics.event_error(e.kind()))?;
    ctx.metrics
        .fastcgi_seconds
        .observe(started.elapsed().as_secs_f64());
    if !output.stderr.is_empty() {
        tracing::warn!(
            conn = %ctx.public_id(&handle.id),
            event = event.name(),
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
        tracing::warn!(conn = %ctx.public_id(&handle.id), event = event.name(), %problem, "ignored directive");
    }
    Ok(answer)
}

/// Sends `event`, retrying with backoff for up to `fpm.retry_window` while
/// PHP-FPM cannot take it (not running, every connection busy). Errors after
/// the request reached PHP (timeouts, crashes, bad answers) are not retried:
/// PHP may have acted on the event already.
pub async fn call_retrying(
    ctx: &Context,
    handle: &ConnHandle,
    env: &ConnEnv,
    event: &Event,
) -> Result<PhpResponse, EventError> {
    let deadline = Instant::now() + ctx.config().fpm.retry_window;
    let mut pause = RETRY_FIRST;
    loop {
        match call(ctx, handle, env, event).await {
            Err(EventError::Fpm(e))
                if e.never_reached_php() && Instant::now() + pause < deadline =>
            {
                tracing::warn!(conn = %ctx.public_id(&handle.id), event = event.name(), error = %e, retry_in = ?pause, "php-fpm unavailable; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
            other => return other,
        }
    }
}
