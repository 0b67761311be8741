//! What a client sends after the handshake, frame by frame (RFC 6455 §5):
//! a pure, incremental decoder.
//!
//! [`Decoder::feed`] takes bytes as they come, in pieces of any size, and
//! gives back what the client said: a whole data message (fragments
//! gathered, text checked to be UTF-8), a ping, a pong or a close. What the
//! client is not allowed to send ends in a [`Fault`] with the close code it
//! earns:
//!
//! ```text
//! 1002  reserved bits, an unmasked frame, a reserved opcode, a fragmented or
//!       over-125-byte control frame, a continuation without a start, a new
//!       message inside a fragmented one, a close frame of 1 byte or with a
//!       code no peer may send
//! 1007  a text message or a close reason that is not UTF-8
//! 1009  a frame over `max_frame`, a message over `max_message`
//! ```
//!
//! Between messages the decoder holds no allocation: a message's payload is
//! gathered in a buffer made when its first frame starts, a control frame's
//! in one made for it. It never reads past the frame it is in when it gives
//! something back, so the caller can hand it bytes up to a frame's end
//! (`transport.rs` does) and keep the rest.
//!
//! permessage-deflate is not seen here: the read side inflates compressed
//! messages into plain frames before they reach the decoder (`deflate.rs`).

use bytes::{Bytes, BytesMut};

use crate::frame::Kind;

/// The longest frame header: 2 bytes, a 64-bit length, a 4-byte mask.
pub const MAX_HEAD: usize = 14;

/// The longest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL: u64 = 125;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The final frame of its message.
    pub fin: bool,
    /// The three reserved bits (RSV1 is `0b100`).
    pub rsv: u8,
    /// The opcode, 0 to 15.
    pub opcode: u8,
    /// The masking key (every client frame must have one).
    pub mask: Option<[u8; 4]>,
    /// The payload's length.
    pub len: u64,
    /// The header's own length in bytes, 2 to [`MAX_HEAD`].
    pub size: u8,
}

/// Parses the frame header at the start of `bytes`; `None` while it is
/// incomplete. Any header parses: what it says is judged by [`Decoder`].
///
/// ```
/// use ws2fcgi::client_frames::parse_head;
/// let head = parse_head(b"\x81\x82abcd").expect("a whole header");
/// assert_eq!((head.fin, head.opcode, head.len, head.size), (true, 1, 2, 6));
/// assert_eq!(head.mask, Some(*b"abcd"));
/// assert_eq!(parse_head(b"\x81"), None);
/// ```
pub fn parse_head(bytes: &[u8]) -> Option<Head> {
    let (&first, rest) = bytes.split_first()?;
    let (&second, rest) = rest.split_first()?;
    let (len, rest) = match second & 0x7f {
        126 => {
            let (len, rest) = rest.split_first_chunk::<2>()?;
            (u64::from(u16::from_be_bytes(*len)), rest)
        }
        127 => {
            let (len, rest) = rest.split_first_chunk::<8>()?;
            (u64::from_be_bytes(*len), rest)
        }
        short => (u64::from(short), rest),
    };
    let mask = if second & 0x80 != 0 {
        Some(*rest.first_chunk::<4>()?)
    } else {
        None
    };
    let size = bytes.len() - rest.len() + if mask.is_some() { 4 } else { 0 };
    Some(Head {
        fin: first & 0x80 != 0,
        rsv: (first >> 4) & 0x7,
        opcode: first & 0x0f,
        mask,
        len,
        // At most 14: the arithmetic above.
        size: u8::try_from(size).unwrap_or(u8::MAX),
    })
}

/// The sizes a client's frames and messages may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `websocket.max_frame_size`: the largest frame payload.
    pub max_frame: usize,
    /// `websocket.max_message_size`: the largest message, fragments gathered.
    pub max_message: usize,
}

/// What a client said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A whole data message (text is valid UTF-8).
    Message(Kind, Bytes),
    /// A ping, with its payload (the pong echoes it).
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame: its code and reason, if it had any.
    Close(Option<(u16, String)>),
}

/// Why the client's frames are refused: the close code and reason the
/// connection ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// 1002, 1007 or 1009.
    pub code: u16,
    /// Says what was wrong, for the close frame and PHP's close event.
    pub reason: &'static str,
}

