//! A client's bytes after the handshake → `client_frames::Decoder`, the
//! decoder of every connection's frames. Whatever a client sends, and
//! however the bytes are cut: no panic, the same things come out as from
//! the bytes in one piece, no message is over the limits, text is UTF-8, and
//! a fault is final.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws2fcgi::client_frames::{Decoder, Fault, Incoming, Limits};
use ws2fcgi::frame::Kind;

const LIMITS: Limits = Limits {
    max_frame: 4096,
    max_message: 8192,
};

/// Everything that comes out of `wire` fed in pieces of at most `step`.
fn decode(wire: &[u8], step: usize) -> Vec<Result<Incoming, Fault>> {
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let end = (at + step).min(wire.len());
        let (used, got) = decoder.feed(&wire[at..end], LIMITS);
        let piece = end - at;
        assert!(used <= piece);
        at += used;
        match got {
            Some(Err(fault)) => {
                assert!(matches!(fault.code, 1002 | 1007 | 1009));
                assert_eq!(decoder.feed(&wire[at..], LIMITS), (0, Some(Err(fault))));
                out.push(Err(fault));
                break;
            }
            Some(Ok(incoming)) => {
                match &incoming {
                    Incoming::Message(kind, data) => {
                        assert!(data.len() <= LIMITS.max_message);
                        if *kind == Kind::Text {
                            assert!(std::str::from_utf8(data).is_ok());
                        }
                    }
                    Incoming::Ping(data) => assert!(data.len() <= 125),
                    Incoming::Pong | Incoming::Close(_) => {}
                }
                if matches!(incoming, Incoming::Message(..)) {
                    assert!(!decoder.is_mid_message());
                }
                out.push(Ok(incoming));
            }
            None => assert_eq!(used, piece, "takes all of a piece that completes nothing"),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, wire)) = data.split_first() else {
        return;
    };
    let whole = decode(wire, wire.len().max(1));
    let pieces = decode(wire, usize::from(step).max(1));
    assert_eq!(whole, pieces);
});
