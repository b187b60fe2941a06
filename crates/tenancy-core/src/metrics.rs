//! Counters and histograms the toolkit keeps as it works (SPEC A2), read
//! by an exporter (`tenancy serve` answers `GET /metrics` in Prometheus
//! text format). Plain atomics: recording costs an increment, nothing is
//! allocated or locked on the request path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the duration buckets, in seconds: 100 µs to 60 s.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
    15.0, 60.0,
];

/// A histogram of durations over [`DURATION_BUCKETS`], lock-free.
#[derive(Debug, Default)]
pub struct DurationHistogram {
    /// Per bucket (not cumulative); the last counts what is above 60 s.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations ≤ it)`, cumulative, as
    /// Prometheus wants them (`+Inf` is `count`).
    pub buckets: Vec<(f64, u64)>,
    /// Sum of all observations, in seconds.
    pub sum_secs: f64,
    /// Number of observations.
    pub count: u64,
}

impl DurationHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one duration.
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let at = DURATION_BUCKETS.partition_point(|le| *le < secs);
        self.buckets[at].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(DURATION_BUCKETS.len());
        for (le, bucket) in DURATION_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            buckets.push((*le, cumulative));
        }
        let count = cumulative + self.buckets[DURATION_BUCKETS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            buckets,
            sum_secs: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count,
        }
    }
}

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A monotonic counter that many threads bump at once: each thread adds
/// to a stripe of its own (on its own cache line), so a hot counter does
/// not bounce one cache line between cores. Reads sum the stripes.
#[derive(Debug, Default)]
pub(crate) struct StripedCounter([Stripe; STRIPES]);

const STRIPES: usize = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

impl StripedCounter {
    /// Adds one.
    pub(crate) fn inc(&self) {
        thread_local! {
            static STRIPE: usize = {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                // Lossless: the remainder is below STRIPES.
                (NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES as u64) as usize
            };
        }
        let stripe = STRIPE.try_with(|s| *s).unwrap_or(0);
        self.0[stripe % STRIPES].0.fetch_add(1, Ordering::Relaxed);
    }

    /// The sum of every stripe.
    pub(crate) fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

/// What the [`Validator`](crate::Validator) did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ValidatorStats {
    /// Validations answered from the cache.
    pub hits: u64,
    /// Validations that were not in the cache (coalesced misses count once
    /// each, as they waited).
    pub misses: u64,
    /// Lookups that reached the tenant store.
    pub store_lookups: u64,
    /// Invalidations (of one tenant, one reference, or everything).
    pub invalidations: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_striped_counter_counts_every_thread_exactly() {
        let counter = std::sync::Arc::new(StripedCounter::default());
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| counter.inc()))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(counter.get(), 20_000);
    }

    #[test]
    fn buckets_are_cumulative_and_sum_in_seconds() {
        let h = DurationHistogram::new();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(120));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.0001, 1));
        assert_eq!(s.buckets[5], (0.005, 2));
        assert_eq!(s.buckets.last(), Some(&(60.0, 2)));
        assert!((s.sum_secs - 120.00305).abs() < 1e-9);
    }
}
