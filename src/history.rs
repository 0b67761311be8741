//! Channel history in memory (`[history]` on a node without `[cluster]`):
//! the last publications of each channel, so that a client that reconnects
//! is sent what it missed.
//!
//! Each channel that keeps history has an **epoch**, drawn at random when
//! its record is created, and numbers its publications 1, 2, 3… under it.
//! Records live in the hub's registry and are changed under its lock, so the
//! offsets are given in the very order the members are sent the
//! publications, and a join can read what a client missed and become a
//! member in one step (no gap, no duplicate).
//!
//! What is kept of a publication is its `ws2fcgi.v1` frame, the very bytes
//! its `ws2fcgi.v1` members were sent (shared, not copied), and where its
//! data starts in it. A publication goes when its channel holds more than
//! `size`, when it is older than `ttl`, or, oldest first across every
//! channel, when all of them hold more than `history.max_bytes`.
//!
//! A channel's record (its epoch and last offset) outlives its publications
//! while the channel has members, or until `ttl` after its last
//! publication: a client back after that is told the channel was not
//! recovered, since nothing says what it missed.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::{HistoryConfig, Policy};
use crate::frame::Kind;
use crate::v1::{Position, Publication};

/// What a kept publication costs beyond its frame's bytes: its entry in the
/// channel's queue and in the eviction order, and the frame's allocation.
pub const ENTRY_COST: usize = 128;

/// One kept publication.
#[derive(Clone)]
pub struct Stored {
    /// Its offset in the channel's epoch.
    pub offset: u64,
    /// Text or binary.
    pub kind: Kind,
    /// Its `ws2fcgi.v1` frame.
    pub frame: Bytes,
    /// Where the data starts in `frame`.
    data_at: u32,
    /// When it was published, for `ttl`.
    at: Instant,
}

impl Stored {
    /// The publication's data (shares the frame's bytes).
    pub fn data(&self) -> Bytes {
        self.frame.slice(self.data_at as usize..)
    }

    fn cost(&self) -> usize {
        self.frame.len() + ENTRY_COST
    }
}

/// What a client missed since a position.
#[derive(Clone)]
pub enum Since {
    /// Every publication after the position, in order (maybe none).
    Covered(Vec<Stored>),
    /// The history no longer covers the gap, or the epoch changed.
    Lost,
}

struct Channel {
    epoch: Arc<str>,
    top: u64,
    policy: Policy,
    entries: VecDeque<Stored>,
    last_publish: Instant,
}

impl Channel {
    fn position(&self) -> Position {
        Position {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }
}

/// Every channel's history; lives in the hub's registry, under its lock.
pub struct History {
    config: HistoryConfig,
    channels: HashMap<Arc<str>, Channel>,
    /// (channel, offset) of every kept publication, oldest first, for
    /// `max_bytes`; entries already gone by `size` or `ttl` are skipped
    /// when met, and compacted away when they outnumber the live ones.
    order: VecDeque<(Arc<str>, u64)>,
    /// Kept publications, all channels.
    count: usize,
    /// What they cost (see [`ENTRY_COST`]).
    bytes: usize,
    epoch_key: std::collections::hash_map::RandomState,
    epochs: u64,
}

impl History {
    /// An empty history kept as `config` says.
    pub fn new(config: HistoryConfig) -> Self {
        Self {
            config,
            channels: HashMap::new(),
            order: VecDeque::new(),
            count: 0,
            bytes: 0,
            epoch_key: std::collections::hash_map::RandomState::new(),
            epochs: 0,
        }
    }

    /// What the kept publications cost, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Kept publications, all channels.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Nothing kept?
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn new_epoch(&mut self) -> Arc<str> {
        self.epochs += 1;
        let mut hasher = self.epoch_key.build_hasher();
        hasher.write_u64(self.epochs);
        Arc::from(format!("{:016x}", hasher.finish()))
    }

