//! Presence members of the whole cluster, as this node knows them.
//!
//! On a single node a presence channel's members are this node's users
//! (`state.rs`). In a cluster, whether a user is a member is decided in
//! Redis (`cluster/roster.rs`): a node reports its users' first and last
//! connections ([`Op`]), and a Lua script turns the first connection of a
//! user anywhere into one `member_added`, the last one anywhere into one
//! `member_removed`, numbered by one counter and published on the bus, so
//! every node applies them in the same order ([`Roster::announce`]). The
//! roster is what those announcements say, loaded whole from Redis when the
//! node (re)connects ([`Roster::load`]); a subscriber's member list is the
//! roster plus its own user.
//!
//! Channels being occupied and vacated go the same way ([`Op::Occupy`],
//! [`Op::Vacate`]), so that each is reported once for the cluster.
//!
//! A subscriber whose own user is not in the roster yet (its
//! `member_added` is on its way) is *told* about it already: it is left out
//! of that `member_added` when it comes.
//!
//! Memory: one entry per (presence channel, user) of the cluster, and the
//! last [`RECENT`] announcements.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::Notify;

use crate::hub::ConnId;

/// Announcements kept to apply again over a snapshot loaded meanwhile.
pub const RECENT: usize = 1024;

/// Changes of this node's users waiting for Redis at most; past it they are
/// forgotten and the node's whole presence is synchronised instead.
pub const MAX_OPS: usize = 65_536;

/// A change of this node's presence users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The user's first connection on this node subscribed.
    Join {
        /// The hub channel.
        hub: String,
        /// The user id.
        user: String,
        /// Its `user_info`, JSON.
        info: String,
    },
    /// The user's last connection on this node left.
    Leave {
        /// The hub channel.
        hub: String,
        /// The user id.
        user: String,
    },
    /// The channel's first subscriber on this node.
    Occupy {
        /// The hub channel.
        hub: String,
    },
    /// The channel's last subscriber on this node left.
    Vacate {
        /// The hub channel.
        hub: String,
    },
}

/// What an announcement says.
#[derive(Debug, Clone, PartialEq)]
pub enum Said {
    /// `user` became a member, with `info`.
    Added {
        /// The user id.
        user: String,
        /// Its `user_info`.
        info: Value,
    },
    /// `user` is no longer a member.
    Removed {
        /// The user id.
        user: String,
    },
}

impl Said {
    /// What a `member_added` / `member_removed` frame says; `None` for any other frame.
    pub fn of_frame(frame: &str) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Frame {
            event: String,
            data: String,
        }
        #[derive(serde::Deserialize)]
        struct Data {
            user_id: String,
            #[serde(default)]
            user_info: Value,
        }
        let frame: Frame = serde_json::from_str(frame).ok()?;
        let data: Data = serde_json::from_str(&frame.data).ok()?;
        match frame.event.as_str() {
            "pusher_internal:member_added" => Some(Self::Added {
                user: data.user_id,
                info: data.user_info,
            }),
            "pusher_internal:member_removed" => Some(Self::Removed { user: data.user_id }),
            _ => None,
        }
    }

    fn user(&self) -> &str {
        match self {
            Self::Added { user, .. } | Self::Removed { user } => user,
        }
    }
}

/// Where an announcement stands against the ones applied before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The next one, or later after some that never came (`missed` > 0).
    New {
        /// Announcements skipped.
        missed: u64,
    },
    /// Already applied (a repeat or a replay): ignored.
    Old,
}

/// The cluster's presence members as announced.
#[derive(Default)]
pub struct Roster {
    /// Hub channel → user → `user_info`.
    members: HashMap<String, HashMap<String, Value>>,
    /// (hub channel, user) → this node's connections already given the
    /// user in their member list, before its `member_added`.
    told: HashMap<(String, String), Vec<ConnId>>,
    /// The number of the last announcement applied (0: none yet).
    seq: u64,
    /// The counter `seq` is of (Redis makes a new one when it lost its data).
    epoch: String,
    /// The last announcements applied, oldest first.
    recent: VecDeque<(u64, String, Said)>,
}

impl Roster {
    /// The members of a hub channel.
    pub fn members(&self, hub: &str) -> impl Iterator<Item = (&str, &Value)> {
        self.members
            .get(hub)
            .into_iter()
            .flat_map(|m| m.iter().map(|(id, info)| (id.as_str(), info)))
    }

    /// Is `user` a member of `hub`?
    pub fn contains(&self, hub: &str, user: &str) -> bool {
        self.members.get(hub).is_some_and(|m| m.contains_key(user))
    }

    /// Notes that `conn` was given `user` in its member list before the
    /// roster had it.
    pub fn tell(&mut self, hub: &str, user: &str, conn: ConnId) {
        self.told
            .entry((hub.to_owned(), user.to_owned()))
            .or_default()
            .push(conn);
    }

    /// `conn` left `hub`: it is no longer waiting for its user's `member_added`.
    pub fn forget(&mut self, hub: &str, user: &str, conn: &ConnId) {
        let key = (hub.to_owned(), user.to_owned());
        if let Some(conns) = self.told.get_mut(&key) {
            conns.retain(|c| c != conn);
            if conns.is_empty() {
                self.told.remove(&key);
            }
        }
    }

