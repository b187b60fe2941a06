//! Pending tenants: a pool of tenants whose schema or database is
//! already provisioned and migrated, so signup claims one instead of
//! waiting for `CREATE SCHEMA` and every migration.
//!
//! A pool member is only an id and its isolation: it is not a tenant (it is
//! in no tenant list and no request resolves it). [`LifecycleService::create`]
//! claims the oldest ready member in one store transaction, which turns it
//! into the new tenant under the member's id; the strategy then applies any
//! migration the member lacks (none, normally: a no-op check) and the tenant
//! becomes `Active`. With the pool empty, creation provisions as usual.
//!
//! [`PendingPool::spawn_refill`] keeps the pool at its target size in the
//! background, one member at a time, woken by each claim.
//!
//! ```
//! use tenancy::{MemoryStore, NewTenant, Tenancy, TenancyConfig};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // Schema or database isolation in practice; this one provisions nothing.
//! # struct Schemas;
//! # #[async_trait::async_trait]
//! # impl tenancy::IsolationStrategy for Schemas {
//! #     fn name(&self) -> &str { "schemas" }
//! #     async fn provision(&self, _: &tenancy::TenantInfo) -> Result<(), tenancy::IsolationError> { Ok(()) }
//! #     async fn deprovision(&self, _: &tenancy::TenantInfo, _: tenancy::DeprovisionPolicy) -> Result<(), tenancy::IsolationError> { Ok(()) }
//! # }
//! let mut config = TenancyConfig::default();
//! config.lifecycle.pending_pool = 3;
//! let tenancy = Tenancy::builder()
//!     .config(config)
//!     .store(MemoryStore::new())
//!     .isolation(Schemas)
//!     .build()?;
//! let pool = tenancy.pending_pool().expect("pending_pool > 0 with a provisioning strategy");
//! pool.fill().await?; // or keep `pool.spawn_refill()` running beside the server
//! assert_eq!(pool.status().await?.ready, 3);
//! let acme = tenancy.lifecycle().create(NewTenant::new("acme", "Acme")?).await?;
//! assert!(acme.is_active());
//! assert_eq!(pool.status().await?.ready, 2);
//! # Ok(()) }
//! ```
//!
//! [`LifecycleService::create`]: crate::LifecycleService::create

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::DeprovisionPolicy;
use crate::isolation::{IsolationError, IsolationStrategy};
use crate::store::StoreError;
use crate::tenant::{NewTenant, Slug, TenantId, TenantInfo, TenantStatus};

/// One member of the pending pool.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PendingTenant {
    /// The id the tenant that claims it will have (its schema or database
    /// is named after it).
    pub id: TenantId,
    /// Provisioned and migrated; only ready members are claimed.
    pub ready: bool,
    /// The migration version it was provisioned (or last migrated) at,
    /// when the strategy reports one.
    pub version: Option<i64>,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

/// Where pool members are kept. Implemented by every store of the toolkit,
/// in the same database as the tenants so a claim is one transaction.
#[async_trait]
pub trait PendingStore: Send + Sync + 'static {
    /// Records a new member, not ready yet.
    async fn add_pending(&self, id: &TenantId) -> Result<(), StoreError>;

    /// Marks a member ready at migration `version`; `false` when it is no
    /// longer in the pool.
    async fn mark_pending_ready(
        &self,
        id: &TenantId,
        version: Option<i64>,
    ) -> Result<bool, StoreError>;

    /// Every member, oldest first.
    async fn list_pending(&self) -> Result<Vec<PendingTenant>, StoreError>;

    /// In one transaction: takes the oldest ready member no other claim
    /// holds (skipping locked ones) and creates `tenant` under its id, as
    /// `Provisioning`. `None` when no ready member is free. A taken slug
    /// fails the whole claim and the member stays in the pool.
    async fn claim_pending(&self, tenant: NewTenant) -> Result<Option<Claimed>, StoreError>;

    /// Removes a member; `false` when it was not in the pool (claimed or
    /// removed meanwhile), in which case its isolation must be left alone.
    async fn remove_pending(&self, id: &TenantId) -> Result<bool, StoreError>;
}

/// A tenant made from a pool member by [`PendingStore::claim_pending`].
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The new tenant (`Provisioning`), under the member's id.
    pub tenant: TenantInfo,
    /// The member's migration version.
    pub version: Option<i64>,
}

