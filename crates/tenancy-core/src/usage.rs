//! Usage metering (SPEC E4): what each tenant used, per hour.
//!
//! The request path only adds to atomic counters held in memory
//! ([`UsageMeter`]); nothing there touches a database. A flusher (in
//! `tenancy_sql::usage`) takes the counts every `usage.flush_secs` and adds
//! them to the store, each flush exactly once across instances, so the
//! store's sum is what every instance counted. What an instance had not
//! flushed when it died (SIGKILL, power loss) is lost: at most one flush
//! interval of its own traffic.
//!
//! Metrics ([`Metric`]): `requests` (admitted), `requests_1xx` …
//! `requests_5xx` (by the status of the answer), `rows_created`,
//! `jobs_run`, `job_ms` (run time of those jobs, in milliseconds) and
//! `storage_bytes` (sampled: the largest sample of the hour).
//!
//! ```
//! use tenancy_core::usage::{Metric, UsageMeter};
//! use tenancy_core::TenantId;
//! let meter = UsageMeter::new();
//! let acme: TenantId = "acme".parse()?;
//! let usage = meter.tenant(&acme);
//! usage.admit();
//! usage.responded(200);
//! meter.rows_created(&acme, 2);
//! let taken = meter.take();
//! assert!(taken.iter().any(|d| d.metric == Metric::Requests2xx && d.value == 1));
//! assert!(taken.iter().any(|d| d.metric == Metric::RowsCreated && d.value == 2));
//! assert!(meter.take().is_empty());
//! # Ok::<(), tenancy_core::InvalidTenantId>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::TenantId;

/// What is metered. The names ([`Metric::as_str`]) are the store's and the
/// reports'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// Requests admitted (not refused by the monthly quota).
    Requests,
    /// Answers 100–199.
    Requests1xx,
    /// Answers 200–299.
    Requests2xx,
    /// Answers 300–399.
    Requests3xx,
    /// Answers 400–499.
    Requests4xx,
    /// Answers 500–599.
    Requests5xx,
    /// Rows created through the toolkit's CRUD routes.
    RowsCreated,
    /// Background jobs run (each attempt).
    JobsRun,
    /// Their run time, in milliseconds.
    JobMs,
    /// The tenant's storage in bytes, sampled: the hour keeps its largest
    /// sample.
    StorageBytes,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 10] = [
        Metric::Requests,
        Metric::Requests1xx,
        Metric::Requests2xx,
        Metric::Requests3xx,
        Metric::Requests4xx,
        Metric::Requests5xx,
        Metric::RowsCreated,
        Metric::JobsRun,
        Metric::JobMs,
        Metric::StorageBytes,
    ];

    /// The metric's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Requests => "requests",
            Metric::Requests1xx => "requests_1xx",
            Metric::Requests2xx => "requests_2xx",
            Metric::Requests3xx => "requests_3xx",
            Metric::Requests4xx => "requests_4xx",
            Metric::Requests5xx => "requests_5xx",
            Metric::RowsCreated => "rows_created",
            Metric::JobsRun => "jobs_run",
            Metric::JobMs => "job_ms",
            Metric::StorageBytes => "storage_bytes",
        }
    }

    /// Whether the metric is a sampled level (kept as the hour's largest
    /// sample), not a count (summed).
    pub fn is_gauge(self) -> bool {
        self == Metric::StorageBytes
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown usage metric \"{}\"", s.escape_debug()))
    }
}

/// One tenant's counters. Get it with [`UsageMeter::tenant`].
#[derive(Debug, Default)]
pub struct TenantUsage {
    requests: AtomicU64,
    by_class: [AtomicU64; 5],
    rows_created: AtomicU64,
    jobs_run: AtomicU64,
    job_ms: AtomicU64,
    /// `u64::MAX`: no sample since the last flush.
    storage_bytes: AtomicU64,
    /// The month's requests already in the store (all instances), as last
    /// read, plus this instance's since flushed.
    month_base: AtomicU64,
}

