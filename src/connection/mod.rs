//! One client's life after the handshake, in one task.
//!
//! The task reads frames (`transport::ReadSide`), writes queued frames (the outbox
//! writer), runs at most one PHP event at a time, and pings, all in one
//! hand-written poll loop, so none of them waits for another. Events wait in a small
//! bounded queue (`websocket.event_queue`); while it is full the task stops
//! reading, and TCP backpressure reaches the client instead of memory growing.
//!
//! When the connection ends, for whatever reason, it leaves the hub (no more
//! deliveries), flushes what it can to the client within `close_timeout`,
//! closes the socket, and only then hands PHP the messages still queued, in
//! order, and, last, the close event. What came of each is booked (see
//! `drain.rs`): none is lost silently.
//!
//! This file sets a connection up, runs it and takes it down, and applies
//! PHP's answers (the open answer too, for the gateway); `task.rs` is the
//! loop while it lives, `finish.rs` the messages and close event it owes PHP
//! at the end.

mod finish;
#[cfg(feature = "cluster")]
mod recover;
mod task;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::time::timeout_at;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::context::Context;
use crate::contract as c;
use crate::drain::CloseDue;
use crate::event::ConnEnv;
use crate::frame::Kind;
use crate::hub::ConnHandle;
use crate::limits::TokenBucket;
use crate::outbox::Push;
use crate::php::EventError;
use crate::response::PhpResponse;
use crate::transport::{self, ReadSide, Socket, Writer};

use finish::{Queued, finish};
#[cfg(feature = "cluster")]
pub use recover::open_in_cluster;
use task::Conn;

type Answer = Pin<Box<dyn Future<Output = Result<PhpResponse, EventError>> + Send>>;

/// Everything a connection task needs, handed over by the gateway after PHP
/// accepted the handshake.
pub struct Accepted {
    /// Shared daemon state.
    pub ctx: Arc<Context>,
    /// The connection's handle (already registered in the hub).
    pub handle: Arc<ConnHandle>,
    /// The connection's fixed CGI variables, worked out at the handshake.
    pub env: ConnEnv,
    /// A close PHP asked for in its open answer.
    pub close_after_open: Option<(u16, String)>,
    /// The connection's place under `max_connections`; freed when it ends.
    pub slot: crate::limits::Slot,
    /// The close event it owes PHP (`ctx.books.owe()`), booked by `finish`.
    pub close_due: CloseDue,
    /// permessage-deflate was negotiated: the window (log2) the client
    /// compresses with, for the read side's inflater.
    pub inflate_window: Option<u8>,
    /// What was read from the socket past the handshake (a frame the client
    /// sent before the 101): the read side's first input. Empty from the
    /// handshake; set by whoever read it (the gateway's direct path, or
    /// [`serve`] from hyper's upgrade).
    pub pre_read: bytes::Bytes,
}

/// How the connection ended, as PHP's close event tells it.
struct Ending {
    code: u16,
    reason: String,
    /// Flush queued frames to the client before closing the socket.
    flush: bool,
}

impl Ending {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            flush: true,
        }
    }
}

/// Spawns the connection's task on `tracker`: [`serve`], in `span` only when
/// the span is enabled. The per-connection span is debug-level; disabled,
/// it would still take 40 bytes in every idle connection's task, and push
/// the task past a 128-byte step of tokio's cell (`memory_budget` below).
pub fn spawn(
    tracker: &TaskTracker,
    accepted: Box<Accepted>,
    on_upgrade: hyper::upgrade::OnUpgrade,
    span: tracing::Span,
) {
    spawn_in(tracker, serve(accepted, on_upgrade), span);
}

/// [`spawn`] for a connection whose 101 the gateway wrote itself on a plain
/// TCP or Unix socket (its direct path): [`serve_socket`].
pub fn spawn_on_socket(
    tracker: &TaskTracker,
    accepted: Box<Accepted>,
    socket: Socket,
    span: tracing::Span,
) {
    spawn_in(tracker, serve_socket(accepted, socket), span);
}

