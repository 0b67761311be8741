//! A client socket's first bytes → `gateway::head::peek` (does the gateway
//! serve them itself?) and the head it accepts → `gateway::head::parts`:
//! never a panic, and what the direct path takes is a whole `GET` head
//! within the bytes, on a path, with every header carried over.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ws2fcgi::gateway::head::{MAX_HEADERS, parts, peek};

fuzz_target!(|data: &[u8]| {
    let Some(peeked) = peek(data) else {
        return;
    };
    assert!(peeked.len <= data.len());
    assert!(peeked.path.starts_with('/'));
    assert!(data[..peeked.len].ends_with(b"\n"), "a head ends with its blank line");
    let head = Bytes::copy_from_slice(&data[..peeked.len]);
    if let Ok(parts) = parts(&head) {
        assert_eq!(parts.method.as_str(), "GET");
        assert!(parts.headers.len() <= MAX_HEADERS);
        assert!(parts.headers.contains_key("upgrade"));
    }
    let mut longer = head.to_vec();
    longer.push(b'x');
    assert!(parts(&Bytes::from(longer)).is_err(), "only a whole head, exactly");
});
