//! A `ws2fcgi.v1` client's handshake (`Sec-WebSocket-Protocol`) →
//! `v1::offer` and `v1::parse_since`: whatever a client sends, the positions
//! accepted are within the limits the recovery relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws2fcgi::v1::{MAX_EPOCH_LEN, MAX_POSITIONS, offer, parse_since};

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let (_, since) = offer(std::iter::once(header));
    for token in since.into_iter().chain([header]) {
        if let Ok(positions) = parse_since(token) {
            assert!(positions.len() <= MAX_POSITIONS);
            for (channel, position) in &positions {
                assert!(ws2fcgi::response::check_channel(channel).is_ok());
                assert!(!position.epoch.is_empty() && position.epoch.len() <= MAX_EPOCH_LEN);
            }
        }
    }
});
