//! Tenants: create, list, show, update, delete, suspend, activate, deactivate.

use super::*;
use crate::ops::tenants::{self, Change};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct CreateBody {
    /// 2–63 of lower-case letters, digits and `-`, starting with a letter,
    /// not ending with `-`.
    #[schema(pattern = r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])$")]
    slug: String,
    /// Display name (at most 200 characters).
    #[schema(max_length = 200)]
    name: String,
    /// Plan name (at most 64 characters).
    #[serde(default)]
    #[schema(max_length = 64)]
    plan: Option<String>,
    /// Any JSON object (at most 16 KiB of JSON).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// When the tenant's trial ends (RFC 3339): past it the tenant is
    /// suspended (reason `trial_expired`) or moved to
    /// `lifecycle.trial_fallback_plan`.
    #[serde(default)]
    trial_ends_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// `PATCH /admin/tenants/{tenant}`: the fields that may change. Any other
/// field (`status`, `id`, timestamps, unknown names) is refused.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(in crate::http) struct UpdateBody {
    /// New slug.
    #[schema(pattern = r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])$")]
    slug: Option<String>,
    /// New display name (at most 200 characters).
    #[schema(max_length = 200)]
    name: Option<String>,
    /// New plan (`null` clears it; at most 64 characters).
    #[schema(max_length = 64)]
    plan: Option<String>,
    /// New metadata, replacing the old (at most 16 KiB of JSON).
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// New trial end (RFC 3339); `null` takes the tenant off its trial.
    trial_ends_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[utoipa::path(post,
    path = "/admin/tenants",
    tag = "admin",
    summary = "Create a tenant (provisioned and active)",
    request_body = CreateBody,
    params(crate::http::docs::ActorHeader),
    responses((status = 201, description = "Created and active", body = tenancy::TenantInfo),
        crate::http::docs::AdminTokenRequired,
        crate::http::docs::Conflict,
        crate::http::docs::InvalidInput,
        crate::http::docs::ProvisioningFailed,
        crate::http::docs::StoreUnavailable),
    security(("admin_token" = [])))]
pub(in crate::http) async fn create(
    State(state): State<ServerState>,
    actor: Actor,
    body: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e.body_text()),
    };
    if let Err(r) = at_most("name", &body.name, MAX_NAME_CHARS)
        .and_then(|()| {
            at_most(
                "plan",
                body.plan.as_deref().unwrap_or_default(),
                MAX_PLAN_CHARS,
            )
        })
        .and_then(|()| body.metadata.as_ref().map_or(Ok(()), check_metadata))
    {
        return r;
    }
    let mut new = match NewTenant::new(&body.slug, body.name) {
        Ok(n) => n,
        Err(e) => return problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_slug", e),
    };
    if let Some(plan) = body.plan {
        new = new.plan(plan);
    }
    if let Some(metadata) = body.metadata {
        new = new.metadata(metadata);
    }
    if let Some(end) = body.trial_ends_at {
        new = new.trial_ends_at(end);
    }
    match tenants::create(&state.app, &actor.0, new).await {
        Ok(t) => (StatusCode::CREATED, Json(t)).into_response(),
        Err(e) => tenant_problem(e),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(in crate::http) struct ListParams {
    /// Include inactive tenants (default true).
    #[serde(default)]
    all: Option<bool>,
    /// Page size (1–1000, default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Page start (at most 1,000,000,000).
    #[serde(default)]
    #[param(minimum = 0, maximum = 1_000_000_000)]
    offset: Option<u64>,
    /// Slug or name contains (ignoring case), or the exact id.
    #[serde(default)]
    #[param(max_length = 200)]
    q: Option<String>,
    /// Only this status.
    #[serde(default)]
    status: Option<tenancy::TenantStatus>,
}

#[utoipa::path(get,
    path = "/admin/tenants",
    tag = "admin",
    summary = "List tenants",
    params(ListParams),
    responses((status = 200, description = "A page of tenants", body = tenancy::TenantPage),
        crate::http::docs::AdminTokenRequired,
        crate::http::docs::InvalidInput,
        crate::http::docs::StoreUnavailable),
    security(("admin_token" = [])))]
