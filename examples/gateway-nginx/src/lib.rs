//! The upstream service of the gateway example: it has no tenancy code at
//! all. nginx asks `tenancy serve` (`GET /resolve`, through
//! `auth_request`) which tenant each request is for, refuses it with 401
//! or 403 when there is none, and otherwise forwards it here with the
//! `X-Tenant-Id`, `X-Tenant-Slug` and `X-Tenant-Plan` headers it got back,
//! replacing whatever the client sent under those names.
//!
//! So this service may trust those headers **only because nothing but
//! nginx can reach it** (it listens on loopback here; in production, a
//! private network or mutual TLS). It still refuses a request without
//! them, in case it is ever reached another way.
//!
//! The same holds for a service in any language: see `nginx.conf.template`
//! and `README.md` next to this file.

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// `GET /whoami`: the tenant nginx resolved.
async fn whoami(headers: HeaderMap) -> Response {
    let Some(id) = header(&headers, "x-tenant-id") else {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({"detail": "no tenant: this service is only reachable through the gateway"}),
            ),
        )
            .into_response();
    };
    axum::Json(json!({
        "tenant_id": id,
        "tenant_slug": header(&headers, "x-tenant-slug"),
        "tenant_plan": header(&headers, "x-tenant-plan"),
    }))
    .into_response()
}

/// The upstream's routes.
pub fn app() -> Router {
    Router::new().route("/whoami", get(whoami))
}
