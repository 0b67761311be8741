//! The connection task's loop: one `select!` over PHP's answer, the outbox
//! writer, the client's frames and the ping timer, until the connection
//! ends (the [`Ending`] it returns).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{FutureExt, Sink, StreamExt};
use tokio::time::{Sleep, sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, protocol::Role};

use super::{Answer, Ending, apply_answer};
use crate::config::{Config, RateLimitAction};
use crate::context::Context;
use crate::contract as c;
use crate::event::{ConnEnv, Event};
use crate::fpm::FpmError;
use crate::frame::{self, Kind};
use crate::hub::ConnHandle;
use crate::limits::TokenBucket;
use crate::outbox::Signal;
use crate::php::{self, EventError};
use crate::response::PhpResponse;
use crate::transport::{ReadSide, Writer};

/// A message at least this large makes the connection shed tungstenite's
/// grown read buffer (see [`Conn::shed_read_buffer`]).
const REBUILD_AFTER: usize = 4 * crate::transport::TUNGSTENITE_READ_BUFFER;

pub(super) struct Conn {
    pub(super) ctx: Arc<Context>,
    /// The configuration in force when the connection opened; it keeps it.
    pub(super) config: Arc<Config>,
    pub(super) handle: Arc<ConnHandle>,
    pub(super) env: ConnEnv,
    pub(super) ws: WebSocketStream<ReadSide>,
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
    pub(super) async fn run(&mut self) -> Ending {
        let config = self.config.clone();
        let ws_config = &config.websocket;
        let event_cap = ws_config.event_queue;
        let ping_interval = ws_config.ping_interval;
        let mut timer: Pin<Box<Sleep>> = Box::pin(sleep(ping_interval));
        loop {
            if self.answer.is_none()
                && let Some(event) = self.events.pop_front()
            {
                self.ctx.metrics.events_queued.dec();
                self.answer = Some(self.dispatch(event));
            }
            if let Some(closing) = &self.closing {
                let deadline = &closing.1;
                timer.as_mut().reset((*deadline).into());
            }
            tokio::select! {
                biased;
                result = next_answer(&mut self.answer), if self.answer.is_some() => {
                    self.answer = None;
                    if let Some(ending) = self.on_answer(result) {
                        return ending;
                    }
                }
                signal = self.writer.run() => match signal {
                    Ok(Signal::Close(code, reason)) => self.start_close(code, reason),
                    Ok(Signal::SlowConsumer) => {
                        self.ctx.metrics.closed("slow_consumer");
                        self.ctx.hub.stats.slow_consumers.inc();
                        tracing::warn!(conn = %self.id(), queued = self.handle.outbox.queued_bytes(), "slow consumer cut off");
                        return Ending { flush: false, ..Ending::new(c::CLOSE_SLOW_CONSUMER, c::REASON_SLOW_CONSUMER) };
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "write failed");
                        return self.vanished();
                    }
                },
                msg = self.ws.next(), if self.events.len() < event_cap => {
                    self.last_seen = Instant::now();
                    if let Some(ending) = self.on_frame(msg) {
                        return ending;
                    }
                }
                () = &mut timer => {
                    if let Some(ending) = self.on_timer() {
                        return ending;
                    }
                    let idle_left = ws_config.idle_timeout.saturating_sub(self.last_seen.elapsed());
                    timer.as_mut().reset((Instant::now() + ping_interval.min(idle_left)).into());
                }
            }
        }
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

