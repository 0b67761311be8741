//! What one node keeps for Pusher channels besides the hub's memberships:
//! presence members per **user** and the last event of cache channels.
//!
//! A presence channel's members are its users, not its connections: a
//! user's first connection to subscribe makes it a member (the others are
//! sent `pusher_internal:member_added`), its last one to leave ends that
//! (`member_removed`); the member list a subscriber gets has each user once.
//!
//! Every change of a presence or cache channel happens under one lock, and
//! the hub is called inside it (never the other way round), so a
//! subscriber's `subscription_succeeded` and what follows it agree: no
//! `member_added` of a user already in its list, no cached event twice.
//! A subscriber is sent `subscription_succeeded` *before* it joins the hub
//! channel, so no event reaches it before that.
//!
//! Memory: one entry per (presence channel, user) with connections on this
//! node, and at most [`MAX_CACHED_CHANNELS`] cached events of at most
//! `pusher.max_message_bytes` each, kept [`CACHE_TTL`].
//!
//! What happens to a channel — the events of Pusher's webhooks — is reported
//! as a [`Change`] to the [`Changes`] sink the state was built with, under
//! the same lock, so the sink sees them in the order they happened:
//!
//! ```text
//! first connection subscribes      Occupied, then MemberAdded (presence: the user's first)
//! a user's first connection        MemberAdded
//! a user's last connection leaves  MemberRemoved
//! last connection leaves           MemberRemoved (presence), then Vacated
//! ```
//!
//! On a single node these are this node's changes. In a cluster they are
//! the cluster's, each reported once, by the node whose connection made it:
//! this node's changes go to Redis as [`Op`]s instead, and the roster task
//! (`cluster/roster.rs`) reports those Redis found to be the cluster's
//! first or last ([`State::report_cluster`]).
//!
//! In a cluster (`[cluster]`), a user's first and last connection here are
//! not announced by this node either: Redis announces the first connection
//! anywhere and the last one anywhere, in one order for every node
//! (`roster.rs`); member lists are the cluster's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use super::frame;
use super::roster::{Op, Ops, Order, Roster, Said};
use crate::frame::Kind;
use crate::hub::{ConnHandle, ConnId, Hub};

/// How long a cache channel's last event is kept (Pusher keeps it 30 minutes).
pub const CACHE_TTL: Duration = Duration::from_secs(30 * 60);

/// Most cache channels whose last event one node keeps; past it, expired
/// ones are dropped, and if none has expired the new event is not cached.
pub const MAX_CACHED_CHANNELS: usize = 10_000;

/// A presence member on this node.
struct Member {
    /// Its connections subscribed to the channel here.
    connections: usize,
    /// `user_info` of its first subscription.
    info: Value,
}

/// The last event of a cache channel.
struct Cached {
    /// The event's frame text (JSON), sent as is to a new subscriber.
    frame: Bytes,
    at: Instant,
}

#[derive(Default)]
struct Inner {
    /// Hub channel → user id → member.
    presence: HashMap<String, HashMap<String, Member>>,
    /// Hub channel → its last event.
    cache: HashMap<String, Cached>,
    /// In a cluster: the members of every node, as Redis announced them.
    roster: Roster,
}

/// What happened to a channel (Pusher's webhook events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The channel has its first subscriber.
    Occupied,
    /// The channel's last subscriber left.
    Vacated,
    /// A user's first connection subscribed to the presence channel.
    MemberAdded {
        /// The member's `user_id`.
        user_id: String,
    },
    /// A user's last connection left the presence channel.
    MemberRemoved {
        /// The member's `user_id`.
        user_id: String,
    },
}

/// Receives every [`Change`], in the order they happen. Called with the
/// state's lock held: it must not block or call back into the state.
pub trait Changes: Send + Sync {
    /// `channel` of the app `app_id` changed.
    fn report(&self, app_id: &str, channel: &str, change: Change);
}

