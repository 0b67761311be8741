//! A client's socket after the upgrade: read for frames, written from the
//! outbox, by the connection's one task.
//!
//! The [`Socket`] is held once, by the [`Writer`] (whose end detaches the
//! outbox from it before it closes), not split into two halves behind a
//! shared `Arc`: the connection's loop polls reading and writing in turn
//! and lends the socket to the reading side for each poll.
//!
//! [`ReadSide`] reads the socket and decodes what the client sends
//! (`client_frames.rs`) into messages, pings and closes; the connection
//! answers pings and closes through its outbox. Every byte towards the
//! client goes through the outbox: [`Writer`] sends what it queued —
//! pre-encoded frames, shared between all recipients of a publish — with
//! vectored writes, and while nothing is queued the outbox may send a frame
//! itself (see `outbox.rs`). Reading and writing never wait for each other.
//!
//! Memory of an idle connection is the budget here. [`ReadSide`] reads the
//! socket into a buffer that exists only while bytes wait for the decoder
//! (freed as soon as they are taken), and hands the decoder at most the rest
//! of the current frame; the decoder holds nothing between messages.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::num::NonZeroU8;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_util::io::poll_read_buf;

use crate::client_frames::{self, Decoder, Head, Incoming, Limits};
use crate::deflate::{self, Fault, Inflating, Step};
use crate::gateway::replay::Replay;
use crate::hub::ConnHandle;
use crate::inbound::{Charge, Intake};
use crate::outbox::{Outbox, Signal};

/// Frames written per `sendmsg` (or `writev`, over TLS) at most.
const MAX_IOVECS: usize = 64;

/// The first read after a quiet spell goes onto the stack, this large.
pub const STACK_READ: usize = 4096;

/// Bytes handed to the decoder per step at most (a buffer on the stack).
const DECODE_STEP: usize = 4096;

/// A client socket on a `tls://` listener, its handshake done.
pub type TlsSocket = tokio_rustls::server::TlsStream<TcpStream>;

/// A client socket after the upgrade.
pub enum Socket {
    /// TCP.
    Tcp(TcpStream),
    /// Unix stream socket.
    Unix(UnixStream),
    /// TLS over TCP. Boxed: the session is large, and plain sockets are
    /// the many. rustls may keep encrypted bytes the socket did not take:
    /// the writer flushes them before it writes more or waits.
    Tls(Box<TlsSocket>),
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            Self::Unix(r) => Pin::new(r).poll_read(cx, buf),
            Self::Tls(r) => Pin::new(&mut **r).poll_read(cx, buf),
        }
    }
}

/// Where frames begin and end in the bytes handed to the decoder, and which
/// of them it goes on to hold (see [`FrameGate::weight`]).
#[derive(Debug, Default)]
struct FrameGate {
    /// Bytes left of the current frame, header included; 0 at a frame boundary.
    left: u64,
    /// Of those, header bytes.
    head_left: u8,
    /// What the decoder keeps of each payload byte of the current frame.
    weight: u8,
    /// The socket ended inside a header: hand everything over.
    passthrough: bool,
    /// permessage-deflate was negotiated: the window (log2) the client
    /// compresses with. Compressed messages are inflated between `pending`
    /// and the decoder (see `deflate.rs`). Kept here, in padding: free.
    inflate_window: Option<NonZeroU8>,
    /// With it, `websocket.max_frame_size` (at most `u32::MAX`): the largest
    /// compressed frame, and of the inflated frames handed to the decoder.
    /// In padding too.
    inflate_max_frame: u32,
}

impl FrameGate {
    /// How many bytes at the front of `pending` may go to the decoder now;
    /// `None` while the next frame's header is incomplete.
    fn allowance(&mut self, pending: &[u8]) -> Option<usize> {
        if self.passthrough {
            return Some(pending.len());
        }
        if self.left == 0 {
            let head = client_frames::parse_head(pending)?;
            self.left = u64::from(head.size).saturating_add(head.len);
            self.head_left = head.size;
            self.weight = weigh(&head);
        }
        Some(usize::try_from(self.left).map_or(pending.len(), |left| left.min(pending.len())))
    }

