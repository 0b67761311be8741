//! Authenticating envelopes between nodes: an HMAC-SHA256 trailer keyed by
//! `cluster.secret`, and a per-node sequence that stops replays (pure).
//!
//! Anyone who can `PUBLISH` on Redis could otherwise close, join, leave or
//! set metadata on any connection, and metadata (`WS_META_*`) is often the
//! identity PHP trusts. So every envelope ([`super::wire`]) leaves a node
//! sealed:
//!
//! ```text
//! sealed = envelope seq:u64 mac:32
//! mac    = HMAC-SHA256(cluster.secret, len(channel):u16 channel envelope seq)
//! seq    = max(previous seq + 1, now in ns since 1970)     (per sending node)
//! ```
//!
//! The MAC covers the Redis channel, so an envelope published to one node
//! cannot be moved to another's channel or to the bus. A receiving node
//! ([`Replay`]) accepts an envelope only when its MAC verifies (compared in
//! constant time), its `seq` is at most [`MAX_AGE`] old by the receiver's
//! clock, and it is higher than the last `seq` accepted from that origin: a
//! captured envelope re-published later is refused. Without a secret (allowed
//! only with Redis on loopback or a Unix socket) the key is empty, so anyone
//! who can publish can still forge.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes a seal adds to an envelope: `seq` and the MAC.
pub const TRAILER: usize = 8 + MAC_LEN;
const MAC_LEN: usize = 32;
/// The oldest envelope a node accepts, by its own clock: the nodes' clocks
/// must agree within this (NTP).
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// Why a sealed envelope is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Too short to hold a seal.
    #[error("no seal")]
    Unsealed,
    /// The MAC does not verify: another `cluster.secret`, or a forgery.
    #[error("MAC does not verify (another cluster.secret, or a forgery)")]
    BadMac,
    /// Sent more than [`MAX_AGE`] ago (or a clock that far behind).
    #[error("older than {}s (a replay, or clocks apart)", MAX_AGE.as_secs())]
    Stale,
    /// Not newer than an envelope already accepted from the same node.
    #[error("sequence not newer than the last from this node (a replay)")]
    Replayed,
}

/// HMAC-SHA256 keyed with `cluster.secret`, the key schedule done once.
#[derive(Clone)]
pub struct Key(Hmac<Sha256>);

impl Key {
    /// The key of `secret` (empty: no secret).
    pub fn new(secret: &[u8]) -> Self {
        // HMAC takes a key of any length: this never fails.
        let mac = Hmac::<Sha256>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        Self(mac)
    }

    fn mac(&self, channel: &str, signed: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        let len = u16::try_from(channel.len()).unwrap_or(u16::MAX);
        mac.update(&len.to_be_bytes());
        mac.update(channel.as_bytes());
        mac.update(signed);
        mac
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Nanoseconds since 1970 by this machine's clock (0 before 1970).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A sending node's sequence: strictly increasing, close to the wall clock.
#[derive(Debug, Default)]
pub struct Sequence(u64);

impl Sequence {
    /// The next `seq`, given the time now.
    pub fn next(&mut self, now_ns: u64) -> u64 {
        self.0 = now_ns.max(self.0.saturating_add(1));
        self.0
    }
}

/// Appends `seq` and the MAC to `envelope`, bound to `channel`.
pub fn seal(key: &Key, channel: &str, seq: u64, envelope: &mut Vec<u8>) {
    envelope.extend_from_slice(&seq.to_be_bytes());
    let tag = key.mac(channel, envelope).finalize().into_bytes();
    envelope.extend_from_slice(&tag);
}

/// Checks the MAC of a sealed envelope received on `channel`; returns the
/// envelope without its seal, and its `seq`. Replays are [`Replay`]'s job.
pub fn open<'a>(key: &Key, channel: &str, sealed: &'a [u8]) -> Result<(&'a [u8], u64), SealError> {
    let Some(signed_len) = sealed.len().checked_sub(MAC_LEN) else {
        return Err(SealError::Unsealed);
    };
    if signed_len < 8 {
        return Err(SealError::Unsealed);
    }
    let (signed, tag) = sealed.split_at(signed_len);
    key.mac(channel, signed)
        .verify_slice(tag)
        .map_err(|_| SealError::BadMac)?;
    let (envelope, seq) = signed.split_at(signed_len - 8);
    let mut bytes = [0; 8];
    bytes.copy_from_slice(seq);
    Ok((envelope, u64::from_be_bytes(bytes)))
}

/// A receiving node's memory of the last `seq` accepted from each origin.
/// Entries older than [`MAX_AGE`] are forgotten ([`Replay::prune`]): an
/// envelope that old is refused as stale anyway, so the map holds only the
/// nodes heard from lately.
#[derive(Debug, Default)]
pub struct Replay {
    last: HashMap<String, u64>,
}

impl Replay {
    /// Accepts `seq` from `origin` (an envelope whose MAC verified) and
    /// remembers it, or says why not.
    pub fn check(&mut self, origin: &str, seq: u64, now_ns: u64) -> Result<(), SealError> {
        if seq < oldest(now_ns) {
            return Err(SealError::Stale);
        }
        match self.last.get_mut(origin) {
            Some(last) if seq <= *last => Err(SealError::Replayed),
            Some(last) => {
                *last = seq;
                Ok(())
            }
            None => {
                self.last.insert(origin.to_owned(), seq);
                Ok(())
            }
        }
    }

