//! The tenant lifecycle: create → provision → active, update,
//! activate, deactivate, suspend, delete. Every change publishes an event
//! and invalidates the validator's cache at once.

use std::sync::Arc;

use crate::config::DeprovisionPolicy;
use crate::events::{EventBus, TenantEvent};
use crate::isolation::{IsolationError, Provisioner};
use crate::metrics::DurationHistogram;
use crate::pool::PendingPool;
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

/// Creates and changes tenants.
///
/// Every method that changes a tenant takes its id or its slug (the id is
/// tried first, as in request resolution).
///
/// ```
/// use tenancy::{MemoryStore, NewTenant, Tenancy, TenantStatus};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tenancy = Tenancy::builder().store(MemoryStore::new()).build()?;
/// let lifecycle = tenancy.lifecycle();
/// let acme = lifecycle.create(NewTenant::new("acme", "Acme")?.plan("free")).await?;
/// assert_eq!(acme.status, TenantStatus::Active);
/// let acme = lifecycle.suspend("acme", Some("unpaid")).await?;
/// assert_eq!(acme.status, TenantStatus::Suspended);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LifecycleService {
    store: Arc<dyn TenantStore>,
    provisioner: Provisioner,
    bus: EventBus,
    validators: Vec<Validator>,
    provisioning: Arc<DurationHistogram>,
    pool: Option<PendingPool>,
}

impl LifecycleService {
    /// A service over `store` with row-level isolation and a new bus.
    pub fn new(store: Arc<dyn TenantStore>) -> Self {
        Self {
            store,
            provisioner: Provisioner::default(),
            bus: EventBus::new(),
            validators: Vec::new(),
            provisioning: Arc::default(),
            pool: None,
        }
    }

