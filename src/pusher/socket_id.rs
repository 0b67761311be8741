//! A Pusher connection's `socket_id`: `<slot>.<serial>` of its hub
//! [`ConnId`], which Pusher's `^\d+\.\d+$` accepts.
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
    /// The hub slot.
    pub slot: u32,
    /// The hub serial number.
    pub serial: u64,
}

impl SocketId {
    /// The socket id of a hub connection.
    pub fn of(id: &ConnId) -> Self {
        let (slot, serial) = id.slot_serial();
        Self { slot, serial }
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.slot, self.serial)
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
        Ok(Self {
            slot: a.parse().map_err(drop)?,
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
        let sid = SocketId::of(&a.id);
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
            "99999999999.1",
        ] {
            assert!(bad.parse::<SocketId>().is_err(), "{bad}");
        }
    }
}
