//! One Pusher client's life after the handshake, in one task (PHP is
//! involved only for an app with a `script`, below). The task reads the client's frames (over the same
//! read side and outbox writer as every connection: `transport.rs`),
//! answers them (`protocol.rs` parses), and watches for silence:
//!
//! ```text
//! silence for activity_timeout   → pusher:ping
//! and as long again, still none  → pusher:error 4201, close 4201 (pusher-js reconnects)
//! ```
//!
//! What a connection holds is bounded: at most
//! `pusher.max_channels_per_connection` subscriptions (a name and a user id
//! each), its outbox (`websocket.outbound_queue_bytes`) and its read side's
//! share of the inbound budget. A message it does not understand gets a
//! `pusher:error` and the connection stays.
//!
//! When it ends, it leaves every channel (presence members are announced
//! gone to the others), leaves the hub, flushes what it can within
//! `websocket.close_timeout`, and closes the socket.
//!
//! `channels.rs` below this file is what it does with channels (subscribe,
//! unsubscribe, sign-in, client events).
//!
//! An app with a `script` (events to PHP, `php.rs` below this file) makes
//! PHP part of the connection's life: a subscription with `auth = "php"`
//! and a client event wait for PHP's answer, the frames after them wait
//! their turn (so a connection's subscriptions are answered in order), and
//! the end sends PHP the `close` event.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::time::{sleep, timeout_at};

mod channels;
mod php;

pub use php::PhpConn;

use super::protocol::{self, ClientFrame, codes};
use super::{App, ChannelKind, frame};
use crate::client_frames::{Incoming, Limits};
use crate::config::Config;
use crate::context::Context;
use crate::contract as c;
use crate::hub::ConnHandle;
use crate::limits::{Slot, TokenBucket};
use crate::outbox::Signal;
use crate::transport::{self, ReadError, ReadSide, Writer};

/// What the gateway hands over once the handshake is answered.
pub struct Accepted {
    /// Shared daemon state.
    pub ctx: Arc<Context>,
    /// The connection (registered in the hub; `connection_established` queued).
    pub handle: Arc<ConnHandle>,
    /// The app it connected to.
    pub app: Arc<App>,
    /// Its `socket_id`.
    pub socket_id: String,
    /// Its place under `max_connections`; freed when it ends.
    pub slot: Slot,
    /// Events to PHP, when the app has a `script` (PHP accepted the open).
    pub php: Option<PhpConn>,
    /// permessage-deflate was agreed: the window (log2) the client
    /// compresses with, for the inflater of its messages.
    pub inflate_window: Option<u8>,
}

/// One subscription.
struct Sub {
    channel: Box<str>,
    hub: Box<str>,
    kind: ChannelKind,
    /// The presence member's user id.
    user_id: Option<Box<str>>,
}

/// How the connection ends.
struct Ending {
    /// Flush what is queued before closing the socket.
    flush: bool,
    /// The close code PHP's close event tells (`WS_CLOSE_CODE`).
    code: u16,
    /// Its reason.
    reason: String,
}

impl Ending {
    fn new(flush: bool, code: u16, reason: impl Into<String>) -> Self {
        Self {
            flush,
            code,
            reason: reason.into(),
        }
    }

    /// The client is gone without a close frame.
    fn vanished() -> Self {
        Self::new(false, c::CLOSE_VANISHED, c::REASON_VANISHED)
    }
}

struct Conn {
    ctx: Arc<Context>,
    config: Arc<Config>,
    handle: Arc<ConnHandle>,
    app: Arc<App>,
    socket_id: String,
    /// The client's frames.
    side: ReadSide,
    subs: Vec<Sub>,
    /// The user signed in with `pusher:signin`.
    user: Option<Box<str>>,
    client_events: TokenBucket,
    last_seen: Instant,
    /// When the server's `pusher:ping` went out, unanswered so far.
    pinged: Option<Instant>,
    /// Events to PHP, when the app has a `script` (boxed: most have none).
    php: Option<Box<php::Side>>,
}

