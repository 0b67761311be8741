//! The registry of live connections and the channels they belong to.
//!
//! Connections live in a [`Slab`]; a connection's id is its slot, a serial
//! number that is never reused in the daemon's life, and a keyed hash of both
//! (SipHash with a per-process random key), so an id is unique, cannot be
//! guessed from another one, and an id of a closed connection never reaches
//! the connection that took its slot later.
//!
//! Channels map a name to the slots of their members. A channel exists only
//! while it has members. Publishing holds the registry lock for the whole
//! fan-out, so every member of a channel sees messages in the same order; the
//! fan-out itself only pushes reference-counted frames into outboxes.
//!
//! A connection that speaks `ws2fcgi.v1` (see `v1.rs`) is sent framed
//! messages, every other one raw messages; a publication is encoded at most
//! once each way. With `[history]` on a single node, the channels' history
//! (`history.rs`) lives under the same lock: a publication's offset is given
//! in the order members are sent it, and a connection that joins with a
//! position is sent what it missed before any later publication. In a
//! cluster, where the history is in Redis, a connection whose open or join
//! waits for a read holds what is for it meanwhile (`holding.rs`).
//!
//! This file holds the registry, joins, leaves and the fan-out; `conn.rs`
//! a connection's id and shared handle; `recovery.rs` the open of a client
//! that gives positions and the `history` op on one node.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use slab::Slab;

use crate::config::HistoryConfig;
use crate::frame::Kind;
use crate::history::History;
use crate::outbox::{Outbox, Push};
use crate::v1::{self, Position, Publication};

mod conn;
mod fanout;
mod holding;
mod recovery;

pub use conn::{ConnHandle, ConnId, MAX_META_ENTRIES};
pub use recovery::{HistoryReply, Positions, Recovery};

pub use fanout::{Fanout, Lane};
pub use holding::TopReader;
use holding::{Held, Holding, hold, push_or_hold};

/// Told of every membership and metadata change, in the order they happen
/// (the cluster mirrors presence into Redis with it). Called with the
/// registry lock held, so it must be quick and must never call the hub.
pub trait Observer: Send + Sync {
    /// `id` joined `channel` (it was not a member).
    fn joined(&self, id: ConnId, channel: &Arc<str>);
    /// `id` left `channel`, or closed while a member.
    fn left(&self, id: ConnId, channel: &Arc<str>);
    /// `id`'s metadata changed (called after the change, without the registry lock).
    fn meta_changed(&self, id: ConnId);
}

/// A task that queued this many deliveries with [`Hub::publish`] or
/// [`Hub::send`] yields before queueing more, so the members' writers run
/// first and a publisher cannot outrun them (a control connection, the
/// cluster bus). Large enough that publishes to small channels still batch
/// several frames per write; one publish to 65,536 members yields.
pub const YIELD_AFTER_DELIVERIES: u64 = 65_536;

struct Entry {
    handle: Arc<ConnHandle>,
    channels: Vec<Arc<str>>,
    /// The shard whose thread registered it (`shard.rs`; 0 outside shards).
    shard: usize,
}

#[derive(Default)]
struct Registry {
    conns: Slab<Entry>,
    channels: HashMap<Arc<str>, HashSet<usize>>,
    /// The channels' history, on a single node with `[history]`.
    history: Option<History>,
    /// The connections holding ([`Hub::open_hold`]), by slot.
    held: HashMap<usize, Holding>,
    /// The last position delivered of each channel with members whose
    /// history is kept elsewhere (Redis): where this node's bus stands.
    tops: HashMap<Arc<str>, Position>,
}

impl Registry {
    fn entry(&self, id: &ConnId) -> Option<&Entry> {
        self.conns
            .get(id.index as usize)
            .filter(|e| e.handle.id == *id)
    }
}

/// The counters the hub and connections update; shared with [`crate::metrics::Metrics`]
/// (each is a shared atomic, so clones count together).
#[derive(Default, Clone)]
pub struct Stats {
    /// Connections accepted since start.
    pub connections_total: Counter,
    /// Messages received from clients.
    pub messages_in: Counter,
    /// Messages queued to clients (each recipient counts).
    pub messages_out: Counter,
    /// Publish operations.
    pub publishes: Counter,
    /// Clients cut off for not reading.
    pub slow_consumers: Counter,
    /// permessage-deflate's counters.
    pub compression: crate::deflate::Stats,
}

