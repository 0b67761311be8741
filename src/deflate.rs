//! permessage-deflate (RFC 7692): the offer a client makes in its handshake,
//! compressed frames towards clients, and compressed messages from them.
//!
//! The daemon always answers with `server_no_context_takeover` and
//! `client_no_context_takeover`: every message is compressed on its own, so
//!
//! - one compressed frame is valid for every client that negotiated the
//!   extension: a publication is compressed **once** and the frame shared by
//!   all its members, as the plain frame is (see `v1.rs`'s `Publication`);
//! - no compressor or decompressor lives between messages: an idle
//!   connection holds none. A message from a client is inflated while it
//!   arrives ([`Inflating`], in the read side, `transport.rs`), with a
//!   window of the size the client announced (`client_max_window_bits`),
//!   and the inflater is dropped at its end.
//!
//! ```text
//! client:  Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits
//! daemon:  Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover
//! ```
//!
//! An offer with a parameter this module does not know, a value out of
//! range, a parameter given twice, or a `server_max_window_bits` below 15
//! (the shared frame is compressed with one window for everyone) is
//! declined: the next offer is tried, and with none left the connection
//! goes on uncompressed (RFC 7692 §5, §7.1).

use std::cell::RefCell;
use std::sync::atomic::AtomicU64;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use prometheus_client::metrics::counter::Counter;
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::frame::Kind;

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// What a sender strips from the end of every compressed message and the
/// receiver puts back (RFC 7692 §7.2.1, §7.2.2): an empty stored block.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// zlib's compression level for every message. 6 (zlib's default) costs
/// little more than 1 on chat-sized messages and shrinks them more (see
/// docs/performance.md); a publication is compressed once, whatever the
/// number of members.
const LEVEL: u32 = 6;

/// Compressed frames towards clients use the largest window.
const SERVER_WINDOW_BITS: u8 = 15;

/// The most a server frame's header takes (2 + 8 bytes of length).
const MAX_HEAD: usize = 10;

/// Compressed bytes unmasked and inflated per step, on the stack.
const INPUT_STEP: usize = 4096;

/// Inflated bytes handed to the decoder per frame it is given.
pub const OUTPUT_STEP: usize = 16 * 1024;

/// What one inflater costs while a compressed message arrives (zlib-rs's
/// state and its window), charged to the inbound budget with the message.
pub fn inflater_cost(window_bits: u8) -> usize {
    8 * 1024 + (1usize << window_bits)
}

/// The extension as agreed with one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    /// The window the client compresses with at most (log2), for its inflater.
    pub client_window_bits: u8,
    /// The `Sec-WebSocket-Extensions` value to answer with.
    pub response: String,
}

/// The first acceptable permessage-deflate offer among the values of the
/// client's `Sec-WebSocket-Extensions` headers, if any.
///
/// ```
/// let a = ws2fcgi::deflate::negotiate(["x-foo, permessage-deflate; client_max_window_bits=10"].into_iter()).unwrap();
/// assert_eq!(a.client_window_bits, 10);
/// assert_eq!(a.response, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10");
/// assert!(ws2fcgi::deflate::negotiate(["permessage-deflate; bogus"].into_iter()).is_none());
/// ```
pub fn negotiate<'h>(headers: impl Iterator<Item = &'h str>) -> Option<Agreement> {
    headers
        .flat_map(|v| v.split(','))
        .find_map(|offer| accept(offer.trim()))
}

/// One offer (`name; param; param=value`), accepted or declined.
fn accept(offer: &str) -> Option<Agreement> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut client_bits: Option<Option<u8>> = None;
    let mut server_bits = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            return None;
        }
        seen.push(name);
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("client_max_window_bits", None) => client_bits = Some(None),
            ("client_max_window_bits", Some(v)) => client_bits = Some(Some(window_bits(v)?)),
            ("server_max_window_bits", Some(v)) => server_bits = Some(window_bits(v)?),
            _ => return None,
        }
    }
    // The shared frame is compressed with one window: a smaller one is declined.
    if server_bits.is_some_and(|b| b < SERVER_WINDOW_BITS) {
        return None;
    }
    let mut response =
        format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
    if server_bits.is_some() {
        response.push_str("; server_max_window_bits=15");
    }
    let client_window_bits = match client_bits {
        Some(Some(bits)) => {
            response.push_str(&format!("; client_max_window_bits={bits}"));
            bits
        }
        _ => 15,
    };
    Some(Agreement {
        // zlib's smallest inflate window is 2^9; it reads 2^8 streams too.
        client_window_bits: client_window_bits.max(9),
        response,
    })
}