    /// What the decoder keeps of each payload byte of the current frame.
    fn weight(&self) -> usize {
        if self.passthrough {
            0
        } else {
            usize::from(self.weight)
        }
    }

    /// Payload bytes among the next `n` bytes of the current frame.
    fn payload_in(&self, n: usize) -> usize {
        n.saturating_sub(usize::from(self.head_left))
    }

    fn taken(&mut self, n: usize) {
        if !self.passthrough {
            self.left = self.left.saturating_sub(n as u64);
            self.head_left = self
                .head_left
                .saturating_sub(u8::try_from(n).unwrap_or(u8::MAX));
        }
    }
}

/// What the decoder keeps of each payload byte of a frame: a control frame is
/// handled at once (nothing: it holds at most 125 bytes); a data message in
/// one frame is kept as it is (1); one in fragments is gathered in a growing
/// buffer, which may reach twice its size (2).
fn weigh(head: &Head) -> u8 {
    match head.opcode {
        1 | 2 if head.fin => 1,
        0..=2 => 2,
        _ => 0,
    }
}

/// The socket under an upgraded connection, and what hyper read past the
/// handshake; `None` when it is neither TCP, TLS nor Unix. A plain socket
/// comes to hyper in a `Replay` (the gateway read its first bytes,
/// `gateway/replay.rs`): what hyper did not take of those follows what it
/// read.
pub fn socket(upgraded: hyper::upgrade::Upgraded) -> Option<(Socket, Bytes)> {
    use hyper_util::rt::TokioIo;
    let upgraded = match upgraded.downcast::<TokioIo<Replay<TcpStream>>>() {
        Ok(parts) => {
            let (stream, unread) = parts.io.into_inner().into_parts();
            return Some((Socket::Tcp(stream), joined(parts.read_buf, unread)));
        }
        Err(upgraded) => upgraded,
    };
    let upgraded = match upgraded.downcast::<TokioIo<Replay<UnixStream>>>() {
        Ok(parts) => {
            let (stream, unread) = parts.io.into_inner().into_parts();
            return Some((Socket::Unix(stream), joined(parts.read_buf, unread)));
        }
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TokioIo<TlsSocket>>() {
        Ok(parts) => Some((Socket::Tls(Box::new(parts.io.into_inner())), parts.read_buf)),
        Err(_) => None,
    }
}

/// `first` and then `then`, copied only when both have bytes.
fn joined(first: Bytes, then: Bytes) -> Bytes {
    if then.is_empty() {
        return first;
    }
    if first.is_empty() {
        return then;
    }
    let mut both = BytesMut::with_capacity(first.len() + then.len());
    both.extend_from_slice(&first);
    both.extend_from_slice(&then);
    both.freeze()
}

/// Why [`ReadSide::poll_next`] gives up.
#[derive(Debug)]
pub enum ReadError {
    /// The client broke the protocol, or sent a compressed message the
    /// read side refused: the connection closes with this code and reason.
    Refused(client_frames::Fault),
    /// The socket failed.
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(fault) => write!(f, "{} ({})", fault.reason, fault.code),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

/// What a client sent, decoded into messages from the [`Socket`] lent to
/// each poll.
pub struct ReadSide {
    /// Read from the socket, not yet taken by the decoder; unallocated when empty.
    pending: BytesMut,
    /// Bytes read from the socket per read call at most.
    chunk: usize,
    gate: FrameGate,
    /// What the connection holds of what its client sent (`inbound.rs`):
    /// `pending` by its capacity, and the message the decoder assembles.
    intake: Intake,
    /// The compressed message being inflated; none between messages.
    inflating: Option<Box<Inflating>>,
    decoder: Decoder,
}

/// What [`ReadSide::hand_inflated`] did.
enum Inflated {
    /// Bytes for the decoder, a wait for the budget, or the message's fault.
    Handed(Poll<io::Result<()>>),
    /// More bytes from the socket are needed.
    NeedInput,
    /// A control frame comes next: it goes to the decoder as it is.
    Control,
}

impl ReadSide {
    /// A read side that reads up to `chunk` bytes per call, charging what
    /// it holds to `intake`.
    pub fn new(chunk: usize, intake: Intake) -> Self {
        Self {
            pending: BytesMut::new(),
            chunk,
            gate: FrameGate::default(),
            intake,
            inflating: None,
            decoder: Decoder::default(),
        }
    }

    /// The read side of the new connection `conn`, as `websocket`
    /// configures it: charged to the daemon's inbound budget (and what its
    /// events hold to `conn`'s account), inflating when the client
    /// agreed to permessage-deflate with `inflate_window`, starting with
    /// `pre_read` (what hyper read past the handshake: a pipelined first
    /// frame, copied so that hyper's read buffer is let go).
    pub fn open(
        conn: Arc<ConnHandle>,
        budget: Arc<crate::inbound::Budget>,
        websocket: &crate::config::WebSocketConfig,
        inflate_window: Option<u8>,
        pre_read: &[u8],
    ) -> Self {
        let ledger = crate::inbound::Ledger::new(
            budget,
            websocket.inbound_queue_bytes,
            websocket.max_message_size,
            websocket.read_buffer_size,
        );
        let mut side = Self::new(websocket.read_buffer_size, Intake::new(conn, ledger));
        if let Some(window_bits) = inflate_window {
            side.inflate_with(window_bits, websocket.max_frame_size);
        }
        side.preload(pre_read);
        side
    }

    /// The next thing the client said on `socket`; `None` when the socket
    /// ended (at a frame's boundary or not: either way the client left
    /// without a close). Bytes read stay here until the decoder takes them.
    pub fn poll_next(
        &mut self,
        socket: &mut Socket,
        cx: &mut Context<'_>,
        limits: Limits,
    ) -> Poll<Option<Result<Incoming, ReadError>>> {
        loop {
            // Only what `fill` puts in is read: no need to zero it first.
            let mut step = [std::mem::MaybeUninit::<u8>::uninit(); DECODE_STEP];
            let mut buf = ReadBuf::uninit(&mut step);
            if let Err(e) = std::task::ready!(self.fill(socket, cx, &mut buf)) {
                return Poll::Ready(Some(Err(match self.inflate_fault() {
                    Some(fault) => ReadError::Refused(client_frames::Fault {
                        code: fault.code,
                        reason: fault.reason,
                    }),
                    None => ReadError::Io(e),
                })));
            }
            let got = buf.filled();
            if got.is_empty() {
                return Poll::Ready(None);
            }
            let (used, out) = self.decoder.feed(got, limits);
            match out {
                Some(Err(fault)) => return Poll::Ready(Some(Err(ReadError::Refused(fault)))),
                // The read side hands over at most the rest of a frame, and
                // the decoder takes all of a frame: nothing is left over.
                Some(Ok(_)) | None if used < got.len() => {
                    return Poll::Ready(Some(Err(ReadError::Refused(client_frames::Fault {
                        code: crate::contract::CLOSE_PROTOCOL_ERROR,
                        reason: "frame boundary lost",
                    }))));
                }
                Some(Ok(incoming)) => return Poll::Ready(Some(Ok(incoming))),
                None => {}
            }
        }
    }

    /// The client negotiated permessage-deflate and compresses with a
    /// window of 2^`window_bits` at most: inflate its compressed messages.
    /// Frames are `max_frame_size` at most, compressed or inflated.
    pub fn inflate_with(&mut self, window_bits: u8, max_frame_size: usize) {
        self.gate.inflate_window = NonZeroU8::new(window_bits);
        self.gate.inflate_max_frame = u32::try_from(max_frame_size).unwrap_or(u32::MAX);
    }

    /// Why the client's compressed message was refused, if it was: the
    /// connection closes with this code and reason.
    pub fn inflate_fault(&self) -> Option<Fault> {
        self.inflating.as_ref()?.fault
    }

    /// Queues bytes already read from the socket (by hyper, past the
    /// handshake). They are charged even past the budget: they exist.
    pub fn preload(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.pending = BytesMut::from(bytes);
        self.intake.hold_buffer(self.pending.capacity());
    }

    /// A data message came out: its charge, to travel with its event.
    pub fn message_charge(&mut self) -> Charge {
        self.intake.message_done()
    }

    /// Is reading paused by the inbound budget or the connection's share?
    pub fn is_paused(&self) -> bool {
        self.intake.is_paused()
    }

    /// Hands the decoder what it may have of `pending` (as much as fits in
    /// `buf`), charging the payload it goes on to hold; `None` while the
    /// next frame's header is incomplete.
    fn hand_over(
        &mut self,
        buf: &mut ReadBuf<'_>,
        cx: &mut Context<'_>,
    ) -> Option<Poll<io::Result<()>>> {
        if self.gate.left == 0 && !self.gate.passthrough {
            if self.inflating.is_none()
                && let Some(window) = self.gate.inflate_window
                && let Some((header, head, payload)) = deflate::starts_compressed(&self.pending)
            {
                self.pending.advance(head);
                // The inflater is the message's, until PHP is done with it.
                let window_bits = window.get();
                self.intake
                    .hold_message(deflate::inflater_cost(window_bits));
                self.intake.count_inflated();
                // The decoder applies max_message_size to the inflated
                // message; max_frame_size bounds the compressed frames here
                // and the inflated ones handed to the decoder.
                let limits = deflate::Inbound {
                    window_bits,
                    max_message: usize::MAX,
                    max_frame: self.gate.inflate_max_frame as usize,
                };
                self.inflating = Some(Inflating::start(&header, payload, limits));
            }
            if self.inflating.is_some() {
                match self.hand_inflated(buf, cx) {
                    Inflated::Handed(poll) => return Some(poll),
                    Inflated::NeedInput => return None,
                    Inflated::Control => {}
                }
            }
        }
        if self.pending.is_empty() {
            return None;
        }
        let mut n = self.gate.allowance(&self.pending)?.min(buf.remaining());
        let payload = self.gate.payload_in(n);
        let weight = self.gate.weight();
        if payload > 0 && weight > 0 {
            let granted = match self.intake.allowance(payload * weight, cx) {
                Poll::Ready(granted) => granted,
                Poll::Pending => return Some(Poll::Pending),
            };
            let fits = granted.div_ceil(weight).min(payload);
            n -= payload - fits;
            self.intake.hold_message(fits * weight);
        }
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        self.gate.taken(n);
        self.free_if_empty();
        Some(Poll::Ready(Ok(())))
    }

    /// Gives the read buffer back once it is empty: an idle connection holds
    /// none. (An empty buffer read to its end has no capacity left, but its
    /// charge is still held: give it back whatever the capacity.)
    fn free_if_empty(&mut self) {
        if self.pending.is_empty() {
            self.pending = BytesMut::new();
            self.intake.free_buffer();
        }
    }

    /// Hands the decoder the compressed message being inflated, as plain
    /// frames; inflates more of it from `pending` when they are taken, as
    /// far as the inbound budget allows (the decoder gathers the message,
    /// charged twice as any fragmented one, see [`weigh`]).
    fn hand_inflated(&mut self, buf: &mut ReadBuf<'_>, cx: &mut Context<'_>) -> Inflated {
        loop {
            let Some(inf) = self.inflating.as_mut() else {
                return Inflated::Control;
            };
            if let Some(fault) = inf.fault {
                return Inflated::Handed(Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    fault,
                ))));
            }
            let output = inf.output();
            if !output.is_empty() {
                let n = output.len().min(buf.remaining());
                buf.put_slice(&output[..n]);
                output.advance(n);
                if inf.is_done() {
                    // The message's end: no inflater is kept between messages.
                    self.inflating = None;
                }
                return Inflated::Handed(Poll::Ready(Ok(())));
            }
            if inf.is_done() {
                self.inflating = None;
                return Inflated::Control;
            }
            let granted = match self.intake.allowance(2 * deflate::OUTPUT_STEP, cx) {
                Poll::Ready(granted) => granted,
                Poll::Pending => return Inflated::Handed(Poll::Pending),
            };
            let room = (granted / 2).min(self.gate.inflate_max_frame as usize);
            let step = inf.step(&mut self.pending, room.max(1));
            self.free_if_empty();
            match step {
                Ok(Step::Ready(n)) => self.intake.hold_message(2 * n),
                Ok(Step::NeedInput) => return Inflated::NeedInput,
                Ok(Step::Control) => return Inflated::Control,
                Err(fault) => {
                    if let Some(inf) = self.inflating.as_mut() {
                        inf.fault = Some(fault);
                    }
                }
            }
        }
    }
}