impl TenantUsage {
    fn new() -> Self {
        Self {
            storage_bytes: AtomicU64::new(u64::MAX),
            ..Self::default()
        }
    }

    /// Counts a request in (the tenant layer does, once it validated the
    /// tenant).
    #[inline]
    pub fn admit(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }

    /// For a request counted in by [`TenantUsage::admit`]: when the
    /// month's requests (all instances as of the last flush, this one's
    /// since, this one included) are past `limit` (the tenant's
    /// `requests_per_month`), counts it out again and returns how many
    /// were used before it. Concurrent requests never pass the limit on
    /// one instance: each reads the count after its own.
    #[inline]
    pub fn refuse_past(&self, limit: u64) -> Result<(), u64> {
        let used = self.month_used();
        if used > limit {
            self.requests.fetch_sub(1, Ordering::SeqCst);
            return Err(used - 1);
        }
        Ok(())
    }

    /// Counts an answer by its status class.
    #[inline]
    pub fn responded(&self, status: u16) {
        let class = usize::from(status / 100).saturating_sub(1).min(4);
        if let Some(counter) = self.by_class.get(class) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The month's requests: every instance's as of the last flush, and
    /// this one's since.
    pub fn month_used(&self) -> u64 {
        self.month_base.load(Ordering::SeqCst) + self.requests.load(Ordering::SeqCst)
    }
}

/// One metric's count for one tenant, taken from the meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDelta {
    /// The tenant.
    pub tenant_id: TenantId,
    /// What was counted.
    pub metric: Metric,
    /// How much (a gauge: the sample).
    pub value: u64,
}

/// The in-memory counters of every tenant seen. Cheap to clone (shared).
///
/// Each tenant's counters are allocated once and kept for the life of the
/// process (about 100 bytes a tenant), so the request path holds a plain
/// reference to them: no reference count, no lock. Each thread remembers
/// the counters of the last tenants it served (a small direct-mapped
/// table keyed by the tenant id's allocation), so a request of a tenant
/// seen recently on that thread finds them without hashing or locking.
#[derive(Debug, Clone, Default)]
pub struct UsageMeter {
    inner: Arc<MeterInner>,
}

#[derive(Debug, Default)]
struct MeterInner {
    tenants: RwLock<HashMap<TenantId, &'static TenantUsage, foldhash::fast::FixedState>>,
}

/// Per-thread entries of recently served tenants.
const FRONT_SLOTS: usize = 64;

struct FrontSlot {
    meter: usize,
    /// Holds the id's allocation, so its address names it while here.
    tenant: TenantId,
    usage: &'static TenantUsage,
}

