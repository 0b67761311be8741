//! The channels' history as a SIGUSR2 handover passes it from the old
//! process to the new one (`[history]` in memory, a single node): a pure
//! encoder and decoder, so a client that reconnects to the new process
//! recovers what it missed in the old one, under the same epoch and offsets.
//!
//! Everything is big-endian; lengths are checked against what is left, so a
//! short or garbled buffer is an error, never a panic or a huge allocation.
//!
//! ```text
//! "ws2fcgi-history/1\n"
//! u32 channels
//!   per channel: u16 name length, name (UTF-8), u16 epoch length, epoch (UTF-8),
//!                u64 top offset, u64 ms since its last publication, u32 entries
//!     per entry: u64 offset, u8 kind (1 text, 2 binary), u64 age in ms,
//!                u32 where the data starts in the frame, u32 frame length,
//!                the frame (the `ws2fcgi.v1` WebSocket frame its members were sent)
//! ```
//!
//! Entries are oldest first and their offsets rise, none above the top.

use bytes::{Buf as _, Bytes};

use crate::frame::Kind;

/// The first bytes of an encoded history: the format and its version.
pub const MAGIC: &[u8] = b"ws2fcgi-history/1\n";

/// One channel's history record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The channel.
    pub channel: String,
    /// Its epoch.
    pub epoch: String,
    /// The offset of its last publication.
    pub top: u64,
    /// Milliseconds since its last publication (for `ttl`).
    pub idle_ms: u64,
    /// Its kept publications, oldest first.
    pub entries: Vec<Entry>,
}

/// One kept publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its offset in the channel's epoch.
    pub offset: u64,
    /// Text or binary.
    pub kind: Kind,
    /// Milliseconds since it was published.
    pub age_ms: u64,
    /// Where its data starts in `frame`.
    pub data_at: u32,
    /// Its `ws2fcgi.v1` frame.
    pub frame: Bytes,
}

/// Why an encoded history was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// It does not start with [`MAGIC`] (another format or version).
    #[error("not a ws2fcgi history of version 1")]
    Magic,
    /// It ends inside a field.
    #[error("cut short inside {0}")]
    Short(&'static str),
    /// A name or epoch is not UTF-8.
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    /// A kind other than text (1) or binary (2).
    #[error("unknown kind {0}")]
    Kind(u8),
    /// An entry's data would start past its frame's end.
    #[error("data starts at {0}, past the frame's {1} bytes")]
    DataAt(u32, usize),
    /// Offsets that do not rise, or one above the channel's top.
    #[error("offsets out of order in channel {0:?}")]
    Order(String),
    /// Bytes after the last channel.
    #[error("{0} bytes after the last channel")]
    Trailing(usize),
}

/// Encodes `records` as the handover sends them.
pub fn encode(records: &[Record]) -> Vec<u8> {
    let size: usize = records
        .iter()
        .map(|r| {
            34 + r.channel.len()
                + r.epoch.len()
                + r.entries.iter().map(|e| 29 + e.frame.len()).sum::<usize>()
        })
        .sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + size);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&len32(records.len()).to_be_bytes());
    for r in records {
        short_str(&mut out, &r.channel);
        short_str(&mut out, &r.epoch);
        out.extend_from_slice(&r.top.to_be_bytes());
        out.extend_from_slice(&r.idle_ms.to_be_bytes());
        out.extend_from_slice(&len32(r.entries.len()).to_be_bytes());
        for e in &r.entries {
            out.extend_from_slice(&e.offset.to_be_bytes());
            out.push(match e.kind {
                Kind::Text => 1,
                Kind::Binary => 2,
            });
            out.extend_from_slice(&e.age_ms.to_be_bytes());
            out.extend_from_slice(&e.data_at.to_be_bytes());
            out.extend_from_slice(&len32(e.frame.len()).to_be_bytes());
            out.extend_from_slice(&e.frame);
        }
    }
    out
}