/// Spawns a connection's `task` on `tracker`, in `span` when it is enabled.
fn spawn_in(
    tracker: &TaskTracker,
    task: impl Future<Output = ()> + Send + 'static,
    span: tracing::Span,
) {
    if span.is_disabled() {
        tracing::trace!(bytes = size_of_val(&task), "connection task size");
        tracker.spawn(task);
    } else {
        let task = task.instrument(span);
        tracing::trace!(bytes = size_of_val(&task), "connection task size");
        tracker.spawn(task);
    }
}

/// Runs the connection, once the client's upgrade completes, until it ends
/// and PHP has seen its close event.
///
/// This future is what every idle connection's task holds, so only what the
/// loop needs lives in it across the loop's await: `Accepted` comes boxed
/// (a pointer, freed once unpacked), the set-up is synchronous (`Live::open`)
/// and the ending is boxed (`Live::end`). Otherwise each of them would keep
/// its own space in every idle task (an async fn's state holds every local
/// and future of every await, and moved-from ones too).
pub async fn serve(accepted: Box<Accepted>, on_upgrade: hyper::upgrade::OnUpgrade) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::info!(
                conn = %accepted.ctx.public_id(&accepted.handle.id),
                error = %e,
                "client left during the upgrade"
            );
            Box::pin(abandon(*accepted)).await;
            return;
        }
    };
    // The socket that is neither TCP, TLS nor Unix (never seen): PHP still
    // gets its close event, from a task of its own. Awaited here, the
    // failed set-up's result (as large as `Live`) would keep a slot of its
    // own in every idle connection's task.
    let Some(mut live) = Live::open(accepted, upgraded)
        .map_err(|accepted| tokio::spawn(abandon(*accepted)))
        .ok()
    else {
        return;
    };
    let ending = live.conn.run().await;
    Box::pin(live.end(ending)).await;
}

/// Runs a connection whose 101 the gateway wrote itself on a plain TCP or
/// Unix socket (its direct path, no hyper upgrade), until it ends and PHP
/// has seen its close event.
pub async fn serve_socket(accepted: Box<Accepted>, socket: Socket) {
    let mut live = Live::unbox(accepted, socket);
    let ending = live.conn.run().await;
    Box::pin(live.end(ending)).await;
}

/// A connection while it lives: its loop's state, and what it keeps for
/// its end.
struct Live {
    conn: Conn,
    /// The connection's place under `max_connections`, held until the close
    /// event has reached PHP.
    slot: crate::limits::Slot,
    /// The close event it owes PHP, booked by `finish`.
    close_due: CloseDue,
}

impl Live {
    /// Sets the connection up on its upgraded socket. Gives `accepted` back
    /// (for [`abandon`]) when the socket is neither TCP, TLS nor Unix.
    /// Takes the box so that it is freed here, not when [`serve`] ends.
    fn open(
        accepted: Box<Accepted>,
        upgraded: hyper::upgrade::Upgraded,
    ) -> Result<Self, Box<Accepted>> {
        let Some((socket, pre_read)) = transport::socket(upgraded) else {
            tracing::error!(conn = %accepted.ctx.public_id(&accepted.handle.id), "upgraded connection is neither TCP nor Unix; dropping it");
            return Err(accepted);
        };
        let mut accepted = *accepted;
        accepted.pre_read = pre_read;
        Ok(Self::start(accepted, socket))
    }

    /// Sets the connection up on its socket from the box, which is freed
    /// here: moved out of in [`serve_socket`], it would stay allocated
    /// until the connection ends.
    #[allow(clippy::boxed_local, reason = "the box is freed here, not at the end")]
    fn unbox(accepted: Box<Accepted>, socket: Socket) -> Self {
        Self::start(*accepted, socket)
    }

