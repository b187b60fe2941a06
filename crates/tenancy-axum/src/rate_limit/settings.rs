//! [`RateLimits`]: the settings and buckets given to the tenant layer.

use std::num::NonZeroU32;
use std::sync::Arc;

use tenancy_core::config::RateLimitConfig;
use tenancy_core::{TenantConfigService, TenantInfo};

use super::Limits;

/// Per-tenant rate limits, applied by the tenant layer to every
/// request whose tenant it resolved: give them to
/// [`TenantLayer::rate_limits`](crate::TenantLayer::rate_limits) (the
/// `tenancy` facade does it for you with `TenancyBuilder::rate_limits`).
///
/// Cloning is cheap (one `Arc`); clones share the buckets.
#[derive(Clone)]
pub struct RateLimits {
    pub(crate) limits: Arc<Limits>,
}

impl RateLimits {
    /// In-process limits from `config`: `plans` by the tenant's plan, else
    /// `default_rps`. A zero in a hand-built config counts as 1 (loaded
    /// configs refuse zeros).
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            limits: Arc::new(Limits::new(config)),
        }
    }

    /// Reads each tenant's override of
    /// [`RPS_KEY`](super::RPS_KEY) (`rate_limit.rps`) through `service`
    /// first. Give it a service backed by a
    /// [`CachedConfigStore`](tenancy_core::CachedConfigStore) so the hot path
    /// makes no store round trip; a change made through the service applies
    /// at the tenant's next request.
    pub fn overrides(mut self, service: TenantConfigService) -> Self {
        self.limits_mut().overrides = Some(service);
        self
    }

    /// Shares the buckets of all instances through Redis (feature `redis`).
    #[cfg(feature = "redis")]
    pub fn redis(mut self, backend: super::RedisBackend) -> Self {
        self.limits_mut().redis = Some(backend);
        self
    }

    /// Most tenants whose in-process buckets are kept (default 10,000); the
    /// least recently used are dropped first and start again full.
    pub fn capacity(mut self, tenants: usize) -> Self {
        let limits = self.limits_mut();
        limits.capacity = tenants.max(1);
        limits.local = super::gcra::LocalLimiter::new(limits.capacity);
        self
    }

    /// The requests per second `tenant` gets now (override, else plan, else
    /// default).
    pub async fn rps_for(&self, tenant: &TenantInfo) -> NonZeroU32 {
        self.limits.rps_for(tenant).await
    }

    fn limits_mut(&mut self) -> &mut Limits {
        // Builder methods run before the layer is cloned; if it was cloned
        // already, copy-on-write leaves the clones (and their buckets) alone.
        if Arc::get_mut(&mut self.limits).is_none() {
            self.limits = Arc::new(self.limits.fresh_copy());
        }
        Arc::get_mut(&mut self.limits).unwrap_or_else(|| unreachable!("just made unique"))
    }
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("RateLimits");
        s.field("default_rps", &self.limits.default_rps)
            .field("plans", &self.limits.plans)
            .field("overrides", &self.limits.overrides.is_some())
            .field("capacity", &self.limits.capacity);
        #[cfg(feature = "redis")]
        s.field("redis", &self.limits.redis);
        s.finish_non_exhaustive()
    }
}
