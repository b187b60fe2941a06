//! [`RequestMetrics`]: what the tenant layer saw, kept in
//! atomics for an exporter to read.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tenancy_core::TenantId;
use tenancy_core::metrics::{Counter, DurationHistogram, HistogramSnapshot};

use crate::outcome::TenantError;
use tenancy_core::Rejection;

/// The outcomes counted, as `(status, code)`.
pub const OUTCOMES: [(u16, &str); 15] = [
    (200, "resolved"),
    (401, "tenant_required"),
    (401, "invalid_token"),
    (403, "malformed_tenant"),
    (403, "unknown_tenant"),
    (403, "tenant_not_active"),
    (403, "not_a_member"),
    (403, "tenant_refused"),
    (503, "tenant_store_unavailable"),
    (429, "rate_limited"),
    (403, "tenant_conflict"),
    (400, "ambiguous_request"),
    (503, "identity_provider_unavailable"),
    (403, "issuer_not_allowed"),
    (403, "trial_expired"),
];

/// One request in this many is timed for the latency histogram: reading
/// the clock twice costs more than all the counters together, and a
/// sample gives the same distribution.
pub const LATENCY_SAMPLE: u32 = 8;

thread_local! {
    static TICKS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether this request is one of the timed sample (per thread, no
/// shared state).
pub(crate) fn timed() -> bool {
    TICKS.with(|t| {
        let n = t.get();
        t.set(n.wrapping_add(1));
        n % LATENCY_SAMPLE == 0
    })
}

/// The label of tenants beyond the tracked ones.
pub const OTHER_TENANTS: &str = "_other";

/// Requests through the tenant layer: by outcome, their latency (one in
/// [`LATENCY_SAMPLE`] is timed), and per
/// tenant for the first `max_tenants` tenants seen (the rest are counted
/// together as [`OTHER_TENANTS`]), so the number of series is bounded
/// whatever the number of tenants. Give it to
/// [`TenantLayer::metrics`](crate::TenantLayer::metrics). Cloning shares
/// the counters.
#[derive(Clone)]
pub struct RequestMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    outcomes: [Counter; OUTCOMES.len()],
    latency: DurationHistogram,
    max_tenants: usize,
    tenants: TenantSlots,
    other: Counter,
}

/// A fixed open-addressing table of per-tenant counters, filled once per
/// tenant and never emptied: a lookup is a hash, an atomic load and a
/// string comparison, with no lock, so requests of different tenants never
/// wait on each other.
struct TenantSlots {
    slots: Box<[OnceLock<(TenantId, Counter)>]>,
    used: AtomicUsize,
    max: usize,
    hasher: foldhash::fast::FixedState,
}

impl TenantSlots {
    fn new(max: usize) -> Self {
        let len = (max.saturating_mul(2)).next_power_of_two().max(1);
        Self {
            slots: (0..len).map(|_| OnceLock::new()).collect(),
            used: AtomicUsize::new(0),
            max,
            hasher: foldhash::fast::FixedState::default(),
        }
    }

    /// Counts a request of `id`; false when `id` has no slot and the
    /// table holds `max` tenants already.
    fn inc(&self, id: &TenantId) -> bool {
        if self.max == 0 {
            return false;
        }
        let mask = self.slots.len() - 1;
        // The mask keeps the index in range whatever the hash.
        let mut at = usize::try_from(self.hasher.hash_one(id)).unwrap_or(0) & mask;
        for _ in 0..self.slots.len() {
            let Some(slot) = self.slots.get(at) else {
                return false;
            };
            let (tenant, counter) = match slot.get() {
                Some(taken) => taken,
                None => {
                    if self.used.load(Ordering::Relaxed) >= self.max {
                        return false;
                    }
                    let mut claimed = false;
                    let taken = slot.get_or_init(|| {
                        claimed = true;
                        (id.clone(), Counter::default())
                    });
                    if claimed {
                        self.used.fetch_add(1, Ordering::Relaxed);
                    }
                    taken
                }
            };
            if tenant == id {
                counter.inc();
                return true;
            }
            at = (at + 1) & mask;
        }
        false
    }

    fn snapshot(&self) -> Vec<(String, u64)> {
        self.slots
            .iter()
            .filter_map(OnceLock::get)
            .map(|(id, counter)| (id.to_string(), counter.get()))
            .collect()
    }
}

impl RequestMetrics {
    /// Counters with per-tenant series for at most `max_tenants` tenants.
    pub fn new(max_tenants: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                outcomes: Default::default(),
                latency: DurationHistogram::new(),
                max_tenants,
                tenants: TenantSlots::new(max_tenants),
                other: Counter::default(),
            }),
        }
    }

    pub(crate) fn outcome(&self, index: usize) {
        if let Some(counter) = self.inner.outcomes.get(index) {
            counter.inc();
        }
    }

    pub(crate) fn latency(&self, took: Duration) {
        self.inner.latency.observe(took);
    }

    pub(crate) fn tenant(&self, id: &TenantId) {
        if !self.inner.tenants.inc(id) {
            self.inner.other.inc();
        }
    }

    /// What the layer records for one resolved request, timed as the layer
    /// times it: for benchmarks of the recording alone.
    #[doc(hidden)]
    pub fn record_resolved_for_bench(&self, tenant: &TenantId) {
        let started = timed().then(quanta::Instant::now);
        self.tenant(tenant);
        if let Some(started) = started {
            self.latency(started.elapsed());
        }
    }

    /// Requests by outcome, in the order of [`OUTCOMES`]. Resolved
    /// requests are not counted on their own (one atomic less per request):
    /// they are the per-tenant counts less the rate-limited ones.
    pub fn outcomes(&self) -> [u64; OUTCOMES.len()] {
        let mut all: [u64; OUTCOMES.len()] = std::array::from_fn(|i| self.inner.outcomes[i].get());
        let per_tenant: u64 = self
            .inner
            .tenants
            .snapshot()
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>()
            + self.inner.other.get();
        all[0] = per_tenant.saturating_sub(all[RATE_LIMITED]);
        all
    }

    /// Time through the layer (the handler included), for a sample of one
    /// request in [`LATENCY_SAMPLE`].
    pub fn latency_snapshot(&self) -> HistogramSnapshot {
        self.inner.latency.snapshot()
    }

    /// Requests per tracked tenant, then [`OTHER_TENANTS`] for the rest.
    pub fn tenants(&self) -> Vec<(String, u64)> {
        let mut all = self.inner.tenants.snapshot();
        all.sort();
        all.push((OTHER_TENANTS.to_owned(), self.inner.other.get()));
        all
    }
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("max_tenants", &self.inner.max_tenants)
            .finish_non_exhaustive()
    }
}

