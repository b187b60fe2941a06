//! The domain of the `tenancy` toolkit, with no web or SQL dependency.
//!
//! - [`tenant`]: the tenant model (ids, slugs, status, commands).
//! - [`store`]: the [`TenantStore`] and [`ConfigStore`] traits;
//!   [`MemoryStore`] implements both.
//! - [`resolve`]: which tenant a request names ([`ResolverChain`]).
//! - [`validate`]: whether it may be served ([`Validator`], cached).
//! - [`context`]: the current tenant of a task.
//! - [`lifecycle`] and [`events`]: creating and changing tenants, with events.
//! - [`overrides`]: per-tenant config on top of application defaults.
//! - [`mod@cache_key`]: tenant-prefixed cache keys (`t:{tenant}:…`).
//! - [`isolation`]: the strategy traits, registry and provisioner.
//! - [`config`]: `tenancy.yaml` + `TENANCY__*` environment.
//! - [`doctor`]: the findings of `tenancy doctor`.
//!
//! Most users depend on the `tenancy` facade crate instead, which
//! re-exports this crate and adds the web layer.
//!
//! ```
//! use std::sync::Arc;
//! use tenancy::{LifecycleService, MemoryStore, NewTenant, TenantRef, Validator};
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = Arc::new(MemoryStore::new());
//! let validator = Validator::new(store.clone(), &Default::default());
//! let lifecycle = LifecycleService::new(store).invalidates(validator.clone());
//! let acme = lifecycle.create(NewTenant::new("acme", "Acme").unwrap()).await.unwrap();
//! assert!(validator.validate(&TenantRef::new("acme")).await.is_ok());
//! lifecycle.suspend(&acme.id, Some("unpaid")).await.unwrap();
//! assert!(validator.validate(&TenantRef::new("acme")).await.is_err());
//! # });
//! ```

pub mod audit;
pub mod cache_key;
mod clock;
pub mod config;
pub mod context;
pub mod doctor;
pub mod domain;
pub mod events;
pub mod impersonation;
pub mod isolation;
pub mod issuers;
pub mod jobs;
pub mod lifecycle;
mod memory;
pub mod metrics;
pub mod overrides;
pub mod plans;
pub mod pool;
pub mod resolve;
pub mod store;
pub mod tenant;
pub mod usage;
pub mod validate;

pub use audit::{AuditEntry, AuditQuery, AuditStore, NewAuditEntry};
pub use cache_key::{NoTenantScope, cache_key, current_cache_key};
pub use config::{ConfigError, DeprovisionPolicy, TenancyConfig};
pub use domain::{Domain, DomainResolver, DomainStatus, DomainStore, TenantDomain};
pub use events::{EventBus, EventSink, TenantEvent};
pub use isolation::{IsolationError, IsolationRegistry, IsolationStrategy, Provisioner, RowLevel};
pub use lifecycle::{LifecycleError, LifecycleService};
pub use memory::MemoryStore;
pub use overrides::{CachedConfigStore, ConfigValueError, TenantConfigService};
pub use pool::{Claimed, PendingPool, PendingStore, PendingTenant, PoolError};
pub use resolve::{Membership, ResolutionContext, Resolver, ResolverChain, VerifiedClaims};
pub use store::{ConfigMap, ConfigStore, ListQuery, StoreError, TenantPage, TenantStore};
pub use tenant::{
    InvalidSlug, InvalidTenantId, NewTenant, Slug, TenantId, TenantInfo, TenantRef, TenantStatus,
    TenantUpdate,
};
pub use validate::{Rejection, Validator};
