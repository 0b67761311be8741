//! The connection task's loop: one hand-written poll over PHP's answer, the
//! outbox writer, the client's frames and the ping timer, until the
//! connection ends (the [`Ending`] it returns).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use tokio::time::{Sleep, sleep};

use super::{Answer, Ending, apply_answer};
use crate::client_frames::{Incoming, Limits};
use crate::config::{Config, RateLimitAction};
use crate::context::Context;
use crate::contract as c;
use crate::event::{ConnEnv, Event};
use crate::fpm::FpmError;
use crate::frame::{self, Kind};
use crate::hub::ConnHandle;
use crate::limits::TokenBucket;
use crate::outbox::{Signal, WOKEN_WRITER};
use crate::php::{self, EventError};
use crate::response::PhpResponse;
use crate::transport::{ReadError, ReadSide, Writer};

/// Events the queue keeps room for once emptied: a burst that grew it past
/// this gives the rest back at once; smaller room goes on the timer's turn
/// ([`Conn::shed_capacity`]), not once per event.
const EVENTS_KEPT: usize = 4;

pub(super) struct Conn {
    pub(super) ctx: Arc<Context>,
    /// The configuration in force when the connection opened; it keeps it.
    pub(super) config: Arc<Config>,
    pub(super) handle: Arc<ConnHandle>,
    pub(super) env: ConnEnv,
    /// The client's frames.
    pub(super) side: ReadSide,
    pub(super) writer: Writer,
    pub(super) events: VecDeque<Event>,
    /// PHP's answer to the event in flight.
    pub(super) answer: Option<Answer>,
    /// When the client last sent anything (a frame or a pong).
    pub(super) last_seen: Instant,
    /// We sent a close frame: its code and reason, and the deadline for the client's.
    pub(super) closing: Option<Box<(Ending, Instant)>>,
    /// The inbound rate limit, when configured (boxed: most connections have none).
    pub(super) rate: Option<Box<TokenBucket>>,
}

impl Conn {
    /// Runs the loop until the connection ends.
    ///
    /// A hand-written poll (`poll_run`), not a `select!` over futures: the
    /// writer, the read side and PHP's answer keep their state in `Conn`,
    /// so an idle connection's task holds no future of theirs; only the
    /// timer is kept here, in the task itself rather than boxed (tokio
    /// rounds a task up to 128 bytes, and it fits in that rounding).
    pub(super) async fn run(&mut self) -> Ending {
        let timer = sleep(self.config.websocket.ping_interval);
        tokio::pin!(timer);
        // No source has a wake-up registered yet: the first turn polls all.
        self.handle.outbox.mark_other();
        std::future::poll_fn(move |cx| self.poll_run(cx, timer.as_mut())).await
    }