/// The index in [`OUTCOMES`] of a refusal.
pub(crate) fn refusal_index(error: &TenantError) -> usize {
    match error {
        TenantError::NotIdentified(_) => 1,
        TenantError::InvalidToken(_) | TenantError::TokenRequired => 2,
        TenantError::Rejected(Rejection::Malformed) => 3,
        TenantError::Rejected(Rejection::Unknown) => 4,
        TenantError::Rejected(Rejection::NotActive(_)) => 5,
        TenantError::Rejected(Rejection::NotMember) => 6,
        TenantError::Rejected(Rejection::StoreUnavailable) => 8,
        TenantError::Rejected(Rejection::Conflict) => 10,
        TenantError::Ambiguous(_) => 11,
        TenantError::IdentityProviderUnavailable(_) => 12,
        TenantError::IssuerNotAllowed(_) => 13,
        TenantError::Rejected(Rejection::TrialExpired) => 14,
        TenantError::Rejected(_) | TenantError::LayerMissing => 7,
    }
}

/// The index of `rate_limited`.
pub(crate) const RATE_LIMITED: usize = 9;

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: usize) -> TenantId {
        TenantId::new(&format!("tenant-{i}")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn tenants_beyond_the_bound_are_counted_together() {
        let metrics = RequestMetrics::new(3);
        for round in 0..4 {
            for i in 0..10 {
                if i < 5 || round == 0 {
                    metrics.tenant(&id(i));
                }
            }
        }
        let tenants = metrics.tenants();
        assert_eq!(tenants.len(), 4, "three series and _other: {tenants:?}");
        let tracked: u64 = tenants[..3].iter().map(|(_, n)| n).sum();
        assert_eq!(tracked, 12, "the first three tenants, four times each");
        assert_eq!(tenants[3], (OTHER_TENANTS.to_owned(), 7 + 2 * 3));
    }

    #[test]
    fn concurrent_tenants_are_counted_exactly() {
        let metrics = RequestMetrics::new(64);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        for i in 0..32 {
                            metrics.tenant(&id(i));
                        }
                    }
                });
            }
        });
        let tenants = metrics.tenants();
        assert_eq!(tenants.len(), 33);
        assert!(tenants[..32].iter().all(|(_, n)| *n == 4000), "{tenants:?}");
        assert_eq!(tenants[32].1, 0);
    }

    #[test]
    fn zero_series_counts_everything_as_other() {
        let metrics = RequestMetrics::new(0);
        metrics.tenant(&id(1));
        assert_eq!(metrics.tenants(), vec![(OTHER_TENANTS.to_owned(), 1)]);
    }
}
