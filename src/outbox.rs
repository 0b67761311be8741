//! One connection's outbound queue, shared by everyone who sends to it.
//!
//! PHP's answers, publishes, sends, and the connection's own pongs and close
//! frames all land here as encoded frames; the connection's task writes them
//! out in order, many per `sendmsg`. The queue is bounded in *bytes*
//! (`websocket.outbound_queue_bytes`): a client that stops reading fills it,
//! and the next push marks it a slow consumer, to be cut off with close 1008,
//! instead of growing the daemon's memory or delaying other members.
//!
//! Each queued frame is charged what it costs in memory: its bytes plus
//! [`FRAME_COST`] for its slot in the queue and its allocation. A publish's
//! frame is one allocation shared by every member's queue; each member is
//! charged the whole of it, since any one of them keeps it alive.
//!
//! At most one pong waits: a newer ping's pong replaces it (RFC 6455 §5.5.3
//! allows answering only the most recent ping), here or in the writer's
//! batch if not yet begun, and it goes out before the queued data frames. A
//! client that sends pings and never reads costs one pong, not a queue.
//!
//! An idle outbox allocates nothing (an empty `VecDeque` has no buffer): a
//! queue emptied after a burst of more than 64 frames gives its room back at
//! once, a smaller one on its connection's next timer turn
//! ([`Outbox::shed_capacity`]).
//!
//! The outbox also tells the connection's task who woke it: its writer
//! ([`WOKEN_WRITER`], a push or a signal) or one of its other sources
//! ([`WOKEN_OTHER`], through [`Outbox::wake_other`]), so that a turn woken
//! for the writer alone polls nothing else (`connection/task.rs`).
//!
//! Direct writes: while nothing is queued and the writer holds no frames,
//! [`Outbox::push`] writes the frame to the socket itself, with one
//! non-blocking `send` under the queue's lock, and wakes nobody. The
//! connection's own frames (PHP's answer, pongs, close frames) and a send to
//! one connection go this way, saving a task wake-up and a turn of its loop.
//! Fan-outs use [`Outbox::push_queued`] instead: sending serially from the
//! publisher's thread measured far slower than waking the members' tasks
//! (docs/performance.md). Whatever the socket does not take at once (a full
//! send buffer, an error) is queued and left to the writer, so order is kept
//! and errors are handled in one place. The writer attaches the socket when
//! it starts and detaches it, under the same lock, before the socket can
//! close, so a direct write never reaches a closed or reused descriptor.
//! A TLS socket is never attached: its bytes must be encrypted, which only
//! the writer does, so every frame to a TLS client is queued.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::task::AtomicWaker;
use prometheus_client::metrics::counter::Counter;

/// [`Outbox::take_woken`]: something was pushed or signalled.
pub const WOKEN_WRITER: u8 = 1;
/// [`Outbox::take_woken`]: one of the connection's other sources woke its task.
pub const WOKEN_OTHER: u8 = 2;

/// How far control frames (close, ping) may go past the byte limit.
pub const CONTROL_SLACK: usize = 4096;

/// What a queued frame costs beyond its bytes: its slot in the queue (a
/// `Bytes`, 32 bytes, twice over since a `VecDeque` grows by doubling) and
/// its allocation (the buffer's allocator overhead and the 32-byte shared
/// header a `Bytes` gets once cloned for a second recipient).
pub const FRAME_COST: usize = 128;

/// What `frame` is charged while queued.
fn cost(frame: &[u8]) -> usize {
    frame.len() + FRAME_COST
}

/// Is `frame` exactly one pong (as `frame::pong` writes it: unmasked, final)?
fn is_pong(frame: &[u8]) -> bool {
    matches!(frame, [0x8A, len, ..] if *len <= 125 && frame.len() == 2 + usize::from(*len))
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// On its way: written to the socket already, or queued for the writer.
    Queued,
    /// The connection is closing or gone; the frame was dropped.
    Closed,
    /// The queue is full: the frame was dropped and the client marked a slow consumer.
    Overflow,
}

