//! The end of a connection, for PHP: the messages still queued, in order,
//! then the close event, each booked as delivered or not (see `drain.rs`).

use std::collections::VecDeque;

use super::{Answer, Ending};
use crate::context::Context;
use crate::drain::{CloseDue, Outcome};
use crate::event::{ConnEnv, Event};
use crate::hub::ConnHandle;
use crate::php::{self, EventError};
use crate::response::PhpResponse;

/// The messages of a connection that ended which PHP has not answered yet.
#[derive(Default)]
pub(super) struct Queued {
    /// PHP's answer to the message in flight.
    pub(super) answer: Option<Answer>,
    /// Messages PHP has not started.
    pub(super) events: VecDeque<Event>,
}

/// Gives PHP the messages still queued, in order, and then the close event,
/// and books what came of each. During the drain each waits for a FastCGI
/// slot until the drain's deadline; past it, none is sent.
///
/// Once a message certainly did not reach PHP (PHP-FPM unreachable or busy
/// past `fpm.retry_window`, or the drain's deadline), the messages after it
/// are not tried, so PHP never sees a later message without an earlier
/// one; they are booked as not delivered, and the close event is still
/// tried.
pub(super) async fn finish(
    ctx: &Context,
    handle: &ConnHandle,
    env: &ConnEnv,
    queued: Queued,
    ending: Ending,
    close_due: CloseDue,
) {
    let Queued { answer, mut events } = queued;
    let books = &ctx.books;
    // Why the messages after the one that failed are not tried.
    let mut given_up: Option<&'static str> = None;
    let mut skipped = 0usize;
    if let Some(answer) = answer {
        let calling = books.calling();
        let result = answer.await;
        let outcome = Outcome::of(&result);
        if let Err(e) = &result
            && e.never_reached_php()
        {
            given_up = Some(e.kind());
        }
        log_outcome(ctx, handle, "message", result);
        calling.message(outcome);
    }
    while let Some(event) = events.pop_front() {
        ctx.metrics.events_queued.dec();
        if given_up.is_some() {
            books.message(Outcome::NotDelivered);
            skipped += 1;
            continue;
        }
        let calling = books.calling();
        let result = php::call_retrying(ctx, handle, env, &event).await;
        let outcome = Outcome::of(&result);
        if let Err(e) = &result
            && e.never_reached_php()
        {
            given_up = Some(e.kind());
        }
        log_outcome(ctx, handle, event.name(), result);
        calling.message(outcome);
    }
    if let Some(kind) = given_up
        && skipped > 0
    {
        tracing::warn!(
            conn = %ctx.public_id(&handle.id),
            skipped,
            kind,
            "messages of a closed connection not sent to php: an earlier one could not be delivered"
        );
    }
    tracing::debug!(code = ending.code, reason = %ending.reason, "connection closed");
    let close = Event::Close {
        code: ending.code,
        reason: ending.reason,
    };
    let calling = books.calling();
    let result = php::call_retrying(ctx, handle, env, &close).await;
    let outcome = Outcome::of(&result);
    let conn = ctx.public_id(&handle.id);
    match result {
        Ok(answer) if !answer.is_success() => {
            tracing::warn!(
                %conn,
                event = "close",
                status = answer.status,
                "php answered with an error status"
            );
        }
        Ok(_) => {}
        Err(e) if e.never_reached_php() => {
            tracing::error!(%conn, error = %e, kind = e.kind(), "close event not delivered to php")
        }
        Err(e) => {
            tracing::error!(%conn, error = %e, kind = e.kind(), "close event failed in php")
        }
    }
    calling.close(close_due, outcome);
}

fn log_outcome(
    ctx: &Context,
    handle: &ConnHandle,
    event: &str,
    result: Result<PhpResponse, EventError>,
) {
    let conn = ctx.public_id(&handle.id);
    match result {
        Ok(answer) if !answer.is_success() => {
            tracing::warn!(
                %conn,
                event,
                status = answer.status,
                "php answered with an error status"
            );
        }
        Ok(_) => {}
        Err(e) if e.never_reached_php() => {
            tracing::warn!(%conn, event, error = %e, kind = e.kind(), "event not delivered to php")
        }
        Err(e) => tracing::warn!(%conn, event, error = %e, kind = e.kind(), "event failed"),
    }
}
