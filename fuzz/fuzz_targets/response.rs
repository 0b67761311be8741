//! PHP's stdout (status, headers, `X-WS-*` directives, body) → `response::parse`,
//! with small limits (the smallest header limit the config allows) so inputs
//! of a few KiB cross both.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws2fcgi::contract;
use ws2fcgi::response::{MAX_CLOSE_REASON_LEN, parse};

const MAX_HEADER_BYTES: usize = 1024;
const MAX_BODY_BYTES: usize = 2048;

fuzz_target!(|stdout: &[u8]| {
    if let Ok(answer) = parse(stdout.to_vec(), MAX_HEADER_BYTES, MAX_BODY_BYTES) {
        assert!((200..=599).contains(&answer.status));
        assert!(answer.body.len() <= MAX_BODY_BYTES);
        if let Some((code, reason)) = &answer.directives.close {
            assert!(contract::is_sendable_close_code(*code));
            assert!(reason.len() <= MAX_CLOSE_REASON_LEN);
        }
        for (name, _) in &answer.headers {
            assert!(!name.starts_with(contract::HEADER_DIRECTIVE_PREFIX));
        }
    }
});
