//! Open-loop pacing: slot k of a rate-R schedule is due at `start + k/R`.
//!
//! A sender that falls behind catches up in a burst instead of silently
//! lowering the rate, so the achieved rate shows whether the target kept up.
//! Tokio's timer has millisecond granularity, so at rates above 1000/s slots
//! come in small bursts per millisecond.

use tokio::time::Instant;

/// Hands out due times of a fixed-rate schedule.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    /// Slots per second; `None`: unpaced.
    rate: Option<f64>,
    next: u64,
}

impl Pacer {
    /// A schedule of `rate` slots per second from now; 0 (or less) means unpaced.
    pub fn new(rate: f64) -> Self {
        Self {
            start: Instant::now(),
            rate: (rate > 0.0).then_some(rate),
            next: 0,
        }
    }

    /// The next slot's due time (`None` when unpaced: always now).
    pub fn next_due(&mut self) -> Option<Instant> {
        let rate = self.rate?;
        let due = self.start + std::time::Duration::from_secs_f64(self.next as f64 / rate);
        self.next += 1;
        Some(due)
    }

    /// Waits for the next slot; `false` (without waiting) when it falls after `deadline`.
    pub async fn wait(&mut self, deadline: Instant) -> bool {
        match self.next_due() {
            Some(due) if due >= deadline => false,
            Some(due) => {
                tokio::time::sleep_until(due).await;
                true
            }
            None => Instant::now() < deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn slots_follow_the_rate_and_stop_at_the_deadline() {
        let start = Instant::now();
        let mut pacer = Pacer::new(10.0);
        let deadline = start + Duration::from_millis(450);
        let mut slots = 0;
        while pacer.wait(deadline).await {
            slots += 1;
        }
        // 0, 100, 200, 300, 400 ms
        assert_eq!(slots, 5);
        assert!(Instant::now() - start >= Duration::from_millis(400));
    }

    #[test]
    fn unpaced_has_no_due_times() {
        assert_eq!(Pacer::new(0.0).next_due(), None);
    }
}
