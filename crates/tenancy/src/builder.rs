//! [`Tenancy`]: everything wired from one config.

use std::sync::Arc;

use tenancy_core::impersonation::ImpersonationStore;
use tenancy_core::issuers::{ISSUER_KEY, TenantIssuers};
use tenancy_core::plans::{Plans, TenantEntitlements};
use tenancy_core::{
    AuditStore, CachedConfigStore, ConfigError, ConfigStore, DomainResolver, DomainStore, EventBus,
    IsolationRegistry, IsolationStrategy, LifecycleService, PendingPool, PendingStore, Provisioner,
    Resolver, ResolverChain, TenancyConfig, TenantConfigService, TenantStore, Validator,
};

/// Why [`TenancyBuilder::build`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No store was given.
    #[error("no tenant store: call .store(MemoryStore::new()) or pass a SQL store")]
    MissingStore,
}

/// The toolkit, wired: resolver chain, validator, lifecycle, config
/// overrides and events, sharing one store. Cheap to clone.
#[derive(Clone)]
pub struct Tenancy {
    inner: Arc<Inner>,
}

struct Inner {
    config: TenancyConfig,
    store: Arc<dyn TenantStore>,
    config_store: CachedConfigStore,
    chain: ResolverChain,
    validator: Validator,
    lifecycle: LifecycleService,
    overrides: TenantConfigService,
    bus: EventBus,
    isolation: Arc<dyn IsolationStrategy>,
    domain_store: Option<Arc<dyn DomainStore>>,
    domains: Option<DomainResolver>,
    audit: Option<Arc<dyn AuditStore>>,
    impersonation: Option<Arc<dyn ImpersonationStore>>,
    pending_pool: Option<PendingPool>,
    issuers: TenantIssuers,
    plans: Plans,
    usage: tenancy_core::usage::UsageMeter,
    #[cfg(feature = "axum")]
    layer: tenancy_axum::TenantLayer,
}

/// `rate_limit.*` with each plan's `limits.requests_per_minute` (as its
/// per-second rate, rounded up) where `rate_limit.plans` names no rate for
/// the plan.
pub fn rate_limit_config(config: &TenancyConfig) -> tenancy_core::config::RateLimitConfig {
    let mut rate_limit = config.rate_limit.clone();
    for (name, plan) in &config.plans {
        if let Some(rpm) = plan.limits.get("requests_per_minute") {
            let rps = u32::try_from(rpm.div_ceil(60).max(1)).unwrap_or(u32::MAX);
            rate_limit.plans.entry(name.clone()).or_insert(rps);
        }
    }
    rate_limit
}

impl Tenancy {
    /// The pending pool, when `lifecycle.pending_pool` is above
    /// 0. [`LifecycleService::create`] claims from it; keep it full with
    /// [`PendingPool::spawn_refill`] (`tenancy serve` does).
    pub fn pending_pool(&self) -> Option<&PendingPool> {
        self.inner.pending_pool.as_ref()
    }

    /// The store of tenant domains, when the store given has them (every
    /// store of the toolkit does).
    pub fn domain_store(&self) -> Option<&Arc<dyn DomainStore>> {
        self.inner.domain_store.as_ref()
    }

    /// The `domain` resolver, when `resolution.resolvers` names it: call
    /// [`DomainResolver::invalidate`] after changing a domain in this
    /// process (other processes hear it through `PgChangeListener`).
    pub fn domains(&self) -> Option<&DomainResolver> {
        self.inner.domains.as_ref()
    }

    /// The audit log of admin actions, when the store given keeps one
    /// (every store of the toolkit does).
    pub fn audit(&self) -> Option<&Arc<dyn AuditStore>> {
        self.inner.audit.as_ref()
    }

    /// Where impersonation grants are kept, when the store given keeps
    /// them (every store of the toolkit does).
    pub fn impersonation(&self) -> Option<&Arc<dyn ImpersonationStore>> {
        self.inner.impersonation.as_ref()
    }

    /// Starts a builder.
    pub fn builder() -> TenancyBuilder {
        TenancyBuilder::default()
    }

