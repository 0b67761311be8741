//! One text message from a Pusher client → `pusher::protocol::parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws2fcgi::pusher::protocol::{ClientFrame, MAX_EVENT_NAME, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(ClientFrame::ClientEvent { event, .. }) => {
            assert!(event.starts_with("client-") && event.len() <= MAX_EVENT_NAME);
        }
        Ok(_) => {}
        Err(e) => {
            // Every refusal can be told to the client.
            assert!(e.to_string().len() <= 2 * MAX_EVENT_NAME);
        }
    }
});
