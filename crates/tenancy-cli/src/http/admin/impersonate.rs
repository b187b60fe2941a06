//! Impersonation: `POST /admin/tenants/{tenant}/impersonate`
//! issues a token that lets support act as one user of one active tenant,
//! once, for at most 300 s; the tenant routes accept it as
//! `Authorization: Bearer imp_…`.
//!
//! The token is 256 random bits; the store keeps only its SHA-256, and
//! marks it used in the statement that accepts it, so a replay, on this
//! instance or another, is 401. Issuing and using it are both in the audit
//! log, and the request runs in a span carrying `impersonated_by`.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tenancy::VerifiedClaims;
use tenancy::impersonation::{ImpersonationGrant, MAX_TTL_SECS};
use tracing::Instrument;

use super::{Actor, find, store_problem};
use crate::http::{ServerState, problem};

/// Tokens start with this, so they are told from JWTs at a glance.
const PREFIX: &str = "imp_";
use crate::app::impersonation::IMPERSONATED_BY;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct ImpersonateBody {
    /// The user acted as: 1–128 of letters, digits, `.`, `_`, `@`, `+`, `-`.
    #[schema(pattern = r"^[A-Za-z0-9._@+-]{1,128}$")]
    user: String,
    /// Lifetime in seconds (1–300, default 60).
    #[serde(default)]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 300)]
    ttl_s: Option<f64>,
}

fn key_of(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `POST /admin/tenants/{tenant}/impersonate {"user", "ttl_s"}`.
#[utoipa::path(post,
    path = "/admin/tenants/{tenant}/impersonate",
    tag = "admin",
    summary = "A single-use token to act as one user of an active tenant",
    request_body = ImpersonateBody,
    params(crate::http::docs::TenantPath, crate::http::docs::ActorHeader),
    responses((status = 201, description = "{token, tenant_id, user, expires_at, ttl_s}", body = Object),
        crate::http::docs::TenantChangeErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn issue(
    State(state): State<ServerState>,
    actor: Actor,
    Path(reference): Path<String>,
    body: Result<Json<ImpersonateBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                e.body_text(),
            );
        }
    };
    let user = body.user.as_str();
    if !(1..=128).contains(&user.len())
        || !user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
    {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_user",
            "user must be 1–128 of letters, digits, `.`, `_`, `@`, `+` or `-`",
        );
    }
    // JSON's integers include `60.0`; a fraction is refused.
    let ttl = body.ttl_s.unwrap_or(60.0);
    let whole = ttl.fract() == 0.0 && (1.0..=MAX_TTL_SECS as f64).contains(&ttl);
    let ttl = ttl as u64;
    if !whole {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_ttl",
            format!("ttl_s must be between 1 and {MAX_TTL_SECS} seconds"),
        );
    }
    let Some(grants) = state.app.tenancy.impersonation() else {
        return problem(
            StatusCode::NOT_FOUND,
            "no_impersonation",
            "this store keeps no impersonation grants",
        );
    };
    let tenant = match find(&state, &reference).await {
        Ok(t) => t,
        Err(refused) => return refused,
    };
    if !tenant.is_active() {
        return problem(
            StatusCode::CONFLICT,
            "tenant_not_active",
            format!(
                "tenant {} is {}: only an active tenant can be impersonated",
                tenant.slug, tenant.status
            ),
        );
    }
    let token = format!(
        "{PREFIX}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let expires_at = Utc::now() + chrono::Duration::seconds(i64::try_from(ttl).unwrap_or(60));
    let grant = ImpersonationGrant {
        key: key_of(&token),
        tenant_id: tenant.id.clone(),
        user: user.to_owned(),
        issued_by: actor.0.clone(),
        expires_at,
    };
    if let Err(e) = grants.issue(grant).await {
        return store_problem(e);
    }
    state
        .app
        .audit(
            tenancy::audit::NewAuditEntry::new(actor.0.clone(), "tenant.impersonate")
                .tenant(tenant.id.clone())
                .change(
                    None,
                    Some(json!({ "user": user, "expires_at": expires_at })),
                ),
        )
        .await;
    (
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "tenant_id": tenant.id,
            "user": user,
            "expires_at": expires_at,
            "ttl_s": ttl,
        })),
    )
        .into_response()
}

/// In front of the tenant routes: turns a valid impersonation token into
/// verified claims for the tenant layer; refuses an unknown, expired or
/// used one with 401. Other requests pass untouched.
pub(in crate::http) async fn accept(
    State(state): State<ServerState>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = super::bearer(req.headers())
        .filter(|token| token.starts_with(PREFIX))
        .map(str::to_owned);
    let Some(token) = token else {
        return next.run(req).await;
    };
    let refused = || {
        problem(
            StatusCode::UNAUTHORIZED,
            "invalid_impersonation_token",
            "the impersonation token is unknown, expired or already used: ask for a new one",
        )
    };
    let Some(grants) = state.app.tenancy.impersonation() else {
        return refused();
    };
    let grant = match grants.redeem(&key_of(&token)).await {
        Ok(Some(grant)) => grant,
        Ok(None) => return refused(),
        Err(e) => return store_problem(e),
    };
    let resolution = &state.app.config.resolution;
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), Value::String(grant.user.clone()));
    claims.insert(
        resolution.jwt_claim.clone(),
        Value::String(grant.tenant_id.to_string()),
    );
    claims.insert(
        resolution.membership_claim.clone(),
        json!([grant.tenant_id]),
    );
    claims.insert(
        IMPERSONATED_BY.into(),
        Value::String(grant.issued_by.clone()),
    );
    req.headers_mut().remove(header::AUTHORIZATION);
    req.extensions_mut().insert(VerifiedClaims::new(claims));
    state
        .app
        .audit(
            tenancy::audit::NewAuditEntry::new(
                format!("impersonation:{}", grant.user),
                "impersonation.use",
            )
            .tenant(grant.tenant_id.clone())
            .change(
                None,
                Some(json!({
                    "impersonated_by": grant.issued_by,
                    "method": req.method().as_str(),
                    "path": req.uri().path(),
                })),
            ),
        )
        .await;
    let span = tracing::info_span!(
        "impersonation",
        impersonated_by = %grant.issued_by,
        user = %grant.user,
        tenant_id = %grant.tenant_id
    );
    next.run(req).instrument(span).await
}
