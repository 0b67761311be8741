//! permessage-deflate from a client's side: its `Sec-WebSocket-Extensions`
//! offer → `deflate::negotiate`, and its bytes on the wire → `Inflating`
//! (the read side's inflater). Whatever a client sends: an agreement is
//! always one the daemon can keep, inflating stops at the limit, and every
//! frame handed to tungstenite is a plain, masked data frame.
#![no_main]

use bytes::{Buf, BytesMut};
use libfuzzer_sys::fuzz_target;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use ws2fcgi::deflate::{Inbound, Inflating, OUTPUT_STEP, Step, negotiate, starts_compressed};

const MAX_MESSAGE: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&room, rest)) = data.split_first() else {
        return;
    };
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let (offer, wire) = rest.split_at(split);
    if let Ok(offer) = std::str::from_utf8(offer)
        && let Some(agreed) = negotiate(std::iter::once(offer))
    {
        assert!((9..=15).contains(&agreed.client_window_bits));
        assert!(agreed.response.starts_with(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ));
    }
    let mut pending = BytesMut::from(wire.get(1..).unwrap_or_default());
    let Some((header, head, payload)) = starts_compressed(&pending) else {
        return;
    };
    pending.advance(head);
    let limits = Inbound {
        window_bits: 15,
        max_message: MAX_MESSAGE,
        max_frame: 1 << 20,
    };
    let mut inflating = Inflating::start(&header, payload, limits);
    let mut handed = 0usize;
    for _ in 0..10_000 {
        let step = inflating.step(&mut pending, usize::from(room) * 64 + 1);
        let output = inflating.output().split();
        let mut cursor = std::io::Cursor::new(&output[..]);
        while let Ok(Some((h, len))) = FrameHeader::parse(&mut cursor) {
            assert!(!h.rsv1 && h.mask == Some([0; 4]));
            assert!(len as usize <= OUTPUT_STEP);
            handed += len as usize;
            cursor.set_position(cursor.position() + len);
        }
        assert_eq!(cursor.position() as usize, output.len());
        assert!(handed <= MAX_MESSAGE + 1);
        match step {
            Ok(Step::Ready(_)) if !inflating.is_done() => {}
            _ => return,
        }
    }
});