/// A window size parameter: 8 to 15, digits only.
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|b| (8..=15).contains(b))
}

/// Compression's counters (`ws2fcgi_compression_*` in the metrics).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Messages compressed (a publication counts once, whatever its members).
    pub compressions: Counter,
    /// Payload bytes before compression.
    pub bytes_in: Counter,
    /// Payload bytes after compression.
    pub bytes_out: Counter,
    /// CPU time spent compressing, in seconds.
    pub cpu_seconds: Counter<f64, AtomicU64>,
    /// Compressed messages received from clients (inflated).
    pub inflated_messages: Counter,
}

thread_local! {
    /// Each thread's compressor, reset before every message (no context
    /// takeover), so its tables are allocated once per thread, not per message.
    static COMPRESSOR: RefCell<Option<Compress>> = const { RefCell::new(None) };
}

/// A compressed data frame (RSV1 set) whose message is `parts` joined.
///
/// ```
/// use ws2fcgi::frame::Kind;
/// let stats = ws2fcgi::deflate::Stats::default();
/// let frame = ws2fcgi::deflate::frame(Kind::Text, &[b"Hello"], &stats);
/// // RFC 7692 §7.2.3.1: "Hello", compressed without context takeover.
/// assert_eq!(&frame[..], b"\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00");
/// assert_eq!(stats.compressions.get(), 1);
/// ```
pub fn frame(kind: Kind, parts: &[&[u8]], stats: &Stats) -> Bytes {
    let started = thread_cpu();
    let total: usize = parts.iter().map(|p| p.len()).sum();
    // Room for the longest header in front, filled in once the length is known.
    let mut out = Vec::with_capacity(MAX_HEAD + total / 2 + 64);
    out.resize(MAX_HEAD, 0);
    COMPRESSOR.with_borrow_mut(|slot| {
        let c = slot.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(LEVEL), false, SERVER_WINDOW_BITS)
        });
        c.reset();
        let last = parts.len().saturating_sub(1);
        for (i, part) in parts.iter().enumerate() {
            let flush = if i == last {
                FlushCompress::Sync
            } else {
                FlushCompress::None
            };
            deflate_into(c, part, &mut out, flush);
        }
        if parts.is_empty() {
            deflate_into(c, &[], &mut out, FlushCompress::Sync);
        }
    });
    if out[MAX_HEAD..].ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    let payload = (out.len() - MAX_HEAD) as u64;
    let header = FrameHeader {
        rsv1: true,
        opcode: data_opcode(kind),
        ..FrameHeader::default()
    };
    let head = header.len(payload);
    let start = MAX_HEAD - head;
    // Writing into memory cannot fail.
    let _ = header.format(payload, &mut &mut out[start..MAX_HEAD]);
    stats.compressions.inc();
    stats.bytes_in.inc_by(total as u64);
    stats.bytes_out.inc_by(payload);
    stats.cpu_seconds.inc_by((thread_cpu() - started).max(0.0));
    Bytes::from(out).slice(start..)
}

/// Compresses all of `input` onto the end of `out`, growing it as needed.
fn deflate_into(c: &mut Compress, mut input: &[u8], out: &mut Vec<u8>, flush: FlushCompress) {
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(input.len() / 2 + 256);
        }
        let before = c.total_in();
        // A compressor error means a bug here; what was written stays.
        if c.compress_vec(input, out, flush).is_err() {
            return;
        }
        let took = (c.total_in() - before) as usize;
        input = &input[took..];
        // Done when all input is in and the flush did not fill the room.
        if input.is_empty() && out.len() < out.capacity() {
            return;
        }
    }
}

