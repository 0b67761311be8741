//! The inbound byte budget: how much of what clients send the daemon holds.
//!
//! Every byte a client sent and the daemon still holds is charged, per
//! connection and to one budget shared by all of them:
//!
//! ```text
//!  socket ──▶ read buffer ──▶ message being assembled ──▶ queued event ──▶ PHP
//!             (ReadSide)      (the decoder)               (Charge, until PHP answered)
//! ```
//!
//! - the read buffer (`transport::ReadSide`), by its capacity, while it exists;
//! - the payload handed to the decoder for the message it is assembling,
//!   twice over when the message comes in fragments (the decoder gathers
//!   them in a growing buffer);
//! - each complete message, from the moment the decoder yields it until PHP
//!   has answered its event (a [`Charge`] travels with the event).
//!
//! Frame headers and control frames are not charged: the decoder keeps at
//! most one control frame (125 bytes) at a time.
//!
//! A connection may hold `websocket.inbound_queue_bytes` ([`Ledger`]), and
//! all of them together `limits.inbound_bytes` ([`Budget`]). A read side that
//! may not take more stops reading: TCP backpressure reaches the client, and
//! nothing is buffered or dropped. It waits for its own events to finish
//! (its share), or for any charge to be given back (the budget).
//!
//! Two rules keep this free of deadlock:
//! - a connection with nothing queued may always hold one whole message
//!   ([`Ledger::room`]), whatever its share, so a message larger than the
//!   share still gets through;
//! - when the budget is spent, one connection at a time — one that holds part
//!   of a message and has nothing queued, so that only more reading frees
//!   anything — may go past the budget by its room (the *overdraft*), until
//!   that message is complete. Otherwise clients each holding part of a
//!   message could fill the budget and wait for each other forever.
//!
//! So the bytes held stay under `limits.inbound_bytes` plus one message's
//! room, plus one read (4 KiB) per worker thread racing the same last bytes.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

use crate::hub::ConnHandle;
use crate::metrics::Metrics;

/// The budget every connection's inbound bytes are charged to; one per daemon.
pub struct Budget {
    limit: usize,
    /// Bytes charged now: also the `ws2fcgi_inbound_bytes` gauge.
    used: Gauge,
    /// Read sides waiting for bytes to be given back (the overdraft's
    /// holder aside).
    waiting: AtomicUsize,
    wake: Arc<Notify>,
    /// Held by the one connection allowed past the limit (see the module docs).
    overdraft: AtomicBool,
    /// Wakes the overdraft's holder, which may go on where others may not.
    overdraft_wake: Arc<Notify>,
    paused_share: Counter,
    paused_budget: Counter,
    /// Compressed messages from clients inflated (permessage-deflate): kept
    /// here, shared, so a read side counts them without a field of its own.
    inflated: Counter,
}

impl Budget {
    /// A budget of `limit` bytes, reporting to `metrics`.
    pub fn new(limit: usize, metrics: &Metrics) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: metrics.inbound_bytes.clone(),
            waiting: AtomicUsize::new(0),
            wake: Arc::new(Notify::new()),
            overdraft: AtomicBool::new(false),
            overdraft_wake: Arc::new(Notify::new()),
            paused_share: metrics.inbound_paused("connection"),
            paused_budget: metrics.inbound_paused("budget"),
            inflated: metrics.compression.inflated_messages.clone(),
        })
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        usize::try_from(self.used.get()).unwrap_or(0)
    }

    /// The limit, `limits.inbound_bytes`.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn add(&self, n: usize) {
        if n > 0 {
            self.used.inc_by(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    fn give_back(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.used.dec_by(i64::try_from(n).unwrap_or(i64::MAX));
        // Pairs with the fence in `Intake::start_waiting`: either the waiter sees the
        // bytes given back, or this sees the waiter.
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            // One waiter at a time; it passes the wake-up on while bytes are
            // left (see `Intake::allowance`), so a crowd is not woken for
            // every message.
            self.wake.notify_one();
        }
        if self.overdraft.load(Ordering::SeqCst) {
            // Its holder may use bytes the others may not, so the one woken
            // above might leave them be.
            self.overdraft_wake.notify_one();
        }
    }

    fn release_overdraft(&self) {
        self.overdraft.store(false, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            // Any waiter may be the one that needs it: wake them all.
            self.wake.notify_waiters();
        }
    }
}