thread_local! {
    static FRONT: std::cell::RefCell<Vec<Option<FrontSlot>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl UsageMeter {
    /// An empty meter.
    pub fn new() -> Self {
        Self::default()
    }

    /// `tenant`'s counters (created on first use, kept for the life of
    /// the process).
    #[inline]
    pub fn tenant(&self, tenant: &TenantId) -> &'static TenantUsage {
        let meter = Arc::as_ptr(&self.inner) as usize;
        let at = tenant.as_str().as_ptr() as usize;
        let index = (at >> 4) % FRONT_SLOTS;
        let hit = FRONT
            .try_with(|front| {
                let front = front.try_borrow().ok()?;
                match front.get(index)? {
                    Some(slot)
                        if slot.meter == meter
                            && std::ptr::eq(slot.tenant.as_str(), tenant.as_str()) =>
                    {
                        Some(slot.usage)
                    }
                    _ => None,
                }
            })
            .ok()
            .flatten();
        if let Some(usage) = hit {
            return usage;
        }
        let usage = self.lookup(tenant);
        let _ = FRONT.try_with(|front| {
            if let Ok(mut front) = front.try_borrow_mut() {
                if front.is_empty() {
                    front.resize_with(FRONT_SLOTS, || None);
                }
                if let Some(slot) = front.get_mut(index) {
                    *slot = Some(FrontSlot {
                        meter,
                        tenant: tenant.clone(),
                        usage,
                    });
                }
            }
        });
        usage
    }

    /// The shared table's entry for `tenant`.
    fn lookup(&self, tenant: &TenantId) -> &'static TenantUsage {
        if let Ok(tenants) = self.inner.tenants.read() {
            if let Some(usage) = tenants.get(tenant) {
                return usage;
            }
        }
        let mut tenants = self
            .inner
            .tenants
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tenants
            .entry(tenant.clone())
            .or_insert_with(|| Box::leak(Box::new(TenantUsage::new())))
    }

    /// Every tenant's counters.
    fn all(&self) -> Vec<(TenantId, &'static TenantUsage)> {
        let tenants = self
            .inner
            .tenants
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tenants.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Counts `n` rows created by `tenant`.
    pub fn rows_created(&self, tenant: &TenantId, n: u64) {
        self.tenant(tenant)
            .rows_created
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a job run of `tenant` that took `took`.
    pub fn job_ran(&self, tenant: &TenantId, took: Duration) {
        let usage = self.tenant(tenant);
        usage.jobs_run.fetch_add(1, Ordering::Relaxed);
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        usage.job_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Records a sample of `tenant`'s storage.
    pub fn storage_sampled(&self, tenant: &TenantId, bytes: u64) {
        self.tenant(tenant)
            .storage_bytes
            .store(bytes.min(u64::MAX - 1), Ordering::Relaxed);
    }

    /// The month's requests of `tenant` (see [`TenantUsage::month_used`]).
    pub fn month_used(&self, tenant: &TenantId) -> u64 {
        self.tenant(tenant).month_used()
    }

    /// Takes every count (leaving zeros): what a flush writes. The
    /// requests taken stay in the month's count until
    /// [`UsageMeter::set_month_totals`] replaces it with the store's.
    pub fn take(&self) -> Vec<UsageDelta> {
        let mut out = Vec::new();
        for (tenant, usage) in self.all() {
            let mut push = |metric, value: u64| {
                if value > 0 {
                    out.push(UsageDelta {
                        tenant_id: tenant.clone(),
                        metric,
                        value,
                    });
                }
            };
            let requests = usage.requests.swap(0, Ordering::SeqCst);
            usage.month_base.fetch_add(requests, Ordering::SeqCst);
            push(Metric::Requests, requests);
            let classes = [
                Metric::Requests1xx,
                Metric::Requests2xx,
                Metric::Requests3xx,
                Metric::Requests4xx,
                Metric::Requests5xx,
            ];
            for (metric, counter) in classes.into_iter().zip(&usage.by_class) {
                push(metric, counter.swap(0, Ordering::Relaxed));
            }
            push(
                Metric::RowsCreated,
                usage.rows_created.swap(0, Ordering::Relaxed),
            );
            push(Metric::JobsRun, usage.jobs_run.swap(0, Ordering::Relaxed));
            push(Metric::JobMs, usage.job_ms.swap(0, Ordering::Relaxed));
            let storage = usage.storage_bytes.swap(u64::MAX, Ordering::Relaxed);
            if storage != u64::MAX {
                out.push(UsageDelta {
                    tenant_id: tenant.clone(),
                    metric: Metric::StorageBytes,
                    value: storage,
                });
            }
        }
        out
    }

    /// Puts back what [`UsageMeter::take`] took when it could not be
    /// written (the next flush tries again).
    pub fn put_back(&self, deltas: Vec<UsageDelta>) {
        for delta in deltas {
            let usage = self.tenant(&delta.tenant_id);
            let counter = match delta.metric {
                Metric::Requests => {
                    usage.month_base.fetch_sub(
                        delta.value.min(usage.month_base.load(Ordering::SeqCst)),
                        Ordering::SeqCst,
                    );
                    &usage.requests
                }
                Metric::Requests1xx => &usage.by_class[0],
                Metric::Requests2xx => &usage.by_class[1],
                Metric::Requests3xx => &usage.by_class[2],
                Metric::Requests4xx => &usage.by_class[3],
                Metric::Requests5xx => &usage.by_class[4],
                Metric::RowsCreated => &usage.rows_created,
                Metric::JobsRun => &usage.jobs_run,
                Metric::JobMs => &usage.job_ms,
                Metric::StorageBytes => {
                    let _ = usage.storage_bytes.compare_exchange(
                        u64::MAX,
                        delta.value,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    continue;
                }
            };
            counter.fetch_add(delta.value, Ordering::SeqCst);
        }
    }

    /// Replaces the month's requests already in the store with `totals`
    /// (every instance's, read after a flush); tenants missing from it
    /// have none this month.
    pub fn set_month_totals(&self, totals: &HashMap<TenantId, u64>) {
        for (tenant, usage) in self.all() {
            let total = totals.get(&tenant).copied().unwrap_or(0);
            usage.month_base.store(total, Ordering::SeqCst);
        }
    }
}

/// One stored row of usage: a tenant's metric in one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageRow {
    /// The tenant.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub tenant_id: TenantId,
    /// The hour's start (UTC).
    pub hour: DateTime<Utc>,
    /// The metric's name ([`Metric::as_str`]).
    pub metric: String,
    /// Its value in that hour.
    pub value: i64,
}

/// The start of the hour `at` falls in, as Unix seconds.
pub fn hour_start(at: DateTime<Utc>) -> i64 {
    let s = at.timestamp();
    s - s.rem_euclid(3600)
}

/// The start of the month `at` falls in (UTC).
pub fn month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(at)
        .with_nanosecond(0)
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    #[test]
    fn counts_are_taken_once_and_put_back_on_failure() {
        let meter = UsageMeter::new();
        let a = meter.tenant(&id("a"));
        for status in [200, 201, 404, 503, 101, 302, 999] {
            a.admit();
            a.responded(status);
        }
        meter.job_ran(&id("b"), Duration::from_millis(1500));
        meter.storage_sampled(&id("b"), 4096);
        let taken = meter.take();
        let get = |t: &str, m: Metric| {
            taken
                .iter()
                .find(|d| d.tenant_id.as_str() == t && d.metric == m)
                .map(|d| d.value)
        };
        assert_eq!(get("a", Metric::Requests), Some(7));
        assert_eq!(get("a", Metric::Requests2xx), Some(2));
        assert_eq!(get("a", Metric::Requests5xx), Some(2), "999 counts as 5xx");
        assert_eq!(get("a", Metric::Requests1xx), Some(1));
        assert_eq!(get("b", Metric::JobMs), Some(1500));
        assert_eq!(get("b", Metric::StorageBytes), Some(4096));
        assert_eq!(get("b", Metric::Requests), None);
        assert!(meter.take().is_empty());
        assert_eq!(a.month_used(), 7, "taken requests stay in the month");
        meter.put_back(taken.clone());
        assert_eq!(a.month_used(), 7);
        assert_eq!(meter.take().len(), taken.len());
    }

    #[test]
    fn the_monthly_limit_admits_exactly_its_number() {
        let meter = UsageMeter::new();
        let usage = meter.tenant(&id("a"));
        meter.set_month_totals(&[(id("a"), 7)].into());
        let admitted = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        (0..100)
                            .filter(|_| {
                                usage.admit();
                                usage.refuse_past(110).is_ok()
                            })
                            .count()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum::<usize>()
        });
        assert_eq!(admitted, 103);
        usage.admit();
        assert_eq!(usage.refuse_past(110), Err(110));
        assert_eq!(usage.month_used(), 110);
    }

    #[test]
    fn hours_and_months() {
        let at = Utc.with_ymd_and_hms(2026, 12, 7, 18, 59, 59).unwrap();
        assert_eq!(
            hour_start(at),
            Utc.with_ymd_and_hms(2026, 12, 7, 18, 0, 0)
                .unwrap()
                .timestamp()
        );
        assert_eq!(
            month_start(at),
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
        );
        assert_eq!("job_ms".parse::<Metric>(), Ok(Metric::JobMs));
        assert!("bogus".parse::<Metric>().is_err());
    }
}
