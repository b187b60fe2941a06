//! Validation (SPEC V1–V2): is the named tenant real and active?
//!
//! The [`Validator`] looks a [`TenantRef`] up in the store and serves only
//! `Active` tenants. Lookups are cached in a bounded TTL cache; concurrent
//! misses for one key share one store call; "no such tenant" is cached
//! briefly so floods of bogus ids don't reach the store; malformed
//! references are refused before the cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use crate::config::ValidationConfig;
use crate::store::{StoreError, TenantStore};
use crate::tenant::{TenantId, TenantInfo, TenantRef, TenantStatus};

/// Why a named tenant is not served.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The reference cannot be an id or a slug (bad characters, too long).
    #[error("the tenant reference is malformed: use the tenant's id or slug")]
    Malformed,
    /// No tenant has this id or slug.
    #[error("unknown tenant")]
    Unknown,
    /// The tenant exists but is not `Active`.
    #[error("tenant is {0}")]
    NotActive(TenantStatus),
    /// The tenant is not among the memberships of the verified token.
    #[error("the authenticated user is not a member of this tenant")]
    NotMember,
    /// The store could not be asked; the request is refused (fail closed).
    #[error("tenant store unavailable; retry later")]
    StoreUnavailable,
}

#[derive(Clone)]
enum Cached {
    Found(Arc<TenantInfo>),
    Unknown,
}

struct TwoTtl {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Expiry<String, Cached> for TwoTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Cached,
        _now: Instant,
    ) -> Option<Duration> {
        Some(match value {
            Cached::Found(_) => self.ttl,
            Cached::Unknown => self.negative_ttl,
        })
    }
}

/// Looks tenants up and serves only active ones (SPEC V1–V2).
///
/// Cloning shares the cache.
///
/// ```
/// use std::sync::Arc;
/// use tenancy_core::{MemoryStore, NewTenant, TenantRef, TenantStore, Validator};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let acme = store.create(NewTenant::new("acme", "Acme").unwrap()).await.unwrap();
/// store.activate(&acme.id).await.unwrap();
/// let validator = Validator::new(Arc::new(store), &Default::default());
/// let tenant = validator.validate(&TenantRef::new("acme")).await.unwrap();
/// assert_eq!(tenant.id, acme.id);
/// # });
/// ```
#[derive(Clone)]
pub struct Validator {
    store: Arc<dyn TenantStore>,
    cache: Cache<String, Cached>,
}

impl Validator {
    /// A validator over `store` with the cache sized and timed by `config`.
    pub fn new(store: Arc<dyn TenantStore>, config: &ValidationConfig) -> Self {
        let cache = Cache::builder()
            .max_capacity(config.cache_capacity)
            .expire_after(TwoTtl {
                ttl: Duration::from_secs(config.cache_ttl_secs),
                negative_ttl: Duration::from_secs(config.negative_ttl_secs),
            })
            .support_invalidation_closures()
            .build();
        Self { store, cache }
    }

    /// The active tenant named by `reference`, or why it is refused.
    ///
    /// On a cache hit this neither allocates nor touches the store.
    pub async fn validate(&self, reference: &TenantRef) -> Result<Arc<TenantInfo>, Rejection> {
        if !reference.is_well_formed() {
            return Err(Rejection::Malformed);
        }
        let key = reference.as_str();
        let cached = match self.cache.get(key).await {
            Some(hit) => hit,
            None => self
                .cache
                .try_get_with_by_ref(key, self.lookup(key))
                .await
                .map_err(|err: Arc<StoreError>| {
                    tracing::warn!(error = %err, "tenant lookup failed; refusing the request");
                    Rejection::StoreUnavailable
                })?,
        };
        match cached {
            Cached::Found(t) if t.status == TenantStatus::Active => Ok(t),
            Cached::Found(t) => Err(Rejection::NotActive(t.status)),
            Cached::Unknown => Err(Rejection::Unknown),
        }
    }

    async fn lookup(&self, key: &str) -> Result<Cached, StoreError> {
        Ok(match self.store.find(key).await? {
            Some(t) => Cached::Found(Arc::new(t)),
            None => Cached::Unknown,
        })
    }

    /// Forgets everything cached about tenant `id`, under its id and under
    /// any slug it was looked up by.
    pub async fn invalidate(&self, id: &TenantId) {
        self.cache.invalidate(id.as_str()).await;
        let id = id.clone();
        // Registering a predicate cannot fail while closures are supported.
        let _ = self.cache.invalidate_entries_if(move |key, value| {
            &**key == id.as_str() || matches!(value, Cached::Found(t) if t.id == id)
        });
    }

    /// Forgets what is cached under one reference (an id or a slug), such
    /// as a negative entry for a slug that now exists.
    pub async fn invalidate_reference(&self, reference: &str) {
        self.cache.invalidate(reference).await;
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    /// Entries held, after pending maintenance (for tests and metrics).
    pub async fn cached_entries(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("cached", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}