impl Stats {
    /// The counters registered in `metrics`.
    pub fn from_metrics(metrics: &crate::metrics::Metrics) -> Self {
        Self {
            connections_total: metrics.connections_total.clone(),
            messages_in: metrics.messages_in.clone(),
            messages_out: metrics.messages_out.clone(),
            publishes: metrics.publishes.clone(),
            slow_consumers: metrics.slow_consumers.clone(),
            compression: metrics.compression.clone(),
        }
    }
}

/// A member of a channel, for `presence`.
pub struct Member {
    /// Its id.
    pub id: ConnId,
    /// Its metadata.
    pub meta: Vec<(String, String)>,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Members it was queued to.
    pub delivered: usize,
    /// Its place in the channel's history, if the channel keeps one.
    pub position: Option<Position>,
}

/// The registry; one per daemon.
pub struct Hub {
    registry: Mutex<Registry>,
    id_key: std::collections::hash_map::RandomState,
    serial: AtomicU64,
    observer: Option<Arc<dyn Observer>>,
    /// Reads a channel's position for a join, in a cluster with history.
    top_reader: std::sync::OnceLock<Arc<dyn TopReader>>,
    /// Wakes a broadcast's members once per shard (`fanout.rs`); unset:
    /// each member is woken by the publish itself.
    fanout: std::sync::OnceLock<Fanout>,
    /// Counters.
    pub stats: Stats,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(Stats::default())
    }
}

impl Hub {
    /// An empty hub with a fresh random id key, counting into `stats`.
    pub fn new(stats: Stats) -> Self {
        Self::with_observer(stats, None)
    }

    /// As [`Hub::new`], telling `observer` of every membership and metadata change.
    pub fn with_observer(stats: Stats, observer: Option<Arc<dyn Observer>>) -> Self {
        Self::with_history(stats, observer, None)
    }

    /// As [`Hub::with_observer`], keeping channel history as `history` says
    /// (in memory: only without `[cluster]`).
    pub fn with_history(
        stats: Stats,
        observer: Option<Arc<dyn Observer>>,
        history: Option<HistoryConfig>,
    ) -> Self {
        let registry = Registry {
            history: history.filter(|h| h.enabled()).map(History::new),
            ..Registry::default()
        };
        Self {
            registry: Mutex::new(registry),
            id_key: std::collections::hash_map::RandomState::new(),
            serial: AtomicU64::new(1),
            observer,
            top_reader: std::sync::OnceLock::new(),
            fanout: std::sync::OnceLock::new(),
            stats,
        }
    }

    /// Reads channels' positions for joins from now on (once; later calls are ignored).
    pub fn set_top_reader(&self, reader: Arc<dyn TopReader>) {
        let _ = self.top_reader.set(reader);
    }