    /// The record of `channel`, created (with a new epoch) if it keeps
    /// history and has none; `None` when it keeps none.
    fn channel(&mut self, name: &str, now: Instant) -> Option<&mut Channel> {
        if !self.channels.contains_key(name) {
            let policy = self.config.policy(name)?;
            let epoch = self.new_epoch();
            self.channels.insert(
                Arc::from(name),
                Channel {
                    epoch,
                    top: 0,
                    policy,
                    entries: VecDeque::new(),
                    last_publish: now,
                },
            );
        }
        let channel = self.channels.get_mut(name)?;
        let removed = expire(channel, now);
        self.forget(removed);
        self.channels.get_mut(name)
    }

    fn forget(&mut self, removed: Removed) {
        self.count -= removed.count;
        self.bytes -= removed.bytes;
    }

    /// Where `channel` stands now; `None` when it keeps no history.
    pub fn position(&mut self, channel: &str, now: Instant) -> Option<Position> {
        self.channel(channel, now).map(|c| c.position())
    }

    /// The position the next publication to `channel` takes; `None` when
    /// the channel keeps no history. Follow with [`History::keep`].
    pub fn next(&mut self, channel: &str, now: Instant) -> Option<Position> {
        self.channel(channel, now).map(|c| Position {
            offset: c.top + 1,
            epoch: c.epoch.clone(),
        })
    }

    /// Keeps `publication`, whose position [`History::next`] gave.
    pub fn keep(&mut self, publication: &Publication<'_>, now: Instant) {
        let Some(position) = &publication.position else {
            return;
        };
        let (frame, data_at) = publication.framed_with_start();
        let stored = Stored {
            offset: position.offset,
            kind: publication.kind,
            frame: frame.clone(),
            data_at: u32::try_from(*data_at).unwrap_or(u32::MAX),
            at: now,
        };
        let cost = stored.cost();
        let Some(name) = self
            .channels
            .get_key_value(publication.channel)
            .map(|(n, _)| n.clone())
        else {
            return;
        };
        let Some(channel) = self.channels.get_mut(publication.channel) else {
            return;
        };
        channel.top = position.offset;
        channel.last_publish = now;
        channel.entries.push_back(stored);
        let mut removed = Removed::default();
        while channel.entries.len() > channel.policy.size {
            if let Some(old) = channel.entries.pop_front() {
                removed.add(&old);
            }
        }
        self.count += 1;
        self.bytes += cost;
        self.forget(removed);
        self.order.push_back((name, position.offset));
        self.enforce_budget();
    }

    /// Drops the oldest publications, across channels, until the rest fit
    /// `history.max_bytes`.
    fn enforce_budget(&mut self) {
        while self.bytes > self.config.max_bytes {
            let Some((name, offset)) = self.order.pop_front() else {
                break;
            };
            let Some(channel) = self.channels.get_mut(&name) else {
                continue;
            };
            if channel.entries.front().is_some_and(|e| e.offset == offset) {
                let mut removed = Removed::default();
                if let Some(old) = channel.entries.pop_front() {
                    removed.add(&old);
                }
                self.forget(removed);
            }
        }
        if self.order.len() > 2 * self.count + 64 {
            let channels = &self.channels;
            self.order.retain(|(name, offset)| {
                channels
                    .get(name)
                    .and_then(|c| c.entries.front())
                    .is_some_and(|front| front.offset <= *offset)
            });
        }
    }

    /// What a client at `since` in `channel` missed.
    pub fn since(&mut self, channel: &str, since: &Position, now: Instant) -> Since {
        let Some(c) = self.channels.get_mut(channel) else {
            return Since::Lost;
        };
        let removed = expire(c, now);
        let since = match () {
            _ if c.epoch != since.epoch || since.offset > c.top => Since::Lost,
            _ if since.offset == c.top => Since::Covered(Vec::new()),
            _ => match c.entries.front() {
                Some(first) if first.offset <= since.offset + 1 => Since::Covered(
                    c.entries
                        .iter()
                        .filter(|e| e.offset > since.offset)
                        .cloned()
                        .collect(),
                ),
                _ => Since::Lost,
            },
        };
        self.forget(removed);
        since
    }

