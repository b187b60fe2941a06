//! The admin API: tenants and their config, behind the admin bearer token.

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use tenancy::{LifecycleError, ListQuery, NewTenant, StoreError, TenantInfo, TenantUpdate};

use super::{ServerState, problem};

pub(super) fn routes(state: ServerState) -> Router<ServerState> {
    Router::new()
        .route("/tenants", post(create).get(list))
        .route("/tenants/{tenant}", get(show).patch(update).delete(remove))
        .route("/tenants/{tenant}/suspend", post(suspend))
        .route("/tenants/{tenant}/activate", post(activate))
        .route("/tenants/{tenant}/deactivate", post(deactivate))
        .route("/tenants/{tenant}/config", get(effective_config))
        .route(
            "/tenants/{tenant}/config/{key}",
            get(get_config).put(put_config),
        )
        .route(
            "/tenants/{tenant}/domains",
            post(add_domain).get(list_domains),
        )
        .route("/domains/{domain}/verify", post(verify_domain))
        .route("/domains/{domain}", axum::routing::delete(remove_domain))
        .route("/audit", get(audit_log))
        .route(
            "/tenants/{tenant}/impersonate",
            post(super::impersonate::issue),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin))
        .layer(middleware::from_fn_with_state(state, audit_refusals))
}

/// Longest tenant name (characters).
pub(super) const MAX_NAME_CHARS: usize = 200;
/// Longest plan name (characters).
pub(super) const MAX_PLAN_CHARS: usize = 64;
/// Longest suspension reason (characters).
pub(super) const MAX_REASON_CHARS: usize = 500;
/// Largest tenant metadata object (bytes of JSON).
pub(super) const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Largest config value (bytes of JSON).
pub(super) const MAX_CONFIG_VALUE_BYTES: usize = 64 * 1024;
/// Most config overrides one tenant may hold.
pub(super) const MAX_CONFIG_KEYS: usize = 200;
/// Largest page of `GET /admin/tenants` and `GET /admin/audit`.
pub(super) const MAX_PAGE: u64 = 1000;
/// Furthest page start of `GET /admin/tenants`.
pub(super) const MAX_OFFSET: u64 = 1_000_000_000;

/// Refused admin requests recorded per second at most (burst
/// [`RefusalBudget::BURST`]): a flood of bad tokens cannot fill the store.
pub(crate) struct RefusalBudget {
    state: std::sync::Mutex<(f64, std::time::Instant)>,
    dropped: std::sync::atomic::AtomicU64,
}

impl RefusalBudget {
    const PER_SECOND: f64 = 5.0;
    const BURST: f64 = 50.0;

    pub(crate) fn new() -> Self {
        Self {
            state: std::sync::Mutex::new((Self::BURST, std::time::Instant::now())),
            dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Takes one entry's worth; `Err(n)` when over budget, with the number
    /// dropped so far.
    fn take(&self) -> Result<u64, u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, at) = &mut *state;
        let now = std::time::Instant::now();
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * Self::PER_SECOND).min(Self::BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(self.dropped.swap(0, std::sync::atomic::Ordering::Relaxed))
        } else {
            Err(self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1)
        }
    }
}

