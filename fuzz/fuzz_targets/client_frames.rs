//! A client's bytes after the handshake → `client_frames::Decoder`, the
//! decoder of every connection's frames. Whatever a client sends, and
//! however the bytes are cut: no panic, the same things come out as from
//! the bytes in one piece, no message is over the limits, text is UTF-8, and
//! a fault is final.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws2fcgi::client_frames::{Limits, decode_in_pieces};

const LIMITS: Limits = Limits {
    max_frame: 4096,
    max_message: 8192,
};

fuzz_target!(|data: &[u8]| {
    let Some((&step, wire)) = data.split_first() else {
        return;
    };
    let whole = decode_in_pieces(wire, wire.len(), LIMITS);
    let pieces = decode_in_pieces(wire, usize::from(step), LIMITS);
    assert_eq!(whole, pieces);
});