#[async_trait]
impl<T: PendingStore + ?Sized> PendingStore for Arc<T> {
    async fn add_pending(&self, id: &TenantId) -> Result<(), StoreError> {
        (**self).add_pending(id).await
    }
    async fn mark_pending_ready(
        &self,
        id: &TenantId,
        version: Option<i64>,
    ) -> Result<bool, StoreError> {
        (**self).mark_pending_ready(id, version).await
    }
    async fn list_pending(&self) -> Result<Vec<PendingTenant>, StoreError> {
        (**self).list_pending().await
    }
    async fn claim_pending(&self, tenant: NewTenant) -> Result<Option<Claimed>, StoreError> {
        (**self).claim_pending(tenant).await
    }
    async fn remove_pending(&self, id: &TenantId) -> Result<bool, StoreError> {
        (**self).remove_pending(id).await
    }
}

/// Why a pool operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Provisioning or removing a member's isolation failed (a member that
    /// failed to provision was removed).
    #[error("pending pool member {id}: {source}")]
    Isolation {
        /// The member.
        id: TenantId,
        /// The step that failed.
        #[source]
        source: IsolationError,
    },
}

/// The pool at a glance (`tenancy tenants pool status`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolStatus {
    /// `lifecycle.pending_pool`.
    pub target: usize,
    /// Members ready to be claimed.
    pub ready: usize,
    /// Members being provisioned (or left half-done by a process that
    /// stopped; `prune` removes those).
    pub provisioning: usize,
    /// The isolation strategy members are provisioned with.
    pub strategy: String,
}

/// What [`PendingPool::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    /// Members removed, with their schema or database.
    pub removed: Vec<TenantId>,
}

/// A pool of provisioned, unclaimed tenants. Cheap to clone.
#[derive(Clone)]
pub struct PendingPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    store: Arc<dyn PendingStore>,
    strategy: Arc<dyn IsolationStrategy>,
    target: usize,
    wake: tokio::sync::Notify,
}

/// A member left not ready for this long is taken for abandoned by
/// [`PendingPool::prune`] (a process stopped while provisioning it).
const ABANDONED_AFTER: Duration = Duration::from_secs(600);

/// How often the refill task looks at the pool without being woken (other
/// processes claim too).
const REFILL_INTERVAL: Duration = Duration::from_secs(30);

/// How long the refill task waits after a claim before provisioning, so a
/// burst of signups does not share the database with `CREATE DATABASE`.
const REFILL_SETTLE: Duration = Duration::from_millis(500);

