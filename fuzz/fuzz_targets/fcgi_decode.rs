//! PHP-FPM's answer bytes → `fcgi::decode`, record after record, as `fpm/conn.rs` reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws2fcgi::fcgi::{HEADER_LEN, Record, decode};

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while at < data.len() {
        match decode(&data[at..]) {
            Ok(Some((record, used))) => {
                assert!(used >= HEADER_LEN && used <= data.len() - at);
                if let Record::Stdout(bytes) | Record::Stderr(bytes) = record {
                    assert!(bytes.len() <= used - HEADER_LEN);
                }
                at += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
});