/// Records every refused admin request (401, 403, 404, 409, 413, 422) in
/// the audit log as `admin.refused`, with its reason, within the
/// [`RefusalBudget`].
async fn audit_refusals(State(state): State<ServerState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // These routes are nested under `/admin`, which the nested router
    // does not see.
    let path: String = format!("/admin{}", req.uri().path())
        .chars()
        .take(256)
        .collect();
    let claimed = req
        .headers()
        .get("x-actor")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(64).collect::<String>());
    let response = next.run(req).await;
    let status = response.status();
    if !matches!(status.as_u16(), 401 | 403 | 404 | 409 | 413 | 422) {
        return response;
    }
    let dropped_before = match state.refusals.take() {
        Ok(n) => n,
        Err(dropped) => {
            if dropped == 1 || dropped % 1000 == 0 {
                tracing::warn!(
                    dropped,
                    "refused admin requests beyond the audit budget are not recorded"
                );
            }
            return response;
        }
    };
    let (parts, body) = response.into_parts();
    let bytes =
        match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, 64 * 1024)).await
        {
            Ok(c) => c.to_bytes(),
            Err(_) => axum::body::Bytes::new(),
        };
    let problem: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    // The tenant named in the path, when it exists.
    let tenant = match path
        .strip_prefix("/admin/tenants/")
        .and_then(|rest| rest.split('/').next())
    {
        Some(reference) if !reference.is_empty() => state
            .app
            .tenancy
            .store()
            .find(reference)
            .await
            .ok()
            .flatten(),
        _ => None,
    };
    let actor = if status == StatusCode::UNAUTHORIZED {
        "unauthenticated".to_owned()
    } else {
        match &claimed {
            Some(name) if valid_actor(name) => format!("admin:{name}"),
            _ => "admin".to_owned(),
        }
    };
    let mut entry = tenancy::audit::NewAuditEntry::new(actor, "admin.refused").change(
        None,
        Some(serde_json::json!({
            "method": method.as_str(),
            "path": path,
            "status": status.as_u16(),
            "code": problem.get("code"),
            "reason": problem.get("detail"),
            "claimed_actor": claimed,
            "request_id": super::http::current_request_id().as_ref(),
            "unrecorded_before": dropped_before,
        })),
    );
    if let Some(t) = tenant {
        entry = entry.tenant(t.id);
    }
    state.app.audit(entry).await;
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// 422 when `value` is longer than `max` characters.
fn at_most(field: &str, value: &str, max: usize) -> Result<(), Response> {
    if value.chars().count() > max {
        return Err(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            format!("`{field}` is longer than {max} characters"),
        ));
    }
    Ok(())
}

/// 413 when the metadata's JSON is larger than [`MAX_METADATA_BYTES`], 422
/// when it is not an object.
fn check_metadata(metadata: &Value) -> Result<(), Response> {
    if !metadata.is_object() {
        return Err(bad_body("metadata must be a JSON object"));
    }
    let size = metadata.to_string().len();
    if size > MAX_METADATA_BYTES {
        return Err(problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!("metadata is {size} bytes of JSON, more than the {MAX_METADATA_BYTES} allowed"),
        ));
    }
    Ok(())
}

/// Constant-time comparison, so the token can't be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) async fn require_admin(
    State(state): State<ServerState>,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        Some(token) if same(token.as_bytes(), state.admin_token.as_bytes()) => next.run(req).await,
        _ => {
            let mut res = problem(
                StatusCode::UNAUTHORIZED,
                "admin_token_required",
                "the admin API needs `Authorization: Bearer <admin token>`",
            );
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            res
        }
    }
}

/// An `X-Actor` name: 1–64 of letters, digits, `.`, `_`, `@`, `-`.
fn valid_actor(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}

/// Who is acting, for the audit log: `admin`, or `admin:<name>` when the
/// request names itself with `X-Actor` (recorded as said: access rests on
/// the admin token alone).
pub(super) struct Actor(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Actor {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("x-actor") else {
            return Ok(Self("admin".to_owned()));
        };
        match value.to_str() {
            Ok(name) if valid_actor(name) => Ok(Self(format!("admin:{name}"))),
            _ => Err(problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_actor",
                "X-Actor must be 1–64 characters of letters, digits, `.`, `_`, `@` or `-`",
            )),
        }
    }
}

/// Records an admin action.
async fn audit(
    state: &ServerState,
    actor: &Actor,
    action: &str,
    tenant: &TenantInfo,
    before: Option<Value>,
    after: Option<Value>,
) {
    state
        .app
        .audit(
            tenancy::audit::NewAuditEntry::new(actor.0.clone(), action)
                .tenant(tenant.id.clone())
                .change(before, after),
        )
        .await;
}

/// Maps lifecycle and store errors to problem responses.
pub(super) fn lifecycle_problem(err: LifecycleError) -> Response {
    match err {
        LifecycleError::Store(e) => store_problem(e),
        other => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "provisioning_failed",
            other,
        ),
    }
}

