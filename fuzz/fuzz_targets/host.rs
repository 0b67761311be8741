//! A handshake's `Host` header → `host::parse`; what it accepts must be
//! within the grammar PHP is promised (docs/protocol.md, "The handshake").
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws2fcgi::host::{MAX_HOST_NAME, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(host) = parse(data) {
        let name = host.name.as_bytes();
        assert!(!name.is_empty() && name.len() <= MAX_HOST_NAME + 2);
        let allowed = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%[]:".contains(b);
        assert!(name.iter().all(allowed), "{:?}", host.name);
        assert!(data.starts_with(name), "the name is a prefix of the header");
        if name.starts_with(b"[") {
            let inner = &host.name[1..host.name.len() - 1];
            assert!(inner.parse::<std::net::Ipv6Addr>().is_ok());
        } else {
            assert!(!name.contains(&b':'), "a port never stays in the name");
        }
    }
});
