//! Figures: latency percentiles, error tallies, rates.
//!
//! Latencies go into HdrHistograms (nanoseconds, 3 significant digits, up to
//! 60 s). Thousands of tasks record at once, so instead of one histogram per
//! task (≈200 KiB each) or one contended lock per sample, each task fills a
//! small [`LatencyBatch`] and flushes it into one of a few locked shards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Samples a task keeps before flushing them into a shard.
const BATCH: usize = 64;
/// Locked histograms tasks spread their flushes over.
const SHARDS: usize = 16;
/// Highest latency recorded exactly; longer ones count as this.
const MAX_NS: u64 = 60_000_000_000;
/// Distinct error kinds kept by name; more are counted under "other".
const MAX_ERROR_KINDS: usize = 16;

/// A latency histogram many tasks record into.
pub struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
    next_shard: AtomicUsize,
}

impl Latencies {
    /// An empty recorder.
    pub fn new() -> Arc<Self> {
        let shards = (0..SHARDS).map(|_| Mutex::new(empty())).collect();
        Arc::new(Self {
            shards,
            next_shard: AtomicUsize::new(0),
        })
    }

    /// A batch for one task; it flushes when full and when dropped.
    pub fn batch(self: &Arc<Self>) -> LatencyBatch {
        let shard = self.next_shard.fetch_add(1, Ordering::Relaxed) % SHARDS;
        LatencyBatch {
            samples: Vec::new(),
            shard,
            owner: Arc::clone(self),
        }
    }

    /// Percentiles over everything flushed so far.
    pub fn summary(&self) -> LatencySummary {
        let mut all = empty();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            all.add(&*shard).ok();
        }
        LatencySummary::of(&all)
    }
}

fn empty() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("constant histogram bounds are valid")
}

/// One task's unflushed samples.
pub struct LatencyBatch {
    samples: Vec<u64>,
    shard: usize,
    owner: Arc<Latencies>,
}

impl LatencyBatch {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.record_ns(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one latency in nanoseconds.
    pub fn record_ns(&mut self, ns: u64) {
        if self.samples.capacity() == 0 {
            self.samples.reserve_exact(BATCH);
        }
        self.samples.push(ns);
        if self.samples.len() == BATCH {
            self.flush();
        }
    }

    /// Moves the samples into the shared histogram.
    pub fn flush(&mut self) {
        if self.samples.is_empty() {
            return;
        }
        let mut shard = self.owner.shards[self.shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for &ns in &self.samples {
            shard.saturating_record(ns);
        }
        self.samples.clear();
    }
}

impl Drop for LatencyBatch {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

impl LatencySummary {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| round1(ns as f64 / 1000.0);
        Self {
            count: h.len(),
            mean_us: round1(h.mean() / 1000.0),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }

    /// "p50 1.2 ms  p99 3.4 ms  max 9.9 ms" for the human summary.
    pub fn human(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {}  p90 {}  p99 {}  max {}  (mean {}, {} samples)",
            human_us(self.p50_us),
            human_us(self.p90_us),
            human_us(self.p99_us),
            human_us(self.max_us),
            human_us(self.mean_us),
            self.count
        )
    }
}

fn human_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// Rounds to one decimal place, enough for µs figures and for rates.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `count` per second over `elapsed` (0 when nothing elapsed).
pub fn per_sec(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        round1(count as f64 / secs)
    } else {
        0.0
    }
}

/// Errors counted by kind (a short message), bounded in size.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct ErrorTally(BTreeMap<String, u64>);

impl ErrorTally {
    /// Counts one error of `kind`.
    pub fn add(&mut self, kind: impl Into<String>) {
        self.add_n(kind.into(), 1);
    }

    fn add_n(&mut self, kind: String, n: u64) {
        let key = if self.0.len() < MAX_ERROR_KINDS || self.0.contains_key(&kind) {
            kind
        } else {
            "other".into()
        };
        *self.0.entry(key).or_default() += n;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: ErrorTally) {
        for (kind, n) in other.0 {
            self.add_n(kind, n);
        }
    }

    /// All errors.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// "3 (connect: ConnectionRefused ×2, connect timeout ×1)" or "0".
    pub fn human(&self) -> String {
        if self.0.is_empty() {
            return "0".into();
        }
        let kinds: Vec<String> = self.0.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        format!("{} ({})", self.total(), kinds.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_reach_the_summary() {
        let lat = Latencies::new();
        let mut a = lat.batch();
        let mut b = lat.batch();
        for i in 1..=100u64 {
            a.record_ns(i * 1000);
            b.record(Duration::from_micros(i));
        }
        drop(a);
        drop(b);
        let s = lat.summary();
        assert_eq!(s.count, 200);
        assert!((49.0..=51.0).contains(&s.p50_us), "{s:?}");
        assert_eq!(s.max_us, 100.0);
    }

    #[test]
    fn error_kinds_are_bounded() {
        let mut t = ErrorTally::default();
        for i in 0..100 {
            t.add(format!("kind {i}"));
        }
        t.add("kind 0");
        assert_eq!(t.total(), 101);
        assert_eq!(t.0.len(), MAX_ERROR_KINDS + 1);
        assert_eq!(t.0["other"], 100 - MAX_ERROR_KINDS as u64);
    }
}