impl ReadSide {
    /// Puts into `buf` what the decoder may have next: bytes read from
    /// `socket` (through `pending`), or a compressed message inflated.
    /// Nothing put in at the socket's end.
    fn fill(
        &mut self,
        socket: &mut Socket,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Some(handed) = self.hand_over(buf, cx) {
                return handed;
            }
            let n = if self.pending.is_empty() {
                // Nothing buffered: read onto the stack, so a connection
                // waiting here for its client holds no heap buffer at all.
                let allowed = std::task::ready!(self.intake.allowance(STACK_READ, cx));
                let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); STACK_READ];
                let mut first = ReadBuf::uninit(&mut stack[..allowed.min(STACK_READ)]);
                std::task::ready!(Pin::new(&mut *socket).poll_read(cx, &mut first))?;
                let got = first.filled();
                if !got.is_empty() {
                    let mut capacity = got.len();
                    if got.len() == STACK_READ {
                        // More is likely on its way: room for a full chunk, if allowed.
                        capacity += self.intake.spare(self.chunk.saturating_sub(STACK_READ));
                    }
                    self.pending = BytesMut::with_capacity(capacity);
                    self.pending.extend_from_slice(got);
                    self.intake.hold_buffer(self.pending.capacity());
                }
                got.len()
            } else {
                // A header arrived in part: read the rest straight in.
                if self.pending.capacity() - self.pending.len() < 64 {
                    let allowed = std::task::ready!(self.intake.allowance(self.chunk.max(64), cx));
                    let mut grown = BytesMut::with_capacity(self.pending.len() + allowed);
                    grown.extend_from_slice(&self.pending);
                    self.intake.free_buffer();
                    self.pending = grown;
                    self.intake.hold_buffer(self.pending.capacity());
                }
                std::task::ready!(poll_read_buf(Pin::new(&mut *socket), cx, &mut self.pending))?
            };
            if n == 0 {
                if self.pending.is_empty() {
                    return Poll::Ready(Ok(())); // EOF
                }
                // EOF inside a header: let the decoder see what there is.
                self.gate.passthrough = true;
            }
        }
    }
}