pub(in crate::http) async fn list(
    State(state): State<ServerState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return bad_body(e.body_text()),
    };
    if let Err(r) = check_limit(p.limit) {
        return r;
    }
    if p.offset.is_some_and(|n| n > MAX_OFFSET) {
        return bad_query(format!("`offset` must be at most {MAX_OFFSET}"));
    }
    if let Err(r) = at_most("q", p.q.as_deref().unwrap_or_default(), MAX_NAME_CHARS) {
        return r;
    }
    let mut query = if p.all.unwrap_or(true) {
        ListQuery::all()
    } else {
        ListQuery::active()
    };
    if let Some(q) = &p.q {
        query = query.search(q);
    }
    if let Some(status) = p.status {
        query = query.with_status(status);
    }
    match state
        .app
        .tenancy
        .store()
        .list(query.page(p.offset.unwrap_or(0), p.limit.unwrap_or(100)))
        .await
    {
        Ok(page) => Json(page).into_response(),
        Err(e) => store_problem(e),
    }
}

#[utoipa::path(get,
    path = "/admin/tenants/{tenant}",
    tag = "admin",
    summary = "One tenant",
    params(crate::http::docs::TenantPath),
    responses((status = 200, description = "The tenant", body = tenancy::TenantInfo),
        crate::http::docs::TenantReadErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn show(
    State(state): State<ServerState>,
    Path(reference): Path<String>,
) -> Response {
    match find(&state, &reference).await {
        Ok(t) => Json(t).into_response(),
        Err(r) => r,
    }
}

#[utoipa::path(patch,
    path = "/admin/tenants/{tenant}",
    tag = "admin",
    summary = "Change a tenant's slug, name, plan or metadata",
    request_body = UpdateBody,
    params(crate::http::docs::TenantPath, crate::http::docs::ActorHeader),
    responses((status = 200, description = "The tenant", body = tenancy::TenantInfo),
        crate::http::docs::TenantChangeErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn update(
    State(state): State<ServerState>,
    actor: Actor,
    Path(reference): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let update = match body
        .map_err(|e| bad_body(e.body_text()))
        .and_then(|Json(v)| tenant_update(v))
    {
        Ok(u) => u,
        Err(r) => return r,
    };
    let tenant = match find(&state, &reference).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match tenants::update(&state.app, &actor.0, &tenant, update).await {
        Ok(t) => Json(t).into_response(),
        Err(e) => tenant_problem(e),
    }
}

/// A PATCH body: only `slug`, `name`, `plan`, `metadata` and
/// `trial_ends_at` may change; a
/// read-only or unknown field is refused, never ignored.
fn tenant_update(body: Value) -> Result<TenantUpdate, Response> {
    let Value::Object(fields) = &body else {
        return Err(bad_body("the body must be a JSON object"));
    };
    for key in fields.keys() {
        match key.as_str() {
            "slug" | "name" | "plan" | "metadata" | "trial_ends_at" => {}
            "status" => {
                return Err(bad_body(
                    "`status` is read-only here: use POST /admin/tenants/{id}/suspend, /activate or /deactivate",
                ));
            }
            "id" | "created_at" | "updated_at" => {
                return Err(bad_body(format!("`{key}` is read-only")));
            }
            other => {
                return Err(bad_body(format!(
                    "unknown field `{}`: a tenant's slug, name, plan, metadata and trial_ends_at can change",
                    other.chars().take(64).collect::<String>()
                )));
            }
        }
    }
    if let Some(end) = fields.get("trial_ends_at")
        && !end.is_null()
        && end
            .as_str()
            .is_none_or(|t| chrono::DateTime::parse_from_rfc3339(t).is_err())
    {
        return Err(bad_body(
            "`trial_ends_at` must be an RFC 3339 time (2026-12-31T00:00:00Z), or null to end the trial",
        ));
    }
    let update: TenantUpdate = serde_json::from_value(body).map_err(bad_body)?;
    at_most(
        "name",
        update.name.as_deref().unwrap_or_default(),
        MAX_NAME_CHARS,
    )?;
    if let Some(Some(plan)) = &update.plan {
        at_most("plan", plan, MAX_PLAN_CHARS)?;
    }
    if let Some(metadata) = &update.metadata {
        check_metadata(metadata)?;
    }
    Ok(update)
}

/// Finds the tenant, applies `change` through the lifecycle (events, cache
/// invalidation, deprovisioning) and answers with the tenant.
async fn change(state: &ServerState, actor: &Actor, reference: &str, change: Change) -> Response {
    let tenant = match find(state, reference).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match tenants::change(&state.app, &actor.0, &tenant, change).await {
        Ok(t) => Json(t).into_response(),
        Err(e) => tenant_problem(e),
    }
}

/// Maps a tenant operation's error to a problem response.
fn tenant_problem(err: tenants::TenantOpError) -> Response {
    match err {
        tenants::TenantOpError::Lifecycle(e) => lifecycle_problem(e),
        tenants::TenantOpError::Store(e) => store_problem(e),
    }
}

#[utoipa::path(delete,
    path = "/admin/tenants/{tenant}",
    tag = "admin",
    summary = "Delete a tenant (deprovision policy applies)",
    params(crate::http::docs::TenantPath, crate::http::docs::ActorHeader),
    responses((status = 200, description = "The deleted tenant", body = tenancy::TenantInfo),
        crate::http::docs::TenantChangeErrors,
        crate::http::docs::ProvisioningFailed),
    security(("admin_token" = [])))]
