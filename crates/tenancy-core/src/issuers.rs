//! Tenants' own identity providers (SPEC K2): a tenant's config key
//! [`ISSUER_KEY`] (`auth.issuer`) names the provider whose tokens alone
//! may enter it, such as an enterprise customer's Okta or Entra ID.
//!
//! [`TenantIssuers`] is the index both ways, issuer → tenants and tenant →
//! issuer, read without waiting on the request path. It is loaded from the
//! config store once ([`TenantIssuers::load`]) and kept current by the
//! change listeners, which call [`TenantIssuers::refresh`] for every
//! config or tenant change they hear, from any process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use crate::config::{AuthConfig, IssuerConfig};
use crate::store::{ConfigStore, StoreError};
use crate::tenant::TenantId;

/// The tenant config key naming the tenant's own identity provider.
pub const ISSUER_KEY: &str = "auth.issuer";

/// Why a value of [`ISSUER_KEY`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ISSUER_KEY}: {0}")]
pub struct InvalidIssuer(String);

/// Which provider a tenant accepts tokens from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantIssuer {
    /// Any the application trusts (`auth.issuers`, its own key): the
    /// tenant set no provider of its own.
    Any,
    /// Only this one.
    Only(Arc<str>),
    /// The tenant's value of [`ISSUER_KEY`] is unusable (written past the
    /// checks, or trusted no more): no token may enter it.
    Unusable,
}

/// The index of tenants' own identity providers. Cheap to clone (shared).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tenancy::{MemoryStore, NewTenant, TenantStore, ConfigStore};
/// use tenancy::issuers::{TenantIssuer, TenantIssuers, ISSUER_KEY};
/// let store = Arc::new(MemoryStore::new());
/// let acme = store.create(NewTenant::new("acme", "Acme")?).await?;
/// let okta = serde_json::json!({"issuer": "https://acme.okta.com", "audiences": ["api://ours"]});
/// store.set_config(&acme.id, ISSUER_KEY, okta).await?;
///
/// let issuers = TenantIssuers::new(store.clone(), &Default::default());
/// issuers.load().await?;
/// assert_eq!(issuers.tenant_issuer(&acme.id), TenantIssuer::Only("https://acme.okta.com".into()));
/// assert!(issuers.config_for("https://acme.okta.com").is_some());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TenantIssuers {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ConfigStore>,
    /// `auth.issuers`: trusted for every tenant, so never one tenant's own.
    shared: Vec<String>,
    /// Audiences of a value that names only the issuer's URL.
    audiences: Vec<String>,
    index: RwLock<Index>,
    loaded: AtomicBool,
    /// Whether any tenant has a value (the request path skips the rest).
    any: AtomicBool,
    /// Bumped by every refresh: a load that overlapped one reads again.
    generation: AtomicU64,
    loading: tokio::sync::Mutex<()>,
    /// Whether the store can list a key across tenants (else no tenant
    /// may have its own provider).
    listable: AtomicBool,
}

#[derive(Default)]
struct Index {
    by_issuer: HashMap<Arc<str>, Bound>,
    by_tenant: HashMap<TenantId, Own>,
}

struct Bound {
    config: Arc<IssuerConfig>,
    /// The tenants it admits, as the ids memberships are compared with.
    tenants: Vec<TenantId>,
}

enum Own {
    Issuer(Arc<str>),
    Unusable,
}

impl TenantIssuers {
    /// An empty index over `store`, with the application's `auth.*`:
    /// `auth.issuers` may not be one tenant's own, and a value naming only
    /// an issuer URL takes `auth.audience`, else the audiences of
    /// `auth.issuers`.
    pub fn new(store: Arc<dyn ConfigStore>, auth: &AuthConfig) -> Self {
        let mut audiences: Vec<String> = auth.audience.iter().cloned().collect();
        if audiences.is_empty() {
            for issuer in &auth.issuers {
                for audience in &issuer.audiences {
                    if !audiences.contains(audience) {
                        audiences.push(audience.clone());
                    }
                }
            }
        }
        Self {
            inner: Arc::new(Inner {
                store,
                shared: auth.issuers.iter().map(|i| i.issuer.clone()).collect(),
                audiences,
                index: RwLock::default(),
                loaded: AtomicBool::new(false),
                any: AtomicBool::new(false),
                generation: AtomicU64::new(0),
                loading: tokio::sync::Mutex::new(()),
                listable: AtomicBool::new(true),
            }),
        }
    }

