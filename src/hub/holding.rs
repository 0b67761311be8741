//! Connections that wait for reads from Redis (in a cluster with
//! `[history]`): a `ws2fcgi.v1` client's open, which reads what the client
//! missed, and a join after the open, which reads where the channel stands.
//!
//! The reads are async, so they cannot happen under the registry lock as on
//! one node. Meanwhile the connection *holds*: what is for it is kept aside
//! in order, with a slot where each read's result goes (`connected` and the
//! replay, or `joined`). When no read is pending, the frames go out, but the
//! publications a read already covered. Those are dropped later too, as
//! this node's subscriber may bring them after the read (a *floor* per
//! channel, gone with the first publication past it). A connection that
//! does not hold costs the fan-out one branch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{ConnHandle, ConnId, Hub, Registry, add_member};
use crate::v1::{self, Position};

/// Where the channels' history is kept elsewhere (Redis, in a cluster): a
/// `ws2fcgi.v1` client that joins such a channel after its open is told the
/// channel's position in its `joined` message, which may need a read.
pub trait TopReader: Send + Sync {
    /// Does `channel` keep history?
    fn keeps_history(&self, channel: &str) -> bool;
    /// Reads where `channel` stands, without blocking, then calls
    /// [`Hub::join_release`] for `id` (called with the registry lock held).
    fn read_top(&self, id: ConnId, channel: &str);
}

/// A connection waiting for reads from Redis: its open's (what it missed)
/// or a join's (where the channel stands), see [`Hub::open_hold`].
#[derive(Default)]
pub(super) struct Holding {
    /// What is for it meanwhile, in order, with a slot for what each read
    /// brings; `None` once sent.
    pub(super) frames: Option<Vec<Held>>,
    /// Reads not answered yet; the frames go out when none is left.
    pub(super) pending: u32,
    /// Per channel, the position it was read at: publications up to it were
    /// sent from what was read (or precede the client's position), so they
    /// are dropped, also when this node's bus brings them after the read (it
    /// may lag behind). A channel's floor goes with the first publication
    /// past it; the connection stops holding when none is left.
    floors: Vec<(Arc<str>, Position)>,
}

impl Holding {
    /// Is the publication at `at` one the connection was already sent?
    /// Forgets a floor the publication is past.
    fn seen(&mut self, at: Option<(&str, &Position)>) -> bool {
        let Some((channel, p)) = at else {
            return false;
        };
        let Some(i) = self.floors.iter().position(|(c, _)| **c == *channel) else {
            return false;
        };
        let floor = &self.floors[i].1;
        if floor.epoch == p.epoch && p.offset <= floor.offset {
            return true;
        }
        self.floors.swap_remove(i);
        false
    }
}

/// What a holding connection has kept aside.
pub(super) enum Held {
    /// A frame, and its place in its channel's history if it is a
    /// publication with one.
    Frame(Bytes, Option<(Arc<str>, Position)>),
    /// Where the open's `connected` and replay go.
    Open,
    /// Where the `joined` of this channel goes.
    Join(Arc<str>),
}

impl Holding {
    /// Puts `items` in place of the first `slot`.
    fn fill(&mut self, slot: impl Fn(&Held) -> bool, items: Vec<Held>) {
        let frames = self.frames.get_or_insert_with(Vec::new);
        match frames.iter().position(slot) {
            Some(at) => {
                frames.splice(at..=at, items);
            }
            None => frames.extend(items),
        }
        self.pending = self.pending.saturating_sub(1);
    }
}

/// Sends `frame` to `handle` (slot `index`), keeps it aside while the
/// connection holds, or drops it if the connection was sent it from what
/// its open read. Returns the deliveries (1 or 0).
pub(super) fn push_or_hold(
    held: &mut HashMap<usize, Holding>,
    index: usize,
    handle: &ConnHandle,
    frame: &Bytes,
    at: Option<(&str, &Position)>,
    direct: bool,
) -> usize {
    hold(held, index, handle, frame, at).unwrap_or_else(|| super::deliver(handle, frame, direct))
}

/// The hold half of [`push_or_hold`]: `Some(deliveries)` when the frame was
/// held aside (or seen already), `None` when it is for the outbox now.
pub(super) fn hold(
    held: &mut HashMap<usize, Holding>,
    index: usize,
    handle: &ConnHandle,
    frame: &Bytes,
    at: Option<(&str, &Position)>,
) -> Option<usize> {
    if handle.holding.load(Ordering::Relaxed)
        && let Some(holding) = held.get_mut(&index)
    {
        if holding.seen(at) {
            return Some(0);
        }
        if let Some(frames) = holding.frames.as_mut() {
            let at = at.map(|(c, p)| (Arc::from(c), p.clone()));
            frames.push(Held::Frame(frame.clone(), at));
            return Some(1);
        }
        if holding.floors.is_empty() {
            handle.holding.store(false, Ordering::Relaxed);
            held.remove(&index);
        }
    }
    None
}

