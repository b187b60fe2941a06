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
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

/// Constant-time comparison, so the token can't be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_admin(State(state): State<ServerState>, req: Request, next: Next) -> Response {
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
        StoreError::DuplicateSlug(_) | StoreError::DuplicateId(_) => {
            problem(StatusCode::CONFLICT, "duplicate", err)
        }
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

fn bad_body(err: impl std::fmt::Display) -> Response {
    problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", err)
}

async fn find(state: &ServerState, reference: &str) -> Result<TenantInfo, Response> {
    match state.app.tenancy.store().find(reference).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(store_problem(StoreError::NotFound(
            reference.chars().take(64).collect(),
        ))),
        Err(e) => Err(store_problem(e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    slug: String,
    name: String,
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

async fn create(
    State(state): State<ServerState>,
    body: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e.body_text()),
    };
    let mut new = match NewTenant::new(&body.slug, body.name) {
        Ok(n) => n,
        Err(e) => return problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_slug", e),
    };
    if let Some(plan) = body.plan {
        new = new.plan(plan);
    }
    if let Some(metadata) = body.metadata {
        if !metadata.is_object() {
            return bad_body("metadata must be a JSON object");
        }
        new = new.metadata(metadata);
    }
    match state.app.tenancy.lifecycle().create(new).await {
        Ok(t) => (StatusCode::CREATED, Json(t)).into_response(),
        Err(e) => lifecycle_problem(e),
    }
}

#[derive(Deserialize)]
struct ListParams {
    #[serde(default)]
    all: Option<bool>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    offset: Option<u64>,
}

async fn list(
    State(state): State<ServerState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return bad_body(e.body_text()),
    };
    let query = if p.all.unwrap_or(true) {
        ListQuery::all()
    } else {
        ListQuery::active()
    };
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

async fn show(State(state): State<ServerState>, Path(reference): Path<String>) -> Response {
    match find(&state, &reference).await {
        Ok(t) => Json(t).into_response(),
        Err(r) => r,
    }
}

async fn update(
    State(state): State<ServerState>,
    Path(reference): Path<String>,
    body: Result<Json<TenantUpdate>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(update) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e.body_text()),
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
        Ok(t) => Json(t).into_response(),
        Err(e) => lifecycle_problem(e),
    }
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
async fn change(state: &ServerState, reference: &str, change: Change) -> Response {
    let tenant = match find(state, reference).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let lifecycle = state.app.tenancy.lifecycle();
    let result = match change {
        Change::Delete => lifecycle.delete(&tenant.id).await,
        Change::Suspend(reason) => lifecycle.suspend(&tenant.id, reason.as_deref()).await,
        Change::Activate => lifecycle.activate(&tenant.id).await,
        Change::Deactivate => lifecycle.deactivate(&tenant.id).await,
    };
    match result {
        Ok(t) => Json(t).into_response(),
        Err(e) => lifecycle_problem(e),
    }
}

async fn remove(State(state): State<ServerState>, Path(reference): Path<String>) -> Response {
    change(&state, &reference, Change::Delete).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SuspendBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn suspend(
    State(state): State<ServerState>,
    Path(reference): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: SuspendBody = if body.is_empty() {
        SuspendBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return bad_body(e),
        }
    };
    change(&state, &reference, Change::Suspend(body.reason)).await
}

async fn activate(State(state): State<ServerState>, Path(reference): Path<String>) -> Response {
    change(&state, &reference, Change::Activate).await
}

async fn deactivate(State(state): State<ServerState>, Path(reference): Path<String>) -> Response {
    change(&state, &reference, Change::Deactivate).await
}

async fn effective_config(
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

async fn get_config(
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

async fn put_config(
    State(state): State<ServerState>,
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
    match state
        .app
        .tenancy
        .overrides()
        .set(&tenant.id, &key, value.clone())
        .await
    {
        Ok(()) => Json(serde_json::json!({"key": key, "value": value})).into_response(),
        Err(e) => store_problem(e),
    }
}

/// `POST /admin/tenants/{id}/domains` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDomain {
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
        e @ E::NotVerified(_) => {
            problem(StatusCode::UNPROCESSABLE_ENTITY, "domain_not_verified", e)
        }
        e @ E::Dns(_) => problem(StatusCode::SERVICE_UNAVAILABLE, "dns_unavailable", e),
    }
}

async fn add_domain(
    State(state): State<ServerState>,
    Path(reference): Path<String>,
    body: Result<Json<AddDomain>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e),
    };
    match crate::domains::add(
        &state.app,
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

async fn list_domains(State(state): State<ServerState>, Path(reference): Path<String>) -> Response {
    match crate::domains::list(&state.app, &reference).await {
        Ok(all) => {
            let items: Vec<Value> = all.iter().map(crate::domains::domain_json).collect();
            Json(serde_json::json!({ "items": items })).into_response()
        }
        Err(e) => domain_problem(e),
    }
}

async fn verify_domain(State(state): State<ServerState>, Path(domain): Path<String>) -> Response {
    match crate::domains::verify(&state.app, &domain).await {
        Ok(d) => Json(crate::domains::domain_json(&d)).into_response(),
        Err(e) => domain_problem(e),
    }
}

async fn remove_domain(State(state): State<ServerState>, Path(domain): Path<String>) -> Response {
    match crate::domains::remove(&state.app, &domain).await {
        Ok(d) => Json(crate::domains::domain_json(&d)).into_response(),
        Err(e) => domain_problem(e),
    }
}
