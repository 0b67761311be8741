//! One control-socket request line → `control::command::parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws2fcgi::control::command::{Command, parse};

fuzz_target!(|line: &[u8]| {
    if let Ok(command) = parse(line) {
        let _ = command.op();
        if let Command::Close { code, reason, .. } = &command {
            assert!(ws2fcgi::contract::is_sendable_close_code(*code));
            assert!(reason.len() <= ws2fcgi::response::MAX_CLOSE_REASON_LEN);
        }
    }
});