pub(super) fn store_problem(err: StoreError) -> Response {
    match &err {
        StoreError::NotFound(_) => problem(StatusCode::NOT_FOUND, "tenant_not_found", err),
        StoreError::DuplicateSlug(_)
        | StoreError::DuplicateId(_)
        | StoreError::NameTaken { .. } => problem(StatusCode::CONFLICT, "duplicate", err),
        StoreError::DomainTaken(_) => problem(StatusCode::CONFLICT, "domain_taken", err),
        StoreError::InvalidSlug(_) | StoreError::InvalidConfigKey(_) => {
            problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", err)
        }
        StoreError::InvalidTransition { .. } => {
            problem(StatusCode::CONFLICT, "invalid_transition", err)
        }
        _ => problem(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", err),
    }
}

fn bad_query(detail: String) -> Response {
    problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query", detail)
}

fn bad_body(err: impl std::fmt::Display) -> Response {
    problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", err)
}

pub(super) async fn find(state: &ServerState, reference: &str) -> Result<TenantInfo, Response> {
    match state.app.tenancy.store().find(reference).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(store_problem(StoreError::NotFound(
            reference.chars().take(64).collect(),
        ))),
        Err(e) => Err(store_problem(e)),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
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
}

/// `PATCH /admin/tenants/{tenant}`: the fields that may change. Any other
/// field (`status`, `id`, timestamps, unknown names) is refused.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(super) struct UpdateBody {
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
}

#[utoipa::path(post,
    path = "/admin/tenants",
    tag = "admin",
    summary = "Create a tenant (provisioned and active)",
    request_body = CreateBody,
    params(super::openapi::ActorHeader),
    responses((status = 201, description = "Created and active", body = tenancy::TenantInfo),
        (status = 401, description = "Missing or wrong admin token (the same whether the tenant exists or not)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Conflict: duplicate, invalid status transition, or tenant not active", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input (body, slug, key, X-Actor…)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 500, description = "Provisioning or deprovisioning failed; nothing half-done is kept", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")),
    security(("admin_token" = [])))]
pub(super) async fn create(
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
    match state.app.tenancy.lifecycle().create(new).await {
        Ok(t) => {
            audit(
                &state,
                &actor,
                "tenant.create",
                &t,
                None,
                crate::app::audit_value(&t),
            )
            .await;
            (StatusCode::CREATED, Json(t)).into_response()
        }
        Err(e) => lifecycle_problem(e),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
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
        (status = 401, description = "Missing or wrong admin token (the same whether the tenant exists or not)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input (body, slug, key, X-Actor…)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")),
    security(("admin_token" = [])))]
pub(super) async fn list(
    State(state): State<ServerState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return bad_body(e.body_text()),
    };
    if p.limit.is_some_and(|n| !(1..=MAX_PAGE).contains(&n)) {
        return bad_query(format!("`limit` must be from 1 to {MAX_PAGE}"));
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
    params(super::openapi::TenantPath),
    responses((status = 200, description = "The tenant", body = tenancy::TenantInfo),
        (status = 401, description = "Missing or wrong admin token (the same whether the tenant exists or not)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")),
    security(("admin_token" = [])))]
pub(super) async fn show(
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
    params(super::openapi::TenantPath, super::openapi::ActorHeader),
    responses((status = 200, description = "The tenant", body = tenancy::TenantInfo),
        (status = 401, description = "Missing or wrong admin token (the same whether the tenant exists or not)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Conflict: duplicate, invalid status transition, or tenant not active", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input (body, slug, key, X-Actor…)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")),
    security(("admin_token" = [])))]
pub(super) async fn update(
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
    match state
        .app
        .tenancy
        .lifecycle()
        .update(&tenant.id, update)
        .await
    {
        Ok(t) => {
            let (before, after) = (
                crate::app::audit_value(&tenant),
                crate::app::audit_value(&t),
            );
            audit(&state, &actor, "tenant.update", &t, before, after).await;
            Json(t).into_response()
        }
        Err(e) => lifecycle_problem(e),
    }
}

/// A PATCH body: only `slug`, `name`, `plan` and `metadata` may change; a
/// read-only or unknown field is refused, never ignored.
fn tenant_update(body: Value) -> Result<TenantUpdate, Response> {
    let Value::Object(fields) = &body else {
        return Err(bad_body("the body must be a JSON object"));
    };
    for key in fields.keys() {
        match key.as_str() {
            "slug" | "name" | "plan" | "metadata" => {}
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
                    "unknown field `{}`: a tenant's slug, name, plan and metadata can change",
                    other.chars().take(64).collect::<String>()
                )));
            }
        }
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

/// A status change or deletion requested through the admin API.
enum Change {
    Delete,
    Suspend(Option<String>),
    Activate,
    Deactivate,
}

