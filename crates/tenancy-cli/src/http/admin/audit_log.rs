//! The audit log.

use super::*;
use crate::ops::audit::AuditError;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct AuditParams {
    /// Tenant id or slug (the id of a deleted tenant).
    #[serde(default)]
    #[param(max_length = 64)]
    tenant: Option<String>,
    /// At most this many (1–1000, default 50).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only entries older than this id.
    #[serde(default)]
    before: Option<i64>,
}

/// `GET /admin/audit?tenant=…&limit=…&before=…`: newest first. `tenant` is
/// an id or a slug; a deleted tenant's entries are found by its id.
#[utoipa::path(get,
    path = "/admin/audit",
    tag = "admin",
    summary = "The audit log, newest first",
    params(AuditParams),
    responses((status = 200, description = "Entries", body = crate::http::docs::AuditPageDoc),
        crate::http::docs::TenantInputErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn audit_log(
    State(state): State<ServerState>,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return bad_body(e.body_text()),
    };
    if let Err(r) = check_limit(p.limit.map(u64::from)) {
        return r;
    }
    let mut query = tenancy::audit::AuditQuery::default();
    if let Some(limit) = p.limit {
        query = query.limit(limit);
    }
    query.before = p.before;
    match crate::ops::audit::entries(&state.app, query, p.tenant.as_deref()).await {
        Ok(items) => {
            let next = items.last().map(|e| e.id);
            Json(serde_json::json!({ "items": items, "next_before": next })).into_response()
        }
        Err(e @ AuditError::NoLog) => problem(StatusCode::NOT_FOUND, "no_audit_log", e),
        Err(AuditError::UnknownTenant(reference)) => store_problem(StoreError::NotFound(reference)),
        Err(AuditError::Store(e)) => store_problem(e),
    }
}
