//! Per-tenant rate limits, applied by the tenant layer.
//!
//! Every request whose tenant the [`TenantLayer`](crate::TenantLayer)
//! resolved takes one token from that tenant's bucket; when the bucket is
//! empty the answer is `429 Too Many Requests`, an RFC 9457 problem with
//! code `rate_limited` and a `Retry-After` header (whole seconds, at least
//! 1). Requests without a resolved tenant are not counted: the
//! [`Tenant`](crate::Tenant) extractor or the
//! [`RequireTenantLayer`](crate::RequireTenantLayer) answers those.
//!
//! Limits are part of the tenant layer, so there is no layer order to get
//! wrong. With the facade, `TenancyBuilder::rate_limits` turns them on from
//! `rate_limit.*` in the config:
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use tenancy::{MemoryStore, NewTenant, Tenancy, TenancyConfig, Tenant};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = TenancyConfig::default();
//! config.rate_limit.plans.insert("free".into(), 2); // 2 requests/s, bursts of 2
//! let tenancy = Tenancy::builder()
//!     .config(config)
//!     .store(MemoryStore::new())
//!     .rate_limits()
//!     .build()?;
//! tenancy.lifecycle().create(NewTenant::new("acme", "Acme")?.plan("free")).await?;
//!
//! let app: Router = Router::new()
//!     .route("/notes", get(|t: Tenant| async move { format!("notes of {}", t.slug) }))
//!     .layer(tenancy.layer());
//!
//! let request = || Request::get("/notes").header("x-tenant-id", "acme").body(Body::empty());
//! assert_eq!(app.clone().oneshot(request()?).await?.status(), StatusCode::OK);
//! assert_eq!(app.clone().oneshot(request()?).await?.status(), StatusCode::OK);
//! let refused = app.clone().oneshot(request()?).await?;
//! assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(refused.headers()["retry-after"], "1");
//! # Ok(()) }
//! ```
//!
//! # Which limit
//!
//! Each tenant has its own bucket of `rps` requests per second with a
//! burst of `rps` (a full bucket admits `rps` requests at once, then one
//! every `1/rps` s). `rps` is, first found:
//!
//! 1. the tenant's override of [`RPS_KEY`] (`rate_limit.rps`, a positive
//!    integer) in the [`TenantConfigService`]
//!    given to [`RateLimits::overrides`], else its override of [`RPM_KEY`]
//!    (`limits.requests_per_minute`, divided by 60, rounded up);
//! 2. the tenant's plan in [`RateLimitConfig::plans`](tenancy_core::config::RateLimitConfig)
//!    (the facade fills it from the plans' `limits.requests_per_minute`
//!    where `rate_limit.plans` names no rate);
//! 3. an application default of `rate_limit.rps` in the config service
//!    (`overrides.defaults`): it is a default, so a plan beats it (a tenant
//!    override equal to that default therefore counts as the default);
//! 4. [`RateLimitConfig::default_rps`](tenancy_core::config::RateLimitConfig).
//!
//! An override that is not a positive integer is ignored with a warning;
//! when the config store is down the plan or default applies (the limit
//! never blocks a request because config could not be read). The limit is
//! computed on every request (a cache hit in the config service), so a
//! change applies at the tenant's next request. In process, the bucket is
//! rebuilt (full) when its rate differs from the new one; in Redis the
//! shared bucket keeps what was already used and continues at the new
//! rate, so instances whose config caches disagree for a moment cannot
//! reset each other's buckets.
//!
//! # Algorithm and backends
//!
//! Both backends run GCRA (the generic cell rate algorithm): a token bucket
//! kept as one number, the time at which the bucket will be full again.
//! It needs no timer and no refill task, refuses without changing state,
//! and gives the exact wait for `Retry-After`. Hand-written on one atomic
//! per tenant, it is simpler than `governor` here: governor's keyed limiter
//! applies one quota to all keys, and per-tenant quotas would need one
//! governor limiter per tenant anyway.
//!
//! - In process (default): buckets live in a bounded cache keyed by tenant
//!   id ([`RateLimits::capacity`], default 10,000 tenants). Each
//!   instance limits on its own.
//! - Redis (feature `redis`, `RateLimits::redis` with a
//!   `RedisBackend`): every instance shares one bucket per tenant, updated
//!   by one atomic Lua script on the Redis server's clock, under the key
//!   `t:{tenant_id}:ratelimit:{scope}`. If Redis fails or is
//!   slow, requests are limited by the in-process buckets and a warning is
//!   logged: availability is preferred to strictness for rate limits, and
//!   tenant isolation never depends on them.

