//! The tenant lifecycle (SPEC L1–L2): create → provision → active, update,
//! activate, deactivate, suspend, delete. Every change publishes an event
//! and invalidates the validator's cache at once.

use std::sync::Arc;

use crate::config::DeprovisionPolicy;
use crate::events::{EventBus, TenantEvent};
use crate::isolation::{IsolationError, Provisioner};
use crate::store::{StoreError, TenantStore};
use crate::tenant::{NewTenant, TenantId, TenantInfo, TenantStatus, TenantUpdate};
use crate::validate::Validator;

/// Why a lifecycle operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Provisioning failed; the tenant and everything made for it were
    /// removed.
    #[error("provisioning tenant \"{slug}\" failed, nothing was kept: {source}")]
    Provisioning {
        /// The tenant's slug.
        slug: String,
        /// The step that failed.
        #[source]
        source: IsolationError,
    },
    /// Deprovisioning failed; the status change was not made.
    #[error("deprovisioning tenant \"{slug}\" failed: {source}")]
    Deprovisioning {
        /// The tenant's slug.
        slug: String,
        /// The step that failed.
        #[source]
        source: IsolationError,
    },
}

/// Creates and changes tenants (SPEC L1).
///
/// ```
/// use std::sync::Arc;
/// use tenancy_core::{LifecycleService, MemoryStore, NewTenant, TenantStatus};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let lifecycle = LifecycleService::new(Arc::new(MemoryStore::new()));
/// let acme = lifecycle.create(NewTenant::new("acme", "Acme").unwrap()).await.unwrap();
/// assert_eq!(acme.status, TenantStatus::Active);
/// let acme = lifecycle.suspend(&acme.id, Some("unpaid")).await.unwrap();
/// assert_eq!(acme.status, TenantStatus::Suspended);
/// # });
/// ```
#[derive(Clone)]
pub struct LifecycleService {
    store: Arc<dyn TenantStore>,
    provisioner: Provisioner,
    bus: EventBus,
    validators: Vec<Validator>,
}

impl LifecycleService {
    /// A service over `store` with row-level isolation and a new bus.
    pub fn new(store: Arc<dyn TenantStore>) -> Self {
        Self {
            store,
            provisioner: Provisioner::default(),
            bus: EventBus::new(),
            validators: Vec::new(),
        }
    }

    /// Uses `provisioner` for isolation.
    pub fn provisioner(mut self, provisioner: Provisioner) -> Self {
        self.provisioner = provisioner;
        self
    }

    /// Publishes on `bus`.
    pub fn bus(mut self, bus: EventBus) -> Self {
        self.bus = bus;
        self
    }

    /// Invalidates `validator` on every change (can be called again for
    /// more validators).
    pub fn invalidates(mut self, validator: Validator) -> Self {
        self.validators.push(validator);
        self
    }

