//! A Pusher connection's `socket_id`: `<slot>.<serial>` of its hub
//! [`ConnId`], which Pusher's `^\d+\.\d+$` accepts.
//!
//! In a cluster the first number also names the node: it is
//! `node_tag × 2³² + slot`, where the tag is a 20-bit hash of the node id
//! ([`node_tag`], never 0), so a node tells its own socket ids from other
//! nodes' (an event's `socket_id` may name a connection of any node) and
//! two nodes' ids do not collide. On a single node the tag is 0 and the id
//! is `<slot>.<serial>`.
//!
//! Pusher's socket ids are public (a client sends its own to the auth
//! endpoint and to the app's server, which sends it back to exclude it from
//! a publish), so the keyed tag of the hub id is not part of it: it is
//! looked up with [`Hub::find`](crate::hub::Hub::find). A serial is never
//! reused, so a socket id of a closed connection matches no later one.

use std::fmt;
use std::str::FromStr;

use crate::hub::ConnId;

/// A `socket_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketId {
    /// The node's tag ([`node_tag`]); 0 on a single node.
    pub node: u32,
    /// The hub slot.
    pub slot: u32,
    /// The hub serial number.
    pub serial: u64,
}

impl SocketId {
    /// The socket id of a hub connection of the node tagged `node` (0: a single node).
    pub fn of(id: &ConnId, node: u32) -> Self {
        let (slot, serial) = id.slot_serial();
        Self { node, slot, serial }
    }
}

/// Largest node tag: tags are 1 to 2²⁰ − 1.
pub const MAX_NODE_TAG: u32 = 0xF_FFFF;

/// The tag of a cluster node in its connections' socket ids: a hash
/// (FNV-1a) of its node id, 1 to [`MAX_NODE_TAG`].
///
/// ```
/// let tag = ws2fcgi::pusher::socket_id::node_tag("web-1");
/// assert!(tag >= 1 && tag <= ws2fcgi::pusher::socket_id::MAX_NODE_TAG);
/// assert_ne!(tag, ws2fcgi::pusher::socket_id::node_tag("web-2"));
/// ```
pub fn node_tag(node_id: &str) -> u32 {
    let hash = node_id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % MAX_NODE_TAG + 1
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = (u64::from(self.node) << 32) | u64::from(self.slot);
        write!(f, "{first}.{}", self.serial)
    }
}

impl FromStr for SocketId {
    type Err = ();

    /// Parses `^\d+\.\d+$` (no sign, no spaces, within range).
    fn from_str(s: &str) -> Result<Self, ()> {
        let (a, b) = s.split_once('.').ok_or(())?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return Err(());
        }
        let first: u64 = a.parse().map_err(drop)?;
        let node = u32::try_from(first >> 32).map_err(drop)?;
        if node > MAX_NODE_TAG {
            return Err(());
        }
        Ok(Self {
            node,
            slot: (first & u64::from(u32::MAX)) as u32,
            serial: b.parse().map_err(drop)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_finds_the_live_connection() {
        let hub = crate::hub::Hub::default();
        let a = hub.register(1024);
        let sid = SocketId::of(&a.id, 0);
        let text = sid.to_string();
        assert!(text.contains('.') && text.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
        let parsed: SocketId = text.parse().unwrap();
        assert_eq!(hub.find(parsed.slot, parsed.serial), Some(a.id));
        hub.unregister(&a.id);
        assert_eq!(hub.find(parsed.slot, parsed.serial), None);
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "+1.2",
            "1.2.3",
            "a.1",
            "1 .2",
            "99999999999999999999.1",
            "18446744073709551615.1",
        ] {
            assert!(bad.parse::<SocketId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cluster_socket_id_carries_its_node() {
        let hub = crate::hub::Hub::default();
        let a = hub.register(1024);
        let tag = node_tag("web-1");
        let sid = SocketId::of(&a.id, tag);
        let parsed: SocketId = sid.to_string().parse().unwrap();
        assert_eq!(parsed, sid);
        assert_eq!(parsed.node, tag);
        assert_eq!(hub.find(parsed.slot, parsed.serial), Some(a.id));
        assert_ne!(SocketId::of(&a.id, 0).to_string(), sid.to_string());
    }
}