/// The writer of a client socket, and its holder: it writes what the outbox
/// queued, and lets the outbox write directly while nothing is queued (see
/// `outbox.rs`). It lends the socket to the [`ReadSide`] ([`Writer::socket`]).
pub struct Writer {
    socket: Sending,
    /// Whose outbox it drains, and which may write to the socket directly
    /// until this writer drops.
    handle: Arc<ConnHandle>,
}

/// The socket side of a [`Writer`]: kept apart from the handle so a write
/// and a wait on the outbox can be borrowed at once.
struct Sending {
    half: Socket,
    bytes_out: Counter,
    /// Frames taken from the outbox, the first possibly partly written.
    batch: VecDeque<Bytes>,
    /// The outbox cost the last write settled, for the next
    /// [`Outbox::drain_into`].
    settled: usize,
}

impl Writer {
    /// A writer with nothing pending for `handle`'s outbox, counting what it
    /// writes in `bytes_out`; from now until it drops, the outbox may write
    /// to the socket directly.
    /// A TLS socket is never written directly: every frame is encrypted
    /// by the writer.
    pub fn new(half: Socket, bytes_out: Counter, handle: Arc<ConnHandle>) -> Self {
        let fd = match &half {
            Socket::Tcp(w) => Some(w.as_raw_fd()),
            Socket::Unix(w) => Some(w.as_raw_fd()),
            Socket::Tls(_) => None,
        };
        if let Some(fd) = fd {
            handle.outbox.attach(fd, bytes_out.clone());
        }
        Self {
            socket: Sending {
                half,
                bytes_out,
                batch: VecDeque::new(),
                settled: 0,
            },
            handle,
        }
    }