    /// The newest `limit` publications of `channel` (oldest first) and where
    /// it stands; `None` when it keeps no history.
    pub fn latest(
        &mut self,
        channel: &str,
        limit: usize,
        now: Instant,
    ) -> Option<(Position, Vec<Stored>)> {
        let c = self.channel(channel, now)?;
        let skip = c.entries.len().saturating_sub(limit);
        Some((c.position(), c.entries.iter().skip(skip).cloned().collect()))
    }

    /// Drops what has expired, and the records of channels without members
    /// (`has_members`) whose last publication is older than their `ttl`.
    pub fn sweep(&mut self, now: Instant, has_members: impl Fn(&str) -> bool) {
        let mut removed = Removed::default();
        self.channels.retain(|name, c| {
            let r = expire(c, now);
            removed.count += r.count;
            removed.bytes += r.bytes;
            !c.entries.is_empty()
                || has_members(name)
                || now.saturating_duration_since(c.last_publish) < c.policy.ttl
        });
        self.forget(removed);
        self.enforce_budget();
    }

    /// How often [`History::sweep`] should run.
    pub fn sweep_interval(&self) -> Duration {
        let shortest = self
            .config
            .channels
            .iter()
            .filter_map(|c| c.ttl)
            .chain([self.config.ttl])
            .min()
            .unwrap_or(self.config.ttl);
        (shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(10))
    }
}

/// Whole milliseconds from `then` to `now` (0 when `then` is later).
fn millis(now: Instant, then: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(then).as_millis()).unwrap_or(u64::MAX)
}

impl History {
    /// Every channel's record and kept publications, for a SIGUSR2 handover
    /// (`handover/history.rs`); the frames are shared, not copied.
    pub fn export(&mut self, now: Instant) -> Vec<crate::handover::history::Record> {
        use crate::handover::history::{Entry, Record};
        let mut removed = Removed::default();
        let mut records = Vec::with_capacity(self.channels.len());
        for (name, c) in &mut self.channels {
            let r = expire(c, now);
            removed.count += r.count;
            removed.bytes += r.bytes;
            records.push(Record {
                channel: name.to_string(),
                epoch: c.epoch.to_string(),
                top: c.top,
                idle_ms: millis(now, c.last_publish),
                entries: c
                    .entries
                    .iter()
                    .map(|e| Entry {
                        offset: e.offset,
                        kind: e.kind,
                        age_ms: millis(now, e.at),
                        data_at: e.data_at,
                        frame: e.frame.clone(),
                    })
                    .collect(),
            });
        }
        self.forget(removed);
        records
    }

    /// Takes the records a predecessor exported, under their epochs, as this
    /// process's configuration keeps them: a channel that keeps no history
    /// here is skipped, one kept smaller loses its oldest publications, and
    /// `max_bytes` is enforced. Returns the publications kept.
    pub fn import(
        &mut self,
        records: Vec<crate::handover::history::Record>,
        now: Instant,
    ) -> usize {
        let ago = |ms: u64| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now);
        let mut order: Vec<(Instant, Arc<str>, u64)> = Vec::new();
        for record in records {
            let Some(policy) = self.config.policy(&record.channel) else {
                continue;
            };
            let name: Arc<str> = Arc::from(record.channel);
            let skip = record.entries.len().saturating_sub(policy.size);
            let mut entries = VecDeque::with_capacity(record.entries.len() - skip);
            for e in record.entries.into_iter().skip(skip) {
                let stored = Stored {
                    offset: e.offset,
                    kind: e.kind,
                    frame: e.frame,
                    data_at: e.data_at,
                    at: ago(e.age_ms),
                };
                self.count += 1;
                self.bytes += stored.cost();
                order.push((stored.at, name.clone(), stored.offset));
                entries.push_back(stored);
            }
            let replaced = self.channels.insert(
                name,
                Channel {
                    epoch: Arc::from(record.epoch),
                    top: record.top,
                    policy,
                    entries,
                    last_publish: ago(record.idle_ms),
                },
            );
            if let Some(old) = replaced {
                let mut removed = Removed::default();
                old.entries.iter().for_each(|e| removed.add(e));
                self.forget(removed);
            }
        }
        let imported = order.len();
        order.sort_by_key(|(at, _, _)| *at);
        self.order
            .extend(order.into_iter().map(|(_, name, offset)| (name, offset)));
        self.enforce_budget();
        imported
    }
}