/// Why the connection's task was woken besides frames to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Someone (PHP via the control socket, shutdown) asked to close with this code and reason.
    Close(u16, String),
    /// The queue overflowed: the client does not read fast enough.
    SlowConsumer,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Bytes>,
    /// The pong to send next, if one waits; see the module docs. Boxed:
    /// rare (a pong is written at once unless frames are queued).
    pong: Option<Box<Bytes>>,
    /// What the frames queued and not yet written cost (see [`cost`]),
    /// including the pong and frames the writer has taken but not finished.
    cost: usize,
    /// No more data frames are accepted (closing, closed, or slow).
    sealed: bool,
    /// The writer holds frames it took and has not finished writing.
    writer_busy: bool,
    /// The socket, while its writer lives; see the module docs.
    direct: Option<Direct>,
    /// Boxed: rare, and a close reason would otherwise widen every queue.
    signal: Option<Box<Signal>>,
}

/// The socket for direct writes, and the byte counter they add to.
struct Direct {
    fd: RawFd,
    bytes_out: Counter,
}

impl State {
    /// Writes as much of `frame` as the socket takes now, when nothing may
    /// go before it; returns what is left for the queue (`None`: all sent).
    fn send_direct(&mut self, mut frame: Bytes) -> Option<Bytes> {
        let Some(direct) = self.direct.as_ref() else {
            return Some(frame);
        };
        if !self.frames.is_empty() || self.pong.is_some() || self.writer_busy {
            return Some(frame);
        }
        // The descriptor is open while `direct` is set: the writer detaches
        // it under this lock before the socket can close.
        use nix::sys::socket::{MsgFlags, send};
        match send(
            direct.fd,
            &frame,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => {
                direct.bytes_out.inc_by(n as u64);
                if n >= frame.len() {
                    return None;
                }
                frame.advance(n);
                Some(frame)
            }
            // Full, interrupted, or failed: the writer retries and, on an
            // error, ends the connection.
            Err(_) => Some(frame),
        }
    }
}

/// The queue; lives in the connection's shared handle.
pub struct Outbox {
    state: Mutex<State>,
    /// Whether `state.signal` may be set: lets the writer skip the lock in
    /// the common case. Set and cleared under the lock.
    signalled: AtomicBool,
    /// Who woke the connection's task since it last looked: [`WOKEN_WRITER`]
    /// (something was pushed or signalled: a wake-up kept for the writer
    /// when it is not waiting, see [`Outbox::poll_wait`]) and
    /// [`WOKEN_OTHER`] (see [`Outbox::wake_other`]).
    woken: AtomicU8,
    /// The writer's task, while it waits. One writer per outbox: a waker
    /// cell, not a queue of waiters (a `Notify` and its `Notified` future
    /// weighed on every idle connection).
    writer: AtomicWaker,
    limit: usize,
}

