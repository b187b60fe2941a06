//! Validation: is the named tenant real and active?
//!
//! The [`Validator`] looks a [`TenantRef`] up in the store and serves only
//! `Active` tenants. Lookups are cached in a bounded TTL cache; concurrent
//! misses for one key share one store call; "no such tenant" is cached
//! briefly so floods of bogus ids don't reach the store; malformed
//! references are refused without a store lookup. Each thread keeps its
//! own copy of the tenants it keeps serving (`front`), so hits on a hot
//! tenant scale across cores.

mod front;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quanta::Instant;

use quick_cache::sync::Cache;

use crate::config::ValidationConfig;
use crate::metrics::{Counter, StripedCounter, ValidatorStats};
use crate::store::TenantStore;
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
    /// The request names different tenants (by host, header or path) and
    /// no rule picks one: nothing is served.
    #[error("the request names more than one tenant (by host, header or path): name one")]
    Conflict,
    /// The store could not be asked; the request is refused (fail closed).
    #[error("tenant store unavailable; retry later")]
    StoreUnavailable,
    /// The tenant's trial has ended (and no `lifecycle.trial_fallback_plan`
    /// takes it over): refused from that moment on, before the lifecycle
    /// suspends it.
    #[error("the tenant's trial has ended: choose a plan to continue")]
    TrialExpired,
}

#[derive(Clone)]
enum Cached {
    Found(Arc<TenantInfo>),
    Unknown,
}

#[derive(Clone)]
struct Entry {
    value: Cached,
    expires: Instant,
}

/// Looks tenants up and serves only active ones.
///
/// Cloning shares the cache.
///
/// ```
/// use tenancy::{MemoryStore, NewTenant, Rejection, Tenancy, TenantRef, TenantStatus};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tenancy = Tenancy::builder().store(MemoryStore::new()).build()?;
/// let acme = tenancy.lifecycle().create(NewTenant::new("acme", "Acme")?).await?;
/// let validator = tenancy.validator();
/// assert_eq!(validator.validate(&TenantRef::new("acme")).await?.id, acme.id);
///
/// tenancy.lifecycle().suspend("acme", None).await?; // the lifecycle invalidates the cache
/// assert_eq!(
///     validator.validate(&TenantRef::new("acme")).await,
///     Err(Rejection::NotActive(TenantStatus::Suspended)),
/// );
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Validator {
    store: Arc<dyn TenantStore>,
    cache: Arc<Cache<String, Entry>>,
    ttl: Duration,
    negative_ttl: Duration,
    /// Tenant id → the references (id, slugs) it is cached under, so
    /// `invalidate(id)` finds every entry. Touched on misses and
    /// invalidations only, never on a hit.
    aliases: Arc<Mutex<HashMap<TenantId, HashSet<String>>>>,
    /// Bumped by every invalidation, before and after it removes entries:
    /// a lookup that overlapped one may have read the old record, so its
    /// entry is dropped after insertion (and the generation bumped again);
    /// per-thread copies are served only while it is unchanged.
    generation: Arc<AtomicU64>,
    /// This validator's (and its clones') identity in the per-thread front.
    owner: usize,
    stats: Arc<Stats>,
    /// Whether a tenant whose trial ended is still served (on the
    /// fallback plan).
    trial_fallback: bool,
}

#[derive(Default)]
struct Stats {
    // Bumped by every core on every request: striped.
    hits: StripedCounter,
    misses: Counter,
    store_lookups: Counter,
    invalidations: Counter,
}

/// Hands out validator identities for the per-thread front.
static NEXT_OWNER: AtomicUsize = AtomicUsize::new(0);

impl Validator {
    /// A validator over `store` with the cache sized and timed by `config`.
    pub fn new(store: Arc<dyn TenantStore>, config: &ValidationConfig) -> Self {
        let capacity = usize::try_from(config.cache_capacity).unwrap_or(usize::MAX);
        Self {
            store,
            cache: Arc::new(Cache::new(capacity.max(1))),
            ttl: Duration::from_secs(config.cache_ttl_secs),
            negative_ttl: Duration::from_secs(config.negative_ttl_secs),
            aliases: Arc::default(),
            generation: Arc::default(),
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
            stats: Arc::default(),
            trial_fallback: false,
        }
    }

    /// Keeps serving tenants whose trial ended (they move to
    /// `lifecycle.trial_fallback_plan`); without it they are refused with
    /// [`Rejection::TrialExpired`] from the moment the trial ends.
    pub fn trial_fallback(mut self, serve_after_trial: bool) -> Self {
        self.trial_fallback = serve_after_trial;
        self
    }

    /// The active tenant named by `reference`, or why it is refused.
    ///
    /// A cache hit never touches the store. A tenant that keeps being
    /// asked for on one thread is copied into that thread's front, once
    /// (one allocation per thread and change of the tenant); after that its
    /// hits take no lock and write no memory that other cores write.
    pub async fn validate(&self, reference: &TenantRef) -> Result<Arc<TenantInfo>, Rejection> {
        if let Some(answer) = self.validate_cached(reference.as_str()) {
            return answer;
        }
        self.stats.misses.inc();
        self.judge(self.load(reference.as_str()).await?)
    }