impl PendingPool {
    /// A pool of `target` members provisioned with `strategy`, kept in
    /// `store`.
    pub fn new(
        store: Arc<dyn PendingStore>,
        strategy: Arc<dyn IsolationStrategy>,
        target: usize,
    ) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                store,
                strategy,
                target,
                wake: tokio::sync::Notify::new(),
            }),
        }
    }

    /// The target size.
    pub fn target(&self) -> usize {
        self.inner.target
    }

    /// The members, oldest first.
    pub async fn members(&self) -> Result<Vec<PendingTenant>, PoolError> {
        Ok(self.inner.store.list_pending().await?)
    }

    /// Counts of ready and provisioning members against the target.
    pub async fn status(&self) -> Result<PoolStatus, PoolError> {
        let members = self.members().await?;
        let ready = members.iter().filter(|m| m.ready).count();
        Ok(PoolStatus {
            target: self.inner.target,
            ready,
            provisioning: members.len() - ready,
            strategy: self.inner.strategy.name().to_owned(),
        })
    }

    /// Adds members until there are `target` of them (ready or being
    /// provisioned), provisioning each before it can be claimed. Returns
    /// the members added. Two processes filling at once can overshoot the
    /// target by the members they add concurrently; `prune` trims.
    pub async fn fill(&self) -> Result<Vec<TenantId>, PoolError> {
        self.fill_to(self.inner.target).await
    }

    /// [`PendingPool::fill`] to `size` members instead of the target.
    pub async fn fill_to(&self, size: usize) -> Result<Vec<TenantId>, PoolError> {
        let mut added = Vec::new();
        loop {
            let members = self.inner.store.list_pending().await?;
            if members.len() >= size {
                return Ok(added);
            }
            added.push(self.add_one().await?);
        }
    }

    /// Provisions one new member and marks it ready.
    async fn add_one(&self) -> Result<TenantId, PoolError> {
        let id = TenantId::generate();
        self.inner.store.add_pending(&id).await?;
        let placeholder = placeholder(&id);
        if let Err(source) = self.inner.strategy.provision(&placeholder).await {
            // The strategy removed what it made; forget the member.
            if let Err(e) = self.inner.store.remove_pending(&id).await {
                tracing::warn!(pending_id = %id, error = %e, "could not remove a failed pool member");
            }
            return Err(PoolError::Isolation { id, source });
        }
        let version = self.inner.strategy.migration_version();
        if !self.inner.store.mark_pending_ready(&id, version).await? {
            // Pruned while provisioning: its isolation is ours to remove.
            self.drop_isolation(&id).await?;
        }
        tracing::debug!(pending_id = %id, "pending pool member ready");
        Ok(id)
    }

    /// Removes members beyond the target (newest first), members left not
    /// ready for more than ten minutes, and with `all` every member; each
    /// with its schema or database. A member claimed meanwhile is left
    /// alone.
    pub async fn prune(&self, all: bool) -> Result<PruneReport, PoolError> {
        let members = self.inner.store.list_pending().await?;
        let now = Utc::now();
        let abandoned = |m: &PendingTenant| {
            !m.ready
                && (now - m.created_at)
                    .to_std()
                    .is_ok_and(|age| age > ABANDONED_AFTER)
        };
        let ready: Vec<&PendingTenant> = members.iter().filter(|m| m.ready).collect();
        let keep = if all { 0 } else { self.inner.target };
        let mut doomed: Vec<&TenantId> = ready.iter().skip(keep).map(|m| &m.id).collect();
        doomed.extend(
            members
                .iter()
                .filter(|m| !m.ready && (all || abandoned(m)))
                .map(|m| &m.id),
        );
        let mut report = PruneReport::default();
        for id in doomed {
            if self.inner.store.remove_pending(id).await? {
                self.drop_isolation(id).await?;
                report.removed.push(id.clone());
            }
        }
        Ok(report)
    }

    async fn drop_isolation(&self, id: &TenantId) -> Result<(), PoolError> {
        self.inner
            .strategy
            .deprovision(&placeholder(id), DeprovisionPolicy::Drop)
            .await
            .map_err(|source| PoolError::Isolation {
                id: id.clone(),
                source,
            })
    }

    /// Claims a member for `tenant` (see [`PendingStore::claim_pending`])
    /// and wakes the refill task.
    pub(crate) async fn claim(&self, tenant: NewTenant) -> Result<Option<Claimed>, StoreError> {
        let claimed = self.inner.store.claim_pending(tenant).await?;
        if claimed.is_some() {
            self.inner.wake.notify_one();
        }
        Ok(claimed)
    }

    /// Whether a member at `version` needs no migration check: the
    /// strategy reports a version and the member is at it.
    pub(crate) fn is_current(&self, version: Option<i64>) -> bool {
        version.is_some() && version == self.inner.strategy.migration_version()
    }

    /// Records that member `id` was migrated to `version` (by `tenancy
    /// migrate`), so a claim need not check it again. `false` when it is
    /// no longer in the pool.
    pub async fn record_migrated(&self, id: &TenantId, version: i64) -> Result<bool, PoolError> {
        Ok(self
            .inner
            .store
            .mark_pending_ready(id, Some(version))
            .await?)
    }

    /// Removes the isolation of a claimed member whose tenant could not be
    /// completed.
    pub(crate) async fn discard_claimed(&self, id: &TenantId) {
        if let Err(e) = self.drop_isolation(id).await {
            tracing::error!(tenant_id = %id, error = %e, "could not remove the isolation of a failed claim");
        }
    }

    /// Keeps the pool full in the background: fills at once, then half a
    /// second after a claim (in this process; so a burst of signups is not
    /// slowed by provisioning) and every 30 s (claims elsewhere).
    /// Provisioning runs one member at a time so requests keep the
    /// database. A failure is logged and retried at the next wake.
    /// Dropping or aborting the handle stops it.
    pub fn spawn_refill(&self) -> RefillTask {
        let pool = self.clone();
        let handle = tokio::spawn(async move {
            loop {
                if let Err(e) = pool.fill().await {
                    tracing::warn!(error = %e, "pending pool refill failed; retrying later");
                }
                let woken = tokio::time::timeout(REFILL_INTERVAL, pool.inner.wake.notified()).await;
                if woken.is_ok() {
                    tokio::time::sleep(REFILL_SETTLE).await;
                }
            }
        });
        RefillTask { handle }
    }
}

/// The background refill started by [`PendingPool::spawn_refill`]; stops
/// when dropped.
#[derive(Debug)]
pub struct RefillTask {
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for RefillTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// What a strategy is given to provision or drop a member: only the id
/// names anything (schema `tenant_<id>`, database, placement).
fn placeholder(id: &TenantId) -> TenantInfo {
    let now = Utc::now();
    TenantInfo {
        id: id.clone(),
        slug: Slug::pending(),
        name: "pending pool member".into(),
        status: TenantStatus::Provisioning,
        status_reason: None,
        plan: None,
        metadata: serde_json::Value::Object(Default::default()),
        created_at: now,
        updated_at: now,
        trial_ends_at: None,
    }
}

impl std::fmt::Debug for PendingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingPool")
            .field("target", &self.inner.target)
            .field("strategy", &self.inner.strategy.name())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashSet;
    use std::sync::Mutex;

