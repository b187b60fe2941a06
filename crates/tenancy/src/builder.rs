//! [`Tenancy`]: everything wired from one config.

use std::sync::Arc;

use tenancy_core::{
    CachedConfigStore, ConfigError, ConfigStore, DomainResolver, DomainStore, EventBus,
    IsolationRegistry, IsolationStrategy, LifecycleService, Provisioner, Resolver, ResolverChain,
    TenancyConfig, TenantConfigService, TenantStore, Validator,
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
}

impl Tenancy {
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

    /// Starts a builder.
    pub fn builder() -> TenancyBuilder {
        TenancyBuilder::default()
    }

    /// The tower layer for the router (SPEC M1). Verifies bearer tokens
    /// when `auth.*` configures a key (feature `jwt`).
    #[cfg(feature = "axum")]
    pub fn layer(&self) -> tenancy_axum::TenantLayer {
        let layer =
            tenancy_axum::TenantLayer::new(self.inner.chain.clone(), self.inner.validator.clone())
                .membership_claim(self.inner.config.resolution.membership_claim.clone());
        #[cfg(feature = "jwt")]
        let layer = match tenancy_axum::JwtVerifier::from_config(&self.inner.config.auth) {
            Ok(Some(verifier)) => layer.jwt(verifier),
            // Checked in `build`.
            Ok(None) | Err(_) => layer,
        };
        layer
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
    registry: IsolationRegistry,
    isolation: Option<String>,
    resolvers: Vec<Arc<dyn Resolver>>,
    override_hook: Option<Box<dyn FnOnce(ResolverChain) -> ResolverChain + Send>>,
    bus: Option<EventBus>,
}

impl TenancyBuilder {
    /// Uses `config` (default: [`TenancyConfig::default`]).
    pub fn config(mut self, config: TenancyConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Uses `store` for tenants, config overrides and domains.
    pub fn store<S: TenantStore + ConfigStore + DomainStore>(mut self, store: S) -> Self {
        let store = Arc::new(store);
        self.stores = Some((store.clone(), store.clone()));
        self.domain_store = Some(store);
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

    /// Sets the override hook that runs before the chain (SPEC R6).
    pub fn override_resolver(mut self, resolver: impl Resolver) -> Self {
        self.override_hook = Some(Box::new(move |chain| chain.override_with(resolver)));
        self
    }

    /// Publishes on `bus` (default: a new in-process bus).
    pub fn event_bus(mut self, bus: EventBus) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Validates the config and wires everything.
    pub fn build(self) -> Result<Tenancy, BuildError> {
        let config = self.config.unwrap_or_default();
        config.validate()?;
        let (store, config_store) = self.stores.ok_or(BuildError::MissingStore)?;

        let mut chain = ResolverChain::from_config(&config.resolution)?;
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
        tenancy_axum::JwtVerifier::from_config(&config.auth)?;

        let strategy_name = self
            .isolation
            .unwrap_or_else(|| config.lifecycle.isolation_strategy.clone());
        let strategy = self.registry.get(&strategy_name)?;
        let provisioner = Provisioner::new(strategy.clone())
            .auto_provision(config.lifecycle.auto_provision)
            .policy(config.lifecycle.deprovision_policy);

        let bus = self.bus.unwrap_or_default();
        let validator = Validator::new(store.clone(), &config.validation);
        let lifecycle = LifecycleService::new(store.clone())
            .provisioner(provisioner)
            .bus(bus.clone())
            .invalidates(validator.clone());
        let config_store = CachedConfigStore::new(config_store, &config.overrides);
        let overrides = TenantConfigService::new(
            Arc::new(config_store.clone()),
            config.overrides.defaults.clone(),
        )
        .with_bus(bus.clone());

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
            }),
        })
    }
}