/// This thread's CPU time in seconds (0 where it cannot be read).
fn thread_cpu() -> f64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
        .unwrap_or(0.0)
}

fn data_opcode(kind: Kind) -> OpCode {
    OpCode::Data(match kind {
        Kind::Text => Data::Text,
        Kind::Binary => Data::Binary,
    })
}

/// Why a compressed message from a client was refused: the close code and
/// reason the connection closes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The close code.
    pub code: u16,
    /// The close reason.
    pub reason: &'static str,
}

impl Fault {
    const TOO_BIG: Self = Self {
        code: crate::contract::CLOSE_TOO_BIG,
        reason: "message too big",
    };
    const CORRUPT: Self = Self {
        code: crate::contract::CLOSE_PROTOCOL_ERROR,
        reason: "invalid compressed data",
    };
    const NOT_CONTINUATION: Self = Self {
        code: crate::contract::CLOSE_PROTOCOL_ERROR,
        reason: "expected a continuation frame of the compressed message",
    };
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason)
    }
}

impl std::error::Error for Fault {}

/// What a connection that negotiated the extension needs to inflate its
/// client's messages.
#[derive(Debug, Clone, Copy)]
pub struct Inbound {
    /// The window the client compresses with at most (log2).
    pub window_bits: u8,
    /// Largest message, inflated: inflating stops one byte past it.
    pub max_message: usize,
    /// Largest compressed frame on the wire.
    pub max_frame: usize,
}

/// What the client's next frame is, for a connection that negotiated the
/// extension: `Some` when it begins a compressed message (RSV1 on a masked
/// text or binary frame), with its header's length and its payload's.
pub fn starts_compressed(pending: &[u8]) -> Option<(FrameHeader, usize, u64)> {
    let mut cursor = std::io::Cursor::new(pending);
    let (header, payload) = FrameHeader::parse(&mut cursor).ok()??;
    let compressed = header.rsv1
        && !header.rsv2
        && !header.rsv3
        && header.mask.is_some()
        && matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
    compressed.then(|| (header, cursor.position() as usize, payload))
}

/// What [`Inflating::step`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Frames for the decoder wait in [`Inflating::output`], holding this
    /// many inflated bytes (to charge).
    Ready(usize),
    /// More bytes from the socket are needed.
    NeedInput,
    /// A control frame comes next, between two frames of the message: it
    /// goes to the decoder as it is.
    Control,
}

/// A compressed message on its way in, from its first frame's header to its
/// end. The decoder is handed it as plain frames (RSV1 clear, masked with a
/// zero key), one per [`OUTPUT_STEP`] inflated bytes at most, then an empty
/// final frame: it assembles and checks them like any fragmented message,
/// UTF-8 and `max_message_size` included. Dropped at the message's end.
pub struct Inflating {
    inflater: Decompress,
    kind: Data,
    /// Payload bytes of the current wire frame not read yet.
    frame_left: u64,
    mask: [u8; 4],
    /// Where in the mask the next payload byte is.
    mask_at: usize,
    /// The current wire frame is the message's last.
    fin: bool,
    /// Bytes of [`TAIL`] inflated so far, once the last frame is read.
    tail_at: usize,
    /// The first frame was handed to the decoder (later ones are continuations).
    opened: bool,
    /// The client's deflate stream ended (BFINAL): the rest is ignored.
    ended: bool,
    /// The final frame is in `output`.
    finished: bool,
    /// Inflated so far.
    inflated: usize,
    /// Largest message, inflated.
    max_message: usize,
    /// Largest wire frame.
    max_frame: usize,
    /// Frames for the decoder, not taken yet.
    output: BytesMut,
    /// Why the message was refused, once it was; it stays refused.
    pub fault: Option<Fault>,
}