/// Runs the connection until it ends.
pub async fn serve(accepted: Accepted, upgraded: hyper::upgrade::Upgraded) {
    let Accepted {
        ctx,
        handle,
        app,
        socket_id,
        slot: _slot, // held until the connection is gone
        php,
        inflate_window,
    } = accepted;
    let config = ctx.config();
    let Some((socket, pre_read)) = transport::socket(upgraded) else {
        tracing::error!(
            socket_id,
            "upgraded connection is neither TCP nor Unix; dropping it"
        );
        ctx.hub.unregister(&handle.id);
        if let Some(php) = php {
            Box::pin(php::close_event(
                &ctx,
                &handle,
                php.into_side(),
                &Ending::vanished(),
                None,
            ))
            .await;
        }
        return;
    };
    let side = ReadSide::open(
        handle.clone(),
        ctx.inbound.clone(),
        &config.websocket,
        inflate_window,
        &pre_read,
    );
    drop(pre_read);
    let mut writer = Writer::new(socket, ctx.metrics.bytes_out.clone(), handle.clone());
    let rate = f64::from(config.pusher.client_events_per_second);
    let mut conn = Conn {
        ctx: ctx.clone(),
        config: config.clone(),
        handle: handle.clone(),
        app,
        socket_id,
        side,
        subs: Vec::new(),
        user: None,
        client_events: TokenBucket::new(rate, rate),
        last_seen: Instant::now(),
        pinged: None,
        php: php.map(|p| Box::new(p.into_side())),
    };
    ctx.hub.stats.connections_total.inc();
    if ctx.is_shutting_down() {
        handle
            .outbox
            .request_close(c::CLOSE_SHUTDOWN, c::REASON_SHUTDOWN.into());
    }
    let ending = conn.run(&mut writer).await;
    conn.leave_all();
    ctx.hub.unregister(&handle.id);
    handle.outbox.seal();
    if ending.flush {
        let until = ctx.within_drain(config.websocket.close_timeout);
        let _ = timeout_at(until.into(), writer.flush_all()).await;
    }
    drop(writer);
    if let Some(side) = conn.php.take() {
        let user = conn.user.take();
        // Boxed: the close event's call would otherwise enlarge every idle
        // connection's task.
        Box::pin(php::close_event(
            &ctx,
            &handle,
            *side,
            &ending,
            user.as_deref(),
        ))
        .await;
    }
}

/// Ends a connection whose upgrade never completed (the client left):
/// PHP, when it accepted the open, still gets its close event.
pub async fn abandon(accepted: Accepted) {
    let Accepted {
        ctx, handle, php, ..
    } = accepted;
    ctx.hub.unregister(&handle.id);
    handle.outbox.seal();
    if let Some(php) = php {
        Box::pin(php::close_event(
            &ctx,
            &handle,
            php.into_side(),
            &Ending::vanished(),
            None,
        ))
        .await;
    }
}

impl Conn {
    /// Runs the loop until the connection ends: a hand-written poll
    /// (`poll_run`), so that an idle connection's task holds no future of
    /// the writer's or the read side's, only the timer.
    async fn run(&mut self, writer: &mut Writer) -> Ending {
        let timer = sleep(self.config.pusher.activity_timeout);
        tokio::pin!(timer);
        std::future::poll_fn(|cx| self.poll_run(cx, writer, timer.as_mut())).await
    }