impl Hub {
    /// The first step of a `ws2fcgi.v1` client's open in a cluster, where
    /// what it missed is read from Redis (async, so not under the lock):
    /// joins `channels` with the connection holding, so what is for it
    /// from now on is kept aside until [`Hub::open_release`].
    pub fn open_hold(&self, handle: &ConnHandle, channels: &[String]) {
        let mut reg = self.lock();
        let reg = &mut *reg;
        let index = handle.id.index as usize;
        if reg.entry(&handle.id).is_none() {
            return;
        }
        handle.holding.store(true, Ordering::Relaxed);
        let holding = reg.held.entry(index).or_default();
        holding.frames.get_or_insert_with(Vec::new).push(Held::Open);
        holding.pending += 1;
        for channel in channels {
            add_member(reg, &handle.id, channel, self.observer.as_deref());
        }
    }

    /// The last step: sends `connected`, then `replay` (what the client
    /// missed, read after [`Hub::open_hold`]), then what was held, but the
    /// publications at or before the position each channel was read at
    /// (`read`: they were in the replay or before the client's position);
    /// those are dropped too when they come later (see `Holding`).
    /// Returns the publications replayed.
    pub fn open_release(
        &self,
        handle: &ConnHandle,
        connected: Bytes,
        replay: Vec<Bytes>,
        read: &[(String, Position)],
    ) -> usize {
        let mut reg = self.lock();
        let reg = &mut *reg;
        let index = handle.id.index as usize;
        let Some(holding) = reg.held.get_mut(&index) else {
            handle.holding.store(false, Ordering::Relaxed);
            return 0;
        };
        let replayed = replay.len();
        self.stats.messages_out.inc_by(replayed as u64);
        let items = std::iter::once(connected)
            .chain(replay)
            .map(|frame| Held::Frame(frame, None))
            .collect();
        holding.fill(|h| matches!(h, Held::Open), items);
        holding
            .floors
            .extend(read.iter().map(|(c, p)| (Arc::from(c.as_str()), p.clone())));
        self.settle(reg, index, handle);
        replayed
    }

    /// The read a join started (see [`TopReader`]) found `channel` at `top`
    /// (`None`: it could not be read): the `joined` message takes its slot,
    /// and the connection's frames go out if no other read is pending.
    pub fn join_release(&self, id: &ConnId, channel: &str, top: Option<Position>) {
        let mut reg = self.lock();
        let reg = &mut *reg;
        let index = id.index as usize;
        let Some(handle) = reg.entry(id).map(|e| e.handle.clone()) else {
            return;
        };
        let Some(holding) = reg.held.get_mut(&index) else {
            return;
        };
        let joined = v1::joined(channel, top.as_ref());
        holding.fill(
            |h| matches!(h, Held::Join(c) if **c == *channel),
            vec![Held::Frame(joined, None)],
        );
        if let Some(top) = top {
            holding.floors.push((Arc::from(channel), top));
        }
        self.settle(reg, index, &handle);
    }