/// What one connection's events waiting for PHP hold, in bytes: shared by
/// its read side ([`Intake`]) and its events' [`Charge`]s. It lives in the
/// connection's hub handle (`ConnHandle::inbound`), which both keep alive
/// anyway, so that it costs no allocation of its own.
#[derive(Debug, Default)]
pub struct Queued(AtomicUsize);

impl Queued {
    /// Bytes held by the connection's events waiting for PHP.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One connection's terms: the budget it is charged to, its share, and its
/// room for one message. What its events hold is its handle's [`Queued`].
pub struct Ledger {
    budget: Arc<Budget>,
    share: usize,
    room: usize,
}

impl Ledger {
    /// A connection's ledger: it may hold `share` bytes
    /// (`websocket.inbound_queue_bytes`), and always one message of
    /// `max_message` read in reads of `read_chunk` bytes.
    pub fn new(budget: Arc<Budget>, share: usize, max_message: usize, read_chunk: usize) -> Self {
        Self {
            budget,
            share,
            room: Self::room(max_message, read_chunk),
        }
    }

    /// What one message may hold while it is read: twice its size (a
    /// fragmented message), the read buffer and a frame header.
    pub fn room(max_message: usize, read_chunk: usize) -> usize {
        max_message
            .saturating_mul(2)
            .saturating_add(read_chunk.max(crate::transport::STACK_READ))
            .saturating_add(64)
    }
}

/// The bytes of one message waiting for (or in) PHP; given back when dropped.
pub struct Charge {
    conn: Arc<ConnHandle>,
    budget: Arc<Budget>,
    bytes: usize,
}

impl Charge {
    /// Bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Charge({})", self.bytes)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.conn.inbound.0.fetch_sub(self.bytes, Ordering::Relaxed);
        self.budget.give_back(self.bytes);
    }
}

/// Why reading is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// The connection's share is held; its own events give it back.
    Share,
    /// The budget is spent; any charge given back may let it go on.
    Budget,
}

/// The read side's part of a connection's account: its buffer, the message
/// the decoder is assembling, and its wait for bytes.
pub struct Intake {
    /// The connection: what its events hold is its handle's `inbound`.
    conn: Arc<ConnHandle>,
    ledger: Ledger,
    /// Charged for the read buffer (its capacity).
    buffer: usize,
    /// Charged for the payload handed to the decoder since its last message.
    message: usize,
    /// This connection holds the overdraft.
    overdraft: bool,
    pause: Option<Pause>,
    /// Registered with the budget while paused for it (boxed: rare).
    waiter: Option<Pin<Box<OwnedNotified>>>,
    /// `waiter` waits as the overdraft's holder.
    waiter_overdraft: bool,
}

impl Intake {
    /// An empty account for the connection `conn`, on `ledger`'s terms.
    pub fn new(conn: Arc<ConnHandle>, ledger: Ledger) -> Self {
        Self {
            conn,
            ledger,
            buffer: 0,
            message: 0,
            overdraft: false,
            pause: None,
            waiter: None,
            waiter_overdraft: false,
        }
    }

    /// Is reading paused by the budget or the connection's share?
    pub fn is_paused(&self) -> bool {
        self.pause.is_some()
    }

