//! Bytes on the Redis bus that look like a Pusher presence announcement
//! (`"WP" <seq> " " <sealed envelope>`) → `cluster::roster::open_bus`; the
//! frame an announcement carries → `pusher::roster::Said::of_frame`; a
//! `socket_id` another node's event names → `pusher::SocketId`. Nothing
//! panics; what opens was sealed with the key; socket ids round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws2fcgi::cluster::roster::{open_bus, split_bus};
use ws2fcgi::cluster::seal::Key;
use ws2fcgi::pusher::SocketId;
use ws2fcgi::pusher::roster::Said;

fuzz_target!(|data: &[u8]| {
    let key = Key::new(b"fuzzing-cluster-secret");
    // Forged seals never open (and never panic).
    assert!(open_bus(&key, "ws2fcgi", data).is_err());
    if let Some((seq, sealed)) = split_bus(data) {
        assert!(data.len() > sealed.len());
        let _ = seq;
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Said::of_frame(text);
        if let Ok(sid) = text.parse::<SocketId>() {
            assert_eq!(sid.to_string().parse::<SocketId>(), Ok(sid));
        }
    }
});
