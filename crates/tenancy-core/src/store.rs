//! Storage traits for tenants and their config overrides.
//!
//! [`TenantStore`] and [`ConfigStore`] are object safe so one store can be
//! shared as `Arc<dyn TenantStore>` by the validator, the lifecycle service
//! and the admin API. [`MemoryStore`](crate::MemoryStore) implements both;
//! the SQL crate adds `SqliteStore` and `PgStore`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::tenant::{InvalidSlug, NewTenant, TenantId, TenantInfo, TenantStatus, TenantUpdate};

/// A tenant's config overrides: key → JSON value.
pub type ConfigMap = BTreeMap<String, serde_json::Value>;

/// What went wrong in a store. Each variant says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No tenant has this id or slug.
    #[error("tenant \"{0}\" not found: check the id or slug (`tenancy tenants list --all`)")]
    NotFound(String),
    /// Another tenant already uses this slug.
    #[error("slug \"{0}\" is already used by another tenant: choose another slug")]
    DuplicateSlug(String),
    /// Another tenant already uses this id.
    #[error("tenant id \"{0}\" already exists: choose another id or let the store generate one")]
    DuplicateId(String),
    /// A name is another tenant's id or slug: ids and slugs are one
    /// namespace, so a reference always names one tenant.
    #[error(
        "\"{name}\" is another tenant's {other}: ids and slugs share one namespace (a reference must name one tenant), choose another"
    )]
    NameTaken {
        /// The name refused.
        name: String,
        /// What it is of the other tenant: `id` or `slug`.
        other: &'static str,
    },
    /// The slug breaks the slug rules.
    #[error(transparent)]
    InvalidSlug(#[from] InvalidSlug),
    /// The config key breaks the key rules.
    #[error(transparent)]
    InvalidConfigKey(#[from] InvalidConfigKey),
    /// A status change that is not allowed (e.g. suspending a tenant that
    /// is still provisioning).
    #[error("tenant \"{id}\" cannot go from {from} to {to}")]
    InvalidTransition {
        /// The tenant.
        id: String,
        /// Its current status.
        from: TenantStatus,
        /// The refused target status.
        to: TenantStatus,
    },
    /// Another tenant (or this one) already has this domain.
    #[error(
        "domain \"{0}\" is already claimed: a domain belongs to one tenant; remove it there first"
    )]
    DomainTaken(String),
    /// A config value refused by the rules of its key (such as
    /// `auth.issuer`).
    #[error("{key}: {reason}")]
    InvalidConfigValue {
        /// The key.
        key: String,
        /// What is wrong with the value and what to give instead.
        reason: String,
    },
    /// The backing store cannot be reached or failed.
    #[error("tenant store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Wraps any backend error as [`StoreError::Unavailable`].
    pub fn unavailable(err: impl std::fmt::Display) -> Self {
        Self::Unavailable(err.to_string())
    }
}

/// Which tenants [`TenantStore::list`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Include tenants that are not `Active`.
    pub include_inactive: bool,
    /// Rows to skip.
    pub offset: u64,
    /// Rows to return at most (capped at [`ListQuery::MAX_LIMIT`]).
    pub limit: u64,
    /// Only tenants in this status (it overrides `include_inactive`).
    pub status: Option<TenantStatus>,
    /// Only tenants whose slug or name contains this text (ignoring ASCII
    /// case), or whose id is exactly this.
    pub search: Option<String>,
}

impl ListQuery {
    /// The largest page size a store returns.
    pub const MAX_LIMIT: u64 = 1000;

    /// Active tenants, first page of 100.
    pub fn active() -> Self {
        Self {
            include_inactive: false,
            offset: 0,
            limit: 100,
            status: None,
            search: None,
        }
    }

    /// All tenants, first page of 100.
    pub fn all() -> Self {
        Self {
            include_inactive: true,
            ..Self::active()
        }
    }

