//! Per-tenant configuration: application defaults that each
//! tenant may override.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use quanta::Instant;
use quick_cache::sync::Cache;
use serde::de::DeserializeOwned;

use crate::config::OverridesConfig;
use crate::events::{EventBus, TenantEvent};
use crate::store::{ConfigMap, ConfigStore, StoreError, validate_config_key};
use crate::tenant::TenantId;

/// A [`ConfigStore`] decorator that caches each tenant's whole override map
/// with a TTL; a write through it invalidates that tenant's entry.
///
/// Writes made by other processes are seen after the TTL, or at once when
/// something calls [`CachedConfigStore::invalidate`] (the Postgres change
/// listener does).
///
/// A hit is read without waiting ([`ConfigStore::cached_config`]), so the
/// request path (per-tenant rate limits) never awaits a cached tenant;
/// concurrent misses for one tenant share one store read.
#[derive(Clone)]
pub struct CachedConfigStore {
    inner: Arc<dyn ConfigStore>,
    cache: Arc<Cache<TenantId, Cached>>,
    ttl: Duration,
    /// Bumped by every invalidation: a read that overlapped one may have
    /// seen the old overrides, so what it read is not kept.
    generation: Arc<AtomicU64>,
}

#[derive(Clone)]
struct Cached {
    overrides: Arc<ConfigMap>,
    expires: Instant,
}

impl CachedConfigStore {
    /// Caches `inner` with the TTL and size of `config`.
    pub fn new(inner: Arc<dyn ConfigStore>, config: &OverridesConfig) -> Self {
        let capacity = usize::try_from(config.cache_capacity).unwrap_or(usize::MAX);
        Self {
            inner,
            cache: Arc::new(Cache::new(capacity.max(1))),
            ttl: Duration::from_secs(config.cache_ttl_secs),
            generation: Arc::default(),
        }
    }

    /// A tenant's whole override map, from the cache when present.
    pub async fn overrides(&self, tenant: &TenantId) -> Result<Arc<ConfigMap>, StoreError> {
        loop {
            let guard = match self.cache.get_value_or_guard_async(tenant).await {
                Ok(hit) if hit.expires > Instant::now() => return Ok(hit.overrides),
                Ok(_expired) => {
                    self.cache.remove(tenant);
                    continue;
                }
                Err(guard) => guard,
            };
            let generation = self.generation.load(Ordering::Acquire);
            // On an error the guard is dropped: the next reader tries again.
            let overrides = Arc::new(self.inner.all_config(tenant).await?);
            // Hits on what is cached from now on read the coarse clock.
            crate::clock::start();
            let _ = guard.insert(Cached {
                overrides: overrides.clone(),
                expires: Instant::now() + self.ttl,
            });
            if self.generation.load(Ordering::Acquire) != generation {
                // Invalidated while reading: don't keep what was read.
                self.cache.remove(tenant);
            }
            return Ok(overrides);
        }
    }

    /// Forgets one tenant's overrides.
    pub async fn invalidate(&self, tenant: &TenantId) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.remove(tenant);
    }

    /// Forgets every tenant's overrides.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.clear();
    }
}

#[async_trait]
impl ConfigStore for CachedConfigStore {
    async fn get_config(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self.overrides(tenant).await?.get(key).cloned())
    }

    async fn all_config(&self, tenant: &TenantId) -> Result<ConfigMap, StoreError> {
        Ok((*self.overrides(tenant).await?).clone())
    }

    async fn set_config(
        &self,
        tenant: &TenantId,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StoreError> {
        let result = self.inner.set_config(tenant, key, value).await;
        self.invalidate(tenant).await;
        result
    }

    async fn delete_config(&self, tenant: &TenantId, key: &str) -> Result<bool, StoreError> {
        let result = self.inner.delete_config(tenant, key).await;
        self.invalidate(tenant).await;
        result
    }

    async fn config_with_key(
        &self,
        key: &str,
    ) -> Result<Option<Vec<(TenantId, serde_json::Value)>>, StoreError> {
        self.inner.config_with_key(key).await
    }

    fn cached_config(&self, tenant: &TenantId) -> Option<Arc<ConfigMap>> {
        let hit = self.cache.get(tenant)?;
        (hit.expires > crate::clock::recent()).then_some(hit.overrides)
    }
}

impl std::fmt::Debug for CachedConfigStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedConfigStore")
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// A typed read of an override that holds the wrong type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigValueError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The value does not deserialize into the requested type.
    #[error("config key `{key}` holds {value}, which is not the expected type: {reason}")]
    WrongType {
        /// The key.
        key: String,
        /// The stored value.
        value: serde_json::Value,
        /// The deserializer's message.
        reason: String,
    },
}

