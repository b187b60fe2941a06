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

mod audit_log;
mod config;
mod domains;
pub(super) mod impersonate;
mod jobs;
mod tenants;
mod usage;

pub(super) use audit_log::*;
pub(super) use config::*;
pub(super) use domains::*;
pub(super) use jobs::*;
pub(super) use tenants::*;
pub(super) use usage::*;

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
        .route("/tenants/{tenant}/impersonate", post(impersonate::issue))
        .route("/tenants/{tenant}/export", post(export_tenant))
        .route("/tenants/{tenant}/usage", get(tenant_usage))
        .route("/jobs", get(list_jobs))
        .route("/jobs/{id}", get(show_job))
        .route("/jobs/{id}/retry", post(retry_job))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/jobs/{id}/result", get(job_result))
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
            "request_id": super::connections::current_request_id().as_ref(),
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

/// The token of an `Authorization: Bearer <token>` header (the scheme in
/// any case), trimmed.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

/// 422 unless `limit`, when given, is a page size from 1 to [`MAX_PAGE`].
fn check_limit(limit: Option<u64>) -> Result<(), Response> {
    match limit {
        Some(n) if !(1..=MAX_PAGE).contains(&n) => {
            Err(bad_query(format!("`limit` must be from 1 to {MAX_PAGE}")))
        }
        _ => Ok(()),
    }
}

pub(super) async fn require_admin(
    State(state): State<ServerState>,
    req: Request,
    next: Next,
) -> Response {
    match bearer(req.headers()) {
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
        StoreError::InvalidSlug(_)
        | StoreError::InvalidConfigKey(_)
        | StoreError::InvalidConfigValue { .. } => {
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