/// Presence and cache state of a node; one per daemon (in the `Context`).
#[derive(Default)]
pub struct State {
    inner: Mutex<Inner>,
    /// Where changes of channels go; nowhere when `None`.
    changes: Option<Arc<dyn Changes>>,
    /// In a cluster: where this node's changes go (to Redis).
    cluster: OnceLock<Arc<Ops>>,
}

/// A presence subscriber.
pub struct Presence<'a> {
    /// Its `user_id`.
    pub user_id: &'a str,
    /// Its `user_info` (any JSON, `null` when none).
    pub user_info: Value,
}

impl State {
    /// A state that reports every change of a channel to `changes`.
    pub fn with_changes(changes: Arc<dyn Changes>) -> Self {
        Self {
            inner: Mutex::default(),
            changes: Some(changes),
            cluster: OnceLock::new(),
        }
    }

    /// Makes presence and changes cluster-wide: this node's changes go to
    /// `ops` (sent to Redis by `cluster/roster.rs`), member lists are the
    /// roster's.
    pub fn join_cluster(&self, ops: Arc<Ops>) {
        let _ = self.cluster.set(ops);
    }

    /// Reports a change Redis found to be the cluster's (the roster task,
    /// on the node whose change it was).
    pub fn report_cluster(&self, hub_channel: &str, change: Change) {
        self.report(hub_channel, change);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports `change` of the hub channel `hub_channel` (called under the lock).
    fn report(&self, hub_channel: &str, change: Change) {
        if let Some(changes) = &self.changes
            && let Some((app_id, channel)) = super::from_hub_channel(hub_channel)
        {
            changes.report(app_id, channel, change);
        }
    }

    /// Subscribes `handle` to `channel` (hub name `hub_channel`): sends
    /// `subscription_succeeded` (with the members, for a presence channel),
    /// the cached event or `pusher:cache_miss` for a cache channel, then
    /// joins; a presence member new on this node is announced to the others.
    pub fn subscribe(
        &self,
        hub: &Hub,
        handle: &ConnHandle,
        hub_channel: &str,
        channel: &str,
        presence: Option<Presence<'_>>,
        cache: bool,
    ) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        // Compressed when the client agreed and it is large enough (a
        // presence channel's member list).
        let send = |text: &[u8]| {
            let _ = handle
                .outbox
                .push(handle.message(Kind::Text, text, &hub.stats.compression));
        };
        let mut added = None;
        let mut new_member = None;
        // In a cluster: the new member's `user_info`, for its join op.
        let mut join_info = None;
        match presence {
            None => send(frame::subscription_succeeded(channel).as_bytes()),
            Some(p) => {
                let members = inner.presence.entry(hub_channel.to_owned()).or_default();
                let member = members.entry(p.user_id.to_owned()).or_insert_with(|| {
                    new_member = Some(p.user_id.to_owned());
                    Member {
                        connections: 0,
                        info: p.user_info.clone(),
                    }
                });
                member.connections += 1;
                match self.cluster.get() {
                    None => {
                        if new_member.is_some() {
                            added = Some(frame::member_added(channel, p.user_id, &p.user_info));
                        }
                        let list = members.iter().map(|(id, m)| (id.as_str(), &m.info));
                        send(frame::presence_succeeded(channel, list).as_bytes());
                    }
                    Some(_) => {
                        let roster = &mut inner.roster;
                        let own = (!roster.contains(hub_channel, p.user_id))
                            .then_some((p.user_id, &p.user_info));
                        let list = roster.members(hub_channel).chain(own);
                        send(frame::presence_succeeded(channel, list).as_bytes());
                        if own.is_some() {
                            roster.tell(hub_channel, p.user_id, handle.id);
                        }
                    }
                }
                if self.cluster.get().is_some() && new_member.is_some() {
                    join_info = Some(p.user_info.to_string());
                }
            }
        }
        if cache {
            let now = Instant::now();
            match inner.cache.get(hub_channel) {
                Some(c) if now.duration_since(c.at) < CACHE_TTL => send(&c.frame),
                _ => send(frame::cache_miss(channel).as_bytes()),
            }
        }
        let empty = hub.member_count(hub_channel) == 0;
        if hub.join(&handle.id, hub_channel) && empty {
            match self.cluster.get() {
                None => self.report(hub_channel, Change::Occupied),
                Some(ops) => ops.push(Op::Occupy {
                    hub: hub_channel.to_owned(),
                }),
            }
        }
        if let Some(added) = added {
            hub.publish(hub_channel, Kind::Text, added.as_bytes(), &[handle.id]);
        }
        match (new_member, self.cluster.get(), join_info) {
            (Some(user), Some(ops), Some(info)) => ops.push(Op::Join {
                hub: hub_channel.to_owned(),
                user,
                info,
            }),
            (Some(user_id), None, _) => self.report(hub_channel, Change::MemberAdded { user_id }),
            _ => {}
        }
    }