    /// Looks at PHP's answer, the outbox writer, the client's frames and
    /// the timer, in that order, and again after each that was ready, until
    /// none is (`Pending`: each has arranged its wake-up) or the connection
    /// ends.
    fn poll_run(
        &mut self,
        cx: &mut std::task::Context<'_>,
        writer: &mut Writer,
        mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> Poll<Ending> {
        let activity = self.config.pusher.activity_timeout;
        let limits = Limits {
            max_frame: self.config.websocket.max_frame_size,
            max_message: self.config.websocket.max_message_size,
        };
        // The timer turned (the client was quiet): the writer's batch and
        // the outbox give back the room they no longer use before the task
        // sleeps, as the raw connection's do (`connection/task.rs`).
        let mut ticked = false;
        loop {
            if let Poll::Ready(result) = php::poll_answer(&mut self.php, cx) {
                if let Some(ending) = self.on_php_answer(result) {
                    return Poll::Ready(ending);
                }
                continue;
            }
            if let Poll::Ready(signal) = writer.poll_run(cx) {
                return Poll::Ready(match signal {
                    Ok(Signal::Close(code, reason)) => self.close(code, &reason),
                    Ok(Signal::SlowConsumer) => {
                        self.ctx.metrics.closed("slow_consumer");
                        self.ctx.hub.stats.slow_consumers.inc();
                        tracing::warn!(socket_id = %self.socket_id, "pusher: slow consumer cut off");
                        Ending::new(false, c::CLOSE_SLOW_CONSUMER, c::REASON_SLOW_CONSUMER)
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "write failed");
                        Ending::vanished()
                    }
                });
            }
            if php::can_read(&self.php, self.config.websocket.event_queue)
                && let Poll::Ready(msg) = self.side.poll_next(writer.socket(), cx, limits)
            {
                self.last_seen = Instant::now();
                self.pinged = None;
                timer.as_mut().reset((self.last_seen + activity).into());
                if let Some(ending) = self.on_message(msg) {
                    return Poll::Ready(ending);
                }
                continue;
            }
            if timer.as_mut().poll(cx).is_ready() {
                if let Some(ending) = self.on_timer(activity) {
                    return Poll::Ready(ending);
                }
                timer.as_mut().reset((Instant::now() + activity).into());
                ticked = true;
                continue;
            }
            if ticked {
                writer.shed_capacity();
                self.handle.outbox.shed_capacity();
            }
            return Poll::Pending;
        }
    }

    fn on_timer(&mut self, activity: Duration) -> Option<Ending> {
        if self.side.is_paused() || !php::can_read(&self.php, self.config.websocket.event_queue) {
            // Reading is paused by the inbound budget, or frames wait for
            // PHP: the client's answer may be waiting unread.
            self.last_seen = Instant::now();
            return None;
        }
        match self.pinged {
            Some(at) if at.elapsed() >= activity => {
                self.ctx.metrics.closed("idle_timeout");
                self.send(&frame::error(
                    Some(codes::PONG_NOT_RECEIVED),
                    "pong reply not received",
                ));
                Some(self.close(codes::PONG_NOT_RECEIVED, "pong reply not received"))
            }
            Some(_) => None,
            None if self.last_seen.elapsed() >= activity => {
                self.pinged = Some(Instant::now());
                self.send(&frame::ping());
                None
            }
            None => None,
        }
    }

    /// Queues our close frame after what is queued; the connection ends.
    fn close(&mut self, code: u16, reason: &str) -> Ending {
        let mut payload = Vec::with_capacity(2 + reason.len());
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(reason.as_bytes());
        self.handle
            .outbox
            .push_control(crate::frame::close(&payload));
        Ending::new(true, code, reason)
    }

    /// Queues one frame for this connection (compressed when agreed and large enough).
    fn send(&self, text: &str) {
        let frame = self.handle.message(
            crate::frame::Kind::Text,
            text.as_bytes(),
            &self.ctx.hub.stats.compression,
        );
        let _ = self.handle.outbox.push(frame);
    }

    fn error(&self, code: u16, message: &str) {
        self.send(&frame::error(Some(code), message));
    }