    /// Writes whatever the outbox queues, for as long as the connection
    /// lives; ready only with a signal to act on, or a write error.
    /// Everything it keeps between polls is in the writer (the batch, the
    /// cost its last write settled), so a connection's loop polls it with
    /// its other sources and holds no future of it while idle.
    pub fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Signal>> {
        let Self { socket, handle } = self;
        let outbox = &handle.outbox;
        loop {
            // What the wake-up was for is taken next: a push that woke the
            // writer before it looks needs no second look.
            outbox.take_writer_wake();
            // Taking frames also settles the cost of the last write (one lock).
            let settled = std::mem::take(&mut socket.settled);
            let more = outbox.drain_into(&mut socket.batch, MAX_IOVECS, settled);
            if let Some(signal) = outbox.take_signal() {
                return Poll::Ready(Ok(signal));
            }
            if !more {
                if socket.holds_encrypted() {
                    // TLS bytes rustls kept go out before the writer sleeps;
                    // a signal still gets through meanwhile.
                    if let Poll::Ready(flushed) = socket.poll_flush(cx) {
                        flushed?;
                    }
                }
                if outbox.poll_wait(cx).is_ready() {
                    continue;
                }
                return Poll::Pending;
            }
            // A client that stops reading blocks this write; a signal (slow
            // consumer, close request) must still get through at once, so
            // the outbox's wake-up is looked at too.
            match socket.poll_write_batch(cx) {
                Poll::Ready(written) => socket.settled = written?,
                Poll::Pending => {
                    if outbox.poll_wait(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    /// Gives back the batch's memory when it is empty; the connection's
    /// task calls it once a turn of its timer (as [`Outbox::shed_capacity`]:
    /// a batch past `MAX_IOVECS` frames gives its room back at once).
    pub fn shed_capacity(&mut self) {
        if self.socket.batch.is_empty() {
            self.socket.batch = VecDeque::new();
        }
    }

    /// The socket, for the [`ReadSide`] to read from.
    pub fn socket(&mut self) -> &mut Socket {
        &mut self.socket.half
    }

    /// Writes everything queued (frames taken and still in the outbox), for
    /// the end of a connection: the caller bounds it with a timeout and then
    /// drops the writer, which closes the socket (a plain socket's close is
    /// its end of stream: no `shutdown` before it).
    pub async fn flush_all(&mut self) -> io::Result<()> {
        let Self { socket, handle } = self;
        loop {
            let settled = std::mem::take(&mut socket.settled);
            handle
                .outbox
                .drain_into(&mut socket.batch, MAX_IOVECS, settled);
            if socket.batch.is_empty() {
                return socket.finish().await;
            }
            socket.settled = std::future::poll_fn(|cx| socket.poll_write_batch(cx)).await?;
        }
    }
}

impl Sending {
    /// Writes what it can of the batch; returns the outbox cost this settled
    /// (the bytes written, and [`Outbox::settle`]'s share per finished frame).
    /// A write either happened or did not: nothing is lost when it is pending.
    fn poll_write_batch(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let batch = &self.batch;
        let n = std::task::ready!(match &mut self.half {
            Socket::Tcp(w) => loop {
                std::task::ready!(w.poll_write_ready(cx))?;
                match w.try_io(Interest::WRITABLE, || send_batch(w.as_raw_fd(), batch)) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    sent => break Poll::Ready(sent),
                }
            },
            Socket::Unix(w) => loop {
                std::task::ready!(w.poll_write_ready(cx))?;
                match w.try_io(Interest::WRITABLE, || send_batch(w.as_raw_fd(), batch)) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    sent => break Poll::Ready(sent),
                }
            },
            Socket::Tls(w) => {
                // What rustls kept goes first; nothing of the batch is
                // taken until it is out.
                std::task::ready!(Pin::new(&mut **w).poll_flush(cx))?;
                with_slices(batch, |slices| {
                    Pin::new(&mut **w).poll_write_vectored(cx, slices)
                })
            }
        })?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.bytes_out.inc_by(n as u64);
        let mut left = n;
        let mut finished = 0;
        while left > 0 {
            let Some(front) = self.batch.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                self.batch.pop_front();
                finished += 1;
            } else {
                front.advance(left);
                left = 0;
            }
        }
        if self.batch.is_empty() && self.batch.capacity() > MAX_IOVECS {
            self.batch = VecDeque::new();
        }
        Poll::Ready(Ok(Outbox::settle(n, finished)))
    }

    /// Does rustls hold bytes that a flush must send (TLS only)?
    fn holds_encrypted(&self) -> bool {
        matches!(self.half, Socket::Tls(_))
    }

    /// Sends what rustls holds; nothing to do for plain sockets.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.half {
            Socket::Tls(w) => Pin::new(&mut **w).poll_flush(cx),
            Socket::Tcp(_) | Socket::Unix(_) => Poll::Ready(Ok(())),
        }
    }