    /// Sets the connection up on its socket (`accepted.pre_read` its first
    /// input).
    fn start(accepted: Accepted, socket: Socket) -> Self {
        let Accepted {
            ctx,
            handle,
            env,
            close_after_open,
            slot,
            close_due,
            inflate_window,
            pre_read,
        } = accepted;
        let config = ctx.config();
        let side = ReadSide::open(
            handle.clone(),
            ctx.inbound.clone(),
            &config.websocket,
            inflate_window,
            &pre_read,
        );
        let mut conn = Conn {
            config: config.clone(),
            ctx: ctx.clone(),
            writer: Writer::new(socket, ctx.metrics.bytes_out.clone(), handle.clone()),
            handle,
            env,
            side,
            events: VecDeque::new(),
            answer: None,
            last_seen: Instant::now(),
            closing: None,
            rate: config
                .websocket
                .rate_limit
                .as_ref()
                .map(|r| Box::new(TokenBucket::new(r.messages_per_second, f64::from(r.burst)))),
        };
        ctx.hub.stats.connections_total.inc();
        if ctx.is_shutting_down() {
            conn.handle
                .outbox
                .request_close(c::CLOSE_SHUTDOWN, c::REASON_SHUTDOWN.into());
        }
        if let Some((code, reason)) = close_after_open {
            conn.start_close(code, reason);
        }
        Self {
            conn,
            slot,
            close_due,
        }
    }

    /// Takes the connection down after its loop ended: leaves the hub,
    /// flushes what it can, closes the socket, then hands PHP what it owes.
    async fn end(self, ending: Ending) {
        let Self {
            conn,
            slot: _slot, // held until the close event has reached PHP
            close_due,
        } = self;
        let Conn {
            ctx,
            config,
            handle,
            env,
            mut writer,
            events,
            answer,
            side,
            ..
        } = conn;
        ctx.hub.unregister(&handle.id);
        handle.outbox.seal();
        if ending.flush {
            let until = ctx.within_drain(config.websocket.close_timeout);
            let _ = timeout_at(until.into(), writer.flush_all()).await;
        }
        drop(side);
        drop(writer);
        let queued = Queued { answer, events };
        finish(&ctx, &handle, &env, queued, ending, close_due).await;
    }
}

/// Ends a connection PHP accepted but whose upgrade never completed (the
/// client left): PHP still gets its close event.
pub async fn abandon(accepted: Accepted) {
    let Accepted {
        ctx,
        handle,
        env,
        slot: _slot,
        close_due,
        ..
    } = accepted;
    ctx.hub.unregister(&handle.id);
    handle.outbox.seal();
    let ending = Ending::new(c::CLOSE_VANISHED, c::REASON_VANISHED);
    let queued = Queued::default();
    Box::pin(finish(&ctx, &handle, &env, queued, ending, close_due)).await;
}

/// What the open of a `ws2fcgi.v1` client needs besides PHP's answer.
pub struct OpenV1<'a> {
    /// The connection's public id, for the `connected` message.
    pub public_id: &'a str,
    /// The positions the client gave in its handshake.
    pub since: &'a [(String, crate::v1::Position)],
    /// The client gave positions that could not be read: every channel
    /// joined is reported lost.
    pub since_invalid: bool,
}

/// Applies an accepted answer: directives, then the body as one message.
/// Returns the close PHP asked for, if any. Used for open and message
/// answers; the open answer of a `ws2fcgi.v1` client (`open_v1`) first sends
/// the `connected` message and what the client missed in the channels
/// joined.
pub fn apply_answer(
    ctx: &Context,
    handle: &ConnHandle,
    answer: &PhpResponse,
    open_v1: Option<OpenV1<'_>>,
) -> Option<(u16, String)> {
    let d = &answer.directives;
    for channel in &d.leave {
        ctx.hub.leave(&handle.id, channel);
    }
    match open_v1 {
        Some(open) => {
            let positions = if open.since_invalid {
                crate::hub::Positions::Unreadable
            } else {
                crate::hub::Positions::Given(open.since)
            };
            let recovery = ctx.hub.open_joins(
                handle,
                open.public_id,
                heartbeat_secs(ctx),
                &d.join,
                positions,
            );
            if open.since_invalid {
                ctx.metrics.recovery_unreadable();
            } else if !open.since.is_empty() {
                ctx.metrics
                    .recovery(recovery.lost.is_empty(), recovery.replayed);
                if !recovery.lost.is_empty() {
                    tracing::info!(conn = %open.public_id, lost = ?recovery.lost, "channels not recovered");
                }
            }
        }
        None => {
            for channel in &d.join {
                ctx.hub.join(&handle.id, channel);
            }
        }
    }
    apply_rest(ctx, handle, answer)
}