    /// Wakes broadcasts' members through `fanout`'s lanes from now on (once;
    /// later calls are ignored).
    pub fn set_fanout(&self, fanout: Fanout) {
        let _ = self.fanout.set(fanout);
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Registry updates never panic halfway; ignore poisoning.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection whose outbox holds at most `outbox_limit` bytes.
    pub fn register(&self, outbox_limit: usize) -> Arc<ConnHandle> {
        let mut reg = self.lock();
        let slot = reg.conns.vacant_entry();
        let index = slot.key() as u32;
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let mut hasher = self.id_key.build_hasher();
        hasher.write_u32(index);
        hasher.write_u64(serial);
        let id = ConnId {
            index,
            serial,
            tag: hasher.finish(),
        };
        let handle = Arc::new(ConnHandle {
            id,
            outbox: Outbox::new(outbox_limit),
            inbound: Default::default(),
            meta: Mutex::new(Box::default()),
            observer: self.observer.clone(),
            v1: AtomicBool::new(false),
            holding: AtomicBool::new(false),
            deflate_min: AtomicU32::new(u32::MAX),
        });
        slot.insert(Entry {
            handle: handle.clone(),
            channels: Vec::new(),
            shard: crate::shard::current(),
        });
        handle
    }

    /// Removes a connection and its channel memberships; no-op when already gone.
    pub fn unregister(&self, id: &ConnId) {
        let mut reg = self.lock();
        let reg = &mut *reg;
        if reg.entry(id).is_none() {
            return;
        }
        let index = id.index as usize;
        let entry = reg.conns.remove(index);
        reg.held.remove(&index);
        for channel in entry.channels {
            remove_member(&mut reg.channels, &mut reg.tops, &channel, index);
            if let Some(observer) = &self.observer {
                observer.left(*id, &channel);
            }
        }
    }

    /// The handle of a live connection.
    pub fn get(&self, id: &ConnId) -> Option<Arc<ConnHandle>> {
        self.lock().entry(id).map(|e| e.handle.clone())
    }

    /// The id of a live connection from its slot and serial number (see
    /// [`ConnId::slot_serial`]); `None` when that connection is gone.
    pub fn find(&self, index: u32, serial: u64) -> Option<ConnId> {
        self.lock()
            .conns
            .get(index as usize)
            .map(|e| e.handle.id)
            .filter(|id| id.serial == serial)
    }

    /// Adds a connection to a channel; false when the connection is gone.
    /// A `ws2fcgi.v1` client is told (`joined`, with the channel's position).
    pub fn join(&self, id: &ConnId, channel: &str) -> bool {
        let mut reg = self.lock();
        let reg = &mut *reg;
        match add_member(reg, id, channel, self.observer.as_deref()) {
            None => false,
            Some(Added::Already) => true,
            Some(Added::New(handle)) => {
                if handle.is_v1() {
                    let now = Instant::now();
                    let mut position = reg.history.as_mut().and_then(|h| h.position(channel, now));
                    if let Some(reader) = self.top_reader.get()
                        && reader.keeps_history(channel)
                    {
                        // In a cluster: where this node's bus stands, when
                        // it delivered to the channel; else read from Redis.
                        match reg.tops.get(channel) {
                            Some(top) => position = Some(top.clone()),
                            None => {
                                let index = id.index as usize;
                                let holding = reg.held.entry(index).or_default();
                                let name = Arc::from(channel);
                                holding
                                    .frames
                                    .get_or_insert_with(Vec::new)
                                    .push(Held::Join(name));
                                holding.pending += 1;
                                handle.holding.store(true, Ordering::Relaxed);
                                reader.read_top(*id, channel);
                                return true;
                            }
                        }
                    }
                    let frame = v1::joined(channel, position.as_ref());
                    push_or_hold(
                        &mut reg.held,
                        id.index as usize,
                        &handle,
                        &frame,
                        None,
                        true,
                    );
                }
                true
            }
        }
    }

    /// Removes a connection from a channel; false when the connection is gone.
    /// A `ws2fcgi.v1` client that was a member is told (`left`).
    pub fn leave(&self, id: &ConnId, channel: &str) -> bool {
        let mut reg = self.lock();
        let reg = &mut *reg;
        let index = id.index as usize;
        match reg.conns.get_mut(index).filter(|e| e.handle.id == *id) {
            None => false,
            Some(entry) => {
                if let Some(at) = entry.channels.iter().position(|c| **c == *channel) {
                    let name = entry.channels.swap_remove(at);
                    if entry.handle.is_v1() {
                        let frame = v1::left(channel);
                        push_or_hold(&mut reg.held, index, &entry.handle, &frame, None, true);
                    }
                    remove_member(&mut reg.channels, &mut reg.tops, channel, index);
                    if let Some(observer) = &self.observer {
                        observer.left(*id, &name);
                    }
                }
                true
            }
        }
    }

    /// Publishes `data` to every member of `channel` but those in `except`,
    /// giving it the channel's next offset when this node keeps its history.
    pub fn publish(&self, channel: &str, kind: Kind, data: &[u8], except: &[ConnId]) -> Published {
        self.publish_at(channel, kind, data, None, except)
    }

    /// As [`Hub::publish`]; `position`, when given, is the publication's place
    /// in a history kept elsewhere (Redis, in a cluster) and is sent as is.
    pub fn publish_at(
        &self,
        channel: &str,
        kind: Kind,
        data: &[u8],
        position: Option<Position>,
        except: &[ConnId],
    ) -> Published {
        self.stats.publishes.inc();
        let mut guard = self.lock();
        let reg = &mut *guard;
        // The clock is read for the history alone (a control request that
        // publishes to no one spent a twentieth of its time in it).
        let now = reg.history.is_some().then(Instant::now);
        if let Some(p) = &position
            && let Some((name, _)) = reg.channels.get_key_value(channel)
        {
            reg.tops.insert(name.clone(), p.clone());
        }
        let position = position.or_else(|| reg.history.as_mut()?.next(channel, now?));
        let publication = Publication::new(channel, kind, data, position);
        if let (Some(history), Some(now)) = (reg.history.as_mut(), now) {
            history.keep(&publication, now);
        }
        let mut delivered = 0;
        let mut wakes = None;
        if let Some(members) = reg.channels.get(channel) {
            // One recipient: write at once (see outbox.rs). Many: queue, and
            // let the members' tasks write, spread over the runtime's threads
            // (with a fan-out, woken by their shards' lanes: fanout.rs).
            let direct = members.len() == 1;
            let fanout = self.fanout.get().filter(|_| !direct);
            let mut skip = None;
            let at = publication.position.as_ref().map(|p| (channel, p));
            for &index in members {
                let handle = &reg.conns[index].handle;
                if except.contains(&handle.id) {
                    // A v1 client left out still learns the offset went by,
                    // or it would take the next one for a gap.
                    if let (true, Some(position)) = (handle.is_v1(), &publication.position) {
                        let frame = skip.get_or_insert_with(|| v1::skip(channel, position));
                        push_or_hold(&mut reg.held, index, handle, frame, at, direct);
                    }
                    continue;
                }
                let frame = publication.for_member(
                    handle.is_v1(),
                    handle.deflate_min(),
                    &self.stats.compression,
                );
                delivered += match fanout {
                    None => push_or_hold(&mut reg.held, index, handle, frame, at, direct),
                    Some(fanout) => {
                        hold(&mut reg.held, index, handle, frame, at).unwrap_or_else(|| {
                            let (push, owed) = handle.outbox.push_quiet(frame.clone());
                            if owed {
                                let shard = fanout.lane_of(reg.conns[index].shard);
                                wakes
                                    .get_or_insert_with(fanout::Wakes::default)
                                    .add(shard, handle);
                            }
                            usize::from(push == Push::Queued)
                        })
                    }
                };
            }
        }
        drop(guard);
        if let (Some(fanout), Some(wakes)) = (self.fanout.get(), wakes) {
            fanout.send(wakes);
        }
        self.stats.messages_out.inc_by(delivered as u64);
        Published {
            delivered,
            position: publication.position,
        }
    }

    /// Sends `data` once to each listed live connection (an id listed
    /// twice still gets one copy); returns how many connections.
    pub fn send(&self, ids: &[ConnId], kind: Kind, data: &[u8]) -> usize {
        let mut reg = self.lock();
        let reg = &mut *reg;
        let direct = ids.len() == 1;
        let mut seen = HashSet::with_capacity(ids.len());
        // Each framing (raw or ws2fcgi.v1, plain or compressed) is encoded once.
        let mut frames: [Option<Bytes>; 4] = Default::default();
        let delivered = ids
            .iter()
            .filter(|id| seen.insert(**id))
            .filter_map(|id| {
                let e = reg
                    .conns
                    .get(id.index as usize)
                    .filter(|e| e.handle.id == *id)?;
                let deflate = e.handle.deflate_min().is_some_and(|min| data.len() >= min);
                let v1 = e.handle.is_v1();
                let frame = frames[usize::from(v1) * 2 + usize::from(deflate)]
                    .get_or_insert_with(|| e.handle.message(kind, data, &self.stats.compression));
                let index = id.index as usize;
                Some(push_or_hold(
                    &mut reg.held,
                    index,
                    &e.handle,
                    frame,
                    None,
                    direct,
                ))
            })
            .sum::<usize>();
        self.stats.messages_out.inc_by(delivered as u64);
        delivered
    }

    fn deliver(&self, handle: &ConnHandle, frame: &Bytes, direct: bool) -> usize {
        deliver(handle, frame, direct)
    }

    /// Asks a connection to close; true when it was open and now closes.
    pub fn close(&self, id: &ConnId, code: u16, reason: &str) -> bool {
        self.get(id)
            .is_some_and(|h| h.outbox.request_close(code, reason.to_owned()))
    }

    /// Asks every connection to close (shutdown).
    pub fn close_all(&self, code: u16, reason: &str) {
        let handles: Vec<_> = self
            .lock()
            .conns
            .iter()
            .map(|(_, e)| e.handle.clone())
            .collect();
        for handle in handles {
            handle.outbox.request_close(code, reason.to_owned());
        }
    }

    /// The members of a channel with their metadata.
    pub fn presence(&self, channel: &str) -> Vec<Member> {
        let reg = self.lock();
        let Some(members) = reg.channels.get(channel) else {
            return Vec::new();
        };
        members
            .iter()
            .map(|&index| {
                let handle = &reg.conns[index].handle;
                Member {
                    id: handle.id,
                    meta: handle.meta(),
                }
            })
            .collect()
    }

    /// Channels a connection is in.
    pub fn channels_of(&self, id: &ConnId) -> Vec<String> {
        self.lock()
            .entry(id)
            .map(|e| e.channels.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default()
    }

    /// Live connections.
    pub fn connection_count(&self) -> usize {
        self.lock().conns.len()
    }

    /// Channels with at least one member.
    pub fn channel_count(&self) -> usize {
        self.lock().channels.len()
    }

    /// How many connections are members of `channel`.
    pub fn member_count(&self, channel: &str) -> usize {
        self.lock().channels.get(channel).map_or(0, HashSet::len)
    }

    /// The channels whose names start with `prefix`, with their member
    /// counts (the Pusher HTTP API's channel list). Walks every channel
    /// under the lock: its cost grows with the channels of the node.
    pub fn channels_with_prefix(&self, prefix: &str) -> Vec<(String, usize)> {
        self.lock()
            .channels
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, members)| (name.to_string(), members.len()))
            .collect()
    }
}

