//! Counters and histograms the toolkit keeps as it works: plain
//! atomics, read by an exporter. `tenancy serve` answers `GET /metrics` in
//! Prometheus text format from them.
//!
//! - [`RequestMetrics`]: requests through the tenant layer by outcome,
//!   their latency, and per tenant with a bounded number of series; give
//!   it to [`TenantLayer::metrics`](crate::TenantLayer::metrics).
//! - `Validator::stats`: cache hits and misses, store lookups,
//!   invalidations.
//! - `LifecycleService::provisioning_durations`, and
//!   `tenancy::sql::migrate::durations` for migrations.

#[cfg(feature = "axum")]
pub use tenancy_axum::metrics::{OTHER_TENANTS, OUTCOMES, RequestMetrics};
pub use tenancy_core::metrics::*;