const fn protocol(reason: &'static str) -> Fault {
    Fault { code: 1002, reason }
}

const TOO_BIG: Fault = Fault {
    code: 1009,
    reason: "message too big",
};

const NOT_UTF8: Fault = Fault {
    code: 1007,
    reason: "invalid UTF-8",
};

/// The frame being read, once its header is.
#[derive(Debug, Clone, Copy)]
struct Current {
    opcode: u8,
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes read so far (the mask's phase).
    read: u64,
    /// Payload bytes still to come.
    left: u64,
}

/// A client's frames, decoded as their bytes come (see the module doc).
/// Between messages it holds no allocation and is one pointer large.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Where it is inside a frame or a message; `None` at a message's
    /// boundary, so that an idle connection holds one pointer here.
    state: Option<Box<State>>,
}

impl Decoder {
    /// Reads what it can of `input`: returns how many bytes it took and,
    /// when a message, a control frame or a fault is complete, that. It
    /// stops at the end of the frame it gives back; otherwise it takes all
    /// of `input`. After a fault it takes nothing and repeats the fault.
    pub fn feed(
        &mut self,
        input: &[u8],
        limits: Limits,
    ) -> (usize, Option<Result<Incoming, Fault>>) {
        match self.state.as_mut() {
            Some(state) => {
                let out = state.feed(input, limits);
                if state.is_clean() {
                    self.state = None;
                }
                out
            }
            None => {
                // A whole message in one piece needs no state kept.
                let mut state = State::default();
                let out = state.feed(input, limits);
                if !state.is_clean() {
                    self.state = Some(Box::new(state));
                }
                out
            }
        }
    }

    /// Is the decoder inside a frame or a fragmented message?
    pub fn is_mid_message(&self) -> bool {
        self.state.is_some()
    }
}

/// What a [`Decoder`] is in the middle of.
#[derive(Debug, Default)]
struct State {
    /// A header that arrived in part.
    head: [u8; MAX_HEAD],
    head_len: u8,
    /// The data message being gathered was text.
    text: bool,
    /// The client broke the protocol: everything after is refused.
    fault: Option<Fault>,
    frame: Option<Current>,
    /// The data message being gathered; `None` between messages.
    message: Option<BytesMut>,
    /// The control frame being read (at most 125 bytes); empty otherwise.
    control: Vec<u8>,
}

impl State {
    /// [`Decoder::feed`].
    fn feed(&mut self, input: &[u8], limits: Limits) -> (usize, Option<Result<Incoming, Fault>>) {
        if let Some(fault) = self.fault {
            return (0, Some(Err(fault)));
        }
        let mut used = 0;
        loop {
            let current = match self.frame {
                Some(current) => current,
                None => {
                    let have = usize::from(self.head_len);
                    let take = (MAX_HEAD - have).min(input.len() - used);
                    self.head[have..have + take].copy_from_slice(&input[used..used + take]);
                    let Some(head) = parse_head(&self.head[..have + take]) else {
                        // take < MAX_HEAD - have: all of the input is taken.
                        self.head_len += take as u8;
                        return (input.len(), None);
                    };
                    used += usize::from(head.size) - have;
                    self.head_len = 0;
                    match self.start(&head, limits) {
                        Ok(current) => current,
                        Err(fault) => return (used, Some(Err(self.fail(fault)))),
                    }
                }
            };
            let n = usize::try_from(current.left)
                .map_or(input.len() - used, |left| left.min(input.len() - used));
            let chunk = &input[used..used + n];
            if current.opcode >= 8 {
                unmask_into(&mut self.control, chunk, current.mask, current.read);
            } else if let Some(message) = self.message.as_mut() {
                // Made in `start` for every data frame.
                unmask_into(message, chunk, current.mask, current.read);
            }
            used += n;
            let current = Current {
                read: current.read + n as u64,
                left: current.left - n as u64,
                ..current
            };
            if current.left > 0 {
                self.frame = Some(current);
                return (used, None);
            }
            self.frame = None;
            if let Some(done) = self.finish(current) {
                return (used, Some(done.map_err(|fault| self.fail(fault))));
            }
            if used == input.len() {
                return (used, None);
            }
        }
    }

