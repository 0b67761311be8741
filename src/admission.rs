//! The admission queue of open events: handshakes waiting for a PHP-FPM
//! slot to run their open event, so that a reconnect storm (every client of
//! a restarted server coming back at once) is absorbed instead of timing out
//! into a retry loop.
//!
//! A handshake enters the queue before its open event is sent and leaves it
//! when PHP answered. It is admitted while fewer than `fpm.open_queue` opens
//! are queued and its estimated wait, its place in the queue times the
//! pool's time per event divided by `fpm.pool_size`, fits
//! `fpm.queue_timeout` (the wait for a free FastCGI connection it would get).
//! Otherwise it is turned away at once with the time until it would be
//! admitted as its Retry-After, instead of waiting only to time out:
//!
//! ```text
//! client offered ws2fcgi.v1   101, then close 1013 "busy; retry after N"
//! any other client            503 Service Unavailable, Retry-After: N
//! ```
//!
//! (A browser shows no HTTP status of a refused handshake; it shows a close
//! code and reason, which ws2fcgi.js reads.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The longest Retry-After given, in seconds.
pub const MAX_RETRY_AFTER_SECS: u64 = 60;

/// Close code of an open turned away because the queue is full (IANA 1013 "Try Again Later").
pub const CLOSE_TRY_AGAIN: u16 = 1013;

/// The close reason of [`CLOSE_TRY_AGAIN`] for a Retry-After of `secs`.
pub fn reason(secs: u64) -> String {
    format!("busy; retry after {secs}")
}

/// The open events queued or running now.
#[derive(Debug, Default)]
pub struct Admission {
    queued: Arc<AtomicUsize>,
}

/// A place in the queue, given back when dropped (PHP answered, or the
/// client left).
#[must_use = "the place is given back when the ticket is dropped"]
#[derive(Debug)]
pub struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why an open was turned away: the queue is full for this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// Seconds until the queue has room, as the client's Retry-After.
    pub retry_after_secs: u64,
}

/// The bounds an open is admitted within.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// `fpm.open_queue`: opens queued at most.
    pub open_queue: usize,
    /// `fpm.pool_size`: events run at once.
    pub pool_size: usize,
    /// `fpm.queue_timeout`: the longest wait for a slot.
    pub queue_timeout: Duration,
    /// The pool's time per event (its recent fastest, `FpmPool::event_time`),
    /// when it has run any.
    pub event_time: Option<Duration>,
}

impl Admission {
    /// Opens queued or running now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Takes a place in the queue within `bounds`, or says how long to wait.
    pub fn enter(&self, bounds: &Bounds) -> Result<Ticket, Full> {
        let place = self.queued.fetch_add(1, Ordering::Relaxed) + 1;
        let ticket = Ticket(self.queued.clone());
        match decide(place, bounds) {
            Ok(()) => Ok(ticket),
            Err(full) => Err(full),
        }
    }
}

/// Is the `place`-th open in the queue admitted within `bounds`? Else the
/// Retry-After: the time until it would be, at least 1 s, at most
/// [`MAX_RETRY_AFTER_SECS`]: the pool's time for the opens past
/// `open_queue` ahead of it, or what its estimated wait exceeds
/// `queue_timeout` by, whichever is longer.
pub fn decide(place: usize, bounds: &Bounds) -> Result<(), Full> {
    let pool = bounds.pool_size.max(1);
    let rounds = |opens: usize| u32::try_from(opens.div_ceil(pool)).unwrap_or(u32::MAX);
    let wait = bounds
        .event_time
        .map(|each| each.saturating_mul(rounds(place)));
    let beyond_count =
        (bounds.open_queue > 0 && place > bounds.open_queue).then(|| place - bounds.open_queue);
    let beyond_time = wait
        .filter(|w| *w > bounds.queue_timeout)
        .map(|w| w - bounds.queue_timeout);
    if beyond_count.is_none() && beyond_time.is_none() {
        return Ok(());
    }
    let for_count = beyond_count
        .zip(bounds.event_time)
        .map(|(opens, each)| each.saturating_mul(rounds(opens)));
    let secs = for_count
        .max(beyond_time)
        .map_or(1, |d| d.as_secs_f64().ceil() as u64);
    Err(Full {
        retry_after_secs: secs.clamp(1, MAX_RETRY_AFTER_SECS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(open_queue: usize, event_ms: Option<u64>) -> Bounds {
        Bounds {
            open_queue,
            pool_size: 8,
            queue_timeout: Duration::from_secs(5),
            event_time: event_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn the_storm_of_the_issue_fits_the_queue() {
        // 10,000 opens of 2 ms on a pool of 8: the last waits 2.5 s.
        assert_eq!(decide(10_000, &bounds(16_384, Some(2))), Ok(()));
        assert_eq!(decide(1, &bounds(16_384, None)), Ok(()));
    }

    #[test]
    fn past_the_count_or_the_time_the_answer_is_when_it_would_fit() {
        let full = |secs| {
            Err(Full {
                retry_after_secs: secs,
            })
        };
        // One past 100 opens of 80 ms on 8: one round, 80 ms: at least 1 s.
        assert_eq!(decide(101, &bounds(100, Some(80))), full(1));
        // 900 past 100 opens of 80 ms on 8: 113 rounds, 9.04 s.
        assert_eq!(decide(1_000, &bounds(100, Some(80))), full(10));
        assert_eq!(decide(101, &bounds(100, None)), full(1));
        // 1,000 opens of 50 ms on 8: 6.25 s, 1.25 s past queue_timeout.
        assert_eq!(decide(1_000, &bounds(16_384, Some(50))), full(2));
        assert_eq!(
            decide(1_000_000, &bounds(16_384, Some(50))),
            full(MAX_RETRY_AFTER_SECS)
        );
        // 0: no count bound, only the time.
        assert_eq!(decide(1_000_000, &bounds(0, None)), Ok(()));
    }

    #[test]
    fn a_ticket_holds_its_place_until_dropped() {
        let admission = Admission::default();
        let b = bounds(2, None);
        let first = admission.enter(&b).unwrap();
        let second = admission.enter(&b).unwrap();
        assert_eq!(admission.enter(&b).unwrap_err().retry_after_secs, 1);
        assert_eq!(admission.queued(), 2, "a refused open gives its place back");
        drop(first);
        let _third = admission.enter(&b).unwrap();
        drop(second);
        assert_eq!(admission.queued(), 1);
        assert_eq!(reason(3), "busy; retry after 3");
    }
}