    /// The bus events are published on.
    pub fn event_bus(&self) -> &EventBus {
        &self.bus
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn TenantStore> {
        &self.store
    }

    /// Creates a tenant: stored as `Provisioning`, provisioned, then
    /// `Active`. When provisioning fails the record is removed and the
    /// error names the failed step. With `auto_provision` off the tenant
    /// stays `Provisioning` until [`LifecycleService::provision`].
    pub async fn create(&self, new: NewTenant) -> Result<TenantInfo, LifecycleError> {
        let tenant = self.store.create(new).await?;
        self.forget(&tenant).await;
        if !self.provisioner.is_auto() {
            return Ok(tenant);
        }
        self.provision(&tenant.id).await
    }

    /// Provisions a `Provisioning` tenant and activates it; on failure
    /// removes the tenant record (the strategy removes what it made).
    pub async fn provision(&self, id: &TenantId) -> Result<TenantInfo, LifecycleError> {
        let tenant = self.require(id).await?;
        if tenant.status != TenantStatus::Provisioning {
            return Err(StoreError::InvalidTransition {
                id: id.to_string(),
                from: tenant.status,
                to: TenantStatus::Active,
            }
            .into());
        }
        if let Err(source) = self.provisioner.strategy().provision(&tenant).await {
            tracing::error!(tenant_id = %tenant.id, error = %source, "provisioning failed; removing the tenant");
            if let Err(cleanup) = self.store.delete(&tenant.id).await {
                tracing::error!(tenant_id = %tenant.id, error = %cleanup, "could not remove the failed tenant record");
            }
            self.forget(&tenant).await;
            return Err(LifecycleError::Provisioning {
                slug: tenant.slug.to_string(),
                source,
            });
        }
        let active = self
            .store
            .set_status(&tenant.id, TenantStatus::Active, None)
            .await?;
        self.forget(&active).await;
        self.bus
            .publish(TenantEvent::Created {
                tenant: active.clone(),
            })
            .await;
        Ok(active)
    }

    /// Changes the given fields.
    pub async fn update(
        &self,
        id: &TenantId,
        update: TenantUpdate,
    ) -> Result<TenantInfo, LifecycleError> {
        let previous = self.require(id).await?;
        let tenant = self.store.update(id, update).await?;
        self.forget(&previous).await;
        self.forget(&tenant).await;
        self.bus
            .publish(TenantEvent::Updated {
                tenant: tenant.clone(),
                previous,
            })
            .await;
        Ok(tenant)
    }

    /// Makes a tenant `Active` (re-provisioning it when the policy removed
    /// its isolation on deactivation).
    pub async fn activate(&self, id: &TenantId) -> Result<TenantInfo, LifecycleError> {
        let current = self.require(id).await?;
        if current.status == TenantStatus::Active {
            return Ok(current);
        }
        if current.status == TenantStatus::Provisioning {
            return self.provision(id).await;
        }
        if self.provisioner.deprovision_policy() != crate::config::DeprovisionPolicy::Keep {
            self.provisioner
                .strategy()
                .provision(&current)
                .await
                .map_err(|source| LifecycleError::Provisioning {
                    slug: current.slug.to_string(),
                    source,
                })?;
        }
        let tenant = self
            .store
            .set_status(id, TenantStatus::Active, None)
            .await?;
        self.forget(&tenant).await;
        self.bus
            .publish(TenantEvent::Activated {
                tenant: tenant.clone(),
            })
            .await;
        Ok(tenant)
    }

    /// Makes a tenant `Inactive` and applies the deprovision policy.
    pub async fn deactivate(&self, id: &TenantId) -> Result<TenantInfo, LifecycleError> {
        let current = self.require(id).await?;
        if current.status == TenantStatus::Inactive {
            return Ok(current);
        }
        let tenant = self
            .store
            .set_status(id, TenantStatus::Inactive, None)
            .await?;
        self.forget(&tenant).await;
        self.deprovision(&tenant).await?;
        self.bus
            .publish(TenantEvent::Deactivated {
                tenant: tenant.clone(),
            })
            .await;
        Ok(tenant)
    }

    /// Makes a tenant `Suspended`, recording `reason`. Its data is kept.
    pub async fn suspend(
        &self,
        id: &TenantId,
        reason: Option<&str>,
    ) -> Result<TenantInfo, LifecycleError> {
        let current = self.require(id).await?;
        if current.status == TenantStatus::Suspended && current.status_reason.as_deref() == reason {
            return Ok(current);
        }
        let tenant = self
            .store
            .set_status(id, TenantStatus::Suspended, reason)
            .await?;
        self.forget(&tenant).await;
        self.bus
            .publish(TenantEvent::Suspended {
                tenant: tenant.clone(),
                reason: reason.map(str::to_owned),
            })
            .await;
        Ok(tenant)
    }

    /// Deletes a tenant: refuses service at once, applies the deprovision
    /// policy, then removes the record and its config overrides.
    pub async fn delete(&self, id: &TenantId) -> Result<TenantInfo, LifecycleError> {
        self.delete_with_policy(id, self.provisioner.deprovision_policy())
            .await
    }

    /// [`LifecycleService::delete`] with `policy` instead of the configured
    /// deprovision policy (e.g. [`DeprovisionPolicy::Drop`] for a purge).
    pub async fn delete_with_policy(
        &self,
        id: &TenantId,
        policy: DeprovisionPolicy,
    ) -> Result<TenantInfo, LifecycleError> {
        let tenant = self.require(id).await?;
        // Stop serving before touching its data.
        if tenant.status == TenantStatus::Active {
            self.store
                .set_status(id, TenantStatus::Inactive, Some("deleting"))
                .await?;
            self.forget(&tenant).await;
        }
        self.deprovision_with(&tenant, policy).await?;
        self.store.delete(id).await?;
        self.forget(&tenant).await;
        self.bus
            .publish(TenantEvent::Deleted {
                tenant: tenant.clone(),
            })
            .await;
        Ok(tenant)
    }

    async fn deprovision(&self, tenant: &TenantInfo) -> Result<(), LifecycleError> {
        self.deprovision_with(tenant, self.provisioner.deprovision_policy())
            .await
    }

    async fn deprovision_with(
        &self,
        tenant: &TenantInfo,
        policy: DeprovisionPolicy,
    ) -> Result<(), LifecycleError> {
        self.provisioner
            .strategy()
            .deprovision(tenant, policy)
            .await
            .map_err(|source| LifecycleError::Deprovisioning {
                slug: tenant.slug.to_string(),
                source,
            })
    }

    async fn require(&self, id: &TenantId) -> Result<TenantInfo, LifecycleError> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_string()).into())
    }

    async fn forget(&self, tenant: &TenantInfo) {
        for validator in &self.validators {
            validator.invalidate(&tenant.id).await;
            validator.invalidate_reference(tenant.slug.as_str()).await;
        }
    }
}

impl std::fmt::Debug for LifecycleService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LifecycleService")
            .field("provisioner", &self.provisioner)
            .field("validators", &self.validators.len())
            .finish_non_exhaustive()
    }
}