    /// The tower layer for the router: it resolves and validates
    /// every request's tenant, verifies bearer tokens when `auth.*`
    /// configures a key (feature `jwt`), and applies the rate limits when
    /// the builder turned them on. Every clone shares one cache and one set
    /// of rate-limit buckets.
    #[cfg(feature = "axum")]
    pub fn layer(&self) -> tenancy_axum::TenantLayer {
        self.inner.layer.clone()
    }

    /// A listener that applies every tenant, config and domain change made
    /// by any process to this one's caches at once (PostgreSQL `LISTEN`,
    /// reconnecting by itself). Keep it alive as long as the service runs;
    /// without it, other processes' changes apply when cache entries
    /// expire (`validation.cache_ttl_secs`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let tenancy = tenancy::Tenancy::builder().store(tenancy::MemoryStore::new()).build()?;
    /// let options = "postgres://postgres@127.0.0.1/postgres".parse()?;
    /// let _listener = tenancy.listen(options); // dropped: stops listening
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "postgres")]
    pub fn listen(
        &self,
        options: sqlx::postgres::PgConnectOptions,
    ) -> tenancy_sql::PgChangeListener {
        let mut targets = tenancy_sql::ChangeTargets::new()
            .validator(self.inner.validator.clone())
            .config_cache(self.inner.config_store.clone())
            .tenant_issuers(self.inner.issuers.clone());
        if let Some(domains) = &self.inner.domains {
            targets = targets.domains(domains.clone());
        }
        tenancy_sql::PgChangeListener::spawn(options, targets)
    }

    /// Tenants' own identity providers (config key `auth.issuer`): loaded
    /// before the layer decides its first request, kept current by
    /// [`Tenancy::listen`]. Call [`TenantIssuers::load`] at start to find
    /// a store problem before serving.
    pub fn tenant_issuers(&self) -> &TenantIssuers {
        &self.inner.issuers
    }

    /// The plans of `plans.*`.
    pub fn plans(&self) -> &Plans {
        &self.inner.plans
    }

    /// The plan `tenant`'s entitlements follow: its own, or
    /// `lifecycle.trial_fallback_plan` from the moment its trial ended
    /// (before the lifecycle moves it there).
    pub fn plan_of<'a>(&'a self, tenant: &'a tenancy_core::TenantInfo) -> Option<&'a str> {
        match &self.inner.config.lifecycle.trial_fallback_plan {
            Some(fallback) if tenant.trial_over() => Some(fallback),
            _ => tenant.plan.as_deref(),
        }
    }

    /// What `tenant` may do: its plan's features and limits with its own
    /// `features.*` and `limits.*` overrides (read through the override
    /// cache).
    pub async fn entitlements(
        &self,
        tenant: &tenancy_core::TenantInfo,
    ) -> Result<TenantEntitlements, tenancy_core::StoreError> {
        let overrides = self.inner.config_store.overrides(&tenant.id).await?;
        Ok(self
            .inner
            .plans
            .entitlements(self.plan_of(tenant), Some(&overrides)))
    }

    /// Whether `tenant` has `feature` (its plan's, or its override): the
    /// check of [`Tenancy::require_feature`], on the override cache and
    /// without allocating.
    pub async fn has_feature(
        &self,
        tenant: &tenancy_core::TenantInfo,
        feature: &str,
    ) -> Result<bool, tenancy_core::StoreError> {
        let overrides = self.inner.config_store.overrides(&tenant.id).await?;
        Ok(self
            .inner
            .plans
            .has_feature(self.plan_of(tenant), Some(&overrides), feature))
    }

    /// `tenant`'s limit `name` (`rows.notes`, `requests_per_month`, …):
    /// its plan's, or its override; `None` is unlimited.
    pub async fn limit(
        &self,
        tenant: &tenancy_core::TenantInfo,
        name: &str,
    ) -> Result<Option<u64>, tenancy_core::StoreError> {
        let overrides = self.inner.config_store.overrides(&tenant.id).await?;
        Ok(self
            .inner
            .plans
            .limit(self.plan_of(tenant), Some(&overrides), name))
    }

    /// The usage meter (SPEC E4): the layer counts requests into it when
    /// `usage.enabled` (the default); count rows, jobs and storage with it
    /// too. A flusher (`tenancy::sql::usage`) writes it to the store.
    pub fn usage(&self) -> &tenancy_core::usage::UsageMeter {
        &self.inner.usage
    }

    /// A layer refusing requests past the tenant's `requests_per_month`
    /// with 403 `quota_exceeded` (`limit` and `used` in the problem). Put
    /// it inside [`Tenancy::layer`], which counts the requests
    /// (`usage.enabled`). Other instances' requests count once they flush
    /// (`usage.flush_secs`); this instance's at once.
    ///
    /// A tenant without the limit costs one override-cache read.
    #[cfg(feature = "axum")]
    pub fn request_quota(&self) -> tenancy_axum::feature::TenantGateLayer {
        const LIMIT: &str = "requests_per_month";
        let tenancy = self.clone();
        tenancy_axum::feature::TenantGateLayer::new(std::sync::Arc::new(move |tenant| {
            let tenancy = tenancy.clone();
            Box::pin(async move {
                let limit = match tenancy.limit(&tenant, LIMIT).await {
                    Ok(limit) => limit?,
                    Err(e) => {
                        return Some(
                            tenancy_axum::Problem::new(
                                http::StatusCode::SERVICE_UNAVAILABLE,
                                "config_store_unavailable",
                                format!("cannot read the tenant's limits: {e}"),
                            )
                            .retry_after(1),
                        );
                    }
                };
                let usage = tenancy.inner.usage.tenant(&tenant.id);
                usage
                    .refuse_past(limit)
                    .err()
                    .map(|used| tenancy_axum::feature::quota_exceeded(&tenant, LIMIT, limit, used))
            })
        }))
    }

    /// A layer refusing requests whose tenant lacks `feature` with 403
    /// `feature_not_in_plan` (naming the feature and the plan); put it on
    /// routes inside [`Tenancy::layer`]. A feature no plan has is an
    /// error, so a typo fails at start rather than refusing everyone.
    ///
    /// ```
    /// # use tenancy::{MemoryStore, Tenancy, TenancyConfig};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut config = TenancyConfig::default();
    /// config.plans.insert("pro".into(), tenancy::config::PlanConfig {
    ///     features: vec!["sso".into()],
    ///     ..Default::default()
    /// });
    /// let tenancy = Tenancy::builder().config(config).store(MemoryStore::new()).build()?;
    /// let sso_only = tenancy.require_feature("sso")?;
    /// assert!(tenancy.require_feature("typo").is_err());
    /// # drop(sso_only); Ok(()) }
    /// ```
    #[cfg(feature = "axum")]
    pub fn require_feature(
        &self,
        feature: &str,
    ) -> Result<tenancy_axum::RequireFeatureLayer, ConfigError> {
        if !self.inner.plans.knows_feature(feature) {
            return Err(ConfigError::Invalid {
                key: "plans".into(),
                reason: format!(
                    "require_feature(\"{}\"): no plan has this feature (add it to a plan's features)",
                    feature.escape_debug()
                ),
            });
        }
        let tenancy = self.clone();
        Ok(tenancy_axum::RequireFeatureLayer::new(
            feature,
            std::sync::Arc::new(move |tenant, feature| {
                let tenancy = tenancy.clone();
                Box::pin(async move {
                    match tenancy.has_feature(&tenant, &feature).await {
                        Ok(has) => Ok(has),
                        Err(e) => Err(tenancy_axum::Problem::new(
                            http::StatusCode::SERVICE_UNAVAILABLE,
                            "config_store_unavailable",
                            format!("cannot read the tenant's entitlements: {e}"),
                        )
                        .retry_after(1)),
                    }
                })
            }),
        ))
    }

    /// The configuration.
    pub fn config(&self) -> &TenancyConfig {
        &self.inner.config
    }

    /// The tenant store.
    pub fn store(&self) -> &Arc<dyn TenantStore> {
        &self.inner.store
    }

    /// The cached config-override store.
    pub fn config_store(&self) -> &CachedConfigStore {
        &self.inner.config_store
    }

    /// The resolver chain.
    pub fn resolvers(&self) -> &ResolverChain {
        &self.inner.chain
    }

    /// The validator.
    pub fn validator(&self) -> &Validator {
        &self.inner.validator
    }

    /// Creates and changes tenants; invalidates the validator.
    pub fn lifecycle(&self) -> &LifecycleService {
        &self.inner.lifecycle
    }

    /// Per-tenant config: defaults from `overrides.defaults` + overrides.
    pub fn overrides(&self) -> &TenantConfigService {
        &self.inner.overrides
    }

    /// The event bus.
    pub fn events(&self) -> &EventBus {
        &self.inner.bus
    }

    /// The isolation strategy in use (for health checks).
    pub fn isolation(&self) -> &Arc<dyn IsolationStrategy> {
        &self.inner.isolation
    }
}