/// Pushes `frame` into `handle`'s outbox: written at once when `direct`
/// and nothing waits, else queued for its writer. Returns the deliveries
/// (1 or 0).
fn deliver(handle: &ConnHandle, frame: &Bytes, direct: bool) -> usize {
    let push = if direct {
        handle.outbox.push(frame.clone())
    } else {
        handle.outbox.push_queued(frame.clone())
    };
    match push {
        Push::Queued => 1,
        Push::Closed => 0,
        // Counted once, when the connection acts on it (connection/task.rs).
        Push::Overflow => 0,
    }
}

enum Added {
    Already,
    New(Arc<ConnHandle>),
}

/// Makes `id` a member of `channel`; `None` when the connection is gone.
fn add_member(
    reg: &mut Registry,
    id: &ConnId,
    channel: &str,
    observer: Option<&dyn Observer>,
) -> Option<Added> {
    let index = id.index as usize;
    let entry = reg.conns.get_mut(index).filter(|e| e.handle.id == *id)?;
    if entry.channels.iter().any(|c| **c == *channel) {
        return Some(Added::Already);
    }
    let name: Arc<str> = match reg.channels.get_key_value(channel) {
        Some((name, _)) => name.clone(),
        None => Arc::from(channel),
    };
    entry.channels.push(name.clone());
    if let Some(observer) = observer {
        observer.joined(*id, &name);
    }
    reg.channels.entry(name).or_default().insert(index);
    Some(Added::New(entry.handle.clone()))
}

