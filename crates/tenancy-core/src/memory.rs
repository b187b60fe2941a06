//! [`MemoryStore`]: tenants and config overrides in process memory.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use chrono::Utc;

use crate::audit::{AuditEntry, AuditQuery, AuditStore, NewAuditEntry};
use crate::domain::{DomainStatus, DomainStore, TenantDomain};
use crate::impersonation::{ImpersonationGrant, ImpersonationStore};
use crate::pool::{Claimed, PendingStore, PendingTenant};
use crate::store::{
    ConfigMap, ConfigStore, ListQuery, StoreError, TenantPage, TenantStore, validate_config_key,
};
use crate::tenant::{NewTenant, TenantId, TenantInfo, TenantStatus, TenantUpdate};

/// A [`TenantStore`], [`ConfigStore`] and domain store held in memory: for
/// tests, examples and single-process deployments. Cloning shares the same
/// data.
///
/// Give it to `Tenancy::builder().store(…)` and create tenants through
/// [`Tenancy::lifecycle`](crate::LifecycleService): the store's own
/// [`TenantStore::create`] only records a tenant as `provisioning`, which
/// every request refuses until it is provisioned.
///
/// ```
/// use tenancy::{MemoryStore, NewTenant, Tenancy, TenantStatus, TenantStore};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tenancy = Tenancy::builder().store(MemoryStore::new()).build()?;
/// let acme = tenancy.lifecycle().create(NewTenant::new("acme", "Acme")?).await?;
/// assert_eq!(acme.status, TenantStatus::Active);
/// assert_eq!(tenancy.store().find("acme").await?.map(|t| t.id), Some(acme.id));
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Default)]
struct Inner {
    tenants: HashMap<TenantId, TenantInfo>,
    slugs: HashMap<String, TenantId>,
    config: HashMap<TenantId, ConfigMap>,
    domains: std::collections::BTreeMap<String, TenantDomain>,
    audit: Vec<AuditEntry>,
    /// Grants by key, with whether they were used.
    grants: HashMap<String, (ImpersonationGrant, bool)>,
    /// Pending pool members, oldest first.
    pending: Vec<PendingTenant>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // (every write is a single insert/remove), so poisoning is ignored.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("tenants", &self.read().tenants.len())
            .finish()
    }
}

#[async_trait]
impl TenantStore for MemoryStore {
    async fn get(&self, id: &TenantId) -> Result<Option<TenantInfo>, StoreError> {
        Ok(self.read().tenants.get(id).cloned())
    }

    async fn get_by_slug(&self, slug: &str) -> Result<Option<TenantInfo>, StoreError> {
        let inner = self.read();
        Ok(inner
            .slugs
            .get(slug)
            .and_then(|id| inner.tenants.get(id))
            .cloned())
    }

    async fn list(&self, query: ListQuery) -> Result<TenantPage, StoreError> {
        let inner = self.read();
        let mut matching: Vec<&TenantInfo> = inner
            .tenants
            .values()
            .filter(|t| query.matches(t))
            .collect();
        matching.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        let total = matching.len() as u64;
        let items = matching
            .into_iter()
            .skip(usize::try_from(query.offset).unwrap_or(usize::MAX))
            .take(usize::try_from(query.limit.min(ListQuery::MAX_LIMIT)).unwrap_or(usize::MAX))
            .cloned()
            .collect();
        Ok(TenantPage { items, total })
    }

    async fn create(&self, tenant: NewTenant) -> Result<TenantInfo, StoreError> {
        let info = tenant.into_info(Utc::now());
        let mut inner = self.write();
        if inner.slugs.contains_key(info.slug.as_str()) {
            return Err(StoreError::DuplicateSlug(info.slug.to_string()));
        }
        if inner.tenants.contains_key(&info.id) {
            return Err(StoreError::DuplicateId(info.id.to_string()));
        }
        inner.slugs.insert(info.slug.to_string(), info.id.clone());
        inner.tenants.insert(info.id.clone(), info.clone());
        Ok(info)
    }