    /// Ends the sending side before the socket closes: on TLS, rustls's
    /// close_notify alert. A plain socket needs no `shutdown`: the close
    /// that follows sends the same FIN (TCP) or end of stream (Unix), so a
    /// churned connection costs one syscall less. (Unread bytes from the
    /// client make a TCP close a reset, with or without a `shutdown`
    /// before it.)
    async fn finish(&mut self) -> io::Result<()> {
        match &mut self.half {
            Socket::Tls(w) => w.shutdown().await,
            Socket::Tcp(_) | Socket::Unix(_) => Ok(()),
        }
    }
}

/// Calls `f` with the first [`MAX_IOVECS`] frames of `batch` as slices.
/// The array lives on the stack during the call only, so it does not
/// weigh on every idle connection.
fn with_slices<R>(batch: &VecDeque<Bytes>, f: impl FnOnce(&[IoSlice<'_>]) -> R) -> R {
    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
    let count = batch.len().min(MAX_IOVECS);
    for (slot, frame) in slices.iter_mut().zip(batch.iter()) {
        *slot = IoSlice::new(frame);
    }
    f(&slices[..count])
}

/// Sends what the plain socket `fd` takes of `batch` now: `send` for one
/// frame, `sendmsg` for more. The socket calls, not `writev`, which
/// reaches the same send through the file layer at a measurable cost per
/// write (docs/performance.md, "Broadcast delivery on a quiet machine").
fn send_batch(fd: std::os::fd::RawFd, batch: &VecDeque<Bytes>) -> io::Result<usize> {
    use nix::sys::socket::{MsgFlags, SockaddrStorage, send, sendmsg};
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    match batch.front() {
        Some(frame) if batch.len() == 1 => send(fd, frame, flags),
        _ => with_slices(batch, |slices| {
            sendmsg::<SockaddrStorage>(fd, slices, &[], flags, None)
        }),
    }
    .map_err(io::Error::from)
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Before `half` closes the socket (fields drop after this).
        self.handle.outbox.detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rustls takes more than the socket does; what it keeps when the
    /// writer runs out of frames must still go out once the client reads.
    #[tokio::test]
    async fn a_tls_writer_sends_what_rustls_kept_before_it_sleeps() {
        use rustls::pki_types::{PrivateKeyDer, ServerName};
        use tokio::io::AsyncReadExt as _;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();

        // Small socket buffers: the socket takes less than rustls holds.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpSocket::new_v4().unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        let (client, server) = tokio::join!(
            client.connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        let (client, server) = (client.unwrap(), server.unwrap().0);
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .unwrap();
        let (mut client, server) = tokio::join!(
            tokio_rustls::TlsConnector::from(Arc::new(client_config))
                .connect(ServerName::try_from("localhost").unwrap(), client),
            tokio_rustls::TlsAcceptor::from(Arc::new(server_config)).accept(server)
        );
        let socket = Socket::Tls(Box::new(server.unwrap()));

        let mut config = crate::config::Config::default();
        config.fpm.address = Some(crate::config::FpmAddr::Unix("/nonexistent".into()));
        let ctx = crate::context::Context::new(config);
        let handle = ctx.hub.register(1 << 20);
        let mut writer = Writer::new(socket, Counter::default(), handle.clone());
        let sending = tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| writer.poll_run(cx)).await;
            drop(writer);
        });
        let frame: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        handle.outbox.push(Bytes::from(frame.clone()));
        let mut got = vec![0u8; frame.len()];
        let client = client.as_mut().unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            client.read_exact(&mut got),
        )
        .await
        .expect("every byte within 20 s")
        .unwrap();
        assert!(got == frame, "the bytes, in order");
        sending.abort();
    }

    #[tokio::test]
    async fn an_emptied_batch_gives_its_room_back_when_shed() {
        let handle = crate::hub::Hub::default().register(1 << 20);
        let (socket, _client) = UnixStream::pair().unwrap();
        let mut writer = Writer::new(Socket::Unix(socket), Counter::default(), handle.clone());
        for _ in 0..10 {
            handle.outbox.push_queued(Bytes::from_static(b"x"));
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(
            writer.poll_run(&mut cx).is_pending(),
            "written, waiting for more"
        );
        assert!(writer.socket.batch.is_empty());
        assert!(
            writer.socket.batch.capacity() >= 10,
            "a small burst's room is kept"
        );
        writer.shed_capacity();
        assert_eq!(writer.socket.batch.capacity(), 0);
    }

    #[test]
    fn what_hyper_read_comes_before_what_it_left_of_the_replay() {
        let (ab, cd) = (Bytes::from_static(b"ab"), Bytes::from_static(b"cd"));
        assert_eq!(joined(ab.clone(), cd.clone()), Bytes::from_static(b"abcd"));
        assert_eq!(joined(ab.clone(), Bytes::new()), ab);
        assert_eq!(joined(Bytes::new(), cd.clone()), cd);
        assert!(joined(Bytes::new(), Bytes::new()).is_empty());
    }

    #[test]
    fn gate_stops_at_frame_boundaries() {
        // Two masked text frames: "hi" and "yo".
        let mut wire = vec![0x81, 0x82, 0, 0, 0, 0, b'h', b'i'];
        wire.extend([0x81, 0x82, 0, 0, 0, 0, b'y', b'o']);
        let mut gate = FrameGate::default();
        assert_eq!(gate.allowance(&wire), Some(8), "first frame only");
        gate.taken(5);
        assert_eq!(gate.allowance(&wire[5..]), Some(3));
        gate.taken(3);
        assert_eq!(gate.allowance(&wire[8..]), Some(8));
    }

    #[test]
    fn gate_says_what_the_decoder_keeps_of_each_frame() {
        let mut gate = FrameGate::default();
        // A whole text message: its 2 payload bytes, once.
        let wire = [0x81, 0x82, 0, 0, 0, 0, b'h', b'i'];
        assert_eq!(gate.allowance(&wire), Some(8));
        assert_eq!((gate.payload_in(8), gate.weight()), (2, 1));
        gate.taken(5);
        assert_eq!(gate.payload_in(3), 2, "the header's rest, then payload");
        gate.taken(3);
        // A ping: handled at once, nothing kept.
        assert_eq!(gate.allowance(&[0x89, 0x81, 0, 0, 0, 0, 1]), Some(7));
        assert_eq!(gate.weight(), 0);
        gate.taken(7);
        // A fragmented message, first frame and continuation: gathered, twice.
        assert_eq!(gate.allowance(&[0x02, 0x81, 0, 0, 0, 0, 1]), Some(7));
        assert_eq!(gate.weight(), 2);
        gate.taken(7);
        assert_eq!(gate.allowance(&[0x80, 0x81, 0, 0, 0, 0, 1]), Some(7));
        assert_eq!(gate.weight(), 2);
    }

    #[test]
    fn gate_waits_for_a_whole_header() {
        let mut gate = FrameGate::default();
        assert_eq!(gate.allowance(&[0x81]), None);
        // 64-bit length header, 10 bytes plus the mask.
        assert_eq!(gate.allowance(&[0x82, 0xff, 0, 0, 0]), None);
    }

    #[test]
    fn gate_passes_garbage_through() {
        let mut gate = FrameGate::default();
        // Reserved opcode 0x3: the decoder must see it and fail the connection.
        let bytes = [0x83, 0x80, 0, 0, 0, 0];
        assert_eq!(gate.allowance(&bytes), Some(bytes.len()));
    }

    #[test]
    fn huge_lengths_do_not_overflow() {
        let mut gate = FrameGate::default();
        let mut header = vec![0x82, 0xff];
        header.extend(u64::MAX.to_be_bytes());
        header.extend([0, 0, 0, 0]);
        assert!(gate.allowance(&header).is_some());
    }
}