/// Finds the tenant, applies `change` through the lifecycle (events, cache
/// invalidation, deprovisioning) and answers with the tenant.
async fn change(state: &ServerState, actor: &Actor, reference: &str, change: Change) -> Response {
    let tenant = match find(state, reference).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let lifecycle = state.app.tenancy.lifecycle();
    let action = match change {
        Change::Delete => "tenant.delete",
        Change::Suspend(_) => "tenant.suspend",
        Change::Activate => "tenant.activate",
        Change::Deactivate => "tenant.deactivate",
    };
    let deleting = matches!(change, Change::Delete);
    let result = match change {
        Change::Delete => lifecycle.delete(&tenant.id).await,
        Change::Suspend(reason) => lifecycle.suspend(&tenant.id, reason.as_deref()).await,
        Change::Activate => lifecycle.activate(&tenant.id).await,
        Change::Deactivate => lifecycle.deactivate(&tenant.id).await,
    };
    match result {
        Ok(t) => {
            let after = (!deleting).then(|| crate::app::audit_value(&t)).flatten();
            audit(
                state,
                actor,
                action,
                &t,
                crate::app::audit_value(&tenant),
                after,
            )
            .await;
            Json(t).into_response()
        }
        Err(e) => lifecycle_problem(e),
    }
}

#[utoipa::path(delete,
    path = "/admin/tenants/{tenant}",
    tag = "admin",
    summary = "Delete a tenant (deprovision policy applies)",
    params(super::openapi::TenantPath, super::openapi::ActorHeader),
    responses((status = 200, description = "The deleted tenant", body = tenancy::TenantInfo),
        (status = 401, description = "Missing or wrong admin token (the same whether the tenant exists or not)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Conflict: duplicate, invalid status transition, or tenant not active", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input (body, slug, key, X-Actor…)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 500, description = "Provisioning or deprovisioning failed; nothing half-done is kept", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")),
    security(("admin_token" = [])))]
pub(super) async fn remove(
    State(state): State<ServerState>,
    actor: Actor,
    Path(reference): Path<String>,
) -> Response {
    change(&state, &actor, &reference, Change::Delete).await
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SuspendBody {
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
    params(super::openapi::TenantPath, super::openapi::ActorHeader),
    responses((status = 200, description = "The tenant", body = tenancy::TenantInfo),
        (status = 401, description = "Missing or wrong admin token (the same whether the tenant exists or not)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Conflict: duplicate, invalid status transition, or tenant not active", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input (body, slug, key, X-Actor…)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")),
    security(("admin_token" = [])))]
pub(super) async fn suspend(
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
    params(super::openapi::TenantPath, super::openapi::ActorHeader),
    responses((status = 200, description = "The tenant", body = tenancy::TenantInfo),
        (status = 401, description = "Missing or wrong admin token (the same whether the tenant exists or not)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Conflict: duplicate, invalid status transition, or tenant not active", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input (body, slug, key, X-Actor…)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 500, description = "Provisioning or deprovisioning failed; nothing half-done is kept", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")),
    security(("admin_token" = [])))]
pub(super) async fn activate(
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
    params(super::openapi::TenantPath, super::openapi::ActorHeader),
    responses((status = 200, description = "The tenant", body = tenancy::TenantInfo),
        (status = 401, description = "Missing or wrong admin token (the same whether the tenant exists or not)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Conflict: duplicate, invalid status transition, or tenant not active", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input (body, slug, key, X-Actor…)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 500, description = "Provisioning or deprovisioning failed; nothing half-done is kept", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")),
    security(("admin_token" = [])))]
pub(super) async fn deactivate(
    State(state): State<ServerState>,
    actor: Actor,
    Path(reference): Path<String>,
) -> Response {
    change(&state, &actor, &reference, Change::Deactivate).await
}

#[utoipa::path(get,
    path = "/admin/tenants/{tenant}/config",
    tag = "admin",
    summary = "The tenant's effective config (defaults and overrides)",
    params(super::openapi::TenantPath),
    responses((status = 200, description = "Key → value", body = Object),
        (status = 401, description = "Missing or wrong admin token (the same whether the tenant exists or not)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")),
    security(("admin_token" = [])))]
pub(super) async fn effective_config(
    State(state): State<ServerState>,
    Path(reference): Path<String>,
) -> Response {
    let tenant = match find(&state, &reference).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match state.app.tenancy.overrides().effective(&tenant.id).await {
        Ok(map) => Json(map).into_response(),
        Err(e) => store_problem(e),
    }
}

#[utoipa::path(get,
    path = "/admin/tenants/{tenant}/config/{key}",
    tag = "admin",
    summary = "One config value",
    params(super::openapi::ConfigPath),
    responses((status = 200, description = "{key, value}", body = Object),
        (status = 401, description = "Missing or wrong admin token (the same whether the tenant exists or not)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input (body, slug, key, X-Actor…)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")),
    security(("admin_token" = [])))]
