//! Tenants: create, change, list. Every change goes through the
//! lifecycle service, so provisioning (schemas, databases), events and
//! cache invalidation happen the same way from the CLI and the admin API,
//! and each is recorded in the audit log here, once.

use serde_json::Value;
use tenancy::{LifecycleError, ListQuery, NewTenant, StoreError, TenantInfo, TenantUpdate};

use crate::app::App;

/// Why a tenant operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantOpError {
    /// The lifecycle refused (an invalid transition, a duplicate) or
    /// provisioning failed.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A change of a tenant's status, or its deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Refuse it service and keep its data, with an optional reason.
    Suspend(Option<String>),
    /// Make it active again.
    Activate,
    /// Switch it off (`lifecycle.deprovision_policy` applies).
    Deactivate,
    /// Delete it and its config overrides (`lifecycle.deprovision_policy`
    /// applies to its data).
    Delete,
}

impl Change {
    /// The audit log's name of the change.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Suspend(_) => "tenant.suspend",
            Self::Activate => "tenant.activate",
            Self::Deactivate => "tenant.deactivate",
            Self::Delete => "tenant.delete",
        }
    }

    /// The change as a past participle, for messages (`suspended`, …).
    pub fn done(&self) -> &'static str {
        match self {
            Self::Suspend(_) => "suspended",
            Self::Activate => "activated",
            Self::Deactivate => "deactivated",
            Self::Delete => "deleted",
        }
    }
}

/// A tenant record as an audit before/after value.
pub fn audit_value(tenant: &TenantInfo) -> Option<Value> {
    serde_json::to_value(tenant).ok()
}

/// Records a change of `tenant` (from `before` to `after`) as `action`.
async fn record(
    app: &App,
    actor: &str,
    action: &str,
    tenant: &TenantInfo,
    before: Option<&TenantInfo>,
    after: Option<&TenantInfo>,
) {
    app.audit(
        tenancy::audit::NewAuditEntry::new(actor, action)
            .tenant(tenant.id.clone())
            .change(before.and_then(audit_value), after.and_then(audit_value)),
    )
    .await;
}

/// Creates a tenant: provisioned by the isolation strategy, then active.
/// Recorded as `tenant.create`.
pub async fn create(app: &App, actor: &str, new: NewTenant) -> Result<TenantInfo, TenantOpError> {
    let created = app.tenancy.lifecycle().create(new).await?;
    record(app, actor, "tenant.create", &created, None, Some(&created)).await;
    crate::ops::plans::schedule_trial_end(app, &created).await;
    if created.plan.is_some() {
        crate::ops::plans::apply_job_limit(app, &created).await;
    }
    Ok(created)
}

/// Changes `current`'s slug, name, plan or metadata. Recorded as
/// `tenant.update`.
pub async fn update(
    app: &App,
    actor: &str,
    current: &TenantInfo,
    update: TenantUpdate,
) -> Result<TenantInfo, TenantOpError> {
    let updated = app.tenancy.lifecycle().update(&current.id, update).await?;
    if updated.trial_ends_at != current.trial_ends_at {
        crate::ops::plans::schedule_trial_end(app, &updated).await;
    }
    if updated.plan != current.plan {
        crate::ops::plans::apply_job_limit(app, &updated).await;
    }
    record(
        app,
        actor,
        "tenant.update",
        &updated,
        Some(current),
        Some(&updated),
    )
    .await;
    Ok(updated)
}

/// Applies `change` to `current`. Recorded under [`Change::action`] (a
/// deletion with no after value).
pub async fn change(
    app: &App,
    actor: &str,
    current: &TenantInfo,
    change: Change,
) -> Result<TenantInfo, TenantOpError> {
    let lifecycle = app.tenancy.lifecycle();
    let changed = match &change {
        Change::Suspend(reason) => lifecycle.suspend(&current.id, reason.as_deref()).await?,
        Change::Activate => lifecycle.activate(&current.id).await?,
        Change::Deactivate => lifecycle.deactivate(&current.id).await?,
        Change::Delete => lifecycle.delete(&current.id).await?,
    };
    let after = (change != Change::Delete).then_some(&changed);
    record(app, actor, change.action(), &changed, Some(current), after).await;
    Ok(changed)
}

/// Every tenant (`all`) or every active one, paged through the store, and
/// the store's total (at least the number returned: tenants created while
/// paging may push it up).
pub async fn list_all(app: &App, all: bool) -> Result<(Vec<TenantInfo>, u64), TenantOpError> {
    let base = if all {
        ListQuery::all()
    } else {
        ListQuery::active()
    };
    let mut items: Vec<TenantInfo> = Vec::new();
    let mut total;
    loop {
        let offset = items.len() as u64;
        let page = app
            .tenancy
            .store()
            .list(base.clone().page(offset, ListQuery::MAX_LIMIT))
            .await?;
        total = page.total;
        let got = page.items.len();
        items.extend(page.items);
        if got == 0 || items.len() as u64 >= total {
            break;
        }
    }
    let total = total.max(items.len() as u64);
    Ok((items, total))
}