    /// Nothing begun, nothing refused: nothing to keep.
    fn is_clean(&self) -> bool {
        self.head_len == 0 && self.frame.is_none() && self.message.is_none() && self.fault.is_none()
    }

    fn fail(&mut self, fault: Fault) -> Fault {
        self.fault = Some(fault);
        self.message = None;
        self.control = Vec::new();
        fault
    }

    /// Judges a frame's header and makes room for its payload.
    fn start(&mut self, head: &Head, limits: Limits) -> Result<Current, Fault> {
        if head.rsv != 0 {
            return Err(protocol("reserved bits set"));
        }
        let Some(mask) = head.mask else {
            return Err(protocol("unmasked frame from a client"));
        };
        match head.opcode {
            0..=2 => {
                if head.len > limits.max_frame as u64 {
                    return Err(TOO_BIG);
                }
                // Fits in memory: at most max_frame.
                let len = head.len as usize;
                match (head.opcode, self.message.as_mut()) {
                    (0, None) => return Err(protocol("continuation without a start")),
                    (0, Some(message)) => {
                        if message.len().saturating_add(len) > limits.max_message {
                            return Err(TOO_BIG);
                        }
                        message.reserve(len);
                    }
                    (_, Some(_)) => return Err(protocol("new message inside a fragmented one")),
                    (opcode, None) => {
                        if len > limits.max_message {
                            return Err(TOO_BIG);
                        }
                        self.text = opcode == 1;
                        self.message = Some(BytesMut::with_capacity(len));
                    }
                }
            }
            8..=10 => {
                if !head.fin {
                    return Err(protocol("fragmented control frame"));
                }
                if head.len > MAX_CONTROL {
                    return Err(protocol("control frame too long"));
                }
                self.control = Vec::with_capacity(head.len as usize);
            }
            _ => return Err(protocol("reserved opcode")),
        }
        Ok(Current {
            opcode: head.opcode,
            fin: head.fin,
            mask,
            read: 0,
            left: head.len,
        })
    }

    /// A frame's payload is complete: what it completes, if anything.
    fn finish(&mut self, frame: Current) -> Option<Result<Incoming, Fault>> {
        match frame.opcode {
            8 => Some(close(&std::mem::take(&mut self.control))),
            9 => Some(Ok(Incoming::Ping(Bytes::from(std::mem::take(
                &mut self.control,
            ))))),
            10 => {
                self.control = Vec::new();
                Some(Ok(Incoming::Pong))
            }
            _ if !frame.fin => None,
            _ => {
                let data = self.message.take()?.freeze();
                if self.text {
                    if std::str::from_utf8(&data).is_err() {
                        return Some(Err(NOT_UTF8));
                    }
                    Some(Ok(Incoming::Message(Kind::Text, data)))
                } else {
                    Some(Ok(Incoming::Message(Kind::Binary, data)))
                }
            }
        }
    }
}

/// A close frame's payload: none, or a code a peer may send and a UTF-8 reason.
fn close(payload: &[u8]) -> Result<Incoming, Fault> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return if payload.is_empty() {
            Ok(Incoming::Close(None))
        } else {
            Err(protocol("close frame of one byte"))
        };
    };
    let code = u16::from_be_bytes(*code);
    if !may_send(code) {
        return Err(protocol("close code not allowed"));
    }
    let reason = std::str::from_utf8(reason).map_err(|_| NOT_UTF8)?;
    Ok(Incoming::Close(Some((code, reason.to_owned()))))
}