    fn on_frame(&mut self, msg: Option<Result<Message, WsError>>) -> Option<Ending> {
        let (kind, data): (Kind, Bytes) = match msg {
            Some(Ok(Message::Text(text))) => (Kind::Text, text.into()),
            Some(Ok(Message::Binary(data))) => (Kind::Binary, data),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return None,
            Some(Ok(Message::Close(frame))) => return Some(self.peer_closed(frame)),
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
        let charge = self.ws.get_mut().message_charge();
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
        if data.len() >= REBUILD_AFTER {
            self.shed_read_buffer();
        }
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

    fn peer_closed(&mut self, frame: Option<CloseFrame>) -> Ending {
        // tungstenite has queued its reply (or this is the reply to ours).
        if let Some(closing) = self.closing.take() {
            return closing.0;
        }
        match frame {
            Some(f) => Ending::new(u16::from(f.code), f.reason.as_str()),
            None => Ending::new(c::CLOSE_NO_STATUS, ""),
        }
    }

    fn read_error(&mut self, error: WsError) -> Ending {
        if matches!(
            error,
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        ) {
            // The TCP connection ended without a close frame: the peer vanished.
            return match self.closing.take() {
                Some(closing) => closing.0,
                None => self.vanished(),
            };
        }
        // A compressed message the read side refused (too big inflated,
        // not deflate data, a broken fragment sequence): its own code.
        if let Some(fault) = self.ws.get_ref().inflate_fault() {
            let kind = if fault.code == c::CLOSE_TOO_BIG {
                "too_big"
            } else {
                "protocol"
            };
            tracing::info!(conn = %self.id(), reason = fault.reason, code = fault.code, "closing on client error");
            self.ctx.metrics.closed(kind);
            self.handle
                .outbox
                .push_control(close_frame(fault.code, fault.reason));
            return Ending::new(fault.code, fault.reason);
        }
        let (code, reason, kind) = match &error {
            WsError::Capacity(_) => (c::CLOSE_TOO_BIG, "message too big".to_string(), "too_big"),
            WsError::Utf8(_) => (
                c::CLOSE_INVALID_PAYLOAD,
                "invalid UTF-8".to_string(),
                "invalid_utf8",
            ),
            WsError::Protocol(p) => (
                c::CLOSE_PROTOCOL_ERROR,
                truncate(&p.to_string()),
                "protocol",
            ),
            _ => {
                tracing::debug!(%error, "read failed");
                return match self.closing.take() {
                    Some(closing) => closing.0,
                    None => self.vanished(),
                };
            }
        };
        tracing::info!(conn = %self.id(), %error, code, "closing on client error");
        self.ctx.metrics.closed(kind);
        self.handle.outbox.push_control(close_frame(code, &reason));
        Ending::new(code, reason)
    }

    fn on_timer(&mut self) -> Option<Ending> {
        if let Some(closing) = self.closing.take() {
            if Instant::now() >= closing.1 {
                return Some(closing.0);
            }
            self.closing = Some(closing);
            return None;
        }
        if self.events.len() >= self.config.websocket.event_queue || self.ws.get_ref().is_paused() {
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

    /// Rebuilds the WebSocket around the same socket after a large message:
    /// tungstenite grew its read buffer to hold it and would keep that for
    /// the connection's life. Safe because the read side hands tungstenite
    /// whole frames only, so it holds no bytes of the next one now.
    fn shed_read_buffer(&mut self) {
        if self.closing.is_some() {
            return;
        }
        // A pong tungstenite still holds goes out first.
        let _ = std::future::poll_fn(|cx| std::pin::Pin::new(&mut self.ws).poll_flush(cx))
            .now_or_never();
        let stand_in = WebSocketStream::from_raw_socket(
            self.ws.get_ref().stand_in(),
            Role::Server,
            Some(self.ctx.ws_config()),
        )
        .now_or_never();
        let Some(stand_in) = stand_in else { return };
        let side = std::mem::replace(&mut self.ws, stand_in).into_inner();
        match WebSocketStream::from_raw_socket(side, Role::Server, Some(self.ctx.ws_config()))
            .now_or_never()
        {
            Some(fresh) => self.ws = fresh,
            None => {
                tracing::error!(conn = %self.id(), "could not rebuild the WebSocket; the connection will end")
            }
        }
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
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.as_str().into(),
        };
        // tungstenite formats the frame and writes it through ReadSide's
        // write side into the outbox, which never blocks: one poll completes
        // it, and no sink future has to live in every connection's task.
        let mut message = Some(Message::Close(Some(frame)));
        let ws = &mut self.ws;
        let sent = std::future::poll_fn(|cx| {
            let mut ws = std::pin::Pin::new(&mut *ws);
            std::task::ready!(ws.as_mut().poll_ready(cx))?;
            if let Some(message) = message.take() {
                ws.as_mut().start_send(message)?;
            }
            ws.poll_flush(cx)
        })
        .now_or_never();
        match sent {
            Some(Ok(())) => {}
            Some(Err(e)) => tracing::debug!(error = %e, "close frame not queued"),
            None => tracing::debug!("close frame not queued: sink not ready"),
        }
        let deadline = self.ctx.within_drain(self.config.websocket.close_timeout);
        self.closing = Some(Box::new((Ending::new(code, reason), deadline)));
    }
}

async fn next_answer(answer: &mut Option<Answer>) -> Result<PhpResponse, EventError> {
    match answer {
        Some(fut) => fut.await,
        None => std::future::pending().await,
    }
}

fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    frame::close(&payload)
}

fn truncate(reason: &str) -> String {
    let mut end = reason.len().min(crate::response::MAX_CLOSE_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

#[cfg(test)]
mod memory_budget {
    use super::*;
    use crate::inbound::{Intake, Ledger};
    use crate::transport;

    #[tokio::test]
    async fn an_idle_connection_stays_small() {
        use std::mem::size_of_val;
        let mut config = crate::config::Config::default();
        config.fpm.address = Some(crate::config::FpmAddr::Unix("/nonexistent".into()));
        let ctx = Arc::new(Context::new(config));
        let handle = ctx.hub.register(1024);
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let (r, w) = a.into_split();
        let ws = WebSocketStream::from_raw_socket(
            ReadSide::new(
                transport::ReadHalf::Unix(r),
                handle.clone(),
                4096,
                Intake::new(Ledger::new(ctx.inbound.clone(), 1 << 20, 1 << 20, 4096)),
            ),
            Role::Server,
            Some(ctx.ws_config()),
        )
        .await;
        let mut conn = Conn {
            config: ctx.config(),
            ctx: ctx.clone(),
            handle: handle.clone(),
            env: ConnEnv::empty(),
            ws,
            writer: Writer::new(
                transport::WriteHalf::Unix(w),
                Default::default(),
                handle.clone(),
            ),
            events: VecDeque::new(),
            answer: None,
            last_seen: Instant::now(),
            closing: None,
            rate: None,
        };
        // Every idle connection's task holds `Conn` and the `run` future:
        // they are the memory budget (docs/performance.md), so growth fails here.
        let conn_size = std::mem::size_of::<Conn>();
        let run_size = size_of_val(&conn.run());
        assert!(conn_size <= 640, "Conn grew to {conn_size} bytes");
        assert!(
            run_size <= 512,
            "Conn::run's future grew to {run_size} bytes"
        );
    }
}