impl Inflating {
    /// A message whose first frame's header (`payload` bytes follow) was
    /// read with [`starts_compressed`].
    pub fn start(header: &FrameHeader, payload: u64, limits: Inbound) -> Box<Self> {
        let Inbound {
            window_bits,
            max_message,
            max_frame,
        } = limits;
        let kind = match header.opcode {
            OpCode::Data(Data::Binary) => Data::Binary,
            _ => Data::Text,
        };
        Box::new(Self {
            inflater: Decompress::new_with_window_bits(false, window_bits.clamp(9, 15)),
            kind,
            frame_left: payload,
            mask: header.mask.unwrap_or_default(),
            mask_at: 0,
            fin: header.is_final,
            tail_at: 0,
            opened: false,
            ended: false,
            finished: false,
            inflated: 0,
            max_message,
            max_frame,
            output: BytesMut::new(),
            fault: None,
        })
    }

    /// Frames waiting for the decoder.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.output
    }

    /// The final frame has been produced and taken: the message is done here.
    pub fn is_done(&self) -> bool {
        self.finished && self.output.is_empty()
    }

    /// Reads what it can of `pending` (the socket's bytes), inflating at
    /// most `room` bytes (at least one) into frames for the decoder.
    pub fn step(&mut self, pending: &mut BytesMut, room: usize) -> Result<Step, Fault> {
        if self.frame_left > self.max_frame as u64 {
            return Err(Fault::TOO_BIG);
        }
        loop {
            if self.finished {
                return Ok(Step::Ready(0));
            }
            if self.frame_left > 0 {
                if pending.is_empty() {
                    return Ok(Step::NeedInput);
                }
                let n = (self.frame_left.min(INPUT_STEP as u64) as usize).min(pending.len());
                let mut input = [0u8; INPUT_STEP];
                for (i, (dst, src)) in input[..n].iter_mut().zip(&pending[..n]).enumerate() {
                    *dst = src ^ self.mask[(self.mask_at + i) % 4];
                }
                if self.ended {
                    self.consumed(pending, n);
                    continue;
                }
                let (took, produced, _) = self.inflate(&input[..n], room)?;
                self.consumed(pending, took);
                if produced > 0 {
                    return Ok(Step::Ready(produced));
                }
                continue;
            }
            if self.fin {
                let (took, produced, full) = if self.ended {
                    (TAIL.len() - self.tail_at, 0, false)
                } else {
                    self.inflate(&TAIL[self.tail_at..], room)?
                };
                self.tail_at += took;
                if self.tail_at < TAIL.len() || full {
                    // Room ran out: more may come of the tail.
                    if produced > 0 {
                        return Ok(Step::Ready(produced));
                    }
                    continue;
                }
                // The message's end: an empty final frame.
                self.emit_header(true, 0);
                self.finished = true;
                return Ok(Step::Ready(produced));
            }
            // The next wire frame: a continuation of this message, or a control frame.
            let mut cursor = std::io::Cursor::new(&pending[..]);
            let Ok(Some((header, payload))) = FrameHeader::parse(&mut cursor) else {
                return match FrameHeader::parse(&mut std::io::Cursor::new(&pending[..])) {
                    Ok(None) => Ok(Step::NeedInput),
                    _ => Err(Fault::NOT_CONTINUATION),
                };
            };
            if matches!(header.opcode, OpCode::Control(_)) {
                return Ok(Step::Control);
            }
            let continues = header.opcode == OpCode::Data(Data::Continue)
                && !header.rsv1
                && !header.rsv2
                && !header.rsv3
                && header.mask.is_some();
            if !continues {
                return Err(Fault::NOT_CONTINUATION);
            }
            if payload > self.max_frame as u64 {
                return Err(Fault::TOO_BIG);
            }
            pending.advance(cursor.position() as usize);
            self.frame_left = payload;
            self.mask = header.mask.unwrap_or_default();
            self.mask_at = 0;
            self.fin = header.is_final;
        }
    }

    /// `n` payload bytes at the front of `pending` were read.
    fn consumed(&mut self, pending: &mut BytesMut, n: usize) {
        pending.advance(n);
        self.frame_left -= n as u64;
        self.mask_at = (self.mask_at + n) % 4;
    }

    /// Inflates what it can of `input` into one frame for the decoder;
    /// returns the input bytes taken, the bytes produced, and whether they
    /// filled the room (more may be pending inside the inflater).
    fn inflate(&mut self, input: &[u8], room: usize) -> Result<(usize, usize, bool), Fault> {
        // One byte past the limit is enough to know it is crossed.
        let left = self
            .max_message
            .saturating_add(1)
            .saturating_sub(self.inflated);
        let room = room.clamp(1, OUTPUT_STEP).min(left.max(1));
        let mut chunk = Vec::with_capacity(room);
        let before = self.inflater.total_in();
        let status = self
            .inflater
            .decompress_vec(input, &mut chunk, FlushDecompress::None)
            .map_err(|_| Fault::CORRUPT)?;
        if status == Status::StreamEnd {
            self.ended = true;
        }
        let took = (self.inflater.total_in() - before) as usize;
        self.inflated += chunk.len();
        if self.inflated > self.max_message {
            return Err(Fault::TOO_BIG);
        }
        if !chunk.is_empty() {
            self.emit_header(false, chunk.len());
            self.output.extend_from_slice(&chunk);
        }
        // Input left over with room to spare: the data is not deflate.
        if took == 0 && chunk.is_empty() && !input.is_empty() && !self.ended {
            return Err(Fault::CORRUPT);
        }
        Ok((took, chunk.len(), chunk.len() >= room))
    }

    /// A frame header for the decoder: the message's opcode first, then
    /// continuations; masked with a zero key (a server reads masked frames).
    fn emit_header(&mut self, fin: bool, len: usize) {
        let opcode = if self.opened {
            Data::Continue
        } else {
            self.kind
        };
        self.opened = true;
        let header = FrameHeader {
            is_final: fin,
            opcode: OpCode::Data(opcode),
            mask: Some([0; 4]),
            ..FrameHeader::default()
        };
        let mut w = (&mut self.output).writer();
        // Writing into memory cannot fail.
        let _ = header.format(len as u64, &mut w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate_frame(frame: &Bytes) -> Vec<u8> {
        let mut cursor = std::io::Cursor::new(&frame[..]);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        assert!(header.rsv1);
        let at = cursor.position() as usize;
        assert_eq!(frame.len() - at, len as usize);
        let mut d = Decompress::new(false);
        let mut input = frame[at..].to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .unwrap();
        out
    }

    #[test]
    fn frames_round_trip() {
        let stats = Stats::default();
        let big: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for parts in [
            &[&b"{\"c\":\"room\"}"[..], b"\n", b"hello hello hello"][..],
            &[&big[..]],
            &[b""],
        ] {
            let frame = frame(Kind::Binary, parts, &stats);
            assert_eq!(frame[0], 0xc2);
            assert_eq!(inflate_frame(&frame), parts.concat());
        }
        assert_eq!(stats.compressions.get(), 3);
        assert!(stats.bytes_out.get() < stats.bytes_in.get());
    }

    #[test]
    fn offers_are_accepted_or_declined() {
        let one = |s: &str| negotiate([s].into_iter());
        let plain = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        assert_eq!(one("permessage-deflate").unwrap().response, plain);
        assert_eq!(
            one("permessage-deflate; client_max_window_bits")
                .unwrap()
                .client_window_bits,
            15
        );
        assert_eq!(
            one("permessage-deflate; client_max_window_bits=\"8\"").unwrap(),
            Agreement {
                client_window_bits: 9,
                response: format!("{plain}; client_max_window_bits=8")
            }
        );
        assert_eq!(
            one("Permessage-Deflate; server_max_window_bits=15; server_no_context_takeover")
                .unwrap()
                .response,
            format!("{plain}; server_max_window_bits=15")
        );
        for bad in [
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; client_max_window_bits=+9",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; x-unknown",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(one(bad), None, "{bad}");
        }
        // The first acceptable offer wins.
        let a = negotiate(
            ["permessage-deflate; server_max_window_bits=9, permessage-deflate; client_max_window_bits=12"]
                .into_iter(),
        )
        .unwrap();
        assert_eq!(a.client_window_bits, 12);
    }

    /// A client's compressed frame: masked, RSV1 on the first only.
    fn client_frames(message: &[u8], split: usize, mask: [u8; 4]) -> BytesMut {
        let stats = Stats::default();
        let compressed = frame(Kind::Text, &[message], &stats);
        let mut cursor = std::io::Cursor::new(&compressed[..]);
        FrameHeader::parse(&mut cursor).unwrap().unwrap();
        let payload = &compressed[cursor.position() as usize..];
        let mut wire = BytesMut::new();
        let pieces: Vec<&[u8]> = if split == 0 {
            vec![payload]
        } else {
            payload.chunks(split).collect()
        };
        for (i, piece) in pieces.iter().enumerate() {
            let header = FrameHeader {
                is_final: i + 1 == pieces.len(),
                rsv1: i == 0,
                opcode: OpCode::Data(if i == 0 { Data::Text } else { Data::Continue }),
                mask: Some(mask),
                ..FrameHeader::default()
            };
            let mut w = (&mut wire).writer();
            header.format(piece.len() as u64, &mut w).unwrap();
            wire.extend(piece.iter().enumerate().map(|(j, b)| b ^ mask[j % 4]));
        }
        wire
    }

    /// Runs a message through [`Inflating`]; returns the plain frames' payload.
    fn run(mut wire: BytesMut, max_message: usize) -> Result<Vec<u8>, Fault> {
        let (header, head, payload) = starts_compressed(&wire).unwrap();
        wire.advance(head);
        let limits = Inbound {
            window_bits: 15,
            max_message,
            max_frame: 1 << 20,
        };
        let mut inf = Inflating::start(&header, payload, limits);
        let mut plain = Vec::new();
        let mut frames = 0;
        while !inf.is_done() {
            match inf.step(&mut wire, 1000)? {
                Step::Ready(_) => {}
                other => panic!("{other:?}"),
            }
            let out = inf.output().split();
            let mut cursor = std::io::Cursor::new(&out[..]);
            while let Some((h, len)) = FrameHeader::parse(&mut cursor).unwrap() {
                assert_eq!(h.mask, Some([0; 4]));
                assert!(!h.rsv1);
                assert_eq!(h.opcode == OpCode::Data(Data::Text), frames == 0);
                frames += 1;
                let at = cursor.position() as usize;
                plain.extend_from_slice(&out[at..at + len as usize]);
                cursor.set_position((at + len as usize) as u64);
                if h.is_final {
                    assert!(inf.is_done() || cursor.position() as usize == out.len());
                }
            }
        }
        assert!(wire.is_empty());
        Ok(plain)
    }

    #[test]
    fn client_messages_are_inflated_whole_or_in_fragments() {
        let message: Vec<u8> = b"{\"say\":\"hello\"} ".repeat(500);
        assert_eq!(
            run(client_frames(&message, 0, [1, 2, 3, 4]), 1 << 20).unwrap(),
            message
        );
        assert_eq!(
            run(client_frames(&message, 7, [9, 8, 7, 6]), 1 << 20).unwrap(),
            message
        );
        assert_eq!(run(client_frames(b"", 0, [1, 1, 1, 1]), 10).unwrap(), b"");
    }

    #[test]
    fn a_zip_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let wire = client_frames(&zeros, 0, [5, 5, 5, 5]);
        assert!(wire.len() < 20_000);
        assert_eq!(run(wire, 1 << 20), Err(Fault::TOO_BIG));
    }

    #[test]
    fn garbage_is_refused() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&[0xc1, 0x84, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(run(wire, 1000), Err(Fault::CORRUPT));
        // A new message in the middle of a compressed one.
        let mut wire = client_frames(b"hello hello", 3, [0; 4]);
        let mut second = client_frames(b"x", 0, [0; 4]);
        second[0] &= !0x40;
        let first_len = 2 + 4 + 3;
        let mut mixed = wire.split_to(first_len);
        mixed[0] &= !0x80; // not final
        mixed.extend_from_slice(&second);
        assert_eq!(run(mixed, 1000), Err(Fault::NOT_CONTINUATION));
    }
}
