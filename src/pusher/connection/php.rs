//! What a Pusher connection of an app with a `script` asks PHP: a
//! subscription with `auth = "php"` and a client event wait for PHP's
//! answer, one at a time, and the frames the client sends meanwhile wait
//! their turn behind it (so a connection's subscriptions are answered in
//! the order it sent them; pings are answered at once). At most
//! `websocket.event_queue` frames wait: past it the connection stops
//! reading until PHP answers, and TCP backpressure reaches the client.
//!
//! ```text
//! subscribe private-/presence-   2xx            subscribed (presence: the member PHP names)
//!                                non-2xx        pusher:subscription_error {type AuthError, status}
//!                                no answer      pusher:subscription_error {status 503}
//! client-* event                 2xx            relayed to the channel's other members
//!                                otherwise      not relayed; pusher:error 4300 to the sender
//! ```
//!
//! When the connection ends, the question in flight is answered first
//! (PHP may be acting on it), then PHP gets the `close` event, booked like
//! the raw contract's (see `drain.rs`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use super::{Conn, Ending};
use crate::config::AuthMode;
use crate::context::Context;
use crate::drain::{CloseDue, Outcome};
use crate::event::ConnEnv;
use crate::hub::ConnHandle;
use crate::inbound::Charge;
use crate::php::EventError;
use crate::pusher::php::{ConnEvent, ask, presence_member};
use crate::pusher::protocol::{ClientFrame, codes};
use crate::pusher::{App, ChannelKind, frame};
use crate::response::PhpResponse;

type Answer = Pin<Box<dyn Future<Output = Result<PhpResponse, EventError>> + Send>>;

/// What the gateway hands over when PHP accepted the open event.
pub struct PhpConn {
    env: ConnEnv,
    close_due: CloseDue,
}

impl PhpConn {
    /// The connection's variables and the close event it owes PHP.
    pub fn new(env: ConnEnv, close_due: CloseDue) -> Self {
        Self { env, close_due }
    }

    pub(super) fn into_side(self) -> Side {
        Side {
            env: self.env,
            close_due: self.close_due,
            waiting: VecDeque::new(),
            asking: None,
        }
    }
}

/// The connection's side of events to PHP.
pub(super) struct Side {
    env: ConnEnv,
    close_due: CloseDue,
    /// Frames waiting for the question in flight, with their share of the
    /// inbound budget.
    waiting: VecDeque<(ClientFrame, Charge)>,
    /// The question PHP is answering.
    asking: Option<Asking>,
}

struct Asking {
    answer: Answer,
    about: About,
}

/// What PHP is asked about.
enum About {
    Subscribe {
        channel: String,
        kind: ChannelKind,
    },
    ClientEvent {
        event: String,
        channel: String,
        data: String,
    },
}

/// Does PHP authorize a subscription to `channel` (of `kind`) for `app`
/// (whose connections have a [`Side`])? With `auth = "php"`: private and
/// presence channels, but not encrypted ones,
/// whose client needs the `shared_secret` from the app's auth endpoint
/// anyway, and which keep their signature.
pub(super) fn decides(app: &App, kind: ChannelKind, channel: &str) -> bool {
    app.auth == AuthMode::Php && kind.needs_auth() && !channel.starts_with(ENCRYPTED_PREFIX)
}

/// The prefix of encrypted channels (`private-encrypted-`, `private-encrypted-cache-`).
const ENCRYPTED_PREFIX: &str = "private-encrypted-";

/// May the connection read another frame? Not while `most` wait for PHP.
pub(super) fn can_read(side: &Option<Box<Side>>, most: usize) -> bool {
    side.as_ref().is_none_or(|s| s.waiting.len() < most)
}