pub(super) async fn get_config(
    State(state): State<ServerState>,
    Path((reference, key)): Path<(String, String)>,
) -> Response {
    let tenant = match find(&state, &reference).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match state.app.tenancy.overrides().get(&tenant.id, &key).await {
        Ok(Some(v)) => Json(serde_json::json!({"key": key, "value": v})).into_response(),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "config_key_not_found",
            format!("no config key `{key}` for this tenant"),
        ),
        Err(e) => store_problem(e),
    }
}

#[utoipa::path(put,
    path = "/admin/tenants/{tenant}/config/{key}",
    tag = "admin",
    summary = "Set a config override (any JSON value)",
    request_body(content = Value, description = "Any JSON value (at most 64 KiB of JSON)"),
    params(super::openapi::ConfigPath, super::openapi::ActorHeader),
    responses((status = 200, description = "{key, value}", body = Object),
        (status = 401, description = "Missing or wrong admin token (the same whether the tenant exists or not)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input (body, slug, key, X-Actor…)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")),
    security(("admin_token" = [])))]
pub(super) async fn put_config(
    State(state): State<ServerState>,
    actor: Actor,
    Path((reference, key)): Path<(String, String)>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(value) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e.body_text()),
    };
    let tenant = match find(&state, &reference).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let size = value.to_string().len();
    if size > MAX_CONFIG_VALUE_BYTES {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!(
                "the value is {size} bytes of JSON, more than the {MAX_CONFIG_VALUE_BYTES} allowed"
            ),
        );
    }
    let existing = match state.app.tenancy.config_store().overrides(&tenant.id).await {
        Ok(map) => map,
        Err(e) => return store_problem(e),
    };
    if !existing.contains_key(&key) && existing.len() >= MAX_CONFIG_KEYS {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_keys",
            format!(
                "this tenant already has {MAX_CONFIG_KEYS} config overrides, the most allowed: delete one first"
            ),
        );
    }
    let before = existing.get(&key).cloned();
    match state
        .app
        .tenancy
        .overrides()
        .set(&tenant.id, &key, value.clone())
        .await
    {
        Ok(()) => {
            let after = serde_json::json!({"key": key, "value": value});
            let before = before.map(|v| serde_json::json!({"key": key, "value": v}));
            audit(
                &state,
                &actor,
                "config.set",
                &tenant,
                before,
                Some(after.clone()),
            )
            .await;
            Json(after).into_response()
        }
        Err(e) => store_problem(e),
    }
}

/// `POST /admin/tenants/{id}/domains` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddDomain {
    /// The domain (ASCII labels of letters, digits and `-`, at least two).
    #[schema(
        pattern = r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
    )]
    domain: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}

fn domain_problem(err: crate::domains::DomainError) -> Response {
    use crate::domains::DomainError as E;
    match err {
        E::Invalid(e) => problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_domain", e),
        E::Store(e) => store_problem(e),
        e @ E::Unknown(_) => problem(StatusCode::NOT_FOUND, "domain_not_found", e),
        e @ E::UnknownTenant(_) => problem(StatusCode::NOT_FOUND, "tenant_not_found", e),
        // The request is right; the DNS record is not there yet.
        e @ E::NotVerified(_) => problem(StatusCode::CONFLICT, "domain_not_verified", e),
        e @ E::Dns(_) => problem(StatusCode::SERVICE_UNAVAILABLE, "dns_unavailable", e),
    }
}

#[utoipa::path(post,
    path = "/admin/tenants/{tenant}/domains",
    tag = "admin",
    summary = "Add a domain to a tenant",
    request_body = AddDomain,
    params(super::openapi::TenantPath, super::openapi::ActorHeader),
    responses((status = 201, description = "The domain, with its TXT challenge", body = Object),
        (status = 401, description = "Missing or wrong admin token (the same whether the tenant exists or not)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Conflict: duplicate, invalid status transition, or tenant not active", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input (body, slug, key, X-Actor…)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")),
    security(("admin_token" = [])))]