pub(in crate::http) async fn remove(
    State(state): State<ServerState>,
    actor: Actor,
    Path(reference): Path<String>,
) -> Response {
    change(&state, &actor, &reference, Change::Delete).await
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct SuspendBody {
    /// Why (at most 500 characters).
    #[serde(default)]
    #[schema(max_length = 500)]
    reason: Option<String>,
}

#[utoipa::path(post,
    path = "/admin/tenants/{tenant}/suspend",
    tag = "admin",
    summary = "Suspend a tenant, with an optional reason",
    request_body = Option<SuspendBody>,
    params(crate::http::docs::TenantPath, crate::http::docs::ActorHeader),
    responses((status = 200, description = "The tenant", body = tenancy::TenantInfo),
        crate::http::docs::TenantChangeErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn suspend(
    State(state): State<ServerState>,
    actor: Actor,
    Path(reference): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: SuspendBody = if body.is_empty() || body.as_ref() == b"null" {
        SuspendBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return bad_body(e),
        }
    };
    if let Err(r) = at_most(
        "reason",
        body.reason.as_deref().unwrap_or_default(),
        MAX_REASON_CHARS,
    ) {
        return r;
    }
    change(&state, &actor, &reference, Change::Suspend(body.reason)).await
}

#[utoipa::path(post,
    path = "/admin/tenants/{tenant}/activate",
    tag = "admin",
    summary = "Activate a tenant",
    params(crate::http::docs::TenantPath, crate::http::docs::ActorHeader),
    responses((status = 200, description = "The tenant", body = tenancy::TenantInfo),
        crate::http::docs::TenantChangeErrors,
        crate::http::docs::ProvisioningFailed),
    security(("admin_token" = [])))]
pub(in crate::http) async fn activate(
    State(state): State<ServerState>,
    actor: Actor,
    Path(reference): Path<String>,
) -> Response {
    change(&state, &actor, &reference, Change::Activate).await
}

#[utoipa::path(post,
    path = "/admin/tenants/{tenant}/deactivate",
    tag = "admin",
    summary = "Deactivate a tenant",
    params(crate::http::docs::TenantPath, crate::http::docs::ActorHeader),
    responses((status = 200, description = "The tenant", body = tenancy::TenantInfo),
        crate::http::docs::TenantChangeErrors,
        crate::http::docs::ProvisioningFailed),
    security(("admin_token" = [])))]
pub(in crate::http) async fn deactivate(
    State(state): State<ServerState>,
    actor: Actor,
    Path(reference): Path<String>,
) -> Response {
    change(&state, &actor, &reference, Change::Deactivate).await
}