#[derive(Default)]
struct Removed {
    count: usize,
    bytes: usize,
}

impl Removed {
    fn add(&mut self, stored: &Stored) {
        self.count += 1;
        self.bytes += stored.cost();
    }
}

/// Drops `channel`'s publications older than its ttl.
fn expire(channel: &mut Channel, now: Instant) -> Removed {
    let mut removed = Removed::default();
    while channel
        .entries
        .front()
        .is_some_and(|e| now.saturating_duration_since(e.at) >= channel.policy.ttl)
    {
        if let Some(old) = channel.entries.pop_front() {
            removed.add(&old);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ChannelHistory;

    fn history(size: usize, ttl: Duration, max_bytes: usize) -> History {
        History::new(HistoryConfig {
            size,
            ttl,
            max_bytes,
            channels: vec![ChannelHistory {
                pattern: "none:*".into(),
                size: Some(0),
                ttl: None,
            }],
        })
    }

    fn publish(h: &mut History, channel: &str, data: &[u8], now: Instant) -> Position {
        let position = h.next(channel, now).unwrap();
        let p = Publication::new(channel, Kind::Text, data, Some(position.clone()));
        h.keep(&p, now);
        position
    }

    fn offsets(since: Since) -> Option<Vec<u64>> {
        match since {
            Since::Covered(list) => Some(list.iter().map(|s| s.offset).collect()),
            Since::Lost => None,
        }
    }

    #[test]
    fn offsets_count_up_and_since_returns_what_was_missed() {
        let now = Instant::now();
        let mut h = history(3, Duration::from_secs(60), 1 << 20);
        assert_eq!(h.position("none:x", now), None);
        let start = h.position("room", now).unwrap();
        assert_eq!(start.offset, 0);
        for i in 1..=5u64 {
            assert_eq!(publish(&mut h, "room", b"x", now).offset, i);
        }
        assert_eq!(h.len(), 3, "size 3");
        let at = |offset| Position {
            offset,
            epoch: start.epoch.clone(),
        };
        assert_eq!(offsets(h.since("room", &at(2), now)), Some(vec![3, 4, 5]));
        assert_eq!(offsets(h.since("room", &at(5), now)), Some(vec![]));
        assert_eq!(
            offsets(h.since("room", &at(1), now)),
            None,
            "4 missed, 3 kept"
        );
        assert_eq!(
            offsets(h.since("room", &at(6), now)),
            None,
            "from the future"
        );
        let other = Position {
            offset: 4,
            epoch: Arc::from("other"),
        };
        assert_eq!(offsets(h.since("room", &other, now)), None, "epoch changed");
        assert_eq!(offsets(h.since("unknown", &at(0), now)), None);
        let (top, latest) = h.latest("room", 2, now).unwrap();
        assert_eq!(top.offset, 5);
        assert_eq!(latest.iter().map(|s| s.offset).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(&latest[0].data()[..], b"x");
    }

    #[test]
    fn publications_expire_and_the_record_outlives_them_while_needed() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut h = history(100, ttl, 1 << 20);
        let epoch = publish(&mut h, "room", b"a", t0).epoch;
        publish(&mut h, "room", b"b", t0 + Duration::from_secs(5));
        let later = t0 + Duration::from_secs(12);
        let since = |h: &mut History, offset, now| {
            offsets(h.since(
                "room",
                &Position {
                    offset,
                    epoch: epoch.clone(),
                },
                now,
            ))
        };
        assert_eq!(since(&mut h, 0, later), None, "1 expired");
        assert_eq!(since(&mut h, 1, later), Some(vec![2]));
        assert_eq!(h.len(), 1);
        let much_later = t0 + Duration::from_secs(30);
        h.sweep(much_later, |_| true);
        assert_eq!(h.len(), 0);
        assert_eq!(
            since(&mut h, 2, much_later),
            Some(vec![]),
            "members keep the record"
        );
        h.sweep(much_later, |_| false);
        assert_eq!(since(&mut h, 2, much_later), None, "record forgotten");
    }

    #[test]
    fn the_byte_budget_drops_the_oldest_across_channels() {
        let now = Instant::now();
        let mut probe = history(100, Duration::from_secs(60), 1 << 20);
        publish(&mut probe, "a", &[b'x'; 100], now);
        let cost = probe.bytes(); // one publication (epochs are all 16 hex digits)
        let mut h = history(100, Duration::from_secs(60), 3 * cost);
        for i in 0..4 {
            let channel = if i % 2 == 0 { "a" } else { "b" };
            publish(&mut h, channel, &[b'x'; 100], now);
        }
        assert!(h.bytes() <= 3 * cost);
        assert_eq!(h.len(), 3);
        let a = h.latest("a", 10, now).unwrap().1;
        assert_eq!(
            a.iter().map(|s| s.offset).collect::<Vec<_>>(),
            [2],
            "a's first went"
        );
        for _ in 0..1000 {
            publish(&mut h, "b", &[b'x'; 100], now);
        }
        assert!(h.order.len() <= 2 * h.len() + 64 + 1, "order stays compact");
    }

    #[test]
    fn a_successor_takes_the_history_with_its_epochs_and_offsets() {
        let now = Instant::now();
        let mut old = history(100, Duration::from_secs(60), 1 << 20);
        let mut seen = None;
        for i in 0..5u8 {
            seen = Some(publish(&mut old, "room", &[b'a' + i], now));
        }
        publish(&mut old, "other", b"x", now);
        let at_3 = Position {
            offset: 3,
            epoch: seen.clone().unwrap().epoch,
        };
        let wire = crate::handover::history::encode(&old.export(now));
        let records = crate::handover::history::decode(bytes::Bytes::from(wire)).unwrap();

        let later = now + Duration::from_millis(5);
        let mut new = history(3, Duration::from_secs(60), 1 << 20);
        assert_eq!(new.import(records, later), 4, "room keeps 3 here, other 1");
        match new.since("room", &at_3, later) {
            Since::Covered(list) => {
                let got: Vec<_> = list.iter().map(|s| (s.offset, s.data())).collect();
                assert_eq!(got, [(4, Bytes::from("d")), (5, Bytes::from("e"))]);
            }
            Since::Lost => panic!("the handed-over history covers offset 3"),
        }
        let next = new.next("room", later).unwrap();
        assert_eq!(
            next,
            Position {
                offset: 6,
                epoch: seen.unwrap().epoch
            },
            "same epoch, next offset"
        );
        assert_eq!(new.len(), 4);
        // A channel that keeps no history in the new configuration is skipped.
        let mut keeps_all = History::new(HistoryConfig {
            size: 100,
            ttl: Duration::from_secs(60),
            max_bytes: 1 << 20,
            channels: vec![],
        });
        publish(&mut keeps_all, "none:y", b"y", now);
        let records = keeps_all.export(now);
        assert_eq!(records.len(), 1);
        let mut keeps_none = history(100, Duration::from_secs(60), 1 << 20);
        assert_eq!(keeps_none.import(records, now), 0);
        assert!(keeps_none.position("none:y", now).is_none());
    }
}
