//! Multi-tenancy for axum services: find out which tenant each request
//! belongs to, check that the tenant may use the service, make it available
//! everywhere downstream, and keep every tenant's data apart.
//!
//! # Quick start
//!
//! ```
//! use axum::{Router, routing::get};
//! use tenancy::{MemoryStore, NewTenant, Tenancy, TenancyConfig, Tenant};
//!
//! async fn hello(tenant: Tenant) -> String {
//!     format!("hello, {}", tenant.name)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tenancy = Tenancy::builder()
//!     .config(TenancyConfig::default()) // or TenancyConfig::load()? for tenancy.yaml + TENANCY__*
//!     .store(MemoryStore::new())
//!     .build()?;
//! tenancy.lifecycle().create(NewTenant::new("acme", "Acme Corp")?).await?;
//!
//! let app: Router = Router::new()
//!     .route("/hello", get(hello))
//!     .layer(tenancy.layer());
//! // `curl -H 'X-Tenant-Id: acme' localhost:3000/hello` → "hello, Acme Corp"
//! # Ok(()) }
//! ```
//!
//! # What is where
//!
//! - Resolution: [`ResolverChain`] from config (`jwt_claim`, `header`,
//!   `subdomain`, `path`) plus your own [`Resolver`]s.
//! - Validation: [`Validator`], cached; [`LifecycleService`] invalidates it
//!   on every change.
//! - Web: [`TenantLayer`], [`Tenant`], [`RequireTenantLayer`], [`Problem`].
//! - Context: [`current`], [`with_tenant`], [`spawn`].
//! - Per-tenant config: [`TenantConfigService`] over a [`CachedConfigStore`].
//!
//! # Cargo features
//!
//! - `axum` (default): the tower layer, extractors and guard.
//! - `jwt` (default): HS256/RS256 bearer-token verification.
//! - `redis`: per-tenant rate limits shared across instances through Redis.
//! - `nats`: publish every tenant event to NATS ([`nats::NatsEventSink`]).

mod builder;
#[cfg(feature = "nats")]
pub mod nats;

pub use builder::{BuildError, Tenancy, TenancyBuilder};

/// The domain crate, for everything not re-exported at the top.
pub use tenancy_core as core;
pub use tenancy_core::context::{current, current_info, spawn, with_tenant};
pub use tenancy_core::{
    CachedConfigStore, ConfigError, ConfigMap, ConfigStore, DeprovisionPolicy, Domain,
    DomainResolver, DomainStatus, DomainStore, EventBus, EventSink, IsolationError,
    IsolationRegistry, IsolationStrategy, LifecycleError, LifecycleService, ListQuery, MemoryStore,
    NewTenant, Provisioner, Rejection, ResolutionContext, Resolver, ResolverChain, RowLevel, Slug,
    StoreError, TenancyConfig, TenantConfigService, TenantDomain, TenantEvent, TenantId,
    TenantInfo, TenantPage, TenantRef, TenantStatus, TenantStore, TenantUpdate, Validator,
    VerifiedClaims,
};
pub use tenancy_core::{config, domain, resolve};

#[cfg(feature = "jwt")]
pub use tenancy_axum::JwtVerifier;
#[cfg(feature = "redis")]
pub use tenancy_axum::RedisBackend;
#[cfg(feature = "axum")]
pub use tenancy_axum::{
    Problem, RateLimitLayer, RequireTenantLayer, Tenant, TenantError, TenantLayer, TenantState,
};
pub use tenancy_core::cache_key::{cache_key, current_cache_key};
