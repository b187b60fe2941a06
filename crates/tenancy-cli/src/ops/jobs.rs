//! Background jobs, for operators (SPEC J6): list, show, retry, cancel,
//! stats; and `tenancy serve`'s own long operations run as jobs (a
//! tenant's export, whose result is the archive).

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tenancy::TenantInfo;
use tenancy_sql::jobs::{
    Job, JobContext, JobFilter, JobOptions, JobRecord, JobState, JobStats, JobsError, Worker,
};

use crate::app::{App, AppError};

/// Why a job operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobOpError {
    /// The tenant named was not found, or the app failed.
    #[error(transparent)]
    App(#[from] AppError),
    /// The queue refused or failed.
    #[error(transparent)]
    Jobs(#[from] JobsError),
}

/// `tenancy serve`'s export of a tenant, run as a job: its result is
/// `{"path", "bytes", "tables"}`, the archive `GET /admin/jobs/{id}/result`
/// downloads.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportTenant {
    /// The tenant (its id).
    pub tenant: String,
}

impl Job for ExportTenant {
    const KIND: &'static str = "tenancy.export";
}

/// Jobs, newest first, of one tenant (id or slug) and in one state when
/// given.
pub async fn list(
    app: &App,
    tenant: Option<&str>,
    state: Option<JobState>,
    limit: Option<u32>,
) -> Result<Vec<JobRecord>, JobOpError> {
    let tenant = match tenant {
        Some(reference) => Some(app.tenant(reference).await?.id),
        None => None,
    };
    Ok(app
        .jobs
        .list(&JobFilter {
            tenant,
            state,
            limit,
        })
        .await?)
}

/// One job.
pub async fn show(app: &App, id: i64) -> Result<JobRecord, JobOpError> {
    Ok(app.jobs.get(id).await?)
}

/// Queues a dead or cancelled job again (audited as `job.retry`).
pub async fn retry(app: &App, actor: &str, id: i64) -> Result<JobRecord, JobOpError> {
    let job = app.jobs.retry(id).await?;
    app.audit(
        tenancy::audit::NewAuditEntry::new(actor, "job.retry")
            .tenant(job.tenant_id.clone())
            .change(None, Some(json!({ "job": id, "kind": job.kind }))),
    )
    .await;
    Ok(job)
}

/// Cancels a queued or running job (audited as `job.cancel`).
pub async fn cancel(app: &App, actor: &str, id: i64) -> Result<JobRecord, JobOpError> {
    let job = app.jobs.cancel(id).await?;
    app.audit(
        tenancy::audit::NewAuditEntry::new(actor, "job.cancel")
            .tenant(job.tenant_id.clone())
            .change(None, Some(json!({ "job": id, "kind": job.kind }))),
    )
    .await;
    Ok(job)
}

/// Jobs by kind and state.
pub async fn stats(app: &App) -> Result<JobStats, JobOpError> {
    Ok(app.jobs.stats().await?)
}

/// Enqueues the export of `tenant` (audited as `tenant.export`): the
/// job's id. One export per tenant at a time: asking again while one is
/// queued or running returns that one.
pub async fn enqueue_export(
    app: &App,
    actor: &str,
    tenant: &TenantInfo,
) -> Result<i64, JobOpError> {
    let running = app
        .jobs
        .list(&JobFilter {
            tenant: Some(tenant.id.clone()),
            state: None,
            limit: Some(20),
        })
        .await?
        .into_iter()
        .find(|j| {
            j.kind == ExportTenant::KIND && matches!(j.state, JobState::Queued | JobState::Running)
        });
    if let Some(job) = running {
        return Ok(job.id);
    }
    let id = app
        .jobs
        .enqueue(
            &tenant.id,
            &ExportTenant {
                tenant: tenant.id.to_string(),
            },
            JobOptions::default().max_attempts(app.config.jobs.max_attempts),
        )
        .await?;
    app.audit(
        tenancy::audit::NewAuditEntry::new(actor, "tenant.export")
            .tenant(tenant.id.clone())
            .change(None, Some(json!({ "job": id }))),
    )
    .await;
    Ok(id)
}

/// Where a finished export job's archive is, when it is there: a file
/// inside `jobs.exports_dir` (a result naming any other path, written in
/// the database by hand, serves nothing).
pub fn export_archive(app: &App, job: &JobRecord) -> Option<PathBuf> {
    if job.kind != ExportTenant::KIND || job.state != JobState::Done {
        return None;
    }
    let path = PathBuf::from(job.result.as_ref()?.get("path")?.as_str()?);
    let path = path.canonicalize().ok()?;
    let dir = app.config.jobs.exports_dir.canonicalize().ok()?;
    (path.starts_with(&dir) && path.is_file()).then_some(path)
}

/// The worker of `tenancy serve`: the toolkit's own kinds.
pub fn worker(app: Arc<App>) -> Worker {
    let config = app.config.jobs.clone();
    let store = app.tenancy.store().clone();
    let worker = Worker::new(app.jobs.clone(), store, &config);
    let worker = if app.config.usage.enabled {
        worker.usage(app.tenancy.usage().clone())
    } else {
        worker
    };
    let trials = app.clone();
    worker
        .register_with_result(move |ctx: JobContext, job: ExportTenant| {
            let app = app.clone();
            async move { run_export(&app, &ctx, &job).await }
        })
        .register_with_result(move |_: JobContext, job: crate::ops::plans::TrialEnd| {
            let app = trials.clone();
            async move { crate::ops::plans::run_trial_end(&app, &job).await }
        })
}

/// Writes the tenant's archive under `jobs.exports_dir`: a rerun (after
/// a restart mid-export) writes it again from the start.
async fn run_export(
    app: &App,
    ctx: &JobContext,
    job: &ExportTenant,
) -> Result<serde_json::Value, String> {
    if job.tenant != ctx.tenant.id.as_str() {
        return Err("the export names another tenant than its job's".into());
    }
    let dir = &app.config.jobs.exports_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(format!("{}-{}.tenancy", ctx.tenant.slug, ctx.id));
    let manifest = crate::ops::portability::export(app, &ctx.tenant, &path, &Quiet)
        .await
        .map_err(|e| e.to_string())?;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let path = std::path::absolute(&path).unwrap_or(path);
    Ok(json!({
        "path": path.display().to_string(),
        "bytes": bytes,
        "tables": manifest.tables.len(),
    }))
}

/// An export run by a worker reports nothing as it goes.
struct Quiet;

impl crate::ops::portability::Report for Quiet {
    fn start(&self, _tables: u64) {}
    fn table(&self, _verb: &str, _name: &str, _rows: u64, _took: std::time::Duration) {}
    fn finish(&self) {}
    fn note(&self, line: &str) {
        tracing::info!("{line}");
    }
}