    /// Unsubscribes `id` from `channel`; a presence member whose last
    /// connection here this was is announced gone (`member_removed`).
    pub fn unsubscribe(
        &self,
        hub: &Hub,
        id: &ConnId,
        hub_channel: &str,
        channel: &str,
        user_id: Option<&str>,
    ) {
        let mut inner = self.lock();
        let before = hub.member_count(hub_channel);
        hub.leave(id, hub_channel);
        let vacated = before > 0 && hub.member_count(hub_channel) == 0;
        if let Some(user_id) = user_id {
            if self.cluster.get().is_some() {
                inner.roster.forget(hub_channel, user_id, id);
            }
            self.remove_member(&mut inner, hub, hub_channel, channel, user_id);
        }
        if vacated {
            match self.cluster.get() {
                None => self.report(hub_channel, Change::Vacated),
                Some(ops) => ops.push(Op::Vacate {
                    hub: hub_channel.to_owned(),
                }),
            }
        }
    }

    /// One connection of the member `user_id` left: the member is gone when
    /// it was its last here.
    fn remove_member(
        &self,
        inner: &mut Inner,
        hub: &Hub,
        hub_channel: &str,
        channel: &str,
        user_id: &str,
    ) {
        let Some(members) = inner.presence.get_mut(hub_channel) else {
            return;
        };
        let Some(member) = members.get_mut(user_id) else {
            return;
        };
        member.connections -= 1;
        if member.connections > 0 {
            return;
        }
        members.remove(user_id);
        if members.is_empty() {
            inner.presence.remove(hub_channel);
        }
        if let Some(ops) = self.cluster.get() {
            ops.push(Op::Leave {
                hub: hub_channel.to_owned(),
                user: user_id.to_owned(),
            });
            return;
        }
        let removed = frame::member_removed(channel, user_id);
        hub.publish(hub_channel, Kind::Text, removed.as_bytes(), &[]);
        self.report(
            hub_channel,
            Change::MemberRemoved {
                user_id: user_id.to_owned(),
            },
        );
    }

    /// Publishes an event's frame to a hub channel but `except`, keeping it
    /// as the channel's last event when `cache`. Returns the deliveries.
    pub fn publish(
        &self,
        hub: &Hub,
        hub_channel: &str,
        frame: &str,
        except: &[ConnId],
        cache: bool,
    ) -> usize {
        if !cache {
            return hub
                .publish(hub_channel, Kind::Text, frame.as_bytes(), except)
                .delivered;
        }
        let mut inner = self.lock();
        let now = Instant::now();
        if inner.cache.len() >= MAX_CACHED_CHANNELS && !inner.cache.contains_key(hub_channel) {
            inner
                .cache
                .retain(|_, c| now.duration_since(c.at) < CACHE_TTL);
        }
        if inner.cache.len() < MAX_CACHED_CHANNELS || inner.cache.contains_key(hub_channel) {
            inner.cache.insert(
                hub_channel.to_owned(),
                Cached {
                    frame: Bytes::copy_from_slice(frame.as_bytes()),
                    at: now,
                },
            );
        } else {
            tracing::warn!(
                most = MAX_CACHED_CHANNELS,
                "pusher: too many cache channels; this event is not kept"
            );
        }
        hub.publish(hub_channel, Kind::Text, frame.as_bytes(), except)
            .delivered
    }