    /// How many more bytes (1 to `want`) this connection may take now;
    /// `Pending` while it may take none, after arranging to be woken.
    /// What is granted must be charged at once with [`Intake::hold_buffer`]
    /// or [`Intake::hold_message`].
    pub fn allowance(&mut self, want: usize, cx: &mut Context<'_>) -> Poll<usize> {
        let want = want.max(1);
        let queued = self.conn.inbound.get();
        let mine = queued + self.buffer + self.message;
        // Nothing queued: one whole message always fits.
        let share = if queued == 0 {
            self.ledger.share.max(self.ledger.room)
        } else {
            self.ledger.share
        };
        let want = match share.saturating_sub(mine) {
            0 if queued > 0 => {
                // Its own events give bytes back, and wake its task.
                self.stop_waiting();
                return self.paused(Pause::Share);
            }
            // Past the room with nothing queued cannot happen (reads are
            // bounded by it); never wait for what nothing would give back.
            0 => want,
            free => want.min(free),
        };
        loop {
            let free = self.budget_free();
            if free > 0 {
                if self.stop_waiting() && free > want {
                    // Pass the wake-up on: there is more for others.
                    self.ledger.budget.wake.notify_one();
                }
                self.pause = None;
                return Poll::Ready(want.min(free));
            }
            if !self.overdraft
                && queued == 0
                && self.buffer + self.message > 0
                && self
                    .ledger
                    .budget
                    .overdraft
                    .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                self.overdraft = true;
                continue;
            }
            match &mut self.waiter {
                Some(waiter) if self.waiter_overdraft == self.overdraft => {
                    match waiter.as_mut().poll(cx) {
                        Poll::Pending => return self.paused(Pause::Budget),
                        // Woken: wait again (registered before looking).
                        Poll::Ready(()) => {
                            self.stop_waiting();
                            self.start_waiting();
                        }
                    }
                }
                _ => {
                    self.stop_waiting();
                    self.start_waiting();
                }
            }
        }
    }

    /// Registers to be woken when bytes are given back (or, for the
    /// overdraft's holder, on its own), before looking again.
    fn start_waiting(&mut self) {
        let budget = &self.ledger.budget;
        let notify = if self.overdraft {
            &budget.overdraft_wake
        } else {
            budget.waiting.fetch_add(1, Ordering::SeqCst);
            &budget.wake
        };
        let mut waiter = Box::pin(notify.clone().notified_owned());
        waiter.as_mut().enable();
        // Pairs with the fence in `Budget::give_back`.
        fence(Ordering::SeqCst);
        self.waiter = Some(waiter);
        self.waiter_overdraft = self.overdraft;
    }

    /// Stops waiting, if it was; says whether it was.
    fn stop_waiting(&mut self) -> bool {
        if self.waiter.take().is_none() {
            return false;
        }
        if !self.waiter_overdraft {
            self.ledger.budget.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        true
    }

    /// Counts a compressed message from the client (`ws2fcgi_inflated_messages_total`).
    pub fn count_inflated(&self) {
        self.ledger.budget.inflated.inc();
    }

    /// Up to `want` more bytes this connection may take now without waiting
    /// (0 when none): for a larger buffer than a read strictly needs.
    pub fn spare(&self, want: usize) -> usize {
        let queued = self.conn.inbound.get();
        let share = if queued == 0 {
            self.ledger.share.max(self.ledger.room)
        } else {
            self.ledger.share
        };
        let mine = queued + self.buffer + self.message;
        want.min(share.saturating_sub(mine)).min(self.budget_free())
    }

    /// Bytes the budget has left for this connection now.
    fn budget_free(&self) -> usize {
        let budget = &self.ledger.budget;
        let limit = if self.overdraft {
            budget.limit.saturating_add(self.ledger.room)
        } else {
            budget.limit
        };
        limit.saturating_sub(budget.used())
    }

    fn paused(&mut self, why: Pause) -> Poll<usize> {
        if self.pause != Some(why) {
            match why {
                Pause::Share => self.ledger.budget.paused_share.inc(),
                Pause::Budget => self.ledger.budget.paused_budget.inc(),
            };
            self.pause = Some(why);
        }
        Poll::Pending
    }

    /// Charges `n` bytes of read buffer (bytes already in memory are charged
    /// even past the limits: they exist).
    pub fn hold_buffer(&mut self, n: usize) {
        self.buffer += n;
        self.ledger.budget.add(n);
    }

    /// The read buffer is gone: gives its charge back.
    pub fn free_buffer(&mut self) {
        let n = std::mem::take(&mut self.buffer);
        self.ledger.budget.give_back(n);
    }

    /// Charges `n` bytes handed to the decoder for the message it assembles.
    pub fn hold_message(&mut self, n: usize) {
        self.message += n;
        self.ledger.budget.add(n);
    }

    /// The decoder yielded a message: what was charged for it moves to the
    /// returned [`Charge`], which travels with the event until PHP is done.
    pub fn message_done(&mut self) -> Charge {
        let bytes = std::mem::take(&mut self.message);
        self.conn.inbound.0.fetch_add(bytes, Ordering::Relaxed);
        if std::mem::take(&mut self.overdraft) {
            self.ledger.budget.release_overdraft();
        }
        Charge {
            conn: self.conn.clone(),
            budget: self.ledger.budget.clone(),
            bytes,
        }
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.stop_waiting();
        let budget = &self.ledger.budget;
        budget.give_back(self.buffer + self.message);
        if self.overdraft {
            budget.release_overdraft();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// A budget of `limit`, and a connection with an account on it.
    fn setup(limit: usize) -> (Arc<Budget>, Arc<ConnHandle>) {
        let budget = Budget::new(limit, &Metrics::new());
        (
            budget,
            crate::hub::Hub::new(Default::default()).register(1024),
        )
    }

    /// An account for `conn` with `share`; its room is 2 × 100 + 4096 + 64 = 4360.
    fn intake(budget: &Arc<Budget>, conn: &Arc<ConnHandle>, share: usize) -> Intake {
        Intake::new(conn.clone(), Ledger::new(budget.clone(), share, 100, 1024))
    }

    fn poll(intake: &mut Intake, want: usize) -> Poll<usize> {
        intake.allowance(want, &mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn charges_move_with_the_message_and_come_back_when_dropped() {
        let (budget, conn) = setup(100_000);
        let mut intake = intake(&budget, &conn, 10_000);
        assert_eq!(poll(&mut intake, 4096), Poll::Ready(4096));
        intake.hold_buffer(300);
        intake.hold_message(200);
        assert_eq!(budget.used(), 500);
        intake.free_buffer();
        let charge = intake.message_done();
        assert_eq!(
            (charge.bytes(), conn.inbound.get(), budget.used()),
            (200, 200, 200)
        );
        drop(charge);
        assert_eq!((conn.inbound.get(), budget.used()), (0, 0));
        intake.hold_message(50);
        drop(intake);
        assert_eq!(budget.used(), 0, "a read side gives back what it held");
    }

    #[test]
    fn a_full_share_pauses_until_the_events_finish_but_one_message_always_fits() {
        let (budget, conn) = setup(1 << 20);
        let mut intake = intake(&budget, &conn, 1000);
        // Nothing queued: the room (4360), not the share (1000), is the limit.
        assert_eq!(poll(&mut intake, 1 << 20), Poll::Ready(4360));
        intake.hold_message(900);
        let queued = intake.message_done();
        assert_eq!(poll(&mut intake, 500), Poll::Ready(100), "the share's rest");
        intake.hold_buffer(100);
        assert_eq!(poll(&mut intake, 500), Poll::Pending);
        assert!(intake.is_paused());
        drop(queued);
        assert_eq!(poll(&mut intake, 500), Poll::Ready(500));
        assert!(!intake.is_paused());
        assert_eq!(budget.paused_share.get(), 1);
    }

    #[test]
    fn a_spent_budget_pauses_every_reader_until_bytes_come_back() {
        let (budget, conn) = setup(1000);
        let other = crate::hub::Hub::new(Default::default()).register(1024);
        let mut a = intake(&budget, &conn, 10_000);
        let mut b = intake(&budget, &other, 10_000);
        assert_eq!(poll(&mut a, 4096), Poll::Ready(1000));
        a.hold_message(1000);
        let charge = a.message_done();
        assert_eq!(
            poll(&mut b, 10),
            Poll::Pending,
            "b holds nothing: no overdraft"
        );
        assert_eq!(budget.waiting.load(Ordering::SeqCst), 1);
        drop(charge);
        assert_eq!(poll(&mut b, 10), Poll::Ready(10));
        assert_eq!(budget.waiting.load(Ordering::SeqCst), 0);
        assert_eq!(budget.paused_budget.get(), 1);
    }

    #[test]
    fn partial_messages_filling_the_budget_get_one_overdraft_at_a_time() {
        let (budget, conn) = setup(1000);
        let other = crate::hub::Hub::new(Default::default()).register(1024);
        let (mut a, mut b) = (
            intake(&budget, &conn, 10_000),
            intake(&budget, &other, 10_000),
        );
        // Each holds half a message; the budget is spent.
        a.hold_message(500);
        b.hold_message(500);
        assert_eq!(
            poll(&mut a, 100),
            Poll::Ready(100),
            "a goes past the budget"
        );
        assert!(a.overdraft);
        assert_eq!(poll(&mut b, 100), Poll::Pending, "only one at a time");
        a.hold_message(100);
        let done = a.message_done();
        assert!(
            !budget.overdraft.load(Ordering::SeqCst),
            "given back with the message"
        );
        // a's message is queued: b may take the overdraft now, within limit + room.
        assert_eq!(poll(&mut b, 1 << 20), Poll::Ready(1000 + 4360 - 1100));
        drop(done);
        drop(b);
        assert!(!budget.overdraft.load(Ordering::SeqCst));
        assert_eq!(budget.used(), 0);
    }
}
