//! One connection's outbound queue, shared by everyone who sends to it.
//!
//! PHP's answers, publishes, sends, and tungstenite's own pongs and close
//! frames all land here as encoded frames; the connection's task writes them
//! out in order, many per `writev`. The queue is bounded in *bytes*
//! (`websocket.outbound_queue_bytes`): a client that stops reading fills it,
//! and the next push marks it a slow consumer, to be cut off with close 1008,
//! instead of growing the daemon's memory or delaying other members.
//!
//! An idle outbox allocates nothing (an empty `VecDeque` has no buffer).

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

/// How far control frames (pongs, close) may go past the byte limit.
pub const CONTROL_SLACK: usize = 4096;

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued; the writer has been woken.
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
    /// Bytes queued and not yet written to the socket (including frames the
    /// writer has taken but not finished).
    bytes: usize,
    /// No more data frames are accepted (closing, closed, or slow).
    sealed: bool,
    /// Boxed: rare, and a close reason would otherwise widen every queue.
    signal: Option<Box<Signal>>,
}

/// The queue; lives in the connection's shared handle.
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    limit: usize,
}

impl Outbox {
    /// An empty outbox holding at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            limit,
        }
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
        let mut state = self.lock();
        if state.sealed {
            return Push::Closed;
        }
        if state.bytes > 0 && state.bytes + frame.len() > self.limit {
            state.sealed = true;
            state.signal.get_or_insert(Box::new(Signal::SlowConsumer));
            drop(state);
            self.notify.notify_one();
            return Push::Overflow;
        }
        state.bytes += frame.len();
        state.frames.push_back(frame);
        drop(state);
        self.notify.notify_one();
        Push::Queued
    }

    /// Queues protocol bytes (pongs, close frames) from the connection's own
    /// task. They may go [`CONTROL_SLACK`] bytes past the limit, so a close
    /// frame still fits behind a full queue; past that (a client that sends
    /// pings and never reads the pongs) the client is a slow consumer.
    pub fn push_control(&self, frame: Bytes) {
        let mut state = self.lock();
        if state.bytes + frame.len() > self.limit + CONTROL_SLACK {
            state.sealed = true;
            state.signal.get_or_insert(Box::new(Signal::SlowConsumer));
        } else {
            state.bytes += frame.len();
            state.frames.push_back(frame);
        }
        drop(state);
        self.notify.notify_one();
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
        drop(state);
        self.notify.notify_one();
        true
    }

    /// Takes the pending signal, if any.
    pub fn take_signal(&self) -> Option<Signal> {
        self.lock().signal.take().map(|s| *s)
    }

    /// Moves queued frames into `batch` (at most `max` frames in it); returns
    /// whether there is anything to write or a signal to act on.
    pub fn drain_into(&self, batch: &mut VecDeque<Bytes>, max: usize) -> bool {
        let mut state = self.lock();
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
        !batch.is_empty() || state.signal.is_some()
    }

    /// Records that `n` queued bytes reached the socket.
    pub fn written(&self, n: usize) {
        let mut state = self.lock();
        state.bytes = state.bytes.saturating_sub(n);
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Waits until something is pushed or signalled (may wake spuriously).
    pub async fn wait(&self) {
        self.notify.notified().await;
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
    fn written_bytes_free_room() {
        let outbox = Outbox::new(10);
        assert_eq!(outbox.push(Bytes::from_static(b"123456")), Push::Queued);
        let mut batch = VecDeque::new();
        assert!(outbox.drain_into(&mut batch, 16));
        outbox.written(6);
        assert_eq!(outbox.push(Bytes::from_static(b"123456")), Push::Queued);
        assert_eq!(outbox.queued_bytes(), 6);
    }

    #[test]
    fn pongs_never_read_make_a_slow_consumer() {
        let outbox = Outbox::new(100);
        let pong = Bytes::from(vec![0u8; 127]);
        for _ in 0..(100 + CONTROL_SLACK) / 127 {
            outbox.push_control(pong.clone());
        }
        assert_eq!(outbox.take_signal(), None);
        outbox.push_control(pong.clone());
        assert_eq!(outbox.take_signal(), Some(Signal::SlowConsumer));
        assert!(outbox.queued_bytes() <= 100 + CONTROL_SLACK);
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