    /// Claims new tenants from `pool` when it has a ready member.
    pub fn pending_pool(mut self, pool: PendingPool) -> Self {
        self.pool = Some(pool);
        self
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

    /// How long provisioning took (schema or database creation and the
    /// tenant's migrations), failed attempts included.
    pub fn provisioning_durations(&self) -> &DurationHistogram {
        &self.provisioning
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn TenantStore> {
        &self.store
    }

    /// Creates a tenant: stored as `Provisioning`, provisioned, then
    /// `Active`. When provisioning fails the record is removed and the
    /// error names the failed step. With `auto_provision` off the tenant
    /// stays `Provisioning` until [`LifecycleService::provision`].
    ///
    /// With a [pending pool](crate::pool) holding a ready member (and no
    /// id chosen), the tenant takes over that member in one store
    /// transaction: its schema or database already exists and is migrated,
    /// so only a check that no migration is missing remains.
    pub async fn create(&self, new: NewTenant) -> Result<TenantInfo, LifecycleError> {
        self.check_names(new.slug.as_str(), new.id.as_ref(), None)
            .await?;
        if let Some(pool) = &self.pool
            && self.provisioner.is_auto()
            && new.id.is_none()
            && let Some(claimed) = pool.claim(new.clone()).await?
        {
            self.forget(&claimed.tenant).await;
            let check = !pool.is_current(claimed.version);
            return self.finish_provisioning(claimed.tenant, Some(check)).await;
        }
        let tenant = self.store.create(new).await?;
        self.forget(&tenant).await;
        if !self.provisioner.is_auto() {
            return Ok(tenant);
        }
        self.finish_provisioning(tenant, None).await
    }

    /// Ids and slugs are one namespace: `slug` may not be another tenant's
    /// id, nor `id` another tenant's slug (`except` is the tenant being
    /// changed). A slug taken as a slug is the store's own check.
    async fn check_names(
        &self,
        slug: &str,
        id: Option<&TenantId>,
        except: Option<&TenantId>,
    ) -> Result<(), LifecycleError> {
        let other = |t: &TenantInfo| except != Some(&t.id);
        if let Ok(as_id) = TenantId::new(slug)
            && let Some(t) = self.store.get(&as_id).await?
            && other(&t)
        {
            return Err(StoreError::NameTaken {
                name: slug.to_owned(),
                other: "id",
            }
            .into());
        }
        if let Some(id) = id
            && let Some(t) = self.store.get_by_slug(id.as_str()).await?
            && other(&t)
        {
            return Err(StoreError::NameTaken {
                name: id.to_string(),
                other: "slug",
            }
            .into());
        }
        Ok(())
    }

    /// Provisions a `Provisioning` tenant and activates it; on failure
    /// removes the tenant record (the strategy removes what it made).
    pub async fn provision(&self, tenant: impl AsRef<str>) -> Result<TenantInfo, LifecycleError> {
        let tenant = self.require(tenant.as_ref()).await?;
        if tenant.status != TenantStatus::Provisioning {
            return Err(StoreError::InvalidTransition {
                id: tenant.id.to_string(),
                from: tenant.status,
                to: TenantStatus::Active,
            }
            .into());
        }
        self.finish_provisioning(tenant, None).await
    }

    /// Provisions, activates and announces `tenant`. `claimed` is set for a
    /// claimed pool member: `Some(true)` when its migrations must be
    /// topped up (provisioned at another version), `Some(false)` when it is
    /// current and needs nothing.
    async fn finish_provisioning(
        &self,
        tenant: TenantInfo,
        claimed: Option<bool>,
    ) -> Result<TenantInfo, LifecycleError> {
        let started = std::time::Instant::now();
        let provisioned = match claimed {
            Some(false) => Ok(()),
            _ => self.provisioner.strategy().provision(&tenant).await,
        };
        self.provisioning.observe(started.elapsed());
        if let Err(source) = provisioned {
            tracing::error!(tenant_id = %tenant.id, error = %source, "provisioning failed; removing the tenant");
            if let Err(cleanup) = self.store.delete(&tenant.id).await {
                tracing::error!(tenant_id = %tenant.id, error = %cleanup, "could not remove the failed tenant record");
            }
            if claimed.is_some()
                && let Some(pool) = &self.pool
            {
                // Made before this call, so not removed by the strategy.
                pool.discard_claimed(&tenant.id).await;
            }
            self.forget(&tenant).await;
            return Err(LifecycleError::Provisioning {
                slug: tenant.slug.to_string(),
                source,
            });
        }
        self.change_status(&tenant.id, TenantStatus::Active, None, |tenant| {
            TenantEvent::Created { tenant }
        })
        .await
    }

    /// Changes the given fields.
    ///
    /// ```
    /// # use tenancy::{MemoryStore, NewTenant, Tenancy, TenantUpdate};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let tenancy = Tenancy::builder().store(MemoryStore::new()).build()?;
    /// # tenancy.lifecycle().create(NewTenant::new("acme", "Acme")?).await?;
    /// let acme = tenancy.lifecycle().update("acme", TenantUpdate::default().plan("pro")).await?;
    /// assert_eq!(acme.plan.as_deref(), Some("pro"));
    /// # Ok(()) }
    /// ```
    pub async fn update(
        &self,
        tenant: impl AsRef<str>,
        update: TenantUpdate,
    ) -> Result<TenantInfo, LifecycleError> {
        let previous = self.require(tenant.as_ref()).await?;
        if let Some(slug) = &update.slug {
            self.check_names(slug.as_str(), None, Some(&previous.id))
                .await?;
        }
        let tenant = self.store.update(&previous.id, update).await?;
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
    pub async fn activate(&self, tenant: impl AsRef<str>) -> Result<TenantInfo, LifecycleError> {
        let current = self.require(tenant.as_ref()).await?;
        let id = &current.id;
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
        // A trial that ended is over: activating the tenant (after it chose
        // a plan) ends it, or it would be refused again at once.
        if current.trial_ended(chrono::Utc::now()) {
            let cleared = crate::TenantUpdate {
                trial_ends_at: Some(None),
                ..Default::default()
            };
            self.store.update(id, cleared).await?;
        }
        self.change_status(id, TenantStatus::Active, None, |tenant| {
            TenantEvent::Activated { tenant }
        })
        .await
    }

    /// Ends `tenant`'s trial if it has ended by now and the tenant is still
    /// active (SPEC E5): moves it to `fallback_plan` (its trial cleared; a
    /// [`TenantEvent::Updated`]) or, without one, suspends it with reason
    /// [`TRIAL_EXPIRED`](crate::tenant::TRIAL_EXPIRED) (a
    /// [`TenantEvent::Suspended`]). `None`: nothing to end (no trial, not
    /// over yet, or not active). Running it twice changes nothing more.
    pub async fn end_trial(
        &self,
        tenant: impl AsRef<str>,
        fallback_plan: Option<&str>,
    ) -> Result<Option<TenantInfo>, LifecycleError> {
        let current = self.require(tenant.as_ref()).await?;
        if current.status != TenantStatus::Active || !current.trial_ended(chrono::Utc::now()) {
            return Ok(None);
        }
        let ended = match fallback_plan {
            Some(plan) => {
                let update = crate::TenantUpdate {
                    trial_ends_at: Some(None),
                    ..Default::default()
                }
                .plan(plan);
                self.update(&current.id, update).await?
            }
            None => {
                self.suspend(&current.id, Some(crate::tenant::TRIAL_EXPIRED))
                    .await?
            }
        };
        Ok(Some(ended))
    }

    /// Makes a tenant `Inactive` and applies the deprovision policy.
    pub async fn deactivate(&self, tenant: impl AsRef<str>) -> Result<TenantInfo, LifecycleError> {
        let current = self.require(tenant.as_ref()).await?;
        let id = &current.id;
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

    /// Makes a tenant `Suspended`, recording `reason`. Its data is kept,
    /// and its requests are refused (403 `tenant_not_active`) from the
    /// moment this returns.
    ///
    /// ```
    /// # use tenancy::{MemoryStore, NewTenant, Tenancy, TenantStatus};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let tenancy = Tenancy::builder().store(MemoryStore::new()).build()?;
    /// # tenancy.lifecycle().create(NewTenant::new("acme", "Acme")?).await?;
    /// let acme = tenancy.lifecycle().suspend("acme", Some("unpaid invoice")).await?;
    /// assert_eq!(acme.status, TenantStatus::Suspended);
    /// tenancy.lifecycle().activate(&acme.id).await?; // by id or by slug
    /// # Ok(()) }
    /// ```
    pub async fn suspend(
        &self,
        tenant: impl AsRef<str>,
        reason: Option<&str>,
    ) -> Result<TenantInfo, LifecycleError> {
        let current = self.require(tenant.as_ref()).await?;
        let id = &current.id;
        if current.status == TenantStatus::Suspended && current.status_reason.as_deref() == reason {
            return Ok(current);
        }
        self.change_status(id, TenantStatus::Suspended, reason, |tenant| {
            TenantEvent::Suspended {
                tenant,
                reason: reason.map(str::to_owned),
            }
        })
        .await
    }

    /// Deletes a tenant: refuses service at once, applies the deprovision
    /// policy, then removes the record and its config overrides.
    pub async fn delete(&self, tenant: impl AsRef<str>) -> Result<TenantInfo, LifecycleError> {
        self.delete_with_policy(tenant, self.provisioner.deprovision_policy())
            .await
    }

    /// [`LifecycleService::delete`] with `policy` instead of the configured
    /// deprovision policy (e.g. [`DeprovisionPolicy::Drop`] for a purge).
    pub async fn delete_with_policy(
        &self,
        tenant: impl AsRef<str>,
        policy: DeprovisionPolicy,
    ) -> Result<TenantInfo, LifecycleError> {
        let tenant = self.require(tenant.as_ref()).await?;
        let id = &tenant.id;
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

    /// Moves tenant `id` to `status` (with `reason`), forgets what the
    /// validators cached of it, and publishes `event` of the changed tenant.
    async fn change_status(
        &self,
        id: &TenantId,
        status: TenantStatus,
        reason: Option<&str>,
        event: impl FnOnce(TenantInfo) -> TenantEvent,
    ) -> Result<TenantInfo, LifecycleError> {
        let tenant = self.store.set_status(id, status, reason).await?;
        self.forget(&tenant).await;
        self.bus.publish(event(tenant.clone())).await;
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

    /// The tenant with id `reference`, else with slug `reference` (the
    /// order requests resolve in).
    async fn require(&self, reference: &str) -> Result<TenantInfo, LifecycleError> {
        self.store
            .find(reference)
            .await?
            .ok_or_else(|| StoreError::NotFound(reference.to_owned()).into())
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