    /// [`Validator::validate`]'s answer when it is known without waiting
    /// (a malformed reference, or a live cache entry); `None` on a miss.
    ///
    /// `key` is the raw id or slug, as a resolver found it (see
    /// [`TenantRef::as_str`]). The tenant layer's hit path: not meant for
    /// users, call [`Validator::validate`].
    #[doc(hidden)]
    pub fn validate_cached(&self, key: &str) -> Option<Result<Arc<TenantInfo>, Rejection>> {
        let hash = front::hash(key);
        let now = crate::clock::recent();
        // Read before the shared cache is: see `front`.
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(tenant) = front::get(self.owner, key, hash, generation, now) {
            self.stats.hits.inc();
            return Some(self.judge(Cached::Found(tenant)));
        }
        // Only well-formed references are ever cached (`validate` checks
        // before it loads), so a hit needs no check of its own.
        let Some(hit) = self.cache.get(key) else {
            return (!crate::tenant::is_valid_id(key)).then_some(Err(Rejection::Malformed));
        };
        if hit.expires <= now {
            return None;
        }
        self.stats.hits.inc();
        if let Cached::Found(tenant) = &hit.value {
            let fill = front::Fill {
                owner: self.owner,
                generation,
                expires: hit.expires,
                tenant,
            };
            front::offer(key, hash, fill);
        }
        Some(self.judge(hit.value))
    }

    /// Only `Active` tenants are served, and not past their trial (unless
    /// a fallback plan takes them over). The clock is read only for a
    /// tenant on trial.
    #[inline]
    fn judge(&self, cached: Cached) -> Result<Arc<TenantInfo>, Rejection> {
        match cached {
            Cached::Found(t)
                if t.status == TenantStatus::Active && !self.trial_fallback && t.trial_over() =>
            {
                Err(Rejection::TrialExpired)
            }
            Cached::Found(t) if t.status == TenantStatus::Active => Ok(t),
            Cached::Found(t) => Err(Rejection::NotActive(t.status)),
            Cached::Unknown => Err(Rejection::Unknown),
        }
    }

    /// The miss path: one store call per key however many requests wait.
    async fn load(&self, key: &str) -> Result<Cached, Rejection> {
        loop {
            let guard = match self.cache.get_value_or_guard_async(key).await {
                Ok(entry) if entry.expires > Instant::now() => return Ok(entry.value),
                Ok(_expired) => {
                    self.cache.remove(key);
                    continue;
                }
                Err(guard) => guard,
            };
            let generation = self.generation.load(Ordering::Acquire);
            self.stats.store_lookups.inc();
            let found = self.store.find(key).await.map_err(|err| {
                tracing::warn!(error = %err, "tenant lookup failed; refusing the request");
                // Dropping the guard lets the next waiter try the store again.
                Rejection::StoreUnavailable
            })?;
            let (value, ttl) = match found {
                Some(t) => {
                    if t.status == TenantStatus::Provisioning {
                        tracing::warn!(
                            tenant_id = %t.id,
                            slug = %t.slug,
                            "refusing a tenant that is still provisioning: a store's own create() \
                             leaves tenants there; create them with LifecycleService::create \
                             (or finish them with LifecycleService::provision)"
                        );
                    }
                    self.lock_aliases()
                        .entry(t.id.clone())
                        .or_default()
                        .insert(key.to_owned());
                    (Cached::Found(Arc::new(t)), self.ttl)
                }
                None => (Cached::Unknown, self.negative_ttl),
            };
            let entry = Entry {
                value: value.clone(),
                expires: Instant::now() + ttl,
            };
            // Hits on what is cached from now on read the coarse clock.
            crate::clock::start();
            // A failed insert means the entry was invalidated meanwhile: fine.
            let _ = guard.insert(entry);
            if self.generation.load(Ordering::Acquire) != generation {
                // An invalidation raced with this lookup: don't keep what it
                // read, nor any per-thread copy made of it meanwhile.
                self.cache.remove(key);
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            return Ok(value);
        }
    }

    /// Forgets everything cached about tenant `id`, under its id and under
    /// any slug it was looked up by.
    pub async fn invalidate(&self, id: &TenantId) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.stats.invalidations.inc();
        let aliases = self.lock_aliases().remove(id).unwrap_or_default();
        self.cache.remove(id.as_str());
        for alias in aliases {
            self.cache.remove(alias.as_str());
        }
        // After the removals: per-thread copies of them are stale from here.
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn lock_aliases(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, HashSet<String>>> {
        // The map only holds hints for invalidation; a poisoned one is still usable.
        self.aliases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets what is cached under one reference (an id or a slug), such
    /// as a negative entry for a slug that now exists.
    pub async fn invalidate_reference(&self, reference: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.stats.invalidations.inc();
        self.cache.remove(reference);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.stats.invalidations.inc();
        self.cache.clear();
        self.lock_aliases().clear();
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// What this validator (and its clones) did so far: cache hits and
    /// misses, store lookups, invalidations.
    pub fn stats(&self) -> ValidatorStats {
        ValidatorStats {
            hits: self.stats.hits.get(),
            misses: self.stats.misses.get(),
            store_lookups: self.stats.store_lookups.get(),
            invalidations: self.stats.invalidations.get(),
        }
    }

    /// Entries held, after pending maintenance (for tests and metrics).
    pub fn cached_entries(&self) -> usize {
        self.cache.len()
    }
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}
