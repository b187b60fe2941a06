//! Background jobs (SPEC J6): list, show, retry, cancel, a result; a
//! tenant's export as a job.

use tenancy_sql::jobs::{Job, JobState, JobsError};

use super::*;
use crate::ops::jobs::{self as ops, JobOpError};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct JobParams {
    /// Only this tenant's (id or slug).
    #[serde(default)]
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    tenant: Option<String>,
    /// Only in this state: queued, running, done, dead, cancelled, dropped.
    #[serde(default)]
    #[param(pattern = r"^(queued|running|done|dead|cancelled|dropped)$")]
    state: Option<String>,
    /// At most this many (1–1000, default 50).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The job id of the path: a number, else 422.
fn job_id(raw: &str) -> Result<i64, Response> {
    raw.parse::<i64>().map_err(|_| {
        problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            format!(
                "\"{}\" is not a job id (a number)",
                raw.chars().take(32).collect::<String>().escape_debug()
            ),
        )
    })
}

fn job_problem(err: JobOpError) -> Response {
    match err {
        JobOpError::App(crate::app::AppError::TenantNotFound(_)) => {
            problem(StatusCode::NOT_FOUND, "tenant_not_found", err)
        }
        JobOpError::Jobs(JobsError::NotFound(_)) => {
            problem(StatusCode::NOT_FOUND, "job_not_found", err)
        }
        JobOpError::Jobs(JobsError::WrongState { .. }) => {
            problem(StatusCode::CONFLICT, "invalid_transition", err)
        }
        other => problem(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", other),
    }
}

/// `GET /admin/jobs?tenant=&state=&limit=`: newest first.
#[utoipa::path(get,
    path = "/admin/jobs",
    tag = "admin",
    summary = "Background jobs, newest first",
    params(JobParams),
    responses((status = 200, description = "{items: [job]}", body = Object),
        crate::http::docs::JobErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn list_jobs(
    State(state): State<ServerState>,
    params: Result<Query<JobParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return bad_query(e.body_text()),
    };
    if let Err(r) = check_limit(p.limit.map(u64::from)) {
        return r;
    }
    let job_state = match p.state.as_deref().map(str::parse::<JobState>).transpose() {
        Ok(s) => s,
        Err(e) => return bad_query(e.to_string()),
    };
    match ops::list(&state.app, p.tenant.as_deref(), job_state, p.limit).await {
        Ok(items) => Json(serde_json::json!({ "items": items })).into_response(),
        Err(e) => job_problem(e),
    }
}

/// `GET /admin/jobs/{id}`.
#[utoipa::path(get,
    path = "/admin/jobs/{id}",
    tag = "admin",
    summary = "One job",
    params(crate::http::docs::JobPath),
    responses((status = 200, description = "The job", body = Object),
        crate::http::docs::JobErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn show_job(
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Response {
    let id = match job_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match ops::show(&state.app, id).await {
        Ok(job) => Json(job).into_response(),
        Err(e) => job_problem(e),
    }
}

/// `POST /admin/jobs/{id}/retry`.
#[utoipa::path(post,
    path = "/admin/jobs/{id}/retry",
    tag = "admin",
    summary = "Queue a dead or cancelled job again",
    params(crate::http::docs::JobPath, crate::http::docs::ActorHeader),
    responses((status = 200, description = "The job", body = Object),
        crate::http::docs::JobErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn retry_job(
    State(state): State<ServerState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Response {
    let id = match job_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match ops::retry(&state.app, &actor.0, id).await {
        Ok(job) => Json(job).into_response(),
        Err(e) => job_problem(e),
    }
}

/// `POST /admin/jobs/{id}/cancel`.
#[utoipa::path(post,
    path = "/admin/jobs/{id}/cancel",
    tag = "admin",
    summary = "Cancel a queued or running job",
    params(crate::http::docs::JobPath, crate::http::docs::ActorHeader),
    responses((status = 200, description = "The job", body = Object),
        crate::http::docs::JobErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn cancel_job(
    State(state): State<ServerState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Response {
    let id = match job_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match ops::cancel(&state.app, &actor.0, id).await {
        Ok(job) => Json(job).into_response(),
        Err(e) => job_problem(e),
    }
}

/// `GET /admin/jobs/{id}/result`: an export's archive, else the job's
/// JSON result; 409 until the job is done.
#[utoipa::path(get,
    path = "/admin/jobs/{id}/result",
    tag = "admin",
    summary = "A done job's result (an export: its archive)",
    params(crate::http::docs::JobPath),
    responses((status = 200, description = "The archive of an export, or the JSON result of another kind",
            content((Vec<u8> = "application/octet-stream"), (Object = "application/json"))),
        (status = 410, description = "The export's archive is no longer there: export again",
            body = crate::http::docs::ProblemDoc, content_type = "application/problem+json"),
        crate::http::docs::JobErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn job_result(
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Response {
    let id = match job_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let job = match ops::show(&state.app, id).await {
        Ok(job) => job,
        Err(e) => return job_problem(e),
    };
    if job.state != JobState::Done {
        return problem(
            StatusCode::CONFLICT,
            "job_not_done",
            format!(
                "job {id} is {}: its result is there once it is done",
                job.state
            ),
        );
    }
    if job.kind == ops::ExportTenant::KIND {
        let Some(path) = ops::export_archive(&state.app, &job) else {
            return problem(
                StatusCode::GONE,
                "result_gone",
                format!("the archive of job {id} is no longer there: export again"),
            );
        };
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) => return problem(StatusCode::GONE, "result_gone", e),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("export-{id}.tenancy"));
        let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
        return (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
            ],
            body,
        )
            .into_response();
    }
    Json(job.result.unwrap_or(Value::Null)).into_response()
}

/// `POST /admin/tenants/{tenant}/export`: 202 with the export's job.
#[utoipa::path(post,
    path = "/admin/tenants/{tenant}/export",
    tag = "admin",
    summary = "Export a tenant as a background job",
    params(crate::http::docs::TenantPath, crate::http::docs::ActorHeader),
    responses((status = 202, description = "{job, status_url, result_url}", body = Object),
        crate::http::docs::TenantChangeErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn export_tenant(
    State(state): State<ServerState>,
    actor: Actor,
    Path(reference): Path<String>,
) -> Response {
    let tenant = match find(&state, &reference).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if tenant.status == tenancy::TenantStatus::Provisioning {
        return problem(
            StatusCode::CONFLICT,
            "invalid_transition",
            format!(
                "tenant {} is still provisioning: export it once it is active",
                tenant.slug
            ),
        );
    }
    match ops::enqueue_export(&state.app, &actor.0, &tenant).await {
        Ok(id) => {
            state.wake_workers();
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({
                    "job": id,
                    "status_url": format!("/admin/jobs/{id}"),
                    "result_url": format!("/admin/jobs/{id}/result"),
                })),
            )
                .into_response()
        }
        Err(e) => job_problem(e),
    }
}