    /// Only tenants in `status`.
    pub fn with_status(mut self, status: TenantStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only tenants whose slug or name contains `text` (ignoring ASCII
    /// case) or whose id is `text`; blank text matches everything.
    pub fn search(mut self, text: &str) -> Self {
        let text = text.trim();
        self.search = (!text.is_empty()).then(|| text.to_owned());
        self
    }

    /// Whether `tenant` passes the status and search filters.
    pub fn matches(&self, tenant: &TenantInfo) -> bool {
        let status_ok = match self.status {
            Some(status) => tenant.status == status,
            None => self.include_inactive || tenant.is_active(),
        };
        status_ok
            && self.search.as_deref().is_none_or(|q| {
                let q = q.to_ascii_lowercase();
                tenant.id.as_str() == q
                    || tenant.slug.as_str().to_ascii_lowercase().contains(&q)
                    || tenant.name.to_ascii_lowercase().contains(&q)
            })
    }

    /// The search text as a SQL `LIKE` pattern (`%`, `_` and `\` escaped,
    /// lower-cased), for stores.
    pub fn like_pattern(&self) -> Option<String> {
        self.search.as_deref().map(|q| {
            let mut pattern = String::from("%");
            for c in q.to_ascii_lowercase().chars() {
                if matches!(c, '%' | '_' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern.push('%');
            pattern
        })
    }

    /// Sets the page.
    pub fn page(mut self, offset: u64, limit: u64) -> Self {
        self.offset = offset;
        self.limit = limit.min(Self::MAX_LIMIT);
        self
    }
}

impl Default for ListQuery {
    fn default() -> Self {
        Self::active()
    }
}

/// One page of tenants, ordered by creation time then id.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantPage {
    /// The tenants of this page.
    pub items: Vec<TenantInfo>,
    /// How many tenants match the query in all.
    pub total: u64,
}

/// Persistent tenant records.
///
/// Implementations must keep slugs unique, generate ids when none is
/// given, refuse status changes that [`TenantStatus::can_become`] refuses,
/// and stamp `updated_at` on every change.
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// The tenant with this id.
    async fn get(&self, id: &TenantId) -> Result<Option<TenantInfo>, StoreError>;

    /// The tenant with this slug.
    async fn get_by_slug(&self, slug: &str) -> Result<Option<TenantInfo>, StoreError>;

    /// A page of tenants.
    async fn list(&self, query: ListQuery) -> Result<TenantPage, StoreError>;

    /// Stores a new tenant in status `Provisioning`, which requests are
    /// refused for. Applications create tenants with
    /// [`LifecycleService::create`](crate::LifecycleService::create), which
    /// also provisions and activates them; this is the storage step.
    async fn create(&self, tenant: NewTenant) -> Result<TenantInfo, StoreError>;

    /// Changes the fields given in `update`.
    async fn update(&self, id: &TenantId, update: TenantUpdate) -> Result<TenantInfo, StoreError>;

    /// Moves a tenant to `status`, recording `reason`.
    async fn set_status(
        &self,
        id: &TenantId,
        status: TenantStatus,
        reason: Option<&str>,
    ) -> Result<TenantInfo, StoreError>;

    /// Removes a tenant and its config overrides. Returns whether it existed.
    async fn delete(&self, id: &TenantId) -> Result<bool, StoreError>;

    /// Whether the store answers.
    async fn check(&self) -> Result<(), StoreError> {
        self.list(ListQuery::all().page(0, 1)).await.map(|_| ())
    }

    /// Finds a tenant by id, else by slug.
    async fn find(&self, reference: &str) -> Result<Option<TenantInfo>, StoreError> {
        if let Ok(id) = TenantId::new(reference)
            && let Some(tenant) = self.get(&id).await?
        {
            return Ok(Some(tenant));
        }
        self.get_by_slug(reference).await
    }

    /// `set_status(id, Active, None)`.
    async fn activate(&self, id: &TenantId) -> Result<TenantInfo, StoreError> {
        self.set_status(id, TenantStatus::Active, None).await
    }

    /// `set_status(id, Inactive, None)`.
    async fn deactivate(&self, id: &TenantId) -> Result<TenantInfo, StoreError> {
        self.set_status(id, TenantStatus::Inactive, None).await
    }

    /// `set_status(id, Suspended, reason)`.
    async fn suspend(&self, id: &TenantId, reason: Option<&str>) -> Result<TenantInfo, StoreError> {
        self.set_status(id, TenantStatus::Suspended, reason).await
    }
}

/// Per-tenant config overrides: key → JSON value.
#[async_trait]
pub trait ConfigStore: Send + Sync + 'static {
    /// One key of a tenant's overrides.
    async fn get_config(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError>;

    /// All of a tenant's overrides.
    async fn all_config(&self, tenant: &TenantId) -> Result<ConfigMap, StoreError>;

    /// Sets one override.
    async fn set_config(
        &self,
        tenant: &TenantId,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StoreError>;

    /// Removes one override. Returns whether it existed.
    async fn delete_config(&self, tenant: &TenantId, key: &str) -> Result<bool, StoreError>;

    /// All of a tenant's overrides when they are known without waiting (a
    /// cache holds them), for the request path; `None` when only the async
    /// methods can tell. The default is `None`.
    fn cached_config(&self, _tenant: &TenantId) -> Option<Arc<ConfigMap>> {
        None
    }

    /// Every tenant's override of `key` (tenants without one are left
    /// out), such as the tenants' own identity providers (`auth.issuer`)
    /// at start; `None` when this store cannot tell (the default). Keys
    /// whose index needs it (`auth.issuer`) cannot be set on a store that
    /// returns `None`.
    async fn config_with_key(
        &self,
        _key: &str,
    ) -> Result<Option<Vec<(TenantId, serde_json::Value)>>, StoreError> {
        Ok(None)
    }
}

#[async_trait]
impl<T: TenantStore + ?Sized> TenantStore for Arc<T> {
    async fn get(&self, id: &TenantId) -> Result<Option<TenantInfo>, StoreError> {
        (**self).get(id).await
    }
    async fn get_by_slug(&self, slug: &str) -> Result<Option<TenantInfo>, StoreError> {
        (**self).get_by_slug(slug).await
    }
    async fn list(&self, query: ListQuery) -> Result<TenantPage, StoreError> {
        (**self).list(query).await
    }
    async fn create(&self, tenant: NewTenant) -> Result<TenantInfo, StoreError> {
        (**self).create(tenant).await
    }
    async fn update(&self, id: &TenantId, update: TenantUpdate) -> Result<TenantInfo, StoreError> {
        (**self).update(id, update).await
    }
    async fn set_status(
        &self,
        id: &TenantId,
        status: TenantStatus,
        reason: Option<&str>,
    ) -> Result<TenantInfo, StoreError> {
        (**self).set_status(id, status, reason).await
    }
    async fn delete(&self, id: &TenantId) -> Result<bool, StoreError> {
        (**self).delete(id).await
    }
    async fn check(&self) -> Result<(), StoreError> {
        (**self).check().await
    }
    async fn find(&self, reference: &str) -> Result<Option<TenantInfo>, StoreError> {
        (**self).find(reference).await
    }
}

#[async_trait]
impl<T: ConfigStore + ?Sized> ConfigStore for Arc<T> {
    async fn get_config(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        (**self).get_config(tenant, key).await
    }
    async fn all_config(&self, tenant: &TenantId) -> Result<ConfigMap, StoreError> {
        (**self).all_config(tenant).await
    }
    async fn set_config(
        &self,
        tenant: &TenantId,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StoreError> {
        (**self).set_config(tenant, key, value).await
    }
    async fn delete_config(&self, tenant: &TenantId, key: &str) -> Result<bool, StoreError> {
        (**self).delete_config(tenant, key).await
    }
    fn cached_config(&self, tenant: &TenantId) -> Option<Arc<ConfigMap>> {
        (**self).cached_config(tenant)
    }
    async fn config_with_key(
        &self,
        key: &str,
    ) -> Result<Option<Vec<(TenantId, serde_json::Value)>>, StoreError> {
        (**self).config_with_key(key).await
    }
}

/// Checks a config key: 1–128 characters of `[A-Za-z0-9_.-]`.
pub fn validate_config_key(key: &str) -> Result<(), InvalidConfigKey> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidConfigKey {
            key: crate::tenant::printable_prefix(key),
        })
    }
}

/// A config key that is not 1–128 characters of `[A-Za-z0-9_.-]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config key \"{key}\": use 1-128 characters of letters, digits, '_', '.' or '-'")]
pub struct InvalidConfigKey {
    /// The offending key, escaped and shortened.
    pub key: String,
}
