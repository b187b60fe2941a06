//! The in-process limiter: one GCRA cell per tenant, on one atomic.
//!
//! GCRA (the generic cell rate algorithm) is a token bucket stored as a
//! single number, the *theoretical arrival time* (TAT): the moment the
//! bucket would be full again. A request at `now` conforms when
//! `TAT - tolerance <= now`; it then moves the TAT one emission interval
//! (`1 s / rps`) forward. With `tolerance = (burst - 1) × interval`, `burst`
//! requests may arrive at once, then one per interval. A refused request
//! changes nothing.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quick_cache::sync::Cache;
use tenancy_core::TenantId;
use tokio::time::Instant;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// One tenant's bucket.
#[derive(Debug)]
pub(crate) struct Gcra {
    rps: NonZeroU32,
    interval: u64,
    tolerance: u64,
    /// Nanoseconds since the limiter's origin.
    tat: AtomicU64,
}

impl Gcra {
    /// `rps` requests per second, with a burst of `rps`.
    pub(crate) fn new(rps: NonZeroU32) -> Self {
        let (interval, tolerance) = params(rps, NANOS_PER_SEC);
        Self {
            rps,
            interval,
            tolerance,
            tat: AtomicU64::new(0),
        }
    }

    /// Takes one token at `now` (ns), or says how long until one is free.
    pub(crate) fn check(&self, now: u64) -> Result<(), Duration> {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let base = tat.max(now);
            let allowed_at = base.saturating_sub(self.tolerance);
            if allowed_at > now {
                return Err(Duration::from_nanos(allowed_at - now));
            }
            match self.tat.compare_exchange_weak(
                tat,
                base.saturating_add(self.interval),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

/// Emission interval and tolerance for `rps` (burst `rps`), in `unit`s per
/// second (ns in process, µs in Redis).
pub(crate) fn params(rps: NonZeroU32, unit: u64) -> (u64, u64) {
    let interval = (unit / u64::from(rps.get())).max(1);
    (interval, interval * u64::from(rps.get() - 1))
}

/// Per-tenant buckets in a bounded cache. An evicted (long idle) tenant
/// starts again with a full bucket; a tenant whose limit changed gets a
/// new bucket at the next request.
pub(crate) struct LocalLimiter {
    origin: Instant,
    buckets: Cache<TenantId, Arc<Gcra>>,
}

impl LocalLimiter {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            origin: Instant::now(),
            buckets: Cache::new(capacity.max(1)),
        }
    }

    /// Takes one token from `tenant`'s bucket, sized for `rps`.
    pub(crate) fn check(&self, tenant: &TenantId, rps: NonZeroU32) -> Result<(), Duration> {
        let now = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let bucket = match self.buckets.get(tenant) {
            Some(bucket) if bucket.rps == rps => bucket,
            Some(_) => {
                // The limit changed (override or plan): rebuild at once.
                let bucket = Arc::new(Gcra::new(rps));
                self.buckets.insert(tenant.clone(), bucket.clone());
                bucket
            }
            None => self
                .buckets
                .get_or_insert_with(tenant, || {
                    Ok::<_, std::convert::Infallible>(Arc::new(Gcra::new(rps)))
                })
                .unwrap_or_else(|never| match never {}),
        };
        bucket.check(now)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rps(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn burst_then_one_per_interval() {
        let cell = Gcra::new(rps(3));
        let t0 = 10 * NANOS_PER_SEC;
        for _ in 0..3 {
            assert!(cell.check(t0).is_ok());
        }
        let wait = cell.check(t0).unwrap_err();
        assert_eq!(wait, Duration::from_nanos(NANOS_PER_SEC / 3));
        assert!(cell.check(t0 + NANOS_PER_SEC / 3 - 1).is_err());
        assert!(cell.check(t0 + NANOS_PER_SEC / 3).is_ok());
        assert!(cell.check(t0 + NANOS_PER_SEC / 3).is_err());
        // A long pause refills the bucket, but never beyond the burst.
        let later = t0 + 60 * NANOS_PER_SEC;
        let admitted = (0..10).filter(|_| cell.check(later).is_ok()).count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn one_rps_has_no_burst() {
        let cell = Gcra::new(rps(1));
        assert!(cell.check(0).is_ok());
        assert_eq!(cell.check(0), Err(Duration::from_secs(1)));
        assert!(cell.check(NANOS_PER_SEC).is_ok());
    }

    #[test]
    fn concurrent_takers_never_exceed_the_burst() {
        let cell = Arc::new(Gcra::new(rps(50)));
        let admitted = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if cell.check(5).is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 50);
    }

    #[test]
    fn tenants_are_independent_and_limits_rebuild() {
        let limiter = LocalLimiter::new(100);
        let (a, b): (TenantId, TenantId) = ("a".parse().unwrap(), "b".parse().unwrap());
        assert!(limiter.check(&a, rps(1)).is_ok());
        assert!(limiter.check(&a, rps(1)).is_err());
        assert!(limiter.check(&b, rps(1)).is_ok());
        // A new limit applies at the next request, with a fresh bucket.
        assert!(limiter.check(&a, rps(2)).is_ok());
        assert!(limiter.check(&a, rps(2)).is_ok());
        assert!(limiter.check(&a, rps(2)).is_err());
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn params_are_exact_for_common_rates() {
        assert_eq!(params(rps(1), 1_000_000), (1_000_000, 0));
        assert_eq!(params(rps(4), 1_000_000), (250_000, 750_000));
        assert_eq!(params(rps(u32::MAX), 1_000_000).0, 1);
    }
}
