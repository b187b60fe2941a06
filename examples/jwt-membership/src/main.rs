//! Signed-in users and their tenants: a user's token lists the tenants
//! they belong to (`tenants` claim) and may name the one they work in
//! (`tenant_id` claim); the `X-Tenant-Id` header switches between their
//! tenants, never to another one.
//!
//! - `auth.jwt_secret` makes the tenant layer verify every
//!   `Authorization: Bearer` token (HS256). A forged, expired or
//!   malformed token is 401 `invalid_token`: never ignored.
//! - Resolvers `jwt_claim` and `header`, both asked: the claim is the
//!   token's default tenant, the header picks another among the token's
//!   `tenants`. Every tenant named must be one of them, or the answer is
//!   403 `not_a_member`.
//! - Memberships are only checked when there is a token, and the `header`
//!   resolver alone would serve anyone who names a tenant. So the tenant
//!   routes here also require a token (`require_sign_in`, 401
//!   `sign_in_required`).
//! - `POST /dev/token` is a DEMO STAND-IN for your sign-in service, to try
//!   the example out: it signs whatever it is asked to. A real application
//!   issues tokens in its identity provider and never exposes such a route.
//!
//! ```text
//! JWT_SECRET=change-me-to-32-bytes-of-secret! cargo run -p example-jwt-membership
//! TOKEN=$(curl -s localhost:3000/dev/token -H 'content-type: application/json' \
//!     -d '{"sub":"ann","tenants":["acme","globex"]}' | jq -r .token)
//! curl localhost:3000/whoami -H "Authorization: Bearer $TOKEN" -H 'X-Tenant-Id: globex'   # {"tenant":"globex",…}
//! curl localhost:3000/whoami -H "Authorization: Bearer $TOKEN" -H 'X-Tenant-Id: initech'  # 403 not_a_member
//! curl localhost:3000/whoami -H "Authorization: Bearer x$TOKEN" -H 'X-Tenant-Id: acme'    # 401 invalid_token
//! curl localhost:3000/whoami -H 'X-Tenant-Id: acme'                                       # 401 sign_in_required
//! ```
//!
//! `JWT_SECRET` (at least 16 bytes; a demo default otherwise), `BIND`
//! (default `127.0.0.1:3000`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde::Deserialize;
use serde_json::{Value, json};
use tenancy::config::Secret;
use tenancy::{MemoryStore, NewTenant, Problem, Tenancy, TenancyConfig, Tenant};

const DEMO_SECRET: &str = "change-me-to-32-bytes-of-secret!";

async fn whoami(tenant: Tenant) -> Json<Value> {
    Json(json!({ "tenant": tenant.slug, "name": tenant.name }))
}

/// Tenant routes are for signed-in users only. The tenant layer verifies
/// any bearer token (a bad one is refused as `invalid_token`), so what is
/// left to refuse here is a request with no token at all.
async fn require_sign_in(req: Request, next: Next) -> Response {
    if req.headers().contains_key(header::AUTHORIZATION) {
        return next.run(req).await;
    }
    let mut res = Problem::new(
        StatusCode::UNAUTHORIZED,
        "sign_in_required",
        "sign in first: send `Authorization: Bearer <token>`",
    )
    .into_response();
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}

#[derive(Deserialize)]
struct TokenRequest {
    sub: String,
    tenants: Vec<String>,
    #[serde(default)]
    tenant_id: Option<String>,
}

/// DEMO STAND-IN for the application's sign-in service: signs a one-hour
/// token for whoever asks. Never expose such a route in a real service.
async fn dev_token(State(key): State<EncodingKey>, Json(req): Json<TokenRequest>) -> Response {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(Duration::from_secs(3600))
        .as_secs();
    let mut claims = json!({ "sub": req.sub, "tenants": req.tenants, "exp": exp });
    if let Some(tenant) = req.tenant_id {
        claims["tenant_id"] = json!(tenant);
    }
    match encode(&Header::default(), &claims, &key) {
        Ok(token) => Json(json!({ "token": token })).into_response(),
        Err(e) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "token_failed",
            e.to_string(),
        )
        .into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("JWT_SECRET").unwrap_or_else(|_| {
        eprintln!("JWT_SECRET is not set: using the demo secret {DEMO_SECRET:?}");
        DEMO_SECRET.into()
    });
    let mut config = TenancyConfig::default();
    config.resolution.resolvers = vec!["jwt_claim".into(), "header".into()];
    config.auth.jwt_secret = Some(Secret::new(secret.clone()));
    let tenancy = Tenancy::builder()
        .config(config)
        .store(MemoryStore::new())
        .build()?;
    for (slug, name) in [
        ("acme", "Acme"),
        ("globex", "Globex"),
        ("initech", "Initech"),
    ] {
        tenancy
            .lifecycle()
            .create(NewTenant::new(slug, name)?)
            .await?;
    }

    let tenant_routes = Router::new()
        .route("/whoami", get(whoami))
        .layer(tenancy.layer())
        .layer(middleware::from_fn(require_sign_in)); // runs first
    let app = Router::new()
        .merge(tenant_routes)
        .route("/dev/token", post(dev_token))
        .with_state(EncodingKey::from_secret(secret.as_bytes()));

    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
