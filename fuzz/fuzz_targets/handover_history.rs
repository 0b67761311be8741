//! The channels' history a SIGUSR2 handover passes to the new process →
//! `handover::history::decode`: whatever arrives, it is an error or records
//! that keep the invariants the history relies on (offsets rise, none above
//! the top, data within its frame), and encoding them gives the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws2fcgi::handover::history::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(records) = decode(bytes::Bytes::copy_from_slice(data)) else {
        return;
    };
    for r in &records {
        let mut last = None;
        for e in &r.entries {
            assert!(e.offset <= r.top);
            assert!(last.is_none_or(|l| l < e.offset));
            assert!(e.data_at as usize <= e.frame.len());
            last = Some(e.offset);
        }
    }
    assert_eq!(encode(&records), data);
});