impl Outbox {
    /// An empty outbox holding at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            signalled: AtomicBool::new(false),
            woken: AtomicU8::new(0),
            writer: AtomicWaker::new(),
            limit,
        }
    }

    /// A frame would overflow the queue: seals it, signals a slow consumer
    /// and wakes the writer to close the connection.
    fn seal_slow(&self, mut state: std::sync::MutexGuard<'_, State>) {
        state.sealed = true;
        state.signal.get_or_insert(Box::new(Signal::SlowConsumer));
        self.signalled.store(true, Ordering::Release);
        drop(state);
        self.wake();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every update is a single push or pop), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a data frame, unless the connection is closing or its queue is full.
    ///
    /// A frame larger than the whole limit still goes into an *empty* queue:
    /// it is in memory already, and refusing it would cut off as "slow" a
    /// client that reads promptly (a 1 MiB answer under a 1 MiB limit).
    pub fn push(&self, frame: Bytes) -> Push {
        self.push_with(frame, true)
    }

    /// Queues a data frame for the writer, never writing it directly: for
    /// large fan-outs, whose writes are better spread over the runtime's
    /// threads by the members' own tasks.
    pub fn push_queued(&self, frame: Bytes) -> Push {
        self.push_with(frame, false)
    }

    /// Queues a data frame for the writer without waking it; returns what
    /// happened and whether the caller owes the writer a [`wake`](Self::wake):
    /// true when the queue was empty before (a writer with frames queued
    /// already has a wake coming, or is writing and takes them next). A
    /// fan-out wakes its members later, once per shard (`hub/fanout.rs`).
    pub fn push_quiet(&self, frame: Bytes) -> (Push, bool) {
        let mut state = self.lock();
        if state.sealed {
            return (Push::Closed, false);
        }
        if state.cost > 0 && state.cost + cost(&frame) > self.limit {
            self.seal_slow(state);
            return (Push::Overflow, false);
        }
        let owed = state.frames.is_empty();
        state.cost += cost(&frame);
        state.frames.push_back(frame);
        (Push::Queued, owed)
    }

    /// Wakes the writer for frames [`push_quiet`](Self::push_quiet) queued.
    /// A writer not waiting now finds the wake-up kept when it next looks.
    pub fn wake(&self) {
        self.woken.fetch_or(WOKEN_WRITER, Ordering::SeqCst);
        self.writer.wake();
    }

    /// Wakes the connection's task for one of its other sources (the
    /// client's frames, its timer, PHP's answer), through the waker the
    /// writer registered, and notes it: a turn that finds only
    /// [`WOKEN_WRITER`] looks at the writer alone (`connection/task.rs`).
    pub fn wake_other(&self) {
        self.woken.fetch_or(WOKEN_OTHER, Ordering::SeqCst);
        self.writer.wake();
    }

    /// Makes the connection task's next turn look at every source, as if
    /// they had woken it: for its first turn, before any of them has a
    /// wake-up registered (frames pushed during the open set the writer's
    /// bit alone).
    pub fn mark_other(&self) {
        self.woken.fetch_or(WOKEN_OTHER, Ordering::SeqCst);
    }

    /// Who woke the connection's task since the last call: the
    /// [`WOKEN_WRITER`] and [`WOKEN_OTHER`] bits. Takes [`WOKEN_OTHER`]
    /// and leaves [`WOKEN_WRITER`] to the writer's [`poll_wait`](Self::poll_wait).
    pub fn take_woken(&self) -> u8 {
        let woken = self.woken.load(Ordering::SeqCst);
        if woken & WOKEN_OTHER == 0 {
            return woken;
        }
        self.woken.fetch_and(!WOKEN_OTHER, Ordering::SeqCst)
    }

    /// Was the task woken for its other sources since
    /// [`take_woken`](Self::take_woken)? (It keeps the mark.)
    pub fn woken_other(&self) -> bool {
        self.woken.load(Ordering::SeqCst) & WOKEN_OTHER != 0
    }

    fn push_with(&self, frame: Bytes, direct: bool) -> Push {
        let mut state = self.lock();
        if state.sealed {
            return Push::Closed;
        }
        if state.cost > 0 && state.cost + cost(&frame) > self.limit {
            self.seal_slow(state);
            return Push::Overflow;
        }
        let rest = if direct {
            match state.send_direct(frame) {
                Some(rest) => rest,
                None => return Push::Queued,
            }
        } else {
            frame
        };
        // A writer with frames queued already has a wake-up coming, or is
        // writing and takes this one next (as for `push_quiet`).
        let owed = state.frames.is_empty();
        state.cost += cost(&rest);
        state.frames.push_back(rest);
        drop(state);
        if owed {
            self.wake();
        }
        Push::Queued
    }

    /// Queues protocol bytes (pongs, close frames, pings) from the
    /// connection's own task. A pong replaces the one waiting, if any. Others
    /// may go [`CONTROL_SLACK`] bytes past the limit, so a close frame still
    /// fits behind a full queue; past that the client is a slow consumer.
    pub fn push_control(&self, frame: Bytes) {
        let mut guard = self.lock();
        let state = &mut *guard;
        if is_pong(&frame) {
            if let Some(waiting) = &mut state.pong {
                // The writer was woken for the one waiting already.
                state.cost = state.cost.saturating_sub(cost(waiting)) + cost(&frame);
                **waiting = frame;
                return;
            }
            let whole = frame.len();
            match state.send_direct(frame) {
                None => return,
                // Begun on the wire: it must be finished before anything else.
                Some(rest) if rest.len() < whole => {
                    state.cost += cost(&rest);
                    state.frames.push_back(rest);
                }
                Some(pong) => {
                    state.cost += cost(&pong);
                    state.pong = Some(Box::new(pong));
                }
            }
        } else if state.cost + cost(&frame) > self.limit + CONTROL_SLACK {
            state.sealed = true;
            state.signal.get_or_insert(Box::new(Signal::SlowConsumer));
            self.signalled.store(true, Ordering::Release);
        } else if let Some(rest) = state.send_direct(frame) {
            state.cost += cost(&rest);
            state.frames.push_back(rest);
        } else {
            return;
        }
        drop(guard);
        self.wake();
    }

    /// Lets [`push`](Self::push) write to the socket `fd` directly while the
    /// queue is empty, counting what it writes in `bytes_out`.
    ///
    /// The caller must call [`detach`](Self::detach) before `fd` is closed.
    pub fn attach(&self, fd: RawFd, bytes_out: Counter) {
        self.lock().direct = Some(Direct { fd, bytes_out });
    }

    /// Stops direct writes; when it returns, none is in progress.
    pub fn detach(&self) {
        self.lock().direct = None;
    }

    /// Stops accepting data frames (the connection is closing).
    pub fn seal(&self) {
        self.lock().sealed = true;
    }

    /// Asks the connection's task to close with `code` and `reason`.
    /// Returns false when the connection was already closing.
    pub fn request_close(&self, code: u16, reason: String) -> bool {
        let mut state = self.lock();
        if state.sealed {
            return false;
        }
        state.sealed = true;
        state.signal = Some(Box::new(Signal::Close(code, reason)));
        self.signalled.store(true, Ordering::Release);
        drop(state);
        self.wake();
        true
    }

    /// Takes the pending signal, if any.
    pub fn take_signal(&self) -> Option<Signal> {
        if !self.signalled.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.lock();
        self.signalled.store(false, Ordering::Release);
        state.signal.take().map(|s| *s)
    }

    /// Records that the writer's last write settled `settled` of the queue's
    /// cost (see [`Outbox::settle`]), then moves queued frames into `batch`
    /// (at most `max` frames in it), a waiting pong first (in place of one
    /// the batch holds and has not begun to write); returns whether `batch`
    /// holds anything to write.
    pub fn drain_into(&self, batch: &mut VecDeque<Bytes>, max: usize, settled: usize) -> bool {
        let mut state = self.lock();
        state.cost = state.cost.saturating_sub(settled);
        if let Some(pong) = state.pong.take() {
            // A pong the writer holds and has not begun (the front may be
            // partly written) is replaced too.
            if let Some(older) = batch.iter_mut().skip(1).find(|f| is_pong(f)) {
                state.cost = state.cost.saturating_sub(cost(older));
                *older = *pong;
            } else if batch.len() < max {
                batch.push_back(*pong);
            } else {
                state.pong = Some(pong);
            }
        }
        while batch.len() < max {
            match state.frames.pop_front() {
                Some(frame) => batch.push_back(frame),
                None => break,
            }
        }
        if state.frames.is_empty() && state.frames.capacity() > 64 {
            // A burst passed; give its memory back.
            state.frames = VecDeque::new();
        }
        state.writer_busy = !batch.is_empty();
        !batch.is_empty()
    }

    /// Gives back the queue's memory when it is empty. The connection's task
    /// calls it once a turn of its timer, so that room a few queued frames
    /// once needed is not kept while the connection idles; a burst past 64
    /// frames gives its room back at once ([`drain_into`](Self::drain_into)),
    /// without a reallocation per burst for the smaller ones.
    pub fn shed_capacity(&self) {
        let mut state = self.lock();
        if state.frames.is_empty() && state.frames.capacity() > 0 {
            state.frames = VecDeque::new();
        }
    }

    /// The cost a write of `written` bytes settles, when it finished
    /// `finished` frames: their bytes and the [`FRAME_COST`] of each.
    pub fn settle(written: usize, finished: usize) -> usize {
        written + finished * FRAME_COST
    }

    /// What is queued and not yet written costs: its bytes, plus
    /// [`FRAME_COST`] per frame.
    pub fn queued_bytes(&self) -> usize {
        self.lock().cost
    }

    /// Ready once something was pushed or signalled since the last time it
    /// was ready (may be ready spuriously); otherwise the task of `cx` is
    /// woken when that happens. For the outbox's one writer only: a second
    /// waiter would take the first one's place.
    pub fn poll_wait(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.take_writer_wake() {
            return Poll::Ready(());
        }
        self.writer.register(cx.waker());
        // A wake between the first look and the registration found no waker
        // (or the old one): the flag tells.
        if self.take_writer_wake() {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Takes the writer's wake-up, if one is kept: for a writer about to
    /// look at the queue anyway (it finds what the wake-up was for).
    pub fn take_writer_wake(&self) -> bool {
        // A plain load first: a locked instruction only when there is
        // something to take.
        self.woken.load(Ordering::SeqCst) & WOKEN_WRITER != 0
            && self.woken.fetch_and(!WOKEN_WRITER, Ordering::SeqCst) & WOKEN_WRITER != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_marks_a_slow_consumer_and_seals() {
        let outbox = Outbox::new(10);
        assert_eq!(outbox.push(Bytes::from_static(b"123456")), Push::Queued);
        assert_eq!(outbox.push(Bytes::from_static(b"123456")), Push::Overflow);
        assert_eq!(outbox.take_signal(), Some(Signal::SlowConsumer));
        assert_eq!(outbox.push(Bytes::from_static(b"1")), Push::Closed);
    }

    #[test]
    fn a_frame_over_the_limit_fits_an_empty_queue_only() {
        let outbox = Outbox::new(10);
        assert_eq!(
            outbox.push(Bytes::from_static(b"0123456789ab")),
            Push::Queued
        );
        assert_eq!(outbox.push(Bytes::from_static(b"x")), Push::Overflow);
        assert_eq!(outbox.take_signal(), Some(Signal::SlowConsumer));
    }

    #[test]
    fn an_emptied_queue_gives_its_room_back_when_shed() {
        let outbox = Outbox::new(1 << 20);
        let mut batch = VecDeque::new();
        for _ in 0..10 {
            outbox.push_queued(Bytes::from_static(b"x"));
        }
        outbox.drain_into(&mut batch, 4, 0);
        outbox.shed_capacity();
        assert!(
            outbox.lock().frames.capacity() >= 6,
            "kept while frames wait"
        );
        outbox.drain_into(&mut batch, 64, 0);
        assert!(
            outbox.lock().frames.capacity() >= 10,
            "a small burst's room is kept"
        );
        outbox.shed_capacity();
        assert_eq!(outbox.lock().frames.capacity(), 0);
        for _ in 0..100 {
            outbox.push_queued(Bytes::from_static(b"x"));
        }
        batch.clear();
        outbox.drain_into(&mut batch, 128, 0);
        assert_eq!(
            outbox.lock().frames.capacity(),
            0,
            "a large burst's at once"
        );
    }

    #[test]
    fn written_frames_free_their_bytes_and_their_cost() {
        let outbox = Outbox::new(2 * (6 + FRAME_COST));
        assert_eq!(outbox.push(Bytes::from_static(b"123456")), Push::Queued);
        assert_eq!(outbox.queued_bytes(), 6 + FRAME_COST);
        let mut batch = VecDeque::new();
        assert!(outbox.drain_into(&mut batch, 16, 0));
        batch.clear();
        // Half written: its bytes are settled, not yet its slot.
        assert!(!outbox.drain_into(&mut batch, 16, Outbox::settle(3, 0)));
        assert_eq!(outbox.queued_bytes(), 3 + FRAME_COST);
        assert!(!outbox.drain_into(&mut batch, 16, Outbox::settle(3, 1)));
        assert_eq!(outbox.queued_bytes(), 0);
        assert_eq!(outbox.push(Bytes::from_static(b"123456")), Push::Queued);
        assert_eq!(outbox.push(Bytes::from_static(b"123456")), Push::Queued);
        assert_eq!(outbox.queued_bytes(), 2 * (6 + FRAME_COST));
    }

    /// Tiny frames are charged what they cost, not their few bytes: once
    /// 3 million empty publishes fitted a 1 MiB queue two bytes each, and
    /// took ~33 MB of memory for two members that never read.
    #[test]
    fn tiny_frames_fill_the_queue_by_their_real_cost() {
        let limit = 1 << 20;
        let outbox = Outbox::new(limit);
        let empty = crate::frame::data(crate::frame::Kind::Text, b"");
        let mut queued = 0;
        while outbox.push_queued(empty.clone()) == Push::Queued {
            queued += 1;
        }
        assert_eq!(queued, limit / (2 + FRAME_COST));
        assert!(outbox.queued_bytes() <= limit);
        assert_eq!(outbox.take_signal(), Some(Signal::SlowConsumer));
    }

    #[test]
    fn one_pong_waits_at_most_and_goes_before_the_data() {
        let outbox = Outbox::new(1024);
        outbox.push_queued(Bytes::from_static(b"\x81\x01a"));
        let pong = |n: u8| Bytes::from(vec![0x8A, 1, n]);
        // A client that pings and never reads: each pong replaces the last.
        for n in 0..100 {
            outbox.push_control(pong(n));
        }
        assert_eq!(outbox.take_signal(), None, "not a slow consumer");
        assert_eq!(outbox.queued_bytes(), 3 + FRAME_COST + 3 + FRAME_COST);
        let mut batch = VecDeque::new();
        assert!(outbox.drain_into(&mut batch, 16, 0));
        assert_eq!(
            Vec::from(batch),
            [pong(99), Bytes::from_static(b"\x81\x01a")]
        );
        // Taken by the writer: a newer pong waits behind it, alone.
        outbox.push_control(pong(100));
        outbox.push_control(pong(101));
        let mut batch = VecDeque::new();
        assert!(outbox.drain_into(&mut batch, 16, Outbox::settle(6, 2)));
        assert_eq!(Vec::from(batch), [pong(101)]);
        assert_eq!(outbox.queued_bytes(), 3 + FRAME_COST);
    }

    #[test]
    fn close_frames_pass_a_full_queue_by_the_slack_only() {
        let outbox = Outbox::new(1024);
        assert_eq!(outbox.push(Bytes::from(vec![0x82; 1000])), Push::Queued);
        let close = Bytes::from(vec![0x88, 2, 3, 232]);
        outbox.push_control(close.clone());
        assert_eq!(
            outbox.take_signal(),
            None,
            "a close frame fits behind a full queue"
        );
        // Pings (not pongs) are not replaced: the slack bounds them.
        let ping = Bytes::from(vec![0x89, 0]);
        for _ in 0..CONTROL_SLACK / cost(&ping) {
            outbox.push_control(ping.clone());
        }
        assert_eq!(outbox.take_signal(), Some(Signal::SlowConsumer));
        assert!(outbox.queued_bytes() <= 1024 + CONTROL_SLACK);
    }

    #[test]
    fn an_idle_queue_writes_straight_to_the_socket_in_order() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let (ours, mut peer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let outbox = Outbox::new(1 << 20);
        let bytes_out = Counter::default();
        outbox.attach(ours.as_raw_fd(), bytes_out.clone());

        // Nothing queued, writer idle: written at once, nothing queued.
        assert_eq!(outbox.push(Bytes::from_static(b"one,")), Push::Queued);
        assert_eq!(outbox.queued_bytes(), 0);
        assert_eq!(bytes_out.get(), 4);

        // The writer holds a batch: later frames queue behind it.
        assert_eq!(
            outbox.push_queued(Bytes::from_static(b"two,")),
            Push::Queued
        );
        let mut batch = VecDeque::new();
        assert!(outbox.drain_into(&mut batch, 16, 0));
        assert_eq!(outbox.push(Bytes::from_static(b"three,")), Push::Queued);
        assert_eq!(
            outbox.queued_bytes(),
            4 + 6 + 2 * FRAME_COST,
            "queued behind the writer's batch"
        );
        // The writer writes its batch, then what queued meanwhile.
        std::io::Write::write_all(&mut &ours, &batch.pop_front().expect("two")).expect("write");
        assert!(outbox.drain_into(&mut batch, 16, Outbox::settle(4, 1)));
        std::io::Write::write_all(&mut &ours, &batch.pop_front().expect("three")).expect("write");
        assert!(!outbox.drain_into(&mut batch, 16, Outbox::settle(6, 1)));
        assert_eq!(outbox.push(Bytes::from_static(b"four")), Push::Queued);
        assert_eq!(outbox.queued_bytes(), 0);

        // Detached (the writer is gone): queued, never written.
        outbox.detach();
        assert_eq!(outbox.push(Bytes::from_static(b"!")), Push::Queued);
        assert_eq!(outbox.queued_bytes(), 1 + FRAME_COST);

        drop(ours);
        let mut got = String::new();
        peer.read_to_string(&mut got).expect("read");
        assert_eq!(got, "one,two,three,four");
    }

    #[test]
    fn what_the_socket_does_not_take_is_queued() {
        use std::os::fd::AsRawFd;
        let (ours, _peer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let outbox = Outbox::new(64 << 20);
        outbox.attach(ours.as_raw_fd(), Counter::default());
        // Far more than a socket buffer holds: part is written, the rest queued.
        let big = Bytes::from(vec![b'x'; 16 << 20]);
        assert_eq!(outbox.push(big), Push::Queued);
        let queued = outbox.queued_bytes();
        assert!(
            queued > FRAME_COST && queued < FRAME_COST + (16 << 20),
            "queued {queued}"
        );
        // The writer owns the rest now: nothing may jump ahead of it.
        assert_eq!(outbox.push(Bytes::from_static(b"y")), Push::Queued);
        assert_eq!(outbox.queued_bytes(), queued + 1 + FRAME_COST);
    }

    #[test]
    fn a_quiet_push_owes_one_wake_per_empty_queue() {
        let outbox = Outbox::new(2 * (1 + FRAME_COST));
        assert_eq!(
            outbox.push_quiet(Bytes::from_static(b"a")),
            (Push::Queued, true)
        );
        assert_eq!(
            outbox.push_quiet(Bytes::from_static(b"b")),
            (Push::Queued, false),
            "the first push's wake covers it"
        );
        assert_eq!(
            outbox.push_quiet(Bytes::from_static(b"c")),
            (Push::Overflow, false),
            "an overflow wakes the writer itself"
        );
        assert_eq!(outbox.take_signal(), Some(Signal::SlowConsumer));
        assert_eq!(
            outbox.push_quiet(Bytes::from_static(b"d")),
            (Push::Closed, false)
        );
        let drained = Outbox::new(1024);
        assert!(drained.push_quiet(Bytes::from_static(b"a")).1);
        let mut batch = VecDeque::new();
        assert!(drained.drain_into(&mut batch, 16, 0));
        assert!(
            drained.push_quiet(Bytes::from_static(b"b")).1,
            "taken by the writer: the next frame owes a wake again"
        );
    }

    /// Counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A waker and the count of its wake-ups (`count.0`).
    fn counting_waker() -> (std::sync::Arc<Count>, std::task::Waker) {
        let count = std::sync::Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        (count.clone(), std::task::Waker::from(count))
    }

    /// The writer's wait keeps a wake-up that came while it was not
    /// waiting, and a wake-up while it waits reaches its task.
    #[test]
    fn the_writer_is_woken_once_per_push_whenever_it_looks() {
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let outbox = Outbox::new(1024);
        assert!(outbox.poll_wait(&mut cx).is_pending(), "nothing pushed yet");
        outbox.push_queued(Bytes::from_static(b"a"));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the waiting writer woken"
        );
        assert!(outbox.poll_wait(&mut cx).is_ready());
        assert!(outbox.poll_wait(&mut cx).is_pending(), "taken once");
        outbox.request_close(4000, "bye".into());
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "a signal wakes it too");
        assert!(outbox.poll_wait(&mut cx).is_ready());
        // Not waiting (the last wake took its waker): the wake is kept.
        outbox.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "no waker to wake");
        assert!(
            outbox.poll_wait(&mut cx).is_ready(),
            "kept for the next look"
        );
    }

    /// The task's other sources wake it through the writer's waker and
    /// say so; the writer's own wait is not ended by them, and a turn can
    /// tell a wake-up for the writer alone from one for the rest.
    #[test]
    fn other_wake_ups_are_marked_apart_from_the_writers() {
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let outbox = Outbox::new(1024);
        assert!(outbox.poll_wait(&mut cx).is_pending());
        outbox.wake_other();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert!(outbox.woken_other());
        assert!(
            outbox.poll_wait(&mut cx).is_pending(),
            "not a wake-up for the writer"
        );
        assert_eq!(outbox.take_woken(), WOKEN_OTHER);
        assert!(!outbox.woken_other(), "taken");
        outbox.push_queued(Bytes::from_static(b"a"));
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(outbox.take_woken(), WOKEN_WRITER, "the writer's alone");
        assert_eq!(
            outbox.take_woken(),
            WOKEN_WRITER,
            "left for the writer to take"
        );
        assert!(outbox.take_writer_wake());
        assert!(!outbox.take_writer_wake());
        assert_eq!(outbox.take_woken(), 0);
    }

    /// A push behind queued frames wakes nobody: the writer has a wake-up
    /// coming for the first, or takes it with them.
    #[test]
    fn only_a_push_into_an_empty_queue_wakes_the_writer() {
        let outbox = Outbox::new(1024);
        outbox.push_queued(Bytes::from_static(b"a"));
        assert!(outbox.take_writer_wake());
        outbox.push_queued(Bytes::from_static(b"b"));
        assert!(!outbox.take_writer_wake(), "queued behind a");
        let mut batch = VecDeque::new();
        assert!(outbox.drain_into(&mut batch, 16, 0));
        assert_eq!(batch.len(), 2);
        outbox.push_queued(Bytes::from_static(b"c"));
        assert!(outbox.take_writer_wake(), "the queue was empty again");
    }

    #[test]
    fn close_request_is_taken_once() {
        let outbox = Outbox::new(10);
        assert!(outbox.request_close(4000, "bye".into()));
        assert!(!outbox.request_close(4001, "again".into()));
        assert_eq!(
            outbox.take_signal(),
            Some(Signal::Close(4000, "bye".into()))
        );
        assert_eq!(outbox.take_signal(), None);
        assert_eq!(outbox.push(Bytes::from_static(b"x")), Push::Closed);
    }
}
