//! Bytes another node put on the Redis bus → `cluster::wire::decode`; what
//! decodes must encode again and decode to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws2fcgi::cluster::wire::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = decode(data) {
        let again = encode(&envelope).expect("a decoded envelope encodes");
        assert_eq!(decode(&again).expect("it decodes again"), envelope);
    }
});