    use super::*;
    use crate::{LifecycleService, MemoryStore, Provisioner, TenantStore};

    /// Records provisioned ids; fails while `fail` is set.
    #[derive(Default)]
    struct Recording {
        live: Mutex<HashSet<TenantId>>,
        fail: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl IsolationStrategy for Recording {
        fn name(&self) -> &str {
            "recording"
        }
        async fn provision(&self, tenant: &TenantInfo) -> Result<(), IsolationError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(IsolationError::new("recording", "migrate", "boom"));
            }
            self.live.lock().unwrap().insert(tenant.id.clone());
            Ok(())
        }
        async fn deprovision(
            &self,
            tenant: &TenantInfo,
            _policy: DeprovisionPolicy,
        ) -> Result<(), IsolationError> {
            self.live.lock().unwrap().remove(&tenant.id);
            Ok(())
        }
    }

    fn setup(target: usize) -> (MemoryStore, Arc<Recording>, PendingPool, LifecycleService) {
        let store = MemoryStore::new();
        let strategy = Arc::new(Recording::default());
        let pool = PendingPool::new(Arc::new(store.clone()), strategy.clone(), target);
        let lifecycle = LifecycleService::new(Arc::new(store.clone()))
            .provisioner(Provisioner::new(strategy.clone()))
            .pending_pool(pool.clone());
        (store, strategy, pool, lifecycle)
    }

    #[tokio::test]
    async fn claims_then_falls_back_to_provisioning() {
        let (store, strategy, pool, lifecycle) = setup(2);
        assert_eq!(pool.fill().await.unwrap().len(), 2);
        let members: HashSet<TenantId> = pool
            .members()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        let a = lifecycle
            .create(NewTenant::new("a-co", "A").unwrap())
            .await
            .unwrap();
        let b = lifecycle
            .create(NewTenant::new("b-co", "B").unwrap())
            .await
            .unwrap();
        let c = lifecycle
            .create(NewTenant::new("c-co", "C").unwrap())
            .await
            .unwrap();
        assert!(members.contains(&a.id) && members.contains(&b.id) && a.id != b.id);
        assert!(!members.contains(&c.id), "pool empty: provisioned as usual");
        for t in [&a, &b, &c] {
            assert!(t.is_active());
            assert!(strategy.live.lock().unwrap().contains(&t.id));
        }
        assert_eq!(store.list(crate::ListQuery::all()).await.unwrap().total, 3);
        assert!(pool.members().await.unwrap().is_empty());
        // A chosen id never takes a member.
        pool.fill().await.unwrap();
        let chosen: TenantId = "chosen".parse().unwrap();
        let d = lifecycle
            .create(NewTenant::new("d-co", "D").unwrap().id(chosen.clone()))
            .await
            .unwrap();
        assert_eq!(d.id, chosen);
        assert_eq!(pool.status().await.unwrap().ready, 2);
    }

    #[tokio::test]
    async fn failed_member_is_removed_and_prune_trims() {
        let (_store, strategy, pool, _lifecycle) = setup(2);
        strategy
            .fail
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(
            pool.fill().await,
            Err(PoolError::Isolation { .. })
        ));
        assert!(
            pool.members().await.unwrap().is_empty(),
            "nothing half-made kept"
        );
        strategy
            .fail
            .store(false, std::sync::atomic::Ordering::SeqCst);
        pool.fill_to(5).await.unwrap();
        assert_eq!(strategy.live.lock().unwrap().len(), 5);
        let report = pool.prune(false).await.unwrap();
        assert_eq!(report.removed.len(), 3);
        assert_eq!(strategy.live.lock().unwrap().len(), 2);
        let status = pool.status().await.unwrap();
        assert_eq!((status.ready, status.provisioning), (2, 0));
        pool.prune(true).await.unwrap();
        assert!(strategy.live.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn refill_task_tops_up_after_a_claim() {
        let (_store, _strategy, pool, lifecycle) = setup(2);
        let task = pool.spawn_refill();
        let ready = |pool: PendingPool| async move { pool.status().await.unwrap().ready };
        for _ in 0..200 {
            if ready(pool.clone()).await == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(ready(pool.clone()).await, 2);
        lifecycle
            .create(NewTenant::new("a-co", "A").unwrap())
            .await
            .unwrap();
        let mut refilled = false;
        for _ in 0..600 {
            if ready(pool.clone()).await == 2 && pool.members().await.unwrap().len() == 2 {
                refilled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(refilled, "woken by the claim, well before the 30 s tick");
        drop(task);
    }
}