mod gcra;
#[cfg(feature = "redis")]
mod redis;
mod settings;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tenancy_core::config::RateLimitConfig;
use tenancy_core::{TenantConfigService, TenantInfo};

#[cfg(feature = "redis")]
pub use redis::{RedisBackend, RedisBackendError};
pub use settings::RateLimits;

/// The per-tenant config key that overrides a tenant's requests per second.
pub const RPS_KEY: &str = "rate_limit.rps";

/// A tenant's own `requests_per_minute` limit (SPEC E1), applied as its
/// per-second rate, rounded up, when it has no [`RPS_KEY`] override.
pub const RPM_KEY: &str = "limits.requests_per_minute";

/// The per-second rate of `rpm` requests per minute, rounded up.
pub(crate) fn rps_of_rpm(rpm: u64) -> Option<NonZeroU32> {
    NonZeroU32::new(u32::try_from(rpm.div_ceil(60)).unwrap_or(u32::MAX))
}

/// Default number of tenants whose in-process buckets are kept.
const DEFAULT_CAPACITY: usize = 10_000;

/// What the layer shares with its services.
pub(crate) struct Limits {
    default_rps: NonZeroU32,
    plans: BTreeMap<String, NonZeroU32>,
    overrides: Option<TenantConfigService>,
    capacity: usize,
    local: gcra::LocalLimiter,
    #[cfg(feature = "redis")]
    redis: Option<RedisBackend>,
    last_warning: AtomicU64,
}

/// The outcome of one request's check.
pub(crate) enum Decision {
    Allow,
    Deny { rps: u32, retry_after: Duration },
}

impl Limits {
    fn new(config: &RateLimitConfig) -> Self {
        Self {
            default_rps: at_least_one(config.default_rps),
            plans: config
                .plans
                .iter()
                .map(|(plan, rps)| (plan.clone(), at_least_one(*rps)))
                .collect(),
            overrides: None,
            capacity: DEFAULT_CAPACITY,
            local: gcra::LocalLimiter::new(DEFAULT_CAPACITY),
            #[cfg(feature = "redis")]
            redis: None,
            last_warning: AtomicU64::new(0),
        }
    }

    /// The same settings with empty buckets.
    fn fresh_copy(&self) -> Self {
        Self {
            default_rps: self.default_rps,
            plans: self.plans.clone(),
            overrides: self.overrides.clone(),
            capacity: self.capacity,
            local: gcra::LocalLimiter::new(self.capacity),
            #[cfg(feature = "redis")]
            redis: self.redis.clone(),
            last_warning: AtomicU64::new(0),
        }
    }

    /// [`Limits::check`] when it needs no waiting: counted in process, with
    /// the tenant's overrides (if any) in their cache. `None` when a shared
    /// backend or the override store must be asked.
    pub(crate) fn check_now(&self, tenant: &TenantInfo) -> Option<Decision> {
        #[cfg(feature = "redis")]
        if self.redis.is_some() {
            return None;
        }
        let rps = self.rps_now(tenant)?;
        Some(match self.local.check(&tenant.id, rps) {
            Ok(()) => Decision::Allow,
            Err(retry_after) => Decision::Deny {
                rps: rps.get(),
                retry_after,
            },
        })
    }

    /// Takes one token for `tenant`.
    pub(crate) async fn check(&self, tenant: &TenantInfo) -> Decision {
        let rps = self.rps_for(tenant).await;
        let outcome = match self.shared_check(tenant, rps).await {
            Some(outcome) => outcome,
            None => self.local.check(&tenant.id, rps),
        };
        match outcome {
            Ok(()) => Decision::Allow,
            Err(retry_after) => Decision::Deny {
                rps: rps.get(),
                retry_after,
            },
        }
    }

