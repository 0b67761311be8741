//! Bytes another node put on the Redis bus → `cluster::seal::open`, then
//! `cluster::wire::decode` of the envelope without its seal; what decodes
//! must encode again and decode to the same envelope, and what is sealed
//! must open to the same bytes and sequence.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws2fcgi::cluster::seal::{Key, open, seal};
use ws2fcgi::cluster::wire::{decode, encode};

const CHANNEL: &str = "ws2fcgi:bus";

fuzz_target!(|data: &[u8]| {
    let key = Key::new(b"fuzzing-cluster-secret");
    // Forged seals never open (and never panic).
    let _ = open(&key, CHANNEL, data);
    if let Ok(envelope) = decode(data) {
        let again = encode(&envelope).expect("a decoded envelope encodes");
        assert_eq!(decode(&again).expect("it decodes again"), envelope);
        let mut sealed = again.clone();
        seal(&key, CHANNEL, 7, &mut sealed);
        assert_eq!(open(&key, CHANNEL, &sealed), Ok((&again[..], 7)));
    }
});
