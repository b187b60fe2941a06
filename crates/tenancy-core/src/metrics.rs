//! Counters and histograms the toolkit keeps as it works, read
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

/// A monotonic counter that many threads bump at once, without a locked
/// instruction on the hot path.
///
/// Each thread claims one of [`OWNED`] stripes for itself (on its own
/// cache line) for as long as it lives, and is then the only writer of
/// that stripe in every striped counter: it adds with a plain load and
/// store, which cannot lose an update with no other writer. Threads
/// beyond the first [`OWNED`] alive at once share one more stripe and add
/// with an atomic read-modify-write. Reads sum the stripes; the count is
/// exact.
#[derive(Debug, Default)]
pub(crate) struct StripedCounter {
    owned: [Stripe; OWNED],
    shared: Stripe,
}

/// How many threads at once can hold a stripe of their own.
const OWNED: usize = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

/// Which stripes threads hold now: bit `i` for stripe `i`.
static CLAIMED: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

/// A thread's claim on a stripe, given back when the thread ends.
struct Claim(Option<usize>);

impl Claim {
    fn take() -> Self {
        let mut claimed = CLAIMED.load(Ordering::Relaxed);
        while claimed != u16::MAX {
            let index = claimed.trailing_ones() as usize;
            // Acquire: the last holder's writes to this stripe, released
            // with the bit, are seen before this thread adds to them.
            match CLAIMED.compare_exchange_weak(
                claimed,
                claimed | 1 << index,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Self(Some(index)),
                Err(now) => claimed = now,
            }
        }
        Self(None)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(index) = self.0 {
            CLAIMED.fetch_and(!(1 << index), Ordering::Release);
        }
    }
}

impl StripedCounter {
    /// Adds one.
    #[inline]
    pub(crate) fn inc(&self) {
        thread_local! {
            static CLAIM: Claim = Claim::take();
        }
        // `None` also while the thread is being torn down.
        match CLAIM.try_with(|claim| claim.0).ok().flatten() {
            Some(index) => {
                let stripe = &self.owned[index % OWNED].0;
                // The only writer of this stripe (see the type's docs).
                stripe.store(stripe.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            }
            None => {
                self.shared.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The sum of every stripe.
    pub(crate) fn get(&self) -> u64 {
        let owned: u64 = self.owned.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
        owned + self.shared.0.load(Ordering::Relaxed)
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
    fn stripes_given_back_by_ended_threads_keep_counting_exactly() {
        // Waves of threads, more in all than there are stripes: each wave
        // claims stripes the previous one gave back, and adds to what is
        // already in them.
        let counter = std::sync::Arc::new(StripedCounter::default());
        for _ in 0..5 {
            let threads: Vec<_> = (0..OWNED + 4)
                .map(|_| {
                    let counter = counter.clone();
                    std::thread::spawn(move || (0..500).for_each(|_| counter.inc()))
                })
                .collect();
            threads.into_iter().for_each(|t| t.join().unwrap());
        }
        assert_eq!(counter.get(), 5 * (OWNED as u64 + 4) * 500);
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