    /// The Redis backend's answer; `None` without one or while it is away.
    #[cfg(feature = "redis")]
    async fn shared_check(
        &self,
        tenant: &TenantInfo,
        rps: NonZeroU32,
    ) -> Option<Result<(), Duration>> {
        self.redis.as_ref()?.check(&tenant.id, rps).await
    }

    #[cfg(not(feature = "redis"))]
    async fn shared_check(
        &self,
        _tenant: &TenantInfo,
        _rps: NonZeroU32,
    ) -> Option<Result<(), Duration>> {
        None
    }

    /// Override, else plan, else application default, else `default_rps`.
    pub(crate) async fn rps_for(&self, tenant: &TenantInfo) -> NonZeroU32 {
        let setting = match &self.overrides {
            None => None,
            Some(service) => Some(
                service
                    .get_as::<u32>(&tenant.id, RPS_KEY)
                    .await
                    .map_err(|e| e.to_string()),
            ),
        };
        if let (Some(Ok(None)), Some(service)) = (&setting, &self.overrides)
            && let Ok(Some(rpm)) = service.get_as::<u64>(&tenant.id, RPM_KEY).await
            && let Some(rps) = rps_of_rpm(rpm)
        {
            return rps;
        }
        self.rps_with(tenant, setting)
    }

    /// [`Limits::rps_for`] when it needs no waiting: no override service,
    /// or one whose cache holds the tenant's overrides. `None` otherwise.
    fn rps_now(&self, tenant: &TenantInfo) -> Option<NonZeroU32> {
        let setting = match &self.overrides {
            None => None,
            Some(service) => {
                let overrides = service.cached_overrides(&tenant.id)?;
                if !overrides.contains_key(RPS_KEY)
                    && let Some(rps) = overrides
                        .get(RPM_KEY)
                        .and_then(serde_json::Value::as_u64)
                        .and_then(rps_of_rpm)
                {
                    return Some(rps);
                }
                let value = overrides
                    .get(RPS_KEY)
                    .or_else(|| service.defaults().get(RPS_KEY));
                // Read in place: `&Value` deserializes without a copy.
                Some(
                    value
                        .map(|v| {
                            u32::deserialize(v).map_err(|e| {
                                format!("config key `{RPS_KEY}` holds {v}, which is not the expected type: {e}")
                            })
                        })
                        .transpose(),
                )
            }
        };
        Some(self.rps_with(tenant, setting))
    }

    /// The limit for `tenant` given its `rate_limit.rps` setting (`None`
    /// when there is no override service): a positive override other than
    /// the application default, else the plan's, else the default.
    fn rps_with(
        &self,
        tenant: &TenantInfo,
        setting: Option<Result<Option<u32>, String>>,
    ) -> NonZeroU32 {
        let mut app_default = None;
        if let Some(service) = &self.overrides {
            match setting {
                Some(Ok(Some(value))) => {
                    let is_default = service
                        .defaults()
                        .get(RPS_KEY)
                        .and_then(serde_json::Value::as_u64)
                        == Some(u64::from(value));
                    match NonZeroU32::new(value) {
                        Some(rps) if !is_default => return rps,
                        Some(rps) => app_default = Some(rps),
                        None => self.warn(|| {
                            tracing::warn!(tenant_id = %tenant.id, "`{RPS_KEY}` is 0: ignored, use a positive integer");
                        }),
                    }
                }
                Some(Ok(None)) | None => {}
                Some(Err(error)) => self.warn(|| {
                    tracing::warn!(tenant_id = %tenant.id, %error, "cannot read `{RPS_KEY}`: the plan or default limit applies");
                }),
            }
        }
        tenant
            .plan
            .as_deref()
            .and_then(|plan| self.plans.get(plan).copied())
            .or(app_default)
            .unwrap_or(self.default_rps)
    }

    /// Runs `log` at most once per 10 seconds, so a broken override or
    /// store does not flood the log from the hot path.
    fn warn(&self, log: impl FnOnce()) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_warning.load(Ordering::Relaxed);
        if now >= last.saturating_add(10)
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log();
        }
    }
}

fn at_least_one(rps: u32) -> NonZeroU32 {
    NonZeroU32::new(rps).unwrap_or(NonZeroU32::MIN)
}