    /// Forgets the origins not heard from within [`MAX_AGE`].
    pub fn prune(&mut self, now_ns: u64) {
        let oldest = oldest(now_ns);
        self.last.retain(|_, last| *last >= oldest);
    }

    /// Origins remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// No origin remembered.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

fn oldest(now_ns: u64) -> u64 {
    let age = u64::try_from(MAX_AGE.as_nanos()).unwrap_or(u64::MAX);
    now_ns.saturating_sub(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000_000_000;

    fn sealed(key: &Key, channel: &str, seq: u64) -> Vec<u8> {
        let mut bytes = b"WS\x02Rx".to_vec();
        seal(key, channel, seq, &mut bytes);
        bytes
    }

    #[test]
    fn what_one_key_seals_it_opens() {
        let key = Key::new(b"0123456789abcdef");
        let bytes = sealed(&key, "ws2fcgi:bus", 42);
        assert_eq!(bytes.len(), 5 + TRAILER);
        assert_eq!(
            open(&key, "ws2fcgi:bus", &bytes),
            Ok((&b"WS\x02Rx"[..], 42))
        );
    }

    #[test]
    fn another_key_channel_or_any_changed_byte_is_refused() {
        let key = Key::new(b"0123456789abcdef");
        let bytes = sealed(&key, "ws2fcgi:bus", 42);
        let other = Key::new(b"0123456789abcdeF");
        assert_eq!(open(&other, "ws2fcgi:bus", &bytes), Err(SealError::BadMac));
        assert_eq!(
            open(&key, "ws2fcgi:node:b", &bytes),
            Err(SealError::BadMac),
            "bound to its channel"
        );
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 1;
            assert_eq!(
                open(&key, "ws2fcgi:bus", &changed),
                Err(SealError::BadMac),
                "byte {i}"
            );
        }
        for cut in 0..bytes.len() {
            assert!(
                open(&key, "ws2fcgi:bus", &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        assert_eq!(open(&key, "c", b"short"), Err(SealError::Unsealed));
        // The empty key (no secret) is a key like any other.
        let none = Key::new(b"");
        assert_eq!(open(&none, "c", &sealed(&none, "c", 1)).map(|o| o.1), Ok(1));
        assert_eq!(open(&none, "c", &bytes), Err(SealError::BadMac));
    }

    #[test]
    fn sequences_increase_and_follow_the_clock() {
        let mut seq = Sequence::default();
        assert_eq!(seq.next(NOW), NOW);
        assert_eq!(seq.next(NOW), NOW + 1, "same instant");
        assert_eq!(seq.next(NOW - 5), NOW + 2, "a clock stepped back");
        assert_eq!(seq.next(NOW + 100), NOW + 100);
    }

    #[test]
    fn replays_and_stale_envelopes_are_refused() {
        let mut replay = Replay::default();
        assert_eq!(replay.check("a", NOW, NOW), Ok(()));
        assert_eq!(replay.check("a", NOW, NOW), Err(SealError::Replayed));
        assert_eq!(replay.check("a", NOW - 1, NOW), Err(SealError::Replayed));
        assert_eq!(replay.check("b", NOW - 1, NOW), Ok(()), "per origin");
        assert_eq!(replay.check("a", NOW + 1, NOW), Ok(()));
        let age = MAX_AGE.as_nanos() as u64;
        assert_eq!(replay.check("c", NOW - age - 1, NOW), Err(SealError::Stale));
        assert_eq!(replay.check("c", NOW - age, NOW), Ok(()));
        // Forgetting an origin is safe: what it sent before is stale by then.
        replay.prune(NOW + age + 2);
        assert!(replay.is_empty());
        assert_eq!(
            replay.check("a", NOW + 1, NOW + age + 2),
            Err(SealError::Stale)
        );
    }
}
