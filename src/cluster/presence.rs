//! Which local memberships changed since the presence task last wrote them.
//!
//! The [`Tracker`] is the hub's [`Observer`]: the hub tells it of every join,
//! leave and metadata change while holding its lock, so it only notes what
//! changed (a set, deduplicated) and counts each channel's local members. The
//! presence task takes the notes and reads the hub's current state for each,
//! so the order notes are taken in does not matter: the last write reflects
//! the hub as it is.
//!
//! Memory is bounded: past [`MAX_DIRTY`] notes (Redis unreachable while
//! clients come and go) they are forgotten and one full rewrite of this
//! node's presence keys replaces them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::hub::{ConnId, Observer};

/// Changed memberships remembered at most before falling back to a full rewrite.
pub const MAX_DIRTY: usize = 65_536;

/// What the presence task has to write.
#[derive(Debug, Default)]
pub struct Changes {
    /// Memberships that changed: (connection, channel).
    pub memberships: HashSet<(ConnId, Arc<str>)>,
    /// Connections whose metadata changed (every channel of theirs).
    pub meta: HashSet<ConnId>,
    /// Too much changed to remember: rewrite every key of this node.
    pub rewrite: bool,
}

impl Changes {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.memberships.is_empty() && self.meta.is_empty() && !self.rewrite
    }

    fn len(&self) -> usize {
        self.memberships.len() + self.meta.len()
    }
}

#[derive(Default)]
struct State {
    /// Local members per channel; a channel is here while it has one.
    channels: HashMap<Arc<str>, usize>,
    changes: Changes,
}

/// The hub's observer in cluster mode.
#[derive(Default)]
pub struct Tracker {
    state: Mutex<State>,
    /// Wakes the presence task when something changed.
    pub wake: Notify,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note(&self, state: &mut State, change: impl FnOnce(&mut Changes)) {
        if state.changes.rewrite {
            return;
        }
        if state.changes.len() >= MAX_DIRTY {
            state.changes = Changes {
                rewrite: true,
                ..Changes::default()
            };
        } else {
            change(&mut state.changes);
        }
        self.wake.notify_one();
    }

    /// Takes what changed since the last call.
    pub fn take(&self) -> Changes {
        std::mem::take(&mut self.lock().changes)
    }

    /// The channels with local members.
    pub fn channels(&self) -> Vec<Arc<str>> {
        self.lock().channels.keys().cloned().collect()
    }

    /// The local members of `channel`.
    pub fn count(&self, channel: &str) -> usize {
        self.lock().channels.get(channel).copied().unwrap_or(0)
    }
}

impl Observer for Tracker {
    fn joined(&self, id: ConnId, channel: &Arc<str>) {
        let mut state = self.lock();
        *state.channels.entry(channel.clone()).or_default() += 1;
        self.note(&mut state, |c| {
            c.memberships.insert((id, channel.clone()));
        });
    }

    fn left(&self, id: ConnId, channel: &Arc<str>) {
        let mut state = self.lock();
        if let Some(count) = state.channels.get_mut(channel) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.channels.remove(channel);
            }
        }
        self.note(&mut state, |c| {
            c.memberships.insert((id, channel.clone()));
        });
    }

    fn meta_changed(&self, id: ConnId) {
        let mut state = self.lock();
        self.note(&mut state, |c| {
            c.meta.insert(id);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Hub, Stats};

    #[test]
    fn counts_channels_and_collects_changes() {
        let tracker = Arc::new(Tracker::default());
        let hub = Hub::with_observer(Stats::default(), Some(tracker.clone()));
        let a = hub.register(1024);
        let b = hub.register(1024);
        hub.join(&a.id, "x");
        hub.join(&b.id, "x");
        hub.join(&a.id, "y");
        a.update_meta(&[("k".into(), Some("v".into()))]).unwrap();
        let mut channels: Vec<String> = tracker.channels().iter().map(|c| c.to_string()).collect();
        channels.sort();
        assert_eq!(channels, ["x", "y"]);
        let changes = tracker.take();
        assert_eq!(changes.memberships.len(), 3);
        assert!(changes.meta.contains(&a.id));
        assert!(tracker.take().is_empty());
        hub.unregister(&a.id);
        assert_eq!(tracker.channels().len(), 1, "y is gone, x has b");
        assert_eq!(tracker.take().memberships.len(), 2);
    }

    #[test]
    fn too_many_changes_become_one_rewrite() {
        let tracker = Arc::new(Tracker::default());
        let hub = Hub::with_observer(Stats::default(), Some(tracker.clone()));
        for _ in 0..=MAX_DIRTY {
            let conn = hub.register(1024);
            hub.join(&conn.id, "room");
        }
        let changes = tracker.take();
        assert!(changes.rewrite);
        assert!(changes.memberships.is_empty());
        assert_eq!(tracker.channels().len(), 1, "the counts stay exact");
    }
}