impl std::fmt::Debug for Tenancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenancy")
            .field("chain", &self.inner.chain)
            .field("lifecycle", &self.inner.lifecycle)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Tenancy`].
#[derive(Default)]
pub struct TenancyBuilder {
    config: Option<TenancyConfig>,
    stores: Option<(Arc<dyn TenantStore>, Arc<dyn ConfigStore>)>,
    domain_store: Option<Arc<dyn DomainStore>>,
    audit: Option<Arc<dyn AuditStore>>,
    impersonation: Option<Arc<dyn ImpersonationStore>>,
    pending: Option<Arc<dyn PendingStore>>,
    registry: IsolationRegistry,
    isolation: Option<String>,
    resolvers: Vec<Arc<dyn Resolver>>,
    override_hook: Option<Box<dyn FnOnce(ResolverChain) -> ResolverChain + Send>>,
    bus: Option<EventBus>,
    #[cfg(feature = "axum")]
    rate_limits: bool,
    #[cfg(feature = "redis")]
    redis: Option<tenancy_axum::RedisBackend>,
}

impl TenancyBuilder {
    /// Uses `config` (default: [`TenancyConfig::default`]).
    pub fn config(mut self, config: TenancyConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Uses `store` for tenants, config overrides, domains and the audit
    /// log ([`MemoryStore`](crate::MemoryStore), `SqliteStore`, `PgStore`).
    pub fn store<S>(mut self, store: S) -> Self
    where
        S: TenantStore + ConfigStore + DomainStore + AuditStore + ImpersonationStore + PendingStore,
    {
        let store = Arc::new(store);
        self.stores = Some((store.clone(), store.clone()));
        self.domain_store = Some(store.clone());
        self.audit = Some(store.clone());
        self.impersonation = Some(store.clone());
        self.pending = Some(store);
        self
    }

    /// Uses `store` for the pending pool (with [`TenancyBuilder::stores`];
    /// claims need it in the same database as the tenants).
    pub fn pending_store(mut self, store: Arc<dyn PendingStore>) -> Self {
        self.pending = Some(store);
        self
    }

    /// Uses `store` for the audit log (with [`TenancyBuilder::stores`]).
    pub fn audit_store(mut self, store: Arc<dyn AuditStore>) -> Self {
        self.audit = Some(store);
        self
    }

    /// Uses `store` for domains (with [`TenancyBuilder::stores`]).
    pub fn domain_store(mut self, store: Arc<dyn DomainStore>) -> Self {
        self.domain_store = Some(store);
        self
    }

    /// Uses separate tenant and config stores.
    pub fn stores(mut self, tenants: Arc<dyn TenantStore>, config: Arc<dyn ConfigStore>) -> Self {
        self.stores = Some((tenants, config));
        self
    }

    /// Registers `strategy` and uses it, whatever
    /// `lifecycle.isolation_strategy` says.
    pub fn isolation(mut self, strategy: impl IsolationStrategy) -> Self {
        self.isolation = Some(strategy.name().to_owned());
        self.registry.register(Arc::new(strategy));
        self
    }

    /// Registers `strategy` so `lifecycle.isolation_strategy` can name it.
    pub fn register_isolation(mut self, strategy: impl IsolationStrategy) -> Self {
        self.registry.register(Arc::new(strategy));
        self
    }

    /// Adds a custom resolver to the chain built from config.
    pub fn resolver(mut self, resolver: impl Resolver) -> Self {
        self.resolvers.push(Arc::new(resolver));
        self
    }

    /// Sets the override hook that runs before the chain.
    pub fn override_resolver(mut self, resolver: impl Resolver) -> Self {
        self.override_hook = Some(Box::new(move |chain| chain.override_with(resolver)));
        self
    }

    /// Applies per-tenant rate limits in [`Tenancy::layer`], from
    /// `rate_limit.*`: requests per second by plan, else `default_rps`,
    /// with a tenant's `rate_limit.rps` config override first. Over the
    /// limit a request gets 429 `rate_limited` with `Retry-After`. Off by
    /// default. Buckets live in this process unless
    /// [`TenancyBuilder::redis`] shares them.
    #[cfg(feature = "axum")]
    pub fn rate_limits(mut self) -> Self {
        self.rate_limits = true;
        self
    }

    /// Shares the rate-limit buckets of every instance through Redis (and
    /// turns rate limits on). When Redis is down or slow, limits fall back
    /// to this process's buckets: requests never wait on it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tenancy::{MemoryStore, RedisBackend, Tenancy};
    /// let redis = RedisBackend::connect("redis://127.0.0.1:6379").await?;
    /// let tenancy = Tenancy::builder().store(MemoryStore::new()).redis(redis).build()?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis(mut self, backend: tenancy_axum::RedisBackend) -> Self {
        self.redis = Some(backend);
        self.rate_limits = true;
        self
    }

    /// Publishes on `bus` (default: a new in-process bus).
    pub fn event_bus(mut self, bus: EventBus) -> Self {
        self.bus = Some(bus);
        self
    }

    /// The pool `lifecycle.pending_pool` asks for, refusing settings it
    /// cannot honour.
    fn pending_pool(
        config: &TenancyConfig,
        store: Option<Arc<dyn PendingStore>>,
        strategy: &Arc<dyn IsolationStrategy>,
    ) -> Result<Option<PendingPool>, ConfigError> {
        let size = config.lifecycle.pending_pool;
        if size == 0 {
            return Ok(None);
        }
        let invalid = |reason: String| ConfigError::Invalid {
            key: "lifecycle.pending_pool".into(),
            reason,
        };
        if strategy.name() == tenancy_core::RowLevel::NAME {
            return Err(invalid(
                "the row_level strategy provisions nothing per tenant, so there is nothing to keep ready: \
                 set it to 0 or use the schema or database strategy"
                    .into(),
            ));
        }
        if !config.lifecycle.auto_provision {
            return Err(invalid(
                "needs lifecycle.auto_provision: a claimed tenant is provisioned at once".into(),
            ));
        }
        let Some(store) = store else {
            return Err(invalid(
                "the stores given keep no pending pool: also call .pending_store(..)".into(),
            ));
        };
        Ok(Some(PendingPool::new(
            store,
            strategy.clone(),
            usize::try_from(size).unwrap_or(usize::MAX),
        )))
    }

    /// Validates the config and wires everything.
    pub fn build(self) -> Result<Tenancy, BuildError> {
        let config = self.config.unwrap_or_default();
        config.validate()?;
        let (store, config_store) = self.stores.ok_or(BuildError::MissingStore)?;

        let mut chain = ResolverChain::from_config(&config.resolution)?;
        let names = chain.names();
        if names.contains(&"header") && names.contains(&"subdomain") {
            tracing::warn!(
                header = %config.resolution.header_name,
                "resolution.resolvers enables both `subdomain` and `header`: a client can pick any \
                 active tenant with the header, whatever the host it calls; enable only the \
                 resolvers your clients use"
            );
        }
        // `domain` needs a store with domains; with `.stores()` and none
        // given it is off, as `subdomain` is without a base domain.
        let domains = match &self.domain_store {
            Some(store)
                if config
                    .resolution
                    .resolvers
                    .iter()
                    .any(|r| r == DomainResolver::NAME) =>
            {
                let resolver = DomainResolver::new(store.clone(), Default::default());
                chain.push(Arc::new(resolver.clone()));
                Some(resolver)
            }
            _ => None,
        };
        for resolver in self.resolvers {
            chain.push(resolver);
        }
        if let Some(hook) = self.override_hook {
            chain = hook(chain);
        }
        #[cfg(feature = "jwt")]
        let jwt = tenancy_axum::JwtVerifier::from_config(&config.auth)?;

        let strategy_name = self
            .isolation
            .unwrap_or_else(|| config.lifecycle.isolation_strategy.clone());
        let strategy = self.registry.get(&strategy_name)?;
        let provisioner = Provisioner::new(strategy.clone())
            .auto_provision(config.lifecycle.auto_provision)
            .policy(config.lifecycle.deprovision_policy);

        let pending_pool = Self::pending_pool(&config, self.pending, &strategy)?;

        let bus = self.bus.unwrap_or_default();
        let validator = Validator::new(store.clone(), &config.validation)
            .trial_fallback(config.lifecycle.trial_fallback_plan.is_some());
        let mut lifecycle = LifecycleService::new(store.clone())
            .provisioner(provisioner)
            .bus(bus.clone())
            .invalidates(validator.clone());
        if let Some(pool) = &pending_pool {
            lifecycle = lifecycle.pending_pool(pool.clone());
        }
        let issuers = TenantIssuers::new(config_store.clone(), &config.auth);
        let plans = Plans::new(&config.plans)?;
        let config_store = CachedConfigStore::new(config_store, &config.overrides);
        #[cfg(feature = "jwt")]
        let verifies_tokens = jwt.is_some();
        #[cfg(not(feature = "jwt"))]
        let verifies_tokens = false;
        let overrides = TenantConfigService::new(
            Arc::new(config_store.clone()),
            config.overrides.defaults.clone(),
        )
        .with_bus(bus.clone())
        .with_check({
            let plans = plans.clone();
            move |key, value| plans.check_override(key, value)
        })
        .with_check({
            let issuers = issuers.clone();
            move |key, value| {
                if key != ISSUER_KEY {
                    return Ok(());
                }
                if !verifies_tokens {
                    return Err(
                        "this application verifies no tokens: configure auth.issuers \
                                (or auth.jwt_secret / auth.jwt_public_key_*) before giving a \
                                tenant its own identity provider"
                            .into(),
                    );
                }
                issuers.parse(value).map(drop).map_err(|e| e.to_string())
            }
        })
        .with_observer({
            let issuers = issuers.clone();
            move |tenant, key, value| {
                if key == ISSUER_KEY {
                    issuers.apply(tenant, value);
                }
            }
        });

        let usage = tenancy_core::usage::UsageMeter::new();
        #[cfg(feature = "axum")]
        let layer = {
            let layer = tenancy_axum::TenantLayer::new(chain.clone(), validator.clone())
                .membership_claim(config.resolution.membership_path().to_owned())
                .require_token(config.auth.requires_token())
                .tenant_issuers(issuers.clone());
            let layer = if config.usage.enabled {
                layer.usage(usage.clone())
            } else {
                layer
            };
            #[cfg(feature = "jwt")]
            let layer = match jwt {
                Some(verifier) => layer.jwt(verifier),
                None => layer,
            };
            if self.rate_limits {
                let limits = tenancy_axum::RateLimits::new(&rate_limit_config(&config))
                    .overrides(overrides.clone());
                #[cfg(feature = "redis")]
                let limits = match self.redis {
                    Some(backend) => limits.redis(backend),
                    None => limits,
                };
                layer.rate_limits(limits)
            } else {
                layer
            }
        };

        Ok(Tenancy {
            inner: Arc::new(Inner {
                config,
                store,
                config_store,
                chain,
                validator,
                lifecycle,
                overrides,
                bus,
                isolation: strategy,
                domain_store: self.domain_store,
                domains,
                audit: self.audit,
                impersonation: self.impersonation,
                pending_pool,
                issuers,
                plans,
                usage,
                #[cfg(feature = "axum")]
                layer,
            }),
        })
    }
}