fn remove_member(
    channels: &mut HashMap<Arc<str>, HashSet<usize>>,
    tops: &mut HashMap<Arc<str>, Position>,
    channel: &str,
    index: usize,
) {
    if let Some(members) = channels.get_mut(channel) {
        members.remove(&index);
        if members.is_empty() {
            channels.remove(channel);
            tops.remove(channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_unguessable_and_not_reused() {
        let hub = Hub::default();
        let a = hub.register(1024);
        let a_id = a.id;
        hub.unregister(&a_id);
        let b = hub.register(1024);
        assert_eq!(a_id.index, b.id.index, "slot reused");
        assert_ne!(a_id, b.id, "id not reused");
        assert!(hub.get(&a_id).is_none());
        assert!(!hub.join(&a_id, "room"));
        let parsed: ConnId = b.id.to_string().parse().unwrap();
        assert_eq!(parsed, b.id);
        assert!("xyz".parse::<ConnId>().is_err());
        // Changing the serial without the key gives an id that matches nothing.
        let forged = ConnId {
            serial: b.id.serial + 1,
            ..b.id
        };
        assert!(hub.get(&forged).is_none());
        let (index, serial) = b.id.slot_serial();
        assert_eq!(hub.find(index, serial), Some(b.id));
        assert_eq!(hub.find(index, a_id.serial), None, "the old serial is gone");
    }

    #[test]
    fn publish_reaches_members_except_excluded() {
        let hub = Hub::default();
        let a = hub.register(1024);
        let b = hub.register(1024);
        let c = hub.register(1024);
        for h in [&a, &b, &c] {
            assert!(hub.join(&h.id, "room"));
        }
        assert_eq!(hub.publish("room", Kind::Text, b"x", &[b.id]).delivered, 2);
        assert_eq!(hub.publish("nobody", Kind::Text, b"x", &[]).delivered, 0);
        assert_eq!(b.outbox.queued_bytes(), 0);
        assert_eq!(a.outbox.queued_bytes(), 3 + crate::outbox::FRAME_COST);
    }

    #[test]
    fn send_reaches_each_listed_connection_once() {
        let hub = Hub::default();
        let a = hub.register(1024);
        let b = hub.register(1024);
        let gone = hub.register(1024);
        hub.unregister(&gone.id);
        assert_eq!(hub.send(&[a.id, b.id, a.id, gone.id], Kind::Text, b"x"), 2);
        let one = 3 + crate::outbox::FRAME_COST;
        assert_eq!(
            a.outbox.queued_bytes(),
            one,
            "one copy, though listed twice"
        );
        assert_eq!(b.outbox.queued_bytes(), one);
    }

    #[test]
    fn channels_by_prefix_with_their_member_counts() {
        let hub = Hub::default();
        let a = hub.register(1024);
        let b = hub.register(1024);
        for (h, channel) in [(&a, "p-one"), (&b, "p-one"), (&a, "p-two"), (&b, "other")] {
            hub.join(&h.id, channel);
        }
        let mut found = hub.channels_with_prefix("p-");
        found.sort();
        assert_eq!(found, [("p-one".to_string(), 2), ("p-two".to_string(), 1)]);
        assert_eq!(hub.member_count("p-one"), 2);
        assert_eq!(hub.member_count("none"), 0);
        hub.unregister(&a.id);
        assert_eq!(hub.channels_with_prefix("p-"), [("p-one".to_string(), 1)]);
    }

    #[test]
    fn empty_channels_disappear() {
        let hub = Hub::default();
        let a = hub.register(1024);
        hub.join(&a.id, "x");
        hub.join(&a.id, "y");
        assert_eq!(hub.channel_count(), 2);
        hub.leave(&a.id, "x");
        assert_eq!(hub.channel_count(), 1);
        hub.unregister(&a.id);
        assert_eq!(hub.channel_count(), 0);
        assert_eq!(hub.connection_count(), 0);
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Observer for Recorder {
        fn joined(&self, id: ConnId, channel: &Arc<str>) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} +{channel}", id.serial));
        }
        fn left(&self, id: ConnId, channel: &Arc<str>) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} -{channel}", id.serial));
        }
        fn meta_changed(&self, id: ConnId) {
            self.0.lock().unwrap().push(format!("{} meta", id.serial));
        }
    }

    #[test]
    fn the_observer_sees_every_change_once() {
        let recorder = Arc::new(Recorder::default());
        let hub = Hub::with_observer(Stats::default(), Some(recorder.clone()));
        let a = hub.register(1024);
        hub.join(&a.id, "x");
        hub.join(&a.id, "x");
        hub.join(&a.id, "y");
        hub.leave(&a.id, "x");
        hub.leave(&a.id, "x");
        a.update_meta(&[("k".into(), Some("v".into()))]).unwrap();
        hub.unregister(&a.id);
        hub.unregister(&a.id);
        assert_eq!(
            *recorder.0.lock().unwrap(),
            ["1 +x", "1 +y", "1 -x", "1 meta", "1 -y"]
        );
    }

    #[test]
    fn meta_updates_and_presence() {
        let hub = Hub::default();
        let a = hub.register(1024);
        hub.join(&a.id, "room");
        a.update_meta(&[
            ("user".into(), Some("42".into())),
            ("nick".into(), Some("x".into())),
        ])
        .unwrap();
        a.update_meta(&[("nick".into(), None)]).unwrap();
        let members = hub.presence("room");
        assert_eq!(members.len(), 1);
        assert_eq!(
            members[0].meta,
            vec![("user".to_string(), "42".to_string())]
        );
        let many: Vec<_> = (0..=MAX_META_ENTRIES)
            .map(|i| (format!("k{i}"), Some("v".to_string())))
            .collect();
        assert!(a.update_meta(&many).is_err());
        assert_eq!(a.meta().len(), 1, "a refused update changes nothing");
    }
}