/// Decodes what [`encode`] wrote; frames share `bytes`' buffer.
pub fn decode(bytes: Bytes) -> Result<Vec<Record>, DecodeError> {
    let mut buf = bytes;
    if !buf.starts_with(MAGIC) {
        return Err(DecodeError::Magic);
    }
    buf.advance(MAGIC.len());
    let channels = u32_of(&mut buf, "the channel count")?;
    // Each channel takes at least 34 bytes: never allocate past what is there.
    let mut records = Vec::with_capacity((channels as usize).min(buf.len() / 34));
    for _ in 0..channels {
        let channel = string(&mut buf, "a channel name")?;
        let epoch = string(&mut buf, "an epoch")?;
        let top = u64_of(&mut buf, "a top offset")?;
        let idle_ms = u64_of(&mut buf, "a channel's idle time")?;
        let count = u32_of(&mut buf, "an entry count")?;
        let mut entries: Vec<Entry> = Vec::with_capacity((count as usize).min(buf.len() / 29));
        for _ in 0..count {
            let offset = u64_of(&mut buf, "an offset")?;
            let kind = match take(&mut buf, 1, "a kind")?[0] {
                1 => Kind::Text,
                2 => Kind::Binary,
                other => return Err(DecodeError::Kind(other)),
            };
            let age_ms = u64_of(&mut buf, "an age")?;
            let data_at = u32_of(&mut buf, "a data start")?;
            let length = u32_of(&mut buf, "a frame length")? as usize;
            let frame = take(&mut buf, length, "a frame")?;
            if data_at as usize > frame.len() {
                return Err(DecodeError::DataAt(data_at, frame.len()));
            }
            if offset > top || entries.last().is_some_and(|last| last.offset >= offset) {
                return Err(DecodeError::Order(channel));
            }
            entries.push(Entry {
                offset,
                kind,
                age_ms,
                data_at,
                frame,
            });
        }
        records.push(Record {
            channel,
            epoch,
            top,
            idle_ms,
            entries,
        });
    }
    if !buf.is_empty() {
        return Err(DecodeError::Trailing(buf.len()));
    }
    Ok(records)
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Names and epochs are short; a longer one is cut at a character boundary
/// (a channel name is at most a few hundred bytes, see `contract.rs`).
fn short_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn take(buf: &mut Bytes, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
    if buf.len() < n {
        return Err(DecodeError::Short(what));
    }
    Ok(buf.split_to(n))
}

fn u32_of(buf: &mut Bytes, what: &'static str) -> Result<u32, DecodeError> {
    let b = take(buf, 4, what)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_of(buf: &mut Bytes, what: &'static str) -> Result<u64, DecodeError> {
    let b = take(buf, 8, what)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(&b);
    Ok(u64::from_be_bytes(a))
}

fn string(buf: &mut Bytes, what: &'static str) -> Result<String, DecodeError> {
    let b = take(buf, 2, what)?;
    let n = u16::from_be_bytes([b[0], b[1]]) as usize;
    let raw = take(buf, n, what)?;
    String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::Utf8(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record {
                channel: "room:1".into(),
                epoch: "00000000deadbeef".into(),
                top: 7,
                idle_ms: 12,
                entries: vec![
                    Entry {
                        offset: 6,
                        kind: Kind::Text,
                        age_ms: 40,
                        data_at: 3,
                        frame: Bytes::from_static(b"\x81\x05abcde"),
                    },
                    Entry {
                        offset: 7,
                        kind: Kind::Binary,
                        age_ms: 12,
                        data_at: 2,
                        frame: Bytes::from_static(b"\x82\x02\x00\xff"),
                    },
                ],
            },
            Record {
                channel: "empty:é".into(),
                epoch: "e".into(),
                top: 3,
                idle_ms: 0,
                entries: vec![],
            },
        ]
    }

    #[test]
    fn what_is_encoded_decodes_the_same() {
        let records = sample();
        let bytes = Bytes::from(encode(&records));
        assert_eq!(decode(bytes).unwrap(), records);
        let none = Bytes::from(encode(&[]));
        assert_eq!(decode(none).unwrap(), vec![]);
    }

    #[test]
    fn every_cut_short_buffer_is_an_error() {
        let full = encode(&sample());
        for end in 0..full.len() {
            let cut = Bytes::copy_from_slice(&full[..end]);
            assert!(decode(cut).is_err(), "cut at {end} of {}", full.len());
        }
    }

    #[test]
    fn garbage_is_refused_with_its_reason() {
        assert_eq!(
            decode(Bytes::from_static(b"HTTP/1.1 200 OK\r\n")),
            Err(DecodeError::Magic)
        );
        let mut trailing = encode(&sample());
        trailing.push(0);
        assert_eq!(decode(Bytes::from(trailing)), Err(DecodeError::Trailing(1)));
        let mut records = sample();
        records[0].entries.swap(0, 1);
        assert_eq!(
            decode(Bytes::from(encode(&records))),
            Err(DecodeError::Order("room:1".into()))
        );
        let mut records = sample();
        records[0].entries[0].data_at = 99;
        assert_eq!(
            decode(Bytes::from(encode(&records))),
            Err(DecodeError::DataAt(99, 7))
        );
        // A count far beyond the buffer is an error, not an allocation.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decode(Bytes::from(huge)),
            Err(DecodeError::Short("a channel name"))
        );
    }
}