    /// The users of a presence channel and their `user_info`: this node's,
    /// or in a cluster the cluster's.
    pub fn members(&self, hub_channel: &str) -> Vec<(String, Value)> {
        let inner = self.lock();
        if self.cluster.get().is_some() {
            return inner
                .roster
                .members(hub_channel)
                .map(|(id, info)| (id.to_owned(), info.clone()))
                .collect();
        }
        inner
            .presence
            .get(hub_channel)
            .map(|m| {
                m.iter()
                    .map(|(id, m)| (id.clone(), m.info.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every (hub channel, user) with connections on this node, as joins,
    /// and every channel it occupies (for a resync with Redis).
    pub fn local_ops(&self, hub: &Hub) -> Vec<Op> {
        let inner = self.lock();
        let mut ops: Vec<Op> = hub
            .channels_with_prefix(&super::HUB_PREFIX.to_string())
            .into_iter()
            .filter(|(name, _)| {
                super::from_hub_channel(name).is_some_and(|(_, c)| !c.starts_with('#'))
            })
            .map(|(hub, _)| Op::Occupy { hub })
            .collect();
        for (hub, members) in &inner.presence {
            for (user, member) in members {
                ops.push(Op::Join {
                    hub: hub.clone(),
                    user: user.clone(),
                    info: member.info.to_string(),
                });
            }
        }
        ops
    }

    /// Applies announcement `seq` of the cluster (a `member_added` or
    /// `member_removed` frame on `hub_channel`) and delivers it to this
    /// node's members; `None` when the frame is neither.
    pub fn announce(&self, hub: &Hub, seq: u64, hub_channel: &str, frame: &str) -> Option<Order> {
        let said = Said::of_frame(frame)?;
        let mut inner = self.lock();
        let (order, except) = inner.roster.announce(seq, hub_channel, said);
        if let Order::New { .. } = order {
            hub.publish(hub_channel, Kind::Text, frame.as_bytes(), &except);
        }
        Some(order)
    }

    /// Keeps `frame` as a cache channel's last event, published `age` ago
    /// (read back from Redis), unless this node knows a newer one.
    pub fn restore_cache(&self, hub_channel: &str, frame: &str, age: Duration) {
        if age >= CACHE_TTL {
            return;
        }
        let Some(at) = Instant::now().checked_sub(age) else {
            return;
        };
        let mut inner = self.lock();
        let newer_here = inner.cache.get(hub_channel).is_some_and(|c| c.at >= at);
        let full =
            inner.cache.len() >= MAX_CACHED_CHANNELS && !inner.cache.contains_key(hub_channel);
        if newer_here || full {
            return;
        }
        inner.cache.insert(
            hub_channel.to_owned(),
            Cached {
                frame: Bytes::copy_from_slice(frame.as_bytes()),
                at,
            },
        );
    }

    /// Replaces the roster with a snapshot from Redis (`epoch` names the
    /// counter `seq` is of: a new one after Redis lost its data).
    pub fn load_roster(
        &self,
        epoch: &str,
        seq: u64,
        members: HashMap<String, HashMap<String, Value>>,
    ) {
        self.lock().roster.load(epoch, seq, members);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// The event names queued to `handle`, in order.
    fn events(handle: &ConnHandle) -> Vec<String> {
        let mut batch = VecDeque::new();
        handle.outbox.drain_into(&mut batch, 1000, 0);
        batch
            .iter()
            .map(|f| {
                let start = f.iter().position(|&b| b == b'{').unwrap();
                let v: Value = serde_json::from_slice(&f[start..]).unwrap();
                v["event"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn presence_is_per_user_and_cache_replays_the_last_event() {
        let hub = Hub::default();
        let state = State::default();
        let (w, a1, a2) = (
            hub.register(1 << 16),
            hub.register(1 << 16),
            hub.register(1 << 16),
        );
        let me = |id| {
            Some(Presence {
                user_id: id,
                user_info: Value::Null,
            })
        };
        state.subscribe(&hub, &w, "h", "presence-r", me("w"), false);
        state.subscribe(&hub, &a1, "h", "presence-r", me("a"), false);
        state.subscribe(&hub, &a2, "h", "presence-r", me("a"), false);
        assert_eq!(state.members("h").len(), 2);
        state.unsubscribe(&hub, &a1.id, "h", "presence-r", Some("a"));
        state.unsubscribe(&hub, &a2.id, "h", "presence-r", Some("a"));
        assert_eq!(
            events(&w),
            [
                "pusher_internal:subscription_succeeded",
                "pusher_internal:member_added",
                "pusher_internal:member_removed"
            ]
        );
        assert_eq!(events(&a2), ["pusher_internal:subscription_succeeded"]);

        let c = hub.register(1 << 16);
        state.subscribe(&hub, &c, "k", "cache-x", None, true);
        assert_eq!(state.publish(&hub, "k", r#"{"event":"e1"}"#, &[], true), 1);
        assert_eq!(state.publish(&hub, "k", r#"{"event":"e2"}"#, &[], true), 1);
        let late = hub.register(1 << 16);
        state.subscribe(&hub, &late, "k", "cache-x", None, true);
        assert_eq!(
            events(&c),
            [
                "pusher_internal:subscription_succeeded",
                "pusher:cache_miss",
                "e1",
                "e2"
            ]
        );
        assert_eq!(
            events(&late),
            ["pusher_internal:subscription_succeeded", "e2"]
        );
    }

    /// Records the changes reported.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<(String, String, Change)>>);

    impl Changes for Recorded {
        fn report(&self, app_id: &str, channel: &str, change: Change) {
            self.0
                .lock()
                .unwrap()
                .push((app_id.into(), channel.into(), change));
        }
    }

    #[test]
    fn changes_are_reported_in_order_once_per_channel_and_user() {
        let recorded = Arc::new(Recorded::default());
        let state = State::with_changes(recorded.clone());
        let hub = Hub::default();
        let (a1, a2, b) = (
            hub.register(1 << 16),
            hub.register(1 << 16),
            hub.register(1 << 16),
        );
        let p = super::super::hub_channel("1", "presence-r");
        let q = super::super::hub_channel("1", "public");
        let me = |id| {
            Some(Presence {
                user_id: id,
                user_info: Value::Null,
            })
        };
        state.subscribe(&hub, &a1, &p, "presence-r", me("a"), false);
        state.subscribe(&hub, &a2, &p, "presence-r", me("a"), false);
        state.subscribe(&hub, &b, &p, "presence-r", me("b"), false);
        state.subscribe(&hub, &b, &q, "public", None, false);
        state.unsubscribe(&hub, &a1.id, &p, "presence-r", Some("a"));
        state.unsubscribe(&hub, &b.id, &p, "presence-r", Some("b"));
        state.unsubscribe(&hub, &a2.id, &p, "presence-r", Some("a"));
        // Leaving twice, or a channel never joined, changes nothing.
        state.unsubscribe(&hub, &a2.id, &p, "presence-r", Some("a"));
        state.unsubscribe(&hub, &b.id, &q, "public", None);
        state.unsubscribe(&hub, &b.id, &q, "public", None);
        let member = |id: &str| id.to_string();
        let expected = [
            ("presence-r", Change::Occupied),
            (
                "presence-r",
                Change::MemberAdded {
                    user_id: member("a"),
                },
            ),
            (
                "presence-r",
                Change::MemberAdded {
                    user_id: member("b"),
                },
            ),
            ("public", Change::Occupied),
            (
                "presence-r",
                Change::MemberRemoved {
                    user_id: member("b"),
                },
            ),
            (
                "presence-r",
                Change::MemberRemoved {
                    user_id: member("a"),
                },
            ),
            ("presence-r", Change::Vacated),
            ("public", Change::Vacated),
        ];
        let got = recorded.0.lock().unwrap().clone();
        let expected: Vec<_> = expected
            .into_iter()
            .map(|(c, change)| ("1".to_string(), c.to_string(), change))
            .collect();
        assert_eq!(got, expected);
    }
}
