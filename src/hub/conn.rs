//! A connection as everyone who talks to it sees it: its id
//! (`WS_CONNECTION_ID`), its outbox, its metadata, and what it negotiated
//! (`ws2fcgi.v1`, permessage-deflate).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::Observer;
use crate::frame::Kind;
use crate::outbox::Outbox;
use crate::v1;

/// A connection's metadata entries, in the order they were first set.
type Meta = Box<[(Box<str>, Box<str>)]>;

/// Most metadata entries one connection may hold.
pub const MAX_META_ENTRIES: usize = 64;

/// A connection's public id (`WS_CONNECTION_ID`): 40 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub(super) index: u32,
    pub(super) serial: u64,
    pub(super) tag: u64,
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}{:016x}{:016x}", self.index, self.serial, self.tag)
    }
}

impl ConnId {
    /// The 40 hex digits [`Display`](fmt::Display) writes, without its
    /// machinery: each event writes them into its `WS_CONNECTION_ID`.
    pub fn hex(&self) -> [u8; 40] {
        fn put(out: &mut [u8], mut value: u64) {
            for digit in out.iter_mut().rev() {
                *digit = b"0123456789abcdef"[(value & 0xf) as usize];
                value >>= 4;
            }
        }
        let mut out = [0; 40];
        put(&mut out[..8], u64::from(self.index));
        put(&mut out[8..24], self.serial);
        put(&mut out[24..], self.tag);
        out
    }

    /// The slot and the serial number, without the keyed tag: unique in the
    /// daemon's life but guessable, so only for ids that are public by
    /// design (a Pusher `socket_id`, see `pusher/socket_id.rs`).
    pub fn slot_serial(&self) -> (u32, u64) {
        (self.index, self.serial)
    }
}

impl FromStr for ConnId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() != 40 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(());
        }
        Ok(Self {
            index: u32::from_str_radix(&s[..8], 16).map_err(drop)?,
            serial: u64::from_str_radix(&s[8..24], 16).map_err(drop)?,
            tag: u64::from_str_radix(&s[24..], 16).map_err(drop)?,
        })
    }
}

/// What every party that talks to a connection shares: its id, its outbox and its metadata.
pub struct ConnHandle {
    /// The connection's id.
    pub id: ConnId,
    /// Frames on their way to the client.
    pub outbox: Outbox,
    /// What the connection's events waiting for PHP hold of the inbound
    /// budget (`inbound.rs`): kept here, where its read side and its events
    /// reach it, instead of in an allocation of its own.
    pub inbound: crate::inbound::Queued,
    /// A boxed slice, not a `Vec`: a word less in every connection, and
    /// rewritten whole on each change anyway.
    pub(super) meta: Mutex<Meta>,
    /// The hub's observer, for metadata changes (none on a single node).
    pub(super) observer: Option<Arc<dyn Observer>>,
    /// The client speaks `ws2fcgi.v1`: set once, in the open, before any
    /// join (the registry lock orders it before every fan-out).
    pub(super) v1: AtomicBool,
    /// Its open reads what it missed from Redis ([`Hub::open_hold`]): what
    /// is for it meanwhile is held aside. Changed under the registry lock.
    pub(super) holding: AtomicBool,
    /// The client negotiated permessage-deflate: messages of at least this
    /// many bytes are sent compressed; `u32::MAX` when not negotiated. Set
    /// once, in the open, before any join (as `v1`).
    pub(super) deflate_min: AtomicU32,
}

/// The waker of a connection's sources other than its writer (the client's
/// frames, its timer, PHP's answer): it marks the wake-up as theirs and
/// wakes the task through the waker its writer registered
/// ([`Outbox::wake_other`]), so a turn woken by the outbox alone can skip
/// them (`connection/task.rs`).
impl std::task::Wake for ConnHandle {
    fn wake(self: Arc<Self>) {
        self.outbox.wake_other();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.outbox.wake_other();
    }
}

impl ConnHandle {
    /// Does the client speak `ws2fcgi.v1`?
    pub fn is_v1(&self) -> bool {
        self.v1.load(Ordering::Relaxed)
    }

    /// Marks the client as speaking `ws2fcgi.v1`.
    pub fn set_v1(&self) {
        self.v1.store(true, Ordering::Relaxed);
    }

    /// Messages of at least this many bytes go compressed; `None` when
    /// the client did not negotiate permessage-deflate.
    pub fn deflate_min(&self) -> Option<usize> {
        match self.deflate_min.load(Ordering::Relaxed) {
            u32::MAX => None,
            min => Some(min as usize),
        }
    }

    /// The client negotiated permessage-deflate: messages of at least
    /// `min_size` bytes go compressed.
    pub fn set_deflate(&self, min_size: usize) {
        let min = u32::try_from(min_size)
            .unwrap_or(u32::MAX - 1)
            .min(u32::MAX - 1);
        self.deflate_min.store(min, Ordering::Relaxed);
    }

    /// A message for this connection only, framed as its client expects
    /// (and compressed if it negotiated that and the message is large enough).
    pub fn message(&self, kind: Kind, data: &[u8], stats: &crate::deflate::Stats) -> Bytes {
        let deflate = self.deflate_min().is_some_and(|min| data.len() >= min);
        match (self.is_v1(), deflate) {
            (true, false) => v1::direct(kind, data),
            (false, false) => crate::frame::data(kind, data),
            (true, true) => v1::direct_deflated(kind, data, stats),
            (false, true) => crate::deflate::frame(kind, &[data], stats),
        }
    }

    /// A copy of the metadata, in the order it was first set.
    pub fn meta(&self) -> Vec<(String, String)> {
        self.lock_meta()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Calls `f` with each metadata entry, without copying.
    pub fn for_each_meta(&self, mut f: impl FnMut(&str, &str)) {
        for (k, v) in self.lock_meta().iter() {
            f(k, v);
        }
    }

    /// Sets (`Some`) or deletes (`None`) entries; keys must already be canonical
    /// (`response::meta_key`). Fails, changing nothing, past [`MAX_META_ENTRIES`].
    pub fn update_meta(&self, changes: &[(String, Option<String>)]) -> Result<(), String> {
        let mut meta = self.lock_meta();
        let mut next = meta.to_vec();
        for (key, value) in changes {
            let at = next.iter().position(|(k, _)| **k == **key);
            match (at, value) {
                (Some(i), Some(v)) => next[i].1 = v.as_str().into(),
                (Some(i), None) => {
                    next.remove(i);
                }
                (None, Some(v)) => next.push((key.as_str().into(), v.as_str().into())),
                (None, None) => {}
            }
        }
        if next.len() > MAX_META_ENTRIES {
            return Err(format!("more than {MAX_META_ENTRIES} metadata entries"));
        }
        *meta = next.into_boxed_slice();
        drop(meta);
        if let Some(observer) = &self.observer {
            observer.meta_changed(self.id);
        }
        Ok(())
    }

    fn lock_meta(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_what_display_writes() {
        let ids = [
            (0, 0, 0),
            (1, 0xabc, u64::MAX),
            (u32::MAX, 0x0123_4567_89ab_cdef, 42),
        ];
        for (index, serial, tag) in ids {
            let id = ConnId { index, serial, tag };
            assert_eq!(&id.hex()[..], id.to_string().as_bytes());
        }
    }
}