    fn on_message(&mut self, msg: Option<Result<Incoming, ReadError>>) -> Option<Ending> {
        let text = match msg {
            Some(Ok(Incoming::Message(crate::frame::Kind::Text, text))) => text,
            Some(Ok(Incoming::Message(crate::frame::Kind::Binary, _))) => {
                let _charge = self.side.message_charge();
                self.error(
                    codes::GENERIC,
                    "binary messages are not part of the Pusher protocol",
                );
                return None;
            }
            Some(Ok(Incoming::Ping(payload))) => {
                self.handle
                    .outbox
                    .push_control(crate::frame::pong(&payload));
                return None;
            }
            Some(Ok(Incoming::Pong)) => return None,
            // Answered with the same code and reason (RFC 6455 §5.5.1).
            Some(Ok(Incoming::Close(frame))) => {
                return Some(match frame {
                    Some((code, reason)) => self.close(code, &reason),
                    None => {
                        self.handle.outbox.push_control(crate::frame::close(&[]));
                        Ending::new(true, c::CLOSE_NO_STATUS, "")
                    }
                });
            }
            None => return Some(Ending::vanished()),
            Some(Err(ReadError::Refused(fault))) => {
                let kind = if fault.code == c::CLOSE_TOO_BIG {
                    "too_big"
                } else {
                    "protocol"
                };
                tracing::info!(socket_id = %self.socket_id, reason = fault.reason, code = fault.code, "pusher: closing on client error");
                self.ctx.metrics.closed(kind);
                return Some(self.close(fault.code, fault.reason));
            }
            Some(Err(ReadError::Io(e))) => {
                tracing::debug!(error = %e, "pusher: read failed");
                return Some(Ending::vanished());
            }
        };
        // Given back when the message has been handled (or, waiting for
        // PHP, when its turn has come).
        let charge = self.side.message_charge();
        self.ctx.hub.stats.messages_in.inc();
        self.ctx.metrics.bytes_in.inc_by(text.len() as u64);
        // The decoder checked that text messages are UTF-8.
        let Ok(text) = std::str::from_utf8(&text) else {
            return Some(self.close(c::CLOSE_INVALID_PAYLOAD, "invalid UTF-8"));
        };
        match protocol::parse(text) {
            Ok(frame) => self.on_frame(frame, charge),
            Err(e) => {
                self.error(codes::GENERIC, &e.to_string());
                None
            }
        }
    }

    /// Handles a frame now, or queues it behind the one PHP is asked about.
    fn on_frame(&mut self, frame: ClientFrame, charge: crate::inbound::Charge) -> Option<Ending> {
        let frame = php::wait_turn(&mut self.php, frame, charge)?;
        self.handle_frame(frame)
    }

    fn handle_frame(&mut self, frame: ClientFrame) -> Option<Ending> {
        match frame {
            ClientFrame::Ping => self.send(&frame::pong()),
            ClientFrame::Pong => {}
            ClientFrame::Subscribe {
                channel,
                auth,
                channel_data,
            } => self.subscribe(&channel, auth.as_deref(), channel_data.as_deref()),
            ClientFrame::Unsubscribe { channel } => self.unsubscribe(&channel),
            ClientFrame::Signin { auth, user_data } => return self.signin(&auth, &user_data),
            ClientFrame::ClientEvent {
                event,
                channel,
                data,
            } => self.client_event(&event, &channel, &data),
        }
        None
    }
}

#[cfg(test)]
mod memory_budget {
    use super::*;

    #[tokio::test]
    async fn an_idle_pusher_connection_stays_small() {
        let mut config = Config::default();
        config.fpm.address = Some(crate::config::FpmAddr::Unix("/nonexistent".into()));
        let ctx = Arc::new(Context::new(config));
        let handle = ctx.hub.register(1024);
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let side = ReadSide::open(
            handle.clone(),
            ctx.inbound.clone(),
            &ctx.config().websocket,
            None,
            &[],
        );
        let mut writer = Writer::new(
            transport::Socket::Unix(a),
            Default::default(),
            handle.clone(),
        );
        let app = Arc::new(App {
            id: "1".into(),
            key: "k".into(),
            secret: serde_json::from_str("\"s\"").unwrap(),
            auth: Default::default(),
            script: None,
        });
        let mut conn = Conn {
            ctx: ctx.clone(),
            config: ctx.config(),
            handle,
            app,
            socket_id: "1.1".into(),
            side,
            subs: Vec::new(),
            user: None,
            client_events: TokenBucket::new(10.0, 10.0),
            last_seen: Instant::now(),
            pinged: None,
            php: None,
        };
        // Every idle Pusher connection's task holds `Conn`, the writer and
        // the `run` future: growth fails here.
        let conn_size = std::mem::size_of::<Conn>();
        let run_size = std::mem::size_of_val(&conn.run(&mut writer));
        eprintln!("Conn {conn_size} bytes, run future {run_size} bytes");
        assert!(conn_size <= 312, "Conn grew to {conn_size} bytes");
        assert!(
            run_size <= 168,
            "Conn::run's future grew to {run_size} bytes"
        );
    }
}