    /// Applies announcement `seq`; returns where it stood and, when new,
    /// the connections to leave out of its delivery.
    pub fn announce(&mut self, seq: u64, hub: &str, said: Said) -> (Order, Vec<ConnId>) {
        if seq <= self.seq {
            return (Order::Old, Vec::new());
        }
        let missed = if self.seq == 0 { 0 } else { seq - self.seq - 1 };
        self.seq = seq;
        let except = self
            .told
            .remove(&(hub.to_owned(), said.user().to_owned()))
            .unwrap_or_default();
        self.apply(hub, &said);
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, hub.to_owned(), said));
        (Order::New { missed }, except)
    }

    fn apply(&mut self, hub: &str, said: &Said) {
        match said {
            Said::Added { user, info } => {
                self.members
                    .entry(hub.to_owned())
                    .or_default()
                    .insert(user.clone(), info.clone());
            }
            Said::Removed { user } => {
                if let Some(members) = self.members.get_mut(hub) {
                    members.remove(user);
                    if members.is_empty() {
                        self.members.remove(hub);
                    }
                }
            }
        }
    }

    /// Replaces the members with a snapshot read from Redis when
    /// announcement `seq` was the last, then applies again the announcements
    /// after it that arrived first.
    pub fn load(
        &mut self,
        epoch: &str,
        seq: u64,
        members: HashMap<String, HashMap<String, Value>>,
    ) {
        if self.epoch != epoch {
            if !self.epoch.is_empty() {
                // A new counter: the numbers seen so far mean nothing now.
                self.seq = 0;
                self.recent.clear();
            }
            epoch.clone_into(&mut self.epoch);
        }
        self.members = members;
        let later: Vec<(String, Said)> = self
            .recent
            .iter()
            .filter(|(s, ..)| *s > seq)
            .map(|(_, hub, said)| (hub.clone(), said.clone()))
            .collect();
        for (hub, said) in &later {
            self.apply(hub, said);
        }
        self.seq = self.seq.max(seq);
    }
}

/// This node's changes on their way to Redis, in order.
#[derive(Default)]
pub struct Ops {
    queue: Mutex<OpsState>,
    /// Wakes the task that sends them.
    pub wake: Notify,
}

#[derive(Default)]
struct OpsState {
    ops: VecDeque<Op>,
    /// Too many waited: synchronise everything instead.
    resync: bool,
}

impl Ops {
    fn lock(&self) -> MutexGuard<'_, OpsState> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a change (forgets them all past [`MAX_OPS`]: a resync follows).
    pub fn push(&self, op: Op) {
        let mut state = self.lock();
        if !state.resync {
            if state.ops.len() >= MAX_OPS {
                state.ops.clear();
                state.resync = true;
            } else {
                state.ops.push_back(op);
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Takes what is queued, and whether a whole resync is due instead.
    pub fn take(&self) -> (Vec<Op>, bool) {
        let mut state = self.lock();
        let resync = std::mem::take(&mut state.resync);
        (state.ops.drain(..).collect(), resync)
    }

    /// Asks for a whole resync (Redis came back, or announcements were lost).
    pub fn resync(&self) {
        let mut state = self.lock();
        state.ops.clear();
        state.resync = true;
        drop(state);
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn added(user: &str) -> Said {
        Said::Added {
            user: user.into(),
            info: Value::Null,
        }
    }

    #[test]
    fn announcements_apply_once_in_order_and_count_gaps() {
        let mut r = Roster::default();
        assert_eq!(r.announce(5, "h", added("a")).0, Order::New { missed: 0 });
        assert_eq!(r.announce(5, "h", added("a")).0, Order::Old);
        assert_eq!(r.announce(8, "h", added("b")).0, Order::New { missed: 2 });
        let removed = Said::Removed { user: "a".into() };
        assert_eq!(r.announce(9, "h", removed).0, Order::New { missed: 0 });
        let users: Vec<&str> = r.members("h").map(|(u, _)| u).collect();
        assert_eq!(users, ["b"]);
    }

    #[test]
    fn a_snapshot_keeps_what_came_after_it() {
        let mut r = Roster::default();
        r.announce(3, "h", added("late"));
        let snapshot = HashMap::from([(
            "h".to_string(),
            HashMap::from([("old".to_string(), Value::Null)]),
        )]);
        r.load("e", 2, snapshot);
        assert!(r.contains("h", "old") && r.contains("h", "late"));
        assert_eq!(r.announce(3, "h", added("late")).0, Order::Old);
        r.load("new epoch", 1, HashMap::new());
        assert_eq!(
            r.announce(2, "h", added("x")).0,
            Order::New { missed: 0 },
            "a new counter's numbers count again"
        );
    }

    #[test]
    fn told_connections_are_left_out_once() {
        let hub = crate::hub::Hub::default();
        let c = hub.register(1024).id;
        let mut r = Roster::default();
        r.tell("h", "u", c);
        assert_eq!(r.announce(1, "h", added("u")).1, vec![c]);
        assert!(r.announce(2, "h", added("u")).1.is_empty());
    }

    #[test]
    fn frames_say_who_came_and_went() {
        let f = super::super::frame::member_added("presence-r", "7", &serde_json::json!({"n": 1}));
        assert_eq!(
            Said::of_frame(&f),
            Some(Said::Added {
                user: "7".into(),
                info: serde_json::json!({"n": 1})
            })
        );
        let f = super::super::frame::member_removed("presence-r", "7");
        assert_eq!(Said::of_frame(&f), Some(Said::Removed { user: "7".into() }));
        assert_eq!(Said::of_frame(r#"{"event":"x","data":"{}"}"#), None);
    }

    #[test]
    fn too_many_ops_become_one_resync() {
        let ops = Ops::default();
        for i in 0..=MAX_OPS {
            ops.push(Op::Leave {
                hub: "h".into(),
                user: i.to_string(),
            });
        }
        let (queued, resync) = ops.take();
        assert!(queued.is_empty() && resync);
        assert_eq!(ops.take(), (Vec::new(), false));
    }
}