/// The heartbeat interval a `ws2fcgi.v1` client is told, in whole seconds.
fn heartbeat_secs(ctx: &Context) -> u64 {
    let secs = ctx.config().websocket.ping_interval.as_secs_f64().ceil() as u64;
    secs.max(1)
}

/// What follows the joins in an answer: metadata, then the body as one
/// message; returns the close PHP asked for.
fn apply_rest(ctx: &Context, handle: &ConnHandle, answer: &PhpResponse) -> Option<(u16, String)> {
    let d = &answer.directives;
    if !d.meta.is_empty()
        && let Err(problem) = handle.update_meta(&d.meta)
    {
        tracing::warn!(conn = %ctx.public_id(&handle.id), %problem, "metadata directive refused");
    }
    if !answer.body.is_empty() {
        let kind = if answer.binary {
            Kind::Binary
        } else if std::str::from_utf8(&answer.body).is_ok() {
            Kind::Text
        } else {
            tracing::warn!(conn = %ctx.public_id(&handle.id), "php's body is not UTF-8; sent as a binary message");
            Kind::Binary
        };
        match handle
            .outbox
            .push(handle.message(kind, &answer.body, &ctx.hub.stats.compression))
        {
            Push::Queued => {
                ctx.hub.stats.messages_out.inc();
            }
            Push::Closed => tracing::debug!("answer not sent: connection closing"),
            Push::Overflow => {
                tracing::warn!(conn = %ctx.public_id(&handle.id), "answer not sent: outbound queue full")
            }
        }
    }
    d.close.clone()
}

#[cfg(test)]
mod memory_budget {
    use super::*;

    /// The task every idle connection holds is this future (as `spawn`
    /// spawns it: tracked, and in no span at the default log level) in
    /// tokio's cell: 104 bytes of header and trailer around it, rounded up
    /// to a multiple of 128 (the cell is cache-aligned). It is the largest
    /// part of the memory budget (docs/performance.md): past 664 bytes the
    /// cell grows from 768 to 896 bytes, so growth fails here.
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let mut config = crate::config::Config::default();
        config.fpm.address = Some(crate::config::FpmAddr::Unix("/nonexistent".into()));
        let ctx = Arc::new(Context::new(config));
        let handle = ctx.hub.register(1024);
        let accepted = Accepted {
            ctx: ctx.clone(),
            handle,
            env: ConnEnv::empty(),
            close_after_open: None,
            slot: ctx.slots.admit(None).expect("a slot"),
            close_due: ctx.books.owe(),
            inflate_window: None,
            pre_read: bytes::Bytes::new(),
        };
        let on_upgrade = hyper::upgrade::on(hyper::Request::new(()));
        let task = TaskTracker::new().track_future(serve(Box::new(accepted), on_upgrade));
        let size = std::mem::size_of_val(&task);
        eprintln!("connection task {size} bytes");
        assert!(size <= 664, "a connection's task grew to {size} bytes");
        drop(task);
        // The same for a connection the gateway's direct path set up.
        let (socket, _peer) = tokio::net::UnixStream::pair().expect("a socket pair");
        let accepted = Accepted {
            ctx: ctx.clone(),
            handle: ctx.hub.register(1024),
            env: ConnEnv::empty(),
            close_after_open: None,
            slot: ctx.slots.admit(None).expect("a slot"),
            close_due: ctx.books.owe(),
            inflate_window: None,
            pre_read: bytes::Bytes::new(),
        };
        let task =
            TaskTracker::new().track_future(serve_socket(Box::new(accepted), Socket::Unix(socket)));
        let size = std::mem::size_of_val(&task);
        eprintln!("direct connection task {size} bytes");
        assert!(
            size <= 664,
            "a direct connection's task grew to {size} bytes"
        );
    }
}