/// Close codes a peer may put in a close frame (RFC 6455 §7.4, and the
/// IANA registry: 1012–1014 are registered since).
fn may_send(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Appends `chunk` unmasked; `at` is its offset in the frame's payload.
fn unmask_into<B>(target: &mut B, chunk: &[u8], mask: [u8; 4], at: u64)
where
    B: Extend<u8> + AsMut<[u8]>,
{
    let start = target.as_mut().len();
    target.extend(chunk.iter().copied());
    let mut mask = mask;
    mask.rotate_left((at % 4) as usize);
    let tail = &mut target.as_mut()[start..];
    let mut words = tail.chunks_exact_mut(4);
    for word in &mut words {
        for (byte, key) in word.iter_mut().zip(mask) {
            *byte ^= key;
        }
    }
    for (byte, key) in words.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

/// Everything `wire` decodes to when fed in pieces of at most `step` bytes,
/// up to and including the first fault, checking the decoder's promises on
/// the way: it takes all of a piece that completes nothing, a message is
/// within `limits` and text is UTF-8, nothing is left mid-message after a
/// message, and a fault is final. Panics when one is broken.
///
/// Shared by the unit tests and the fuzz target; not part of the API.
#[doc(hidden)]
pub fn decode_in_pieces(wire: &[u8], step: usize, limits: Limits) -> Vec<Result<Incoming, Fault>> {
    let step = step.max(1);
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let end = (at + step).min(wire.len());
        let (used, got) = decoder.feed(&wire[at..end], limits);
        let piece = end - at;
        assert!(used <= piece, "used {used} of a piece of {piece}");
        at += used;
        match got {
            Some(Err(fault)) => {
                assert!(matches!(fault.code, 1002 | 1007 | 1009));
                assert_eq!(decoder.feed(&wire[at..], limits), (0, Some(Err(fault))));
                out.push(Err(fault));
                break;
            }
            Some(Ok(incoming)) => {
                match &incoming {
                    Incoming::Message(kind, data) => {
                        assert!(data.len() <= limits.max_message);
                        if *kind == Kind::Text {
                            assert!(std::str::from_utf8(data).is_ok());
                        }
                        assert!(!decoder.is_mid_message());
                    }
                    Incoming::Ping(data) => assert!(data.len() <= 125),
                    Incoming::Pong | Incoming::Close(_) => {}
                }
                out.push(Ok(incoming));
            }
            None => assert_eq!(used, piece, "takes all of a piece that completes nothing"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_frame: 1 << 16,
        max_message: 1 << 17,
    };

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend((n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend((n as u64).to_be_bytes());
            }
        }
        out.extend(mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// Feeds `wire` in pieces of `step` bytes; everything that came out.
    fn decode(wire: &[u8], step: usize) -> Vec<Result<Incoming, Fault>> {
        decode_in_pieces(wire, step, LIMITS)
    }

    fn text(s: &str) -> Result<Incoming, Fault> {
        Ok(Incoming::Message(
            Kind::Text,
            Bytes::copy_from_slice(s.as_bytes()),
        ))
    }

    #[test]
    fn messages_come_out_whole_however_the_bytes_are_cut() {
        let long = "x".repeat(40_000);
        let mut wire = frame(true, 1, b"hello");
        wire.extend(frame(false, 2, b"bin"));
        wire.extend(frame(true, 9, b"ping!"));
        wire.extend(frame(true, 0, b"ary"));
        wire.extend(frame(false, 1, &long.as_bytes()[..300]));
        wire.extend(frame(true, 0, &long.as_bytes()[300..]));
        wire.extend(frame(true, 10, b""));
        wire.extend(frame(true, 1, b""));
        wire.extend(frame(true, 8, b"\x03\xe8bye"));
        for step in [1, 2, 3, 5, 13, 14, 100, wire.len()] {
            assert_eq!(
                decode(&wire, step),
                vec![
                    text("hello"),
                    Ok(Incoming::Ping(Bytes::from_static(b"ping!"))),
                    Ok(Incoming::Message(
                        Kind::Binary,
                        Bytes::from_static(b"binary")
                    )),
                    text(&long),
                    Ok(Incoming::Pong),
                    text(""),
                    Ok(Incoming::Close(Some((1000, "bye".into())))),
                ],
                "in steps of {step}"
            );
        }
    }

    #[test]
    fn it_stops_at_the_end_of_the_frame_it_gives_back() {
        let mut wire = frame(true, 2, b"one");
        let first = wire.len();
        wire.extend(frame(true, 2, b"two"));
        let mut decoder = Decoder::default();
        let (used, got) = decoder.feed(&wire, LIMITS);
        assert_eq!(used, first);
        assert!(matches!(got, Some(Ok(Incoming::Message(Kind::Binary, _)))));
        assert!(!decoder.is_mid_message());
        let (used, _) = decoder.feed(&wire[first..first + 4], LIMITS);
        assert_eq!(used, 4);
        assert!(decoder.is_mid_message());
    }

    #[test]
    fn what_a_client_may_not_send_gets_its_close_code() {
        let mut unmasked = frame(true, 1, b"hi");
        unmasked[1] &= 0x7f;
        unmasked.truncate(2);
        unmasked.extend(b"hi");
        let mut rsv = frame(true, 1, b"x");
        rsv[0] |= 0x40;
        let mut huge = vec![0x82, 0xff];
        huge.extend((1u64 << 63).to_be_bytes());
        huge.extend([1, 2, 3, 4]);
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("invalid UTF-8", frame(true, 1, b"ok \xff"), 1007),
            (
                "invalid UTF-8 across fragments",
                [frame(false, 1, b"\xe2\x82"), frame(true, 0, b"\x28")].concat(),
                1007,
            ),
            ("reserved data opcode", frame(true, 3, b"x"), 1002),
            ("reserved control opcode", frame(true, 0xb, b""), 1002),
            ("unmasked", unmasked, 1002),
            ("fragmented ping", frame(false, 9, b"p"), 1002),
            ("long ping", frame(true, 9, &[b'p'; 126]), 1002),
            ("continuation without a start", frame(true, 0, b"x"), 1002),
            (
                "new message inside a fragmented one",
                [frame(false, 1, b"a"), frame(true, 1, b"b")].concat(),
                1002,
            ),
            ("RSV1", rsv, 1002),
            ("a length of 2^63", huge, 1009),
            (
                "a frame over max_frame",
                frame(true, 2, &[0; (1 << 16) + 1]),
                1009,
            ),
            (
                "a message over max_message",
                [
                    frame(false, 2, &[0; 1 << 16]),
                    frame(false, 0, &[0; 1 << 16]),
                    frame(true, 0, b"!"),
                ]
                .concat(),
                1009,
            ),
            ("close of one byte", frame(true, 8, b"\x03"), 1002),
            ("close code 1005", frame(true, 8, b"\x03\xed"), 1002),
            ("close code 999", frame(true, 8, b"\x03\xe7"), 1002),
            (
                "close reason not UTF-8",
                frame(true, 8, b"\x03\xe8\xff"),
                1007,
            ),
        ];
        for (what, wire, code) in cases {
            for step in [1, 7, wire.len()] {
                let got = decode(&wire, step);
                match got.last() {
                    Some(Err(fault)) => assert_eq!(fault.code, code, "{what}, steps of {step}"),
                    other => panic!("{what}, steps of {step}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_fault_is_final() {
        let mut decoder = Decoder::default();
        let (_, got) = decoder.feed(&frame(true, 3, b""), LIMITS);
        assert_eq!(got.unwrap().unwrap_err().code, 1002);
        let (used, got) = decoder.feed(&frame(true, 1, b"ok"), LIMITS);
        assert_eq!(used, 0);
        assert_eq!(got.unwrap().unwrap_err().code, 1002);
    }

    #[test]
    fn an_empty_close_and_allowed_codes() {
        assert_eq!(
            decode(&frame(true, 8, b""), 1),
            vec![Ok(Incoming::Close(None))]
        );
        for code in [1000u16, 1003, 1007, 1011, 1012, 3000, 4999] {
            let payload = code.to_be_bytes();
            assert_eq!(
                decode(&frame(true, 8, &payload), 3),
                vec![Ok(Incoming::Close(Some((code, String::new()))))],
                "{code}"
            );
        }
    }

    #[test]
    fn nothing_is_held_between_messages() {
        let mut decoder = Decoder::default();
        let _ = decoder.feed(&frame(true, 1, b"hello"), LIMITS);
        assert!(decoder.state.is_none());
        let _ = decoder.feed(&frame(true, 9, b"ping"), LIMITS);
        assert!(decoder.state.is_none());
        let _ = decoder.feed(&frame(false, 1, b"hel"), LIMITS);
        assert!(decoder.is_mid_message());
        let _ = decoder.feed(&frame(true, 0, b"lo"), LIMITS);
        assert!(decoder.state.is_none());
    }
}