    /// One turn of the loop: looks at PHP's answer, the outbox writer, the
    /// client's frames and the timer, in that order, and again after each
    /// that was ready, until none is (`Pending`: each has arranged its
    /// wake-up) or the connection ends.
    ///
    /// Only the writer is polled with the task's own waker; the other
    /// sources get the handle's (`hub/conn.rs`), which marks their
    /// wake-ups in the outbox. A turn that the outbox alone woke (a
    /// broadcast's member, once per publish) looks at the writer alone,
    /// and at the rest only once the writer has something to act on.
    fn poll_run(&mut self, cx: &mut TaskContext<'_>, mut timer: Pin<&mut Sleep>) -> Poll<Ending> {
        let event_cap = self.config.websocket.event_queue;
        let limits = limits(&self.config);
        let woken = self.handle.outbox.take_woken();
        let mut others = (woken != WOKEN_WRITER).then(|| Waker::from(self.handle.clone()));
        // The timer turned: the queues shed their room before the task sleeps.
        let mut ticked = false;
        loop {
            let Some(other) = &others else {
                // Woken by the outbox alone: the other sources' wake-ups
                // are still registered, and none came.
                let Poll::Ready(signal) = self.writer.poll_run(cx) else {
                    break;
                };
                others = Some(Waker::from(self.handle.clone()));
                if let Some(ending) = self.on_signal(signal) {
                    return Poll::Ready(ending);
                }
                continue;
            };
            let ocx = &mut TaskContext::from_waker(other);
            if self.answer.is_none()
                && let Some(event) = self.next_event()
            {
                self.ctx.metrics.events_queued.dec();
                self.answer = Some(self.dispatch(event));
            }
            if let Some(closing) = &self.closing {
                let deadline: tokio::time::Instant = closing.1.into();
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
            }
            if let Some(answer) = &mut self.answer
                && let Poll::Ready(result) = answer.as_mut().poll(ocx)
            {
                self.answer = None;
                if let Some(ending) = self.on_answer(result) {
                    return Poll::Ready(ending);
                }
                continue;
            }
            if let Poll::Ready(signal) = self.writer.poll_run(cx) {
                if let Some(ending) = self.on_signal(signal) {
                    return Poll::Ready(ending);
                }
                continue;
            }
            if self.events.len() < event_cap
                && let Poll::Ready(msg) = self.side.poll_next(self.writer.socket(), ocx, limits)
            {
                self.last_seen = Instant::now();
                if let Some(ending) = self.on_frame(msg) {
                    return Poll::Ready(ending);
                }
                continue;
            }
            if timer.as_mut().poll(ocx).is_ready() {
                if let Some(ending) = self.on_timer() {
                    return Poll::Ready(ending);
                }
                let idle_timeout = self.config.websocket.idle_timeout;
                let idle_left = idle_timeout.saturating_sub(self.last_seen.elapsed());
                let ping_interval = self.config.websocket.ping_interval;
                timer
                    .as_mut()
                    .reset((Instant::now() + ping_interval.min(idle_left)).into());
                ticked = true;
                continue;
            }
            break;
        }
        if ticked {
            self.shed_capacity();
        }
        // Every source has arranged its wake-up, the writer's with the
        // task's waker. One of the others that woke the handle's waker
        // meanwhile found no task waker to pass it to: pass it on now.
        if self.handle.outbox.woken_other() {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Acts on what the writer returned: a close asked for (the loop goes
    /// on), or the end of the connection.
    fn on_signal(&mut self, signal: std::io::Result<Signal>) -> Option<Ending> {
        match signal {
            Ok(Signal::Close(code, reason)) => {
                self.start_close(code, reason);
                None
            }
            Ok(Signal::SlowConsumer) => {
                self.ctx.metrics.closed("slow_consumer");
                self.ctx.hub.stats.slow_consumers.inc();
                tracing::warn!(conn = %self.id(), queued = self.handle.outbox.queued_bytes(), "slow consumer cut off");
                Some(Ending {
                    flush: false,
                    ..Ending::new(c::CLOSE_SLOW_CONSUMER, c::REASON_SLOW_CONSUMER)
                })
            }
            Err(e) => {
                tracing::debug!(error = %e, "write failed");
                Some(self.vanished())
            }
        }
    }

    /// The next event for PHP, if one is queued; a queue a burst grew past
    /// [`EVENTS_KEPT`] gives its room back once emptied.
    fn next_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        if self.events.is_empty() && self.events.capacity() > EVENTS_KEPT {
            self.events = VecDeque::new();
        }
        Some(event)
    }

    /// Gives back the room of the queues that are empty: the events', the
    /// writer's batch and the outbox's. Once a turn of the timer (every
    /// `ping_interval`), after the ping went out, so that what traffic
    /// once needed is not kept while the connection idles, and nothing is
    /// reallocated per event or per delivery.
    fn shed_capacity(&mut self) {
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        self.writer.shed_capacity();
        self.handle.outbox.shed_capacity();
    }

    /// The public id, for log lines (the connection's span is debug-level).
    fn id(&self) -> String {
        self.ctx.public_id(&self.handle.id)
    }

    fn dispatch(&self, event: Event) -> Answer {
        let (ctx, handle, env) = (self.ctx.clone(), self.handle.clone(), self.env.clone());
        Box::pin(async move { php::call_retrying(&ctx, &handle, &env, &event).await })
    }

    /// Acts on PHP's answer to a message event.
    fn on_answer(&mut self, result: Result<PhpResponse, EventError>) -> Option<Ending> {
        let answer = match result {
            Ok(answer) => answer,
            Err(EventError::Fpm(e @ FpmError::Connect { .. })) => {
                tracing::error!(conn = %self.id(), error = %e, "php-fpm unavailable; closing connection");
                self.ctx.metrics.closed("php_unavailable");
                self.start_close(c::CLOSE_UPSTREAM_FAILED, c::REASON_UPSTREAM_FAILED.into());
                return None;
            }
            Err(e) => {
                tracing::warn!(conn = %self.id(), event = "message", error = %e, kind = e.kind(), "event failed; connection stays open");
                return None;
            }
        };
        if !answer.is_success() {
            tracing::warn!(
                conn = %self.id(),
                event = "message",
                status = answer.status,
                "php answered with an error status; answer discarded, connection stays open"
            );
            return None;
        }
        let close = apply_answer(&self.ctx, &self.handle, &answer, None);
        if let Some((code, reason)) = close {
            self.start_close(code, reason);
        }
        None
    }

    fn on_frame(&mut self, msg: Option<Result<Incoming, ReadError>>) -> Option<Ending> {
        let (kind, data): (Kind, Bytes) = match msg {
            Some(Ok(Incoming::Message(kind, data))) => (kind, data),
            Some(Ok(Incoming::Ping(payload))) => {
                // Once our close frame is out, nothing more is sent (§5.5.1).
                if self.closing.is_none() {
                    self.handle.outbox.push_control(frame::pong(&payload));
                }
                return None;
            }
            Some(Ok(Incoming::Pong)) => return None,
            Some(Ok(Incoming::Close(frame))) => return Some(self.peer_closed(frame)),
            Some(Err(e)) => return Some(self.read_error(e)),
            None => {
                return Some(match self.closing.take() {
                    Some(closing) => closing.0,
                    None => self.vanished(),
                });
            }
        };
        // What the message holds of the inbound budget, until PHP is done
        // with it (or it is dropped here).
        let charge = self.side.message_charge();
        if self.closing.is_some() {
            // Data after our close frame is discarded (RFC 6455 §5.5.1).
            return None;
        }
        if let Some(bucket) = &mut self.rate
            && !bucket.take(Instant::now())
        {
            return self.rate_limited();
        }
        self.ctx.hub.stats.messages_in.inc();
        self.ctx.metrics.bytes_in.inc_by(data.len() as u64);
        self.events.push_back(Event::Message { kind, data, charge });
        self.ctx.metrics.events_queued.inc();
        None
    }

    /// A message over the rate limit: dropped (with a notice) or the connection closed.
    fn rate_limited(&mut self) -> Option<Ending> {
        self.ctx.metrics.rate_limited.inc();
        let limit = self.config.websocket.rate_limit.as_ref()?;
        match limit.action {
            RateLimitAction::Drop => {
                if !limit.notice.is_empty() {
                    let _ = self.handle.outbox.push(self.handle.message(
                        Kind::Text,
                        limit.notice.as_bytes(),
                        &self.ctx.hub.stats.compression,
                    ));
                }
                None
            }
            RateLimitAction::Close => {
                tracing::info!(conn = %self.id(), "rate limit exceeded; closing");
                self.ctx.metrics.closed("rate_limit");
                let reason = "rate limit exceeded";
                self.handle
                    .outbox
                    .push_control(close_frame(c::CLOSE_POLICY, reason));
                Some(Ending::new(c::CLOSE_POLICY, reason))
            }
        }
    }

    /// The client's close frame: the reply to ours, or its own, which is
    /// answered with the same code and reason (RFC 6455 §5.5.1).
    fn peer_closed(&mut self, frame: Option<(u16, String)>) -> Ending {
        if let Some(closing) = self.closing.take() {
            return closing.0;
        }
        match frame {
            Some((code, reason)) => {
                self.handle.outbox.push_control(close_frame(code, &reason));
                Ending::new(code, reason)
            }
            None => {
                self.handle.outbox.push_control(frame::close(&[]));
                Ending::new(c::CLOSE_NO_STATUS, "")
            }
        }
    }

    fn read_error(&mut self, error: ReadError) -> Ending {
        let fault = match error {
            ReadError::Refused(fault) => fault,
            ReadError::Io(e) => {
                tracing::debug!(error = %e, "read failed");
                return match self.closing.take() {
                    Some(closing) => closing.0,
                    None => self.vanished(),
                };
            }
        };
        let kind = match fault.code {
            c::CLOSE_TOO_BIG => "too_big",
            c::CLOSE_INVALID_PAYLOAD => "invalid_utf8",
            _ => "protocol",
        };
        tracing::info!(conn = %self.id(), reason = fault.reason, code = fault.code, "closing on client error");
        self.ctx.metrics.closed(kind);
        self.handle
            .outbox
            .push_control(close_frame(fault.code, fault.reason));
        Ending::new(fault.code, fault.reason)
    }

    fn on_timer(&mut self) -> Option<Ending> {
        if let Some(closing) = self.closing.take() {
            if Instant::now() >= closing.1 {
                return Some(closing.0);
            }
            self.closing = Some(closing);
            return None;
        }
        if self.events.len() >= self.config.websocket.event_queue || self.side.is_paused() {
            // We stopped reading (PHP is behind, or the inbound budget is
            // spent); the client's pongs wait unread in the socket, so its
            // silence proves nothing.
            self.last_seen = Instant::now();
        }
        if self.last_seen.elapsed() >= self.config.websocket.idle_timeout {
            tracing::info!(conn = %self.id(), "idle timeout");
            self.ctx.metrics.closed("idle_timeout");
            self.handle
                .outbox
                .push_control(close_frame(c::CLOSE_IDLE_TIMEOUT, c::REASON_IDLE_TIMEOUT));
            return Some(Ending::new(c::CLOSE_IDLE_TIMEOUT, c::REASON_IDLE_TIMEOUT));
        }
        self.handle.outbox.push_control(frame::ping());
        if self.handle.is_v1() {
            // Browsers cannot see pings: a ws2fcgi.v1 client watches these.
            let _ = self.handle.outbox.push(crate::v1::heartbeat());
        }
        None
    }

    fn vanished(&self) -> Ending {
        Ending {
            flush: false,
            ..Ending::new(c::CLOSE_VANISHED, c::REASON_VANISHED)
        }
    }

    /// Sends our close frame (after everything queued) and waits for the client's.
    pub(super) fn start_close(&mut self, code: u16, reason: String) {
        if self.closing.is_some() {
            return;
        }
        self.handle.outbox.seal();
        // A control frame still goes out once the outbox is sealed, after
        // everything queued before it.
        self.handle.outbox.push_control(close_frame(code, &reason));
        let deadline = self.ctx.within_drain(self.config.websocket.close_timeout);
        self.closing = Some(Box::new((Ending::new(code, reason), deadline)));
    }
}

/// The sizes the client's frames and messages may have.
fn limits(config: &Config) -> Limits {
    Limits {
        max_frame: config.websocket.max_frame_size,
        max_message: config.websocket.max_message_size,
    }
}

fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    frame::close(&payload)
}

#[cfg(test)]
mod memory_budget {
    use super::*;
    use crate::inbound::{Intake, Ledger};
    use crate::transport;

