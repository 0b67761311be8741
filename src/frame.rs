//! Server-to-client WebSocket frames, encoded once and shared.
//!
//! Frames a server sends are never masked, so one encoded frame is the same
//! bytes for every recipient: a publish to a channel of N members encodes the
//! message once into a [`Bytes`] and queues N reference-counted handles to it
//! — one copy of the payload per publish, not per member. Header formatting is
//! tungstenite's.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// Kind of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Opcode 0x1; the payload must be UTF-8.
    Text,
    /// Opcode 0x2.
    Binary,
}

fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    encode_parts(opcode, &[payload]).0
}

/// One frame whose payload is `parts` one after the other, in one
/// allocation; also returns where the payload starts in the frame.
fn encode_parts(opcode: OpCode, parts: &[&[u8]]) -> (Bytes, usize) {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let payload_len: usize = parts.iter().map(|p| p.len()).sum();
    let len = payload_len as u64;
    let head = header.len(len);
    let mut out = BytesMut::with_capacity(head + payload_len).writer();
    // Writing into memory cannot fail.
    let _ = header.format(len, &mut out);
    let mut out = out.into_inner();
    for part in parts {
        out.put_slice(part);
    }
    (out.freeze(), head)
}

fn data_opcode(kind: Kind) -> OpCode {
    OpCode::Data(match kind {
        Kind::Text => Data::Text,
        Kind::Binary => Data::Binary,
    })
}

/// A complete, unfragmented data frame.
///
/// ```
/// use ws2fcgi::frame::{data, Kind};
/// assert_eq!(&data(Kind::Text, b"hi")[..], b"\x81\x02hi");
/// ```
pub fn data(kind: Kind, payload: &[u8]) -> Bytes {
    encode(data_opcode(kind), payload)
}

/// A data frame whose payload is `parts` joined, and the index in the frame
/// where the payload starts.
///
/// ```
/// use ws2fcgi::frame::{data_parts, Kind};
/// let (frame, at) = data_parts(Kind::Text, &[b"a\n", b"hi"]);
/// assert_eq!(&frame[..], b"\x81\x04a\nhi");
/// assert_eq!(at, 2);
/// ```
pub fn data_parts(kind: Kind, parts: &[&[u8]]) -> (Bytes, usize) {
    encode_parts(data_opcode(kind), parts)
}

/// A close frame; `payload` is the 2-byte code and the reason.
pub fn close(payload: &[u8]) -> Bytes {
    encode(OpCode::Control(Control::Close), payload)
}

/// A ping with an empty payload.
pub fn ping() -> Bytes {
    encode(OpCode::Control(Control::Ping), b"")
}

/// A pong echoing a client's ping `payload` (at most 125 bytes).
///
/// ```
/// assert_eq!(&ws2fcgi::frame::pong(b"hi")[..], b"\x8a\x02hi");
/// ```
pub fn pong(payload: &[u8]) -> Bytes {
    encode(OpCode::Control(Control::Pong), payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_the_right_header_form() {
        assert_eq!(data(Kind::Binary, &[0; 125])[..2], [0x82, 125]);
        assert_eq!(data(Kind::Binary, &[0; 126])[..4], [0x82, 126, 0, 126]);
        let big = data(Kind::Binary, &vec![0; 70_000]);
        assert_eq!(big[..2], [0x82, 127]);
        assert_eq!(big.len(), 10 + 70_000);
    }

    #[test]
    fn ping_is_a_bare_control_frame() {
        assert_eq!(&ping()[..], b"\x89\x00");
    }
}