    /// Sends what a holding connection kept aside once no read is pending
    /// (but the publications its reads covered), and stops holding when no
    /// floor is left that this node's bus has not passed yet.
    fn settle(&self, reg: &mut Registry, index: usize, handle: &ConnHandle) {
        let Some(holding) = reg.held.get_mut(&index) else {
            return;
        };
        if holding.pending > 0 {
            return;
        }
        // Held frames were counted when they were held.
        for held in holding.frames.take().unwrap_or_default() {
            if let Held::Frame(frame, at) = held {
                let at = at.as_ref().map(|(c, p)| (&**c, p));
                if !holding.seen(at) {
                    self.deliver(handle, &frame, false);
                }
            }
        }
        // A floor this node's bus already passed can go.
        let tops = &reg.tops;
        holding.floors.retain(|(c, floor)| {
            tops.get(c)
                .is_none_or(|top| top.epoch != floor.epoch || top.offset < floor.offset)
        });
        if holding.floors.is_empty() {
            handle.holding.store(false, Ordering::Relaxed);
            reg.held.remove(&index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Kind;
    use crate::v1::Publication;
    use std::sync::Mutex;

    /// The data of each frame queued to `handle` (payload after the header line).
    fn drained(handle: &ConnHandle) -> Vec<String> {
        let mut batch = std::collections::VecDeque::new();
        handle.outbox.drain_into(&mut batch, 1000, 0);
        batch
            .iter()
            .map(|f| String::from_utf8_lossy(&f[2..]).into_owned())
            .collect()
    }

    #[test]
    fn a_holding_open_sends_each_publication_once_in_order() {
        let hub = Hub::default();
        let a = hub.register(1 << 20);
        a.set_v1();
        let at = |offset| Position {
            offset,
            epoch: Arc::from("e"),
        };
        hub.open_hold(&a, &["room".to_string()]);
        for (offset, data) in [(1, "p1"), (2, "p2"), (3, "p3")] {
            hub.publish_at("room", Kind::Text, data.as_bytes(), Some(at(offset)), &[]);
        }
        hub.send(&[a.id], Kind::Text, b"direct");
        assert!(drained(&a).is_empty(), "all held");
        // Read at 2 (the replay holds 2); the bus here has reached 3.
        let replay = vec![
            Publication::new("room", Kind::Text, b"p2", Some(at(2)))
                .framed()
                .clone(),
        ];
        hub.open_release(
            &a,
            Bytes::from_static(b"..connected"),
            replay,
            &[("room".into(), at(2))],
        );
        let sent = drained(&a);
        assert_eq!(sent.len(), 4, "{sent:?}");
        assert!(sent[0].starts_with("connected"));
        assert!(
            sent[1].ends_with("\np2") && sent[2].ends_with("\np3"),
            "{sent:?}"
        );
        assert!(sent[3].ends_with("\ndirect"), "{sent:?}");
        assert!(
            !a.holding.load(Ordering::Relaxed),
            "the bus passed the read"
        );

        // Read ahead of this node's bus: what the bus brings late is dropped.
        let b = hub.register(1 << 20);
        b.set_v1();
        hub.open_hold(&b, &["room".to_string()]);
        hub.open_release(
            &b,
            Bytes::from_static(b"..connected"),
            vec![],
            &[("room".into(), at(5))],
        );
        for (offset, data) in [(4, "p4"), (5, "p5"), (6, "p6")] {
            hub.publish_at("room", Kind::Text, data.as_bytes(), Some(at(offset)), &[]);
        }
        let sent = drained(&b);
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(sent[1].ends_with("\np6"), "{sent:?}");
        assert!(!b.holding.load(Ordering::Relaxed), "past the floor");
        assert!(hub.lock().held.is_empty());
    }

    /// Every channel keeps history; reads are recorded, answered by the test.
    #[derive(Default)]
    struct Reads(Mutex<Vec<String>>);

    impl TopReader for Reads {
        fn keeps_history(&self, _: &str) -> bool {
            true
        }
        fn read_top(&self, _: ConnId, channel: &str) {
            self.0.lock().unwrap().push(channel.to_owned());
        }
    }

    #[test]
    fn a_join_waits_for_its_read_and_keeps_the_order() {
        let hub = Hub::default();
        let reads = Arc::new(Reads::default());
        hub.set_top_reader(reads.clone());
        let at = |offset| Position {
            offset,
            epoch: Arc::from("e"),
        };
        let a = hub.register(1 << 20);
        a.set_v1();
        assert!(hub.join(&a.id, "x"));
        assert!(hub.join(&a.id, "y"));
        assert_eq!(*reads.0.lock().unwrap(), ["x", "y"]);
        hub.publish_at("x", Kind::Text, b"x1", Some(at(1)), &[]);
        // y's read saw y1 before this node's bus brought it; x's saw nothing.
        hub.join_release(&a.id, "y", Some(at(1)));
        hub.publish_at("y", Kind::Text, b"y1", Some(at(1)), &[]);
        hub.publish_at("x", Kind::Text, b"x2", Some(at(2)), &[]);
        assert!(drained(&a).is_empty(), "x's read is pending");
        hub.join_release(&a.id, "x", Some(at(0)));
        let sent = drained(&a);
        assert_eq!(sent.len(), 4, "{sent:?}");
        assert!(
            sent[0].contains(r#""t":"joined","c":"x","o":0"#),
            "{sent:?}"
        );
        assert!(
            sent[1].contains(r#""t":"joined","c":"y","o":1"#),
            "{sent:?}"
        );
        assert!(
            sent[2].ends_with("\nx1") && sent[3].ends_with("\nx2"),
            "{sent:?}"
        );
        hub.publish_at("y", Kind::Text, b"y2", Some(at(2)), &[]);
        assert!(drained(&a)[0].ends_with("\ny2"));
        assert!(!a.holding.load(Ordering::Relaxed));
        let b = hub.register(1 << 20);
        b.set_v1();
        assert!(hub.join(&b.id, "x"));
        assert_eq!(reads.0.lock().unwrap().len(), 2, "no read needed");
        assert!(drained(&b)[0].contains(r#""o":2"#));
    }
}
