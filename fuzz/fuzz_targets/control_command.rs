//! One control-socket request line → `control::command::parse`; the quick
//! way for `publish` lines must give what the general way gives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws2fcgi::control::command::{Command, parse, parse_any, parse_publish};

fuzz_target!(|line: &[u8]| {
    if let Some(quick) = parse_publish(line) {
        assert_eq!(quick, parse_any(line), "the two ways disagree");
    }
    if let Ok(command) = parse(line) {
        let _ = command.op();
        if let Command::Close { code, reason, .. } = &command {
            assert!(ws2fcgi::contract::is_sendable_close_code(*code));
            assert!(reason.len() <= ws2fcgi::response::MAX_CLOSE_REASON_LEN);
        }
    }
});