/// Application defaults + per-tenant overrides.
///
/// Get it from `Tenancy::overrides`; in a handler, the `Setting` extractor
/// reads one value for the request's tenant.
///
/// ```
/// use serde_json::json;
/// use tenancy::{MemoryStore, NewTenant, Tenancy, TenancyConfig};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = TenancyConfig::default();
/// config.overrides.defaults.insert("theme".into(), json!("light"));
/// let tenancy = Tenancy::builder().config(config).store(MemoryStore::new()).build()?;
/// let acme = tenancy.lifecycle().create(NewTenant::new("acme", "Acme")?).await?;
///
/// let overrides = tenancy.overrides();
/// assert_eq!(overrides.get(&acme.id, "theme").await?, Some(json!("light")));
/// overrides.set(&acme.id, "theme", json!("dark")).await?;
/// assert_eq!(overrides.get_as::<String>(&acme.id, "theme").await?.as_deref(), Some("dark"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TenantConfigService {
    store: Arc<dyn ConfigStore>,
    defaults: Arc<ConfigMap>,
    bus: Option<EventBus>,
    check: Option<ValueCheck>,
    observers: Vec<Observer>,
}

/// The rules of some keys' values, checked before a write.
type ValueCheck = Arc<dyn Fn(&str, &serde_json::Value) -> Result<(), String> + Send + Sync>;

/// Told of every write made through the service, once it is stored.
type Observer = Arc<dyn Fn(&TenantId, &str, Option<&serde_json::Value>) + Send + Sync>;

impl TenantConfigService {
    /// Overrides from `store` on top of `defaults`.
    pub fn new(store: Arc<dyn ConfigStore>, defaults: ConfigMap) -> Self {
        Self {
            store,
            defaults: Arc::new(defaults),
            bus: None,
            check: None,
            observers: Vec::new(),
        }
    }

    /// Tells `observer(tenant, key, value)` of every write made through
    /// this service (`None`: removed) as soon as it is stored, before the
    /// write returns: for indexes of this process that must see the
    /// change at once (other processes hear it through their change
    /// listener).
    pub fn with_observer(
        mut self,
        observer: impl Fn(&TenantId, &str, Option<&serde_json::Value>) + Send + Sync + 'static,
    ) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// Checks every value before it is written: `check(key, value)`
    /// returns what is wrong with it, and [`TenantConfigService::set`]
    /// refuses it with [`StoreError::InvalidConfigValue`]. A second call
    /// adds to the first.
    pub fn with_check(
        mut self,
        check: impl Fn(&str, &serde_json::Value) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        let previous = self.check.take();
        self.check = Some(Arc::new(move |key, value| {
            if let Some(previous) = &previous {
                previous(key, value)?;
            }
            check(key, value)
        }));
        self
    }

    /// Publishes [`TenantEvent::ConfigChanged`] on `bus` for every write.
    pub fn with_bus(mut self, bus: EventBus) -> Self {
        self.bus = Some(bus);
        self
    }

    /// The application defaults.
    pub fn defaults(&self) -> &ConfigMap {
        &self.defaults
    }

    /// The tenant's overrides when known without waiting (cached by a
    /// [`CachedConfigStore`]), for code on the request path that must not
    /// await; `None` means: ask [`TenantConfigService::get`].
    pub fn cached_overrides(&self, tenant: &TenantId) -> Option<Arc<ConfigMap>> {
        self.store.cached_config(tenant)
    }

    /// The tenant's override for `key`, else the default, else `None`.
    pub async fn get(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        match self.store.get_config(tenant, key).await? {
            Some(value) => Ok(Some(value)),
            None => Ok(self.defaults.get(key).cloned()),
        }
    }

    /// [`TenantConfigService::get`], deserialized into `T`.
    pub async fn get_as<T: DeserializeOwned>(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<T>, ConfigValueError> {
        let Some(value) = self.get(tenant, key).await? else {
            return Ok(None);
        };
        serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|e| ConfigValueError::WrongType {
                key: key.to_owned(),
                value,
                reason: e.to_string(),
            })
    }

    /// Sets the tenant's override for `key` and publishes `ConfigChanged`.
    pub async fn set(
        &self,
        tenant: &TenantId,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StoreError> {
        validate_config_key(key)?;
        if let Some(check) = &self.check {
            check(key, &value).map_err(|reason| StoreError::InvalidConfigValue {
                key: key.to_owned(),
                reason,
            })?;
        }
        self.store.set_config(tenant, key, value.clone()).await?;
        for observer in &self.observers {
            observer(tenant, key, Some(&value));
        }
        self.announce(tenant, key, Some(value)).await;
        Ok(())
    }

    /// Removes the tenant's override for `key` (the default applies again).
    pub async fn delete(&self, tenant: &TenantId, key: &str) -> Result<bool, StoreError> {
        let existed = self.store.delete_config(tenant, key).await?;
        if existed {
            for observer in &self.observers {
                observer(tenant, key, None);
            }
            self.announce(tenant, key, None).await;
        }
        Ok(existed)
    }

    /// Defaults merged with the tenant's overrides (the tenant wins).
    pub async fn effective(&self, tenant: &TenantId) -> Result<ConfigMap, StoreError> {
        let mut merged = (*self.defaults).clone();
        merged.extend(self.store.all_config(tenant).await?);
        Ok(merged)
    }

    async fn announce(&self, tenant: &TenantId, key: &str, value: Option<serde_json::Value>) {
        if let Some(bus) = &self.bus {
            bus.publish(TenantEvent::ConfigChanged {
                tenant_id: tenant.clone(),
                key: key.to_owned(),
                value,
            })
            .await;
        }
    }
}

impl std::fmt::Debug for TenantConfigService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConfigService")
            .field("defaults", &self.defaults.len())
            .finish_non_exhaustive()
    }
}