    async fn update(&self, id: &TenantId, update: TenantUpdate) -> Result<TenantInfo, StoreError> {
        let mut inner = self.write();
        let Some(current) = inner.tenants.get(id) else {
            return Err(StoreError::NotFound(id.to_string()));
        };
        let old_slug = current.slug.clone();
        if let Some(slug) = &update.slug
            && *slug != old_slug
            && inner.slugs.contains_key(slug.as_str())
        {
            return Err(StoreError::DuplicateSlug(slug.to_string()));
        }
        let mut updated = current.clone();
        update.apply_to(&mut updated, Utc::now());
        if updated.slug != old_slug {
            inner.slugs.remove(old_slug.as_str());
            inner.slugs.insert(updated.slug.to_string(), id.clone());
        }
        inner.tenants.insert(id.clone(), updated.clone());
        Ok(updated)
    }

    async fn set_status(
        &self,
        id: &TenantId,
        status: TenantStatus,
        reason: Option<&str>,
    ) -> Result<TenantInfo, StoreError> {
        let mut inner = self.write();
        let Some(tenant) = inner.tenants.get_mut(id) else {
            return Err(StoreError::NotFound(id.to_string()));
        };
        if !tenant.status.can_become(status) {
            return Err(StoreError::InvalidTransition {
                id: id.to_string(),
                from: tenant.status,
                to: status,
            });
        }
        tenant.status = status;
        tenant.status_reason = reason.map(str::to_owned);
        tenant.updated_at = Utc::now();
        Ok(tenant.clone())
    }