    /// A fresh idle connection on a Unix socket pair (the peer's end returned
    /// to keep it open), as every connection's task holds it.
    fn idle_conn() -> (Conn, tokio::net::UnixStream) {
        let mut config = crate::config::Config::default();
        config.fpm.address = Some(crate::config::FpmAddr::Unix("/nonexistent".into()));
        let ctx = Arc::new(Context::new(config));
        let handle = ctx.hub.register(1024);
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let side = ReadSide::new(
            4096,
            Intake::new(
                handle.clone(),
                Ledger::new(ctx.inbound.clone(), 1 << 20, 1 << 20, 4096),
            ),
        );
        let conn = Conn {
            config: ctx.config(),
            ctx,
            handle: handle.clone(),
            env: ConnEnv::empty(),
            side,
            writer: Writer::new(transport::Socket::Unix(a), Default::default(), handle),
            events: VecDeque::new(),
            answer: None,
            last_seen: Instant::now(),
            closing: None,
            rate: None,
        };
        (conn, b)
    }

    #[tokio::test]
    async fn an_idle_connection_stays_small() {
        use std::mem::size_of_val;
        let (mut conn, _peer) = idle_conn();
        // Every idle connection's task holds `Conn` and the `run` future:
        // they are the memory budget (docs/performance.md), so growth fails here.
        let conn_size = std::mem::size_of::<Conn>();
        let run_size = size_of_val(&conn.run());
        eprintln!("Conn {conn_size} bytes, run future {run_size} bytes");
        assert!(conn_size <= 376, "Conn grew to {conn_size} bytes");
        assert!(
            run_size <= 144,
            "Conn::run's future grew to {run_size} bytes"
        );
    }

    #[tokio::test]
    async fn an_emptied_event_queue_gives_its_room_back() {
        let (mut conn, _peer) = idle_conn();
        let event = || Event::Close {
            code: 1000,
            reason: String::new(),
        };
        // A burst: its room goes as soon as the queue is empty.
        conn.events
            .extend(std::iter::repeat_with(event).take(EVENTS_KEPT + 1));
        while conn.next_event().is_some() {
            assert!(conn.events.is_empty() || conn.events.capacity() > EVENTS_KEPT);
        }
        assert_eq!(conn.events.capacity(), 0);
        // One event at a time: the room stays until the timer's turn.
        conn.events.push_back(event());
        assert!(conn.next_event().is_some());
        assert!(conn.events.capacity() > 0, "no reallocation per event");
        conn.shed_capacity();
        assert_eq!(conn.events.capacity(), 0);
    }
}