    /// The provider a value of [`ISSUER_KEY`] names: an issuer URL (its
    /// keys found by OpenID discovery, RS256, the application's audiences)
    /// or `{issuer, jwks_uri?, audiences?, algorithms?}`.
    pub fn parse(&self, value: &serde_json::Value) -> Result<IssuerConfig, InvalidIssuer> {
        if !self.inner.listable.load(Ordering::Acquire) {
            return Err(InvalidIssuer(
                "the config store in use cannot list a key across tenants \
                 (ConfigStore::config_with_key), so tenants' own providers cannot be indexed: \
                 use the toolkit's stores or implement it"
                    .into(),
            ));
        }
        let config = match value {
            serde_json::Value::String(url) => {
                if self.inner.audiences.is_empty() {
                    return Err(InvalidIssuer(
                        "a bare issuer URL takes the application's audiences, and auth.audience \
                         and auth.issuers set none: give {\"issuer\": URL, \"audiences\": [...]}"
                            .into(),
                    ));
                }
                IssuerConfig::new(url.as_str(), self.inner.audiences.iter().cloned())
            }
            serde_json::Value::Object(map) => {
                let mut map = map.clone();
                if !map.contains_key("audiences") {
                    map.insert("audiences".into(), self.inner.audiences.clone().into());
                }
                serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
                    InvalidIssuer(format!(
                        "{e} (expected an issuer URL or {{issuer, jwks_uri?, audiences?, algorithms?}})"
                    ))
                })?
            }
            other => {
                return Err(InvalidIssuer(format!(
                    "{other} is neither an issuer URL nor {{issuer, audiences, ...}}"
                )));
            }
        };
        config
            .validate(ISSUER_KEY)
            .map_err(|e| InvalidIssuer(e.to_string()))?;
        if self.inner.shared.contains(&config.issuer) {
            return Err(InvalidIssuer(format!(
                "{} is in auth.issuers, trusted for every tenant: a tenant's own provider must \
                 be one no other tenant's users sign in with",
                config.issuer
            )));
        }
        Ok(config)
    }

    /// Reads every tenant's value from the store and replaces the index.
    pub async fn load(&self) -> Result<(), StoreError> {
        loop {
            let generation = self.inner.generation.load(Ordering::Acquire);
            let values = match self.inner.store.config_with_key(ISSUER_KEY).await? {
                Some(values) => values,
                None => {
                    self.inner.listable.store(false, Ordering::Release);
                    Vec::new()
                }
            };
            let mut index = Index::default();
            for (tenant, value) in values {
                self.insert(&mut index, tenant, &value);
            }
            let mut current = self.write();
            if self.inner.generation.load(Ordering::Acquire) != generation {
                // A refresh overlapped the read: read again.
                continue;
            }
            *current = index;
            self.inner
                .any
                .store(!current.by_tenant.is_empty(), Ordering::Release);
            self.inner.loaded.store(true, Ordering::Release);
            return Ok(());
        }
    }

    /// Loads the index unless it is loaded (concurrent callers share one
    /// load).
    pub async fn ensure_loaded(&self) -> Result<(), StoreError> {
        if self.is_loaded() {
            return Ok(());
        }
        let _loading = self.inner.loading.lock().await;
        if self.is_loaded() {
            return Ok(());
        }
        self.load().await
    }

    /// Whether the index was loaded (and no change since was missed).
    #[inline]
    pub fn is_loaded(&self) -> bool {
        self.inner.loaded.load(Ordering::Acquire)
    }

    /// Reads `tenant`'s value again (its config or the tenant changed, in
    /// any process). When the store cannot be read, the whole index is
    /// loaded again before the next request is decided.
    pub async fn refresh(&self, tenant: &TenantId) {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        match self.inner.store.get_config(tenant, ISSUER_KEY).await {
            Ok(value) => self.apply(tenant, value.as_ref()),
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, error = %e, "cannot read the tenant's auth.issuer: the index is loaded again");
                self.forget();
            }
        }
    }

    /// Forgets the whole index: it is loaded again before the next request
    /// is decided (changes may have been missed).
    pub fn forget(&self) {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        self.inner.loaded.store(false, Ordering::Release);
    }

    /// Sets `tenant`'s value (`None`: removed) in the index.
    pub fn apply(&self, tenant: &TenantId, value: Option<&serde_json::Value>) {
        let mut index = self.write();
        if let Some(Own::Issuer(old)) = index.by_tenant.remove(tenant)
            && let Some(bound) = index.by_issuer.get_mut(&old)
        {
            bound.tenants.retain(|t| t != tenant);
            if bound.tenants.is_empty() {
                index.by_issuer.remove(&old);
            }
        }
        if let Some(value) = value {
            self.insert(&mut index, tenant.clone(), value);
        }
        self.inner
            .any
            .store(!index.by_tenant.is_empty(), Ordering::Release);
    }

    fn insert(&self, index: &mut Index, tenant: TenantId, value: &serde_json::Value) {
        let config = match self.parse(value) {
            Ok(config) => config,
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, error = %e, "unusable auth.issuer: no token may enter this tenant until it is fixed");
                index.by_tenant.insert(tenant, Own::Unusable);
                return;
            }
        };
        let name: Arc<str> = config.issuer.as_str().into();
        match index.by_issuer.get_mut(&name) {
            // Two tenants naming one issuer with different settings: the
            // issuer is kept with the first settings; both tenants are
            // admitted by its tokens.
            Some(bound) => bound.tenants.push(tenant.clone()),
            None => {
                index.by_issuer.insert(
                    name.clone(),
                    Bound {
                        config: Arc::new(config),
                        tenants: vec![tenant.clone()],
                    },
                );
            }
        }
        index.by_tenant.insert(tenant, Own::Issuer(name));
    }

    /// Whether any tenant has its own provider (nothing to check when not).
    #[inline]
    pub fn any(&self) -> bool {
        self.inner.any.load(Ordering::Acquire)
    }

    /// The provider settings of `issuer` when it is some tenant's own.
    pub fn config_for(&self, issuer: &str) -> Option<Arc<IssuerConfig>> {
        if !self.any() {
            return None;
        }
        self.read().by_issuer.get(issuer).map(|b| b.config.clone())
    }

    /// Which provider `tenant` accepts tokens from.
    pub fn tenant_issuer(&self, tenant: &TenantId) -> TenantIssuer {
        self.view().tenant_issuer(tenant)
    }

    /// A read view of the index, for several lookups under one lock.
    pub fn view(&self) -> IssuersView<'_> {
        IssuersView(self.read())
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.inner
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.inner
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The index, read-locked: [`TenantIssuers::view`].
pub struct IssuersView<'a>(RwLockReadGuard<'a, Index>);

impl IssuersView<'_> {
    /// Which provider `tenant` accepts tokens from.
    pub fn tenant_issuer(&self, tenant: &TenantId) -> TenantIssuer {
        match self.0.by_tenant.get(tenant) {
            None => TenantIssuer::Any,
            Some(Own::Issuer(name)) => TenantIssuer::Only(name.clone()),
            Some(Own::Unusable) => TenantIssuer::Unusable,
        }
    }

    /// The tenants `issuer`'s tokens admit, when it is some tenant's own
    /// provider (`None`: it is not).
    pub fn tenants_of(&self, issuer: &str) -> Option<&[TenantId]> {
        self.0.by_issuer.get(issuer).map(|b| b.tenants.as_slice())
    }
}

impl std::fmt::Debug for TenantIssuers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let index = self.read();
        f.debug_struct("TenantIssuers")
            .field("loaded", &self.is_loaded())
            .field("issuers", &index.by_issuer.len())
            .field("tenants", &index.by_tenant.len())
            .finish()
    }
}
