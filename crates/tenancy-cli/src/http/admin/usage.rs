//! A tenant's usage (SPEC E4): `GET /admin/tenants/{tenant}/usage`.

use super::*;
use crate::ops::usage::{self as ops, UsageError};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct UsageParams {
    /// Start: a date (2026-12-01) or an RFC 3339 time (default: 30 days before `to`).
    #[serde(default)]
    from: Option<String>,
    /// End: a date (its whole day included) or an RFC 3339 time (default: the end of this hour).
    #[serde(default)]
    to: Option<String>,
}

fn usage_problem(err: UsageError) -> Response {
    match err {
        UsageError::App(crate::app::AppError::TenantNotFound(_)) => {
            problem(StatusCode::NOT_FOUND, "tenant_not_found", err)
        }
        UsageError::InvalidRange(_) => {
            problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query", err)
        }
        other => {
            tracing::error!(error = %other, "usage report failed");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the usage store is unavailable: retry",
            )
        }
    }
}

/// `GET /admin/tenants/{tenant}/usage?from=&to=`: per hour and totals.
/// This server's counts are flushed first, so the report includes them.
#[utoipa::path(get,
    path = "/admin/tenants/{tenant}/usage",
    tag = "admin",
    summary = "A tenant's usage per hour, with totals",
    params(crate::http::docs::TenantPath, UsageParams),
    responses((status = 200, description = "{from, to, totals, rows, truncated}", body = crate::ops::usage::UsageReport),
        crate::http::docs::TenantInputErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn tenant_usage(
    State(state): State<ServerState>,
    Path(reference): Path<String>,
    params: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return bad_query(e.body_text()),
    };
    let (from, to) = match ops::range(p.from.as_deref(), p.to.as_deref()) {
        Ok(range) => range,
        Err(e) => return usage_problem(e),
    };
    let tenant = match find(&state, &reference).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if let Some(flusher) = &state.usage_flusher {
        if let Err(e) = flusher.flush().await {
            tracing::warn!(error = %e, "usage flush before a report failed");
        }
    }
    match ops::report(&state.app, Some(tenant.id.as_str()), from, to).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => usage_problem(e),
    }
}