pub(super) async fn add_domain(
    State(state): State<ServerState>,
    actor: Actor,
    Path(reference): Path<String>,
    body: Result<Json<AddDomain>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e),
    };
    match crate::domains::add(
        &state.app,
        &actor.0,
        &reference,
        &body.domain,
        body.primary,
        body.verified,
    )
    .await
    {
        Ok(d) => (StatusCode::CREATED, Json(crate::domains::domain_json(&d))).into_response(),
        Err(e) => domain_problem(e),
    }
}

#[utoipa::path(get,
    path = "/admin/tenants/{tenant}/domains",
    tag = "admin",
    summary = "A tenant's domains",
    params(super::openapi::TenantPath),
    responses((status = 200, description = "{items}", body = Object),
        (status = 401, description = "Missing or wrong admin token (the same whether the tenant exists or not)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")),
    security(("admin_token" = [])))]
pub(super) async fn list_domains(
    State(state): State<ServerState>,
    Path(reference): Path<String>,
) -> Response {
    match crate::domains::list(&state.app, &reference).await {
        Ok(all) => {
            let items: Vec<Value> = all.iter().map(crate::domains::domain_json).collect();
            Json(serde_json::json!({ "items": items })).into_response()
        }
        Err(e) => domain_problem(e),
    }
}

#[utoipa::path(post,
    path = "/admin/domains/{domain}/verify",
    tag = "admin",
    summary = "Verify a domain by its DNS TXT record",
    params(super::openapi::DomainPath, super::openapi::ActorHeader),
    responses((status = 200, description = "The verified domain", body = Object),
        (status = 401, description = "Missing or wrong admin token (the same whether the tenant exists or not)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such domain", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input (body, slug, key, X-Actor…)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")),
    security(("admin_token" = [])))]
pub(super) async fn verify_domain(
    State(state): State<ServerState>,
    actor: Actor,
    Path(domain): Path<String>,
) -> Response {
    match crate::domains::verify(&state.app, &actor.0, &domain).await {
        Ok(d) => Json(crate::domains::domain_json(&d)).into_response(),
        Err(e) => domain_problem(e),
    }
}

#[utoipa::path(delete,
    path = "/admin/domains/{domain}",
    tag = "admin",
    summary = "Remove a domain",
    params(super::openapi::DomainPath, super::openapi::ActorHeader),
    responses((status = 200, description = "The removed domain", body = Object),
        (status = 401, description = "Missing or wrong admin token (the same whether the tenant exists or not)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such domain", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input (body, slug, key, X-Actor…)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")),
    security(("admin_token" = [])))]
pub(super) async fn remove_domain(
    State(state): State<ServerState>,
    actor: Actor,
    Path(domain): Path<String>,
) -> Response {
    match crate::domains::remove(&state.app, &actor.0, &domain).await {
        Ok(d) => Json(crate::domains::domain_json(&d)).into_response(),
        Err(e) => domain_problem(e),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
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
    responses((status = 200, description = "Entries", body = super::openapi::AuditPageDoc),
        (status = 401, description = "Missing or wrong admin token (the same whether the tenant exists or not)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid input (body, slug, key, X-Actor…)", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")),
    security(("admin_token" = [])))]
pub(super) async fn audit_log(
    State(state): State<ServerState>,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return bad_body(e.body_text()),
    };
    let Some(log) = state.app.tenancy.audit() else {
        return problem(
            StatusCode::NOT_FOUND,
            "no_audit_log",
            "this store keeps no audit log",
        );
    };
    if p.limit
        .is_some_and(|n| !(1..=MAX_PAGE).contains(&u64::from(n)))
    {
        return bad_query(format!("`limit` must be from 1 to {MAX_PAGE}"));
    }
    let mut query = tenancy::audit::AuditQuery::default();
    if let Some(limit) = p.limit {
        query = query.limit(limit);
    }
    query.before = p.before;
    if let Some(reference) = &p.tenant {
        match state.app.tenancy.store().find(reference).await {
            Ok(Some(t)) => query = query.tenant(t.id),
            Ok(None) => match reference.parse() {
                Ok(id) => query = query.tenant(id),
                Err(_) => {
                    return store_problem(StoreError::NotFound(
                        reference.chars().take(64).collect(),
                    ));
                }
            },
            Err(e) => return store_problem(e),
        }
    }
    match log.audit(query).await {
        Ok(items) => {
            let next = items.last().map(|e| e.id);
            Json(serde_json::json!({ "items": items, "next_before": next })).into_response()
        }
        Err(e) => store_problem(e),
    }
}
