//! What plans do outside one request (SPEC E3, E5): each tenant's
//! `jobs_concurrency` written where the job queue's claims read it, and the
//! end of a tenant's trial, run as a background job when it comes.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tenancy::{ConfigStore, TenantInfo};
use tenancy_sql::jobs::{Job, JobOptions};

use crate::app::App;

/// Why the plans' limits could not be written to the job queue.
#[derive(Debug, thiserror::Error)]
pub enum PlansError {
    /// The tenant or config store failed.
    #[error(transparent)]
    Store(#[from] tenancy::StoreError),
    /// The job queue failed.
    #[error(transparent)]
    Jobs(#[from] tenancy_sql::jobs::JobsError),
}

/// The end of a tenant's trial (SPEC E5), queued to run when it ends:
/// the lifecycle suspends the tenant (reason `trial_expired`) or moves it
/// to `lifecycle.trial_fallback_plan`, with its event, and the audit log
/// records `tenant.trial_ended`. Run once across every server (the queue
/// hands a job to one worker); a trial changed since is left alone.
#[derive(Debug, Serialize, Deserialize)]
pub struct TrialEnd {
    /// The tenant (its id).
    pub tenant: String,
    /// The trial end this job was queued for (RFC 3339).
    pub ends_at: chrono::DateTime<chrono::Utc>,
}

impl Job for TrialEnd {
    const KIND: &'static str = "tenancy.trial_end";
}

/// Queues the end of `tenant`'s trial, if it has one (at most once per
/// trial end: the end is the idempotency key). A failure is logged: the
/// request path refuses a tenant past its trial anyway.
pub async fn schedule_trial_end(app: &App, tenant: &TenantInfo) {
    let Some(ends_at) = tenant.trial_ends_at else {
        return;
    };
    let job = TrialEnd {
        tenant: tenant.id.to_string(),
        ends_at,
    };
    let options = JobOptions {
        run_at_ms: Some(ends_at.timestamp_millis()),
        idempotency_key: Some(format!("trial-end:{}", ends_at.timestamp_millis())),
        ..JobOptions::default()
    };
    if let Err(e) = app.jobs.enqueue(&tenant.id, &job, options).await {
        tracing::error!(tenant_id = %tenant.id, error = %e,
            "cannot queue the end of the tenant's trial: it is refused once the trial ends, \
             but not suspended or moved until an operator does it");
    }
}

/// Ends a trial (the [`TrialEnd`] job).
pub async fn run_trial_end(app: &App, job: &TrialEnd) -> Result<serde_json::Value, String> {
    let lifecycle = app.tenancy.lifecycle();
    let fallback = app.config.lifecycle.trial_fallback_plan.as_deref();
    let Some(current) = app
        .tenancy
        .store()
        .find(&job.tenant)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(json!({"ended": false, "why": "the tenant no longer exists"}));
    };
    if current.trial_ends_at != Some(job.ends_at) {
        return Ok(json!({"ended": false, "why": "the trial was changed since"}));
    }
    match lifecycle
        .end_trial(&job.tenant, fallback)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(ended) => {
            apply_job_limit(app, &ended).await;
            app.audit(
                tenancy::audit::NewAuditEntry::new("system:trials", "tenant.trial_ended")
                    .tenant(ended.id.clone())
                    .change(
                        serde_json::to_value(&current).ok(),
                        serde_json::to_value(&ended).ok(),
                    ),
            )
            .await;
            Ok(json!({"ended": true, "status": ended.status, "plan": ended.plan}))
        }
        None => Ok(json!({"ended": false})),
    }
}

/// The limit name of running jobs per tenant.
pub const JOBS_CONCURRENCY: &str = "jobs_concurrency";

/// Writes `tenant`'s `jobs_concurrency` (its plan's, or its override) to
/// the queue, where every worker's claims read it. A failure is logged:
/// the workers' default limit applies meanwhile.
pub async fn apply_job_limit(app: &App, tenant: &TenantInfo) {
    let limit = match app.tenancy.limit(tenant, JOBS_CONCURRENCY).await {
        Ok(limit) => limit.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        Err(e) => {
            tracing::warn!(tenant_id = %tenant.id, error = %e, "cannot read the tenant's jobs_concurrency");
            return;
        }
    };
    if let Err(e) = app.jobs.set_tenant_limit(&tenant.id, limit).await {
        tracing::warn!(tenant_id = %tenant.id, error = %e, "cannot write the tenant's jobs_concurrency");
    }
}

/// Writes every tenant's `jobs_concurrency` to the queue (at start: the
/// plans may have changed). Nothing to do when no plan and no override
/// sets it.
pub async fn sync_job_limits(app: &App) -> Result<(), PlansError> {
    let overridden = app
        .tenancy
        .config_store()
        .config_with_key(&format!(
            "{}{JOBS_CONCURRENCY}",
            tenancy::plans::LIMIT_PREFIX
        ))
        .await?
        .unwrap_or_default();
    app.jobs.clear_tenant_limits().await?;
    if overridden.is_empty() && !app.tenancy.plans().any_plan_limits(JOBS_CONCURRENCY) {
        return Ok(());
    }
    let mut query = tenancy::ListQuery::all();
    loop {
        let page = app.tenancy.store().list(query.clone()).await?;
        for tenant in &page.items {
            apply_job_limit(app, tenant).await;
        }
        if page.items.len() < usize::try_from(query.limit).unwrap_or(usize::MAX) {
            return Ok(());
        }
        query.offset += page.items.len() as u64;
    }
}