    async fn delete(&self, id: &TenantId) -> Result<bool, StoreError> {
        let mut inner = self.write();
        inner.config.remove(id);
        inner.domains.retain(|_, d| &d.tenant_id != id);
        match inner.tenants.remove(id) {
            Some(t) => {
                inner.slugs.remove(t.slug.as_str());
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl ConfigStore for MemoryStore {
    async fn get_config(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self
            .read()
            .config
            .get(tenant)
            .and_then(|m| m.get(key))
            .cloned())
    }

    async fn all_config(&self, tenant: &TenantId) -> Result<ConfigMap, StoreError> {
        Ok(self.read().config.get(tenant).cloned().unwrap_or_default())
    }

    async fn set_config(
        &self,
        tenant: &TenantId,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StoreError> {
        validate_config_key(key)?;
        let mut inner = self.write();
        if !inner.tenants.contains_key(tenant) {
            return Err(StoreError::NotFound(tenant.to_string()));
        }
        inner
            .config
            .entry(tenant.clone())
            .or_default()
            .insert(key.to_owned(), value);
        Ok(())
    }

    async fn delete_config(&self, tenant: &TenantId, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .write()
            .config
            .get_mut(tenant)
            .is_some_and(|m| m.remove(key).is_some()))
    }

    async fn config_with_key(
        &self,
        key: &str,
    ) -> Result<Option<Vec<(TenantId, serde_json::Value)>>, StoreError> {
        Ok(Some(
            self.read()
                .config
                .iter()
                .filter_map(|(tenant, map)| Some((tenant.clone(), map.get(key)?.clone())))
                .collect(),
        ))
    }
}

#[async_trait]
impl DomainStore for MemoryStore {
    async fn add_domain(&self, domain: TenantDomain) -> Result<TenantDomain, StoreError> {
        let mut inner = self.write();
        if !inner.tenants.contains_key(&domain.tenant_id) {
            return Err(StoreError::NotFound(domain.tenant_id.to_string()));
        }
        let name = domain.domain.as_str().to_owned();
        if inner.domains.contains_key(&name) {
            return Err(StoreError::DomainTaken(name));
        }
        if domain.primary {
            for d in inner.domains.values_mut() {
                if d.tenant_id == domain.tenant_id {
                    d.primary = false;
                }
            }
        }
        inner.domains.insert(name, domain.clone());
        Ok(domain)
    }

    async fn get_domain(&self, domain: &str) -> Result<Option<TenantDomain>, StoreError> {
        Ok(self.read().domains.get(domain).cloned())
    }

    async fn list_domains(&self, tenant: &TenantId) -> Result<Vec<TenantDomain>, StoreError> {
        let mut list: Vec<_> = self
            .read()
            .domains
            .values()
            .filter(|d| &d.tenant_id == tenant)
            .cloned()
            .collect();
        list.sort_by(|a, b| b.primary.cmp(&a.primary).then(a.domain.cmp(&b.domain)));
        Ok(list)
    }

    async fn verify_domain(&self, domain: &str) -> Result<Option<TenantDomain>, StoreError> {
        let mut inner = self.write();
        Ok(inner.domains.get_mut(domain).map(|d| {
            if d.status != DomainStatus::Verified {
                d.status = DomainStatus::Verified;
                d.verified_at = Some(Utc::now());
            }
            d.clone()
        }))
    }

    async fn remove_domain(&self, domain: &str) -> Result<Option<TenantDomain>, StoreError> {
        Ok(self.write().domains.remove(domain))
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn record(&self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError> {
        let mut inner = self.write();
        let id = inner.audit.last().map_or(1, |e| e.id + 1);
        let entry = AuditEntry {
            id,
            at: Utc::now(),
            actor: entry.actor,
            action: entry.action,
            tenant_id: entry.tenant_id,
            before: entry.before,
            after: entry.after,
        };
        inner.audit.push(entry.clone());
        Ok(entry)
    }

    async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let inner = self.read();
        Ok(inner
            .audit
            .iter()
            .rev()
            .filter(|e| query.before.is_none_or(|before| e.id < before))
            .filter(|e| {
                query
                    .tenant_id
                    .as_ref()
                    .is_none_or(|t| e.tenant_id.as_ref() == Some(t))
            })
            .take(query.effective_limit() as usize)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl ImpersonationStore for MemoryStore {
    async fn issue(&self, grant: ImpersonationGrant) -> Result<(), StoreError> {
        let mut inner = self.write();
        let now = Utc::now();
        inner.grants.retain(|_, (g, _)| g.expires_at > now);
        inner.grants.insert(grant.key.clone(), (grant, false));
        Ok(())
    }

    async fn redeem(&self, key: &str) -> Result<Option<ImpersonationGrant>, StoreError> {
        let mut inner = self.write();
        match inner.grants.get_mut(key) {
            Some((grant, used)) if !*used && grant.expires_at > Utc::now() => {
                *used = true;
                Ok(Some(grant.clone()))
            }
            _ => Ok(None),
        }
    }
}

#[async_trait]
impl PendingStore for MemoryStore {
    async fn add_pending(&self, id: &TenantId) -> Result<(), StoreError> {
        let mut inner = self.write();
        if inner.tenants.contains_key(id) || inner.pending.iter().any(|m| &m.id == id) {
            return Err(StoreError::DuplicateId(id.to_string()));
        }
        inner.pending.push(PendingTenant {
            id: id.clone(),
            ready: false,
            version: None,
            created_at: Utc::now(),
        });
        Ok(())
    }

    async fn mark_pending_ready(
        &self,
        id: &TenantId,
        version: Option<i64>,
    ) -> Result<bool, StoreError> {
        let mut inner = self.write();
        Ok(match inner.pending.iter_mut().find(|m| &m.id == id) {
            Some(member) => {
                member.ready = true;
                member.version = version;
                true
            }
            None => false,
        })
    }

    async fn list_pending(&self) -> Result<Vec<PendingTenant>, StoreError> {
        Ok(self.read().pending.clone())
    }

    async fn claim_pending(&self, tenant: NewTenant) -> Result<Option<Claimed>, StoreError> {
        let mut inner = self.write();
        let Some(at) = inner.pending.iter().position(|m| m.ready) else {
            return Ok(None);
        };
        if inner.slugs.contains_key(tenant.slug.as_str()) {
            return Err(StoreError::DuplicateSlug(tenant.slug.to_string()));
        }
        let member = inner.pending.remove(at);
        let info = tenant.id(member.id).into_info(Utc::now());
        inner.slugs.insert(info.slug.to_string(), info.id.clone());
        inner.tenants.insert(info.id.clone(), info.clone());
        Ok(Some(Claimed {
            tenant: info,
            version: member.version,
        }))
    }

    async fn remove_pending(&self, id: &TenantId) -> Result<bool, StoreError> {
        let mut inner = self.write();
        let before = inner.pending.len();
        inner.pending.retain(|m| &m.id != id);
        Ok(inner.pending.len() != before)
    }
}