/// PHP's answer to the question in flight (pending when there is none).
pub(super) fn poll_answer(
    side: &mut Option<Box<Side>>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Result<PhpResponse, EventError>> {
    match side.as_mut().and_then(|s| s.asking.as_mut()) {
        Some(asking) => std::future::Future::poll(asking.answer.as_mut(), cx),
        None => std::task::Poll::Pending,
    }
}

/// The frame, when it may be handled now; `None` when it was queued behind
/// the question in flight. Pings are never queued.
pub(super) fn wait_turn(
    side: &mut Option<Box<Side>>,
    frame: ClientFrame,
    charge: Charge,
) -> Option<ClientFrame> {
    match side {
        Some(side)
            if (side.asking.is_some() || !side.waiting.is_empty())
                && !matches!(frame, ClientFrame::Ping | ClientFrame::Pong) =>
        {
            side.waiting.push_back((frame, charge));
            None
        }
        _ => Some(frame),
    }
}

impl Conn {
    fn side(&mut self) -> Option<&mut Side> {
        self.php.as_deref_mut()
    }

    fn start(&mut self, about: About, answer: Answer) {
        if let Some(side) = self.side() {
            side.asking = Some(Asking { answer, about });
        }
    }

    /// Asks PHP whether the connection may subscribe to `channel`.
    pub(super) fn ask_subscribe(
        &mut self,
        channel: &str,
        kind: ChannelKind,
        channel_data: Option<&str>,
    ) {
        let Some(side) = self.php.as_deref() else {
            return;
        };
        let (ctx, handle, env) = (self.ctx.clone(), self.handle.clone(), side.env.clone());
        let (name, data, user) = (
            channel.to_owned(),
            channel_data.map(str::to_owned),
            self.user.clone(),
        );
        let answer: Answer = Box::pin(async move {
            let event = ConnEvent::Subscribe {
                channel: &name,
                channel_data: data.as_deref(),
            };
            ask(&ctx, &handle, &env, event, user.as_deref()).await
        });
        let about = About::Subscribe {
            channel: channel.to_owned(),
            kind,
        };
        self.start(about, answer);
    }

    /// Asks PHP about a client event before it is relayed.
    pub(super) fn ask_client_event(
        &mut self,
        event: &str,
        channel: &str,
        data: String,
        user: Option<Box<str>>,
    ) {
        let Some(side) = self.php.as_deref() else {
            return;
        };
        let (ctx, handle, env) = (self.ctx.clone(), self.handle.clone(), side.env.clone());
        let (name, channel_name, body) = (event.to_owned(), channel.to_owned(), data.clone());
        let answer: Answer = Box::pin(async move {
            let event = ConnEvent::ClientEvent {
                channel: &channel_name,
                event: &name,
                data: &body,
            };
            ask(&ctx, &handle, &env, event, user.as_deref()).await
        });
        let about = About::ClientEvent {
            event: event.to_owned(),
            channel: channel.to_owned(),
            data,
        };
        self.start(about, answer);
    }

    /// Acts on PHP's answer, then handles the frames that waited for it
    /// until one asks PHP again.
    pub(super) fn on_php_answer(
        &mut self,
        result: Result<PhpResponse, EventError>,
    ) -> Option<Ending> {
        let about = self.side()?.asking.take()?.about;
        if let Ok(answer) = &result
            && answer.is_success()
            && !answer.directives.meta.is_empty()
            && let Err(problem) = self.handle.update_meta(&answer.directives.meta)
        {
            tracing::warn!(socket_id = %self.socket_id, %problem, "metadata directive refused");
        }
        match about {
            About::Subscribe { channel, kind } => self.subscribe_answered(&channel, kind, result),
            About::ClientEvent {
                event,
                channel,
                data,
            } => self.client_event_answered(&event, &channel, &data, result),
        }
        while self.side().is_some_and(|s| s.asking.is_none()) {
            let Some((frame, charge)) = self.side().and_then(|s| s.waiting.pop_front()) else {
                break;
            };
            let ending = self.handle_frame(frame);
            drop(charge);
            if ending.is_some() {
                return ending;
            }
        }
        None
    }

    fn subscribe_answered(
        &mut self,
        channel: &str,
        kind: ChannelKind,
        result: Result<PhpResponse, EventError>,
    ) {
        let refuse = |conn: &Self, error: &str, status: u16| {
            conn.send(&frame::subscription_error(
                channel,
                "AuthError",
                error,
                status,
            ));
        };
        let answer = match result {
            Ok(answer) if answer.is_success() => answer,
            Ok(answer) => {
                tracing::info!(socket_id = %self.socket_id, channel, status = answer.status, "pusher: php refused the subscription");
                return refuse(self, "refused by the app", answer.status);
            }
            Err(e) => {
                tracing::warn!(socket_id = %self.socket_id, channel, error = %e, kind = e.kind(), "pusher: subscribe event failed");
                return refuse(self, "the app could not be asked; try again", 503);
            }
        };
        let presence: Option<(String, Value)> = if kind.is_presence() {
            match presence_member(&answer.body) {
                Ok(member) => Some(member),
                Err(e) => {
                    tracing::warn!(socket_id = %self.socket_id, channel, error = %e, "pusher: php's answer to a presence subscription names no member");
                    return refuse(
                        self,
                        &format!("the app accepted, but {e}; see docs/pusher.md"),
                        500,
                    );
                }
            }
        } else {
            None
        };
        self.join(channel, kind, presence);
    }

    fn client_event_answered(
        &mut self,
        event: &str,
        channel: &str,
        data: &str,
        result: Result<PhpResponse, EventError>,
    ) {
        match result {
            Ok(answer) if answer.is_success() => self.relay(event, channel, data),
            Ok(answer) => {
                tracing::debug!(socket_id = %self.socket_id, channel, event, status = answer.status, "pusher: php refused a client event");
                self.error(
                    codes::GENERIC,
                    &format!(
                        "{event}: not relayed, refused by the app (status {})",
                        answer.status
                    ),
                );
            }
            Err(e) => {
                tracing::warn!(socket_id = %self.socket_id, channel, event, error = %e, kind = e.kind(), "pusher: client_event failed");
                self.error(
                    codes::GENERIC,
                    &format!("{event}: not relayed, the app could not be asked"),
                );
            }
        }
    }
}

/// The end of the connection, for PHP: the question in flight is answered
/// (and dropped: the client is gone), the frames waiting are dropped, and
/// PHP gets the close event, booked.
pub(super) async fn close_event(
    ctx: &Context,
    handle: &ConnHandle,
    side: Side,
    ending: &Ending,
    user: Option<&str>,
) {
    let Side {
        env,
        close_due,
        waiting,
        asking,
    } = side;
    drop(waiting);
    if let Some(asking) = asking {
        let _ = asking.answer.await;
    }
    let calling = ctx.books.calling();
    let event = ConnEvent::Close {
        code: ending.code,
        reason: &ending.reason,
    };
    let result = ask(ctx, handle, &env, event, user).await;
    let outcome = Outcome::of(&result);
    let conn = ctx.public_id(&handle.id);
    match result {
        Ok(answer) if !answer.is_success() => {
            tracing::warn!(%conn, event = "close", status = answer.status, "php answered with an error status");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(%conn, error = %e, kind = e.kind(), "pusher close event not delivered to php")
        }
    }
    calling.close(close_due, outcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(auth: AuthMode) -> App {
        App {
            id: "1".into(),
            key: "k".into(),
            secret: serde_json::from_str("\"s\"").unwrap(),
            auth,
            script: Some("/srv/p.php".into()),
        }
    }

    #[test]
    fn php_decides_private_and_presence_but_not_encrypted_or_public() {
        let php = app(AuthMode::Php);
        let decides = |app: &App, name: &str| decides(app, ChannelKind::of(name), name);
        for name in [
            "private-a",
            "presence-a",
            "private-cache-a",
            "presence-cache-a",
        ] {
            assert!(decides(&php, name), "{name}");
            assert!(!decides(&app(AuthMode::Signature), name), "{name}");
        }
        for name in [
            "public",
            "cache-a",
            "private-encrypted-a",
            "private-encrypted-cache-a",
        ] {
            assert!(!decides(&php, name), "{name}");
        }
    }
}
