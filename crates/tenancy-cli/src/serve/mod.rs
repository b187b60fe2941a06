//! `tenancy serve`: the admin API, the gateway resolve endpoint, the
//! tenant-aware CRUD resources and the health check, on one port.
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET /health` | none | store and isolation checks, worst status wins |
//! | `/admin/tenants…` | `Authorization: Bearer <admin token>` | tenants and their config |
//! | `GET /resolve` | the forwarded request's own | gateway: 200 + `X-Tenant-*` headers, or 401/403 |
//! | `/api/{resource}…`, `/tenants/{tenant}/api/{resource}…` | tenant (+ JWT if configured) | CRUD, scoped |

// Handlers answer errors as ready-made problem responses, as axum handlers do.
#![allow(clippy::result_large_err)]

mod admin;
mod crud;
pub(crate) use crud::MOVING_KEY;
mod console;
mod gateway;
mod impersonate;
mod metrics;
mod openapi;

pub(crate) use impersonate::ImpersonationResolver;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Args;
use serde_json::json;
use tenancy::{Problem, RequireTenantLayer};

use crate::app::{App, CliError, Global};

/// `tenancy serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: server.bind, 127.0.0.1:8080]; port 0 picks a free port.
    #[arg(long)]
    pub bind: Option<String>,
    /// Bearer token of the admin API [default: server.admin_token (TENANCY__SERVER__ADMIN_TOKEN), else generated and printed once]
    #[arg(long)]
    pub admin_token: Option<String>,
}

/// Shared state of the handlers.
#[derive(Clone)]
pub(crate) struct ServerState {
    pub app: App,
    pub admin_token: Arc<str>,
    /// Built once: parsing JWT keys per request would be wasteful.
    pub layer: tenancy::TenantLayer,
    /// The same without rate limits, for `/resolve`: nginx `auth_request`
    /// turns any status but 2xx/401/403 into a 500.
    pub gateway_layer: tenancy::TenantLayer,
    /// What the tenant layer counts, for `GET /metrics`.
    pub metrics: tenancy::metrics::RequestMetrics,
    /// The change listener (PostgreSQL), for its status in `GET /metrics`.
    pub listener: metrics::Listener,
    /// `GET /openapi.json`, rendered once.
    pub openapi: Arc<str>,
}

/// Runs the server until Ctrl-C / SIGTERM.
pub async fn run(global: &Global, args: ServeArgs) -> Result<(), CliError> {
    init_tracing();
    let app = App::open(global).await?;
    let admin_token: Arc<str> = match args.admin_token.or_else(|| {
        app.config
            .server
            .admin_token
            .as_ref()
            .map(|s| s.expose().to_owned())
    }) {
        Some(token) if token.len() >= 16 => Arc::from(token),
        Some(_) => {
            return Err(CliError::msg(
                "the admin token must be at least 16 characters (--admin-token or TENANCY__SERVER__ADMIN_TOKEN)",
            ));
        }
        None => {
            let token = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            println!("admin token (generated, shown once): {token}");
            Arc::from(token)
        }
    };
    let bind = args.bind.unwrap_or_else(|| app.config.server.bind.clone());
    let listener = tokio::net::TcpListener::bind(&bind).await.map_err(|e| {
        CliError::msg(format!(
            "cannot listen on {bind}: {e} (choose another --bind)"
        ))
    })?;
    let addr: SocketAddr = listener.local_addr().map_err(CliError::msg)?;
    let mut limiter =
        tenancy::RateLimits::new(&app.config.rate_limit).overrides(app.tenancy.overrides().clone());
    if let Some(url) = &app.config.integration.redis_url {
        let backend = tenancy::RedisBackend::connect(url).await.map_err(|e| {
            CliError::msg(format!(
                "integration.redis_url: {e} (start Redis or unset TENANCY__INTEGRATION__REDIS_URL)"
            ))
        })?;
        limiter = limiter.redis(backend);
    }
    // With Postgres, every process hears every change at once (SPEC V3).
    let changes = match &app.db {
        crate::app::Db::Postgres(_) => {
            let url = global.database_url.clone().unwrap_or_default();
            let options: sqlx::postgres::PgConnectOptions = url.parse().map_err(CliError::msg)?;
            let mut targets = tenancy_sql::ChangeTargets::new()
                .validator(app.tenancy.validator().clone())
                .config_cache(app.tenancy.config_store().clone());
            if let Some(domains) = app.tenancy.domains() {
                targets = targets.domains(domains.clone());
            }
            if let Some(crate::app::Migrator::PgDatabase(dbs)) = &app.migrator {
                // A move switches a tenant's server: drop its pool at once.
                targets = targets.database_pools(dbs.clone());
            }
            Some(Arc::new(tenancy_sql::PgChangeListener::spawn(
                options, targets,
            )))
        }
        _ => None,
    };
    let metrics = tenancy::metrics::RequestMetrics::new(app.config.server.metrics_tenants);
    let gateway_layer = app.tenancy.layer();
    let layer = app
        .tenancy
        .layer()
        .rate_limits(limiter)
        .metrics(metrics.clone());
    let state = ServerState {
        app,
        admin_token,
        layer,
        gateway_layer,
        metrics,
        listener: changes,
        openapi: Arc::from(openapi::document()),
    };
    // Pending tenants are provisioned in the background (SPEC N1).
    let _refill = state
        .app
        .tenancy
        .pending_pool()
        .map(tenancy::PendingPool::spawn_refill);
    let router = router(state);
    println!(
        "tenancy serve: listening on http://{addr} (database {}, isolation {})",
        crate::app::redact(
            &global
                .database_url
                .clone()
                .unwrap_or_else(|| crate::app::DEFAULT_DATABASE_URL.into())
        ),
        router.1
    );
    axum::serve(listener, router.0)
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(CliError::msg)
}

/// The whole HTTP surface.
pub(crate) fn router(state: ServerState) -> (Router, String) {
    let strategy = state.app.tenancy.isolation().name().to_owned();
    let tenant_routes = crud::routes().layer(RequireTenantLayer::new());
    // The tenant layer wraps the tenant routes only (with their full path,
    // so `path` resolution sees `/tenants/{tenant}/…`); admin, health and
    // TLS routes name tenants in their own way, and `/resolve` runs the
    // layer once, on the forwarded request.
    let tenant_api = Router::new()
        .nest("/api", tenant_routes.clone())
        .nest("/tenants/{tenant}/api", tenant_routes)
        .layer(state.layer.clone())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            impersonate::accept,
        ));
    let router = Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(console::routes())
        .route(
            "/metrics",
            get(metrics::metrics).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                admin::require_admin,
            )),
        )
        .nest("/admin", admin::routes(state.clone()))
        .route("/resolve", get(gateway::resolve))
        .route("/tls/ask", get(gateway::tls_ask))
        .merge(tenant_api);
    (router.fallback(not_found).with_state(state), strategy)
}

async fn not_found() -> Response {
    Problem::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
}

#[utoipa::path(get,
    path = "/health",
    tag = "meta",
    summary = "Store and isolation checks",
    responses((status = 200, description = "All checks ok", body = Object),
        (status = 503, description = "A check is down", body = Object)))]
pub(super) async fn health(State(state): State<ServerState>) -> Response {
    let store = state.app.tenancy.store().check().await;
    let isolation = state.app.tenancy.isolation().check().await;
    let check = |r: Result<(), String>| match r {
        Ok(()) => json!({"status": "ok"}),
        Err(e) => json!({"status": "down", "error": e}),
    };
    let ok = store.is_ok() && isolation.is_ok();
    let body = json!({
        "status": if ok { "ok" } else { "down" },
        "checks": {
            "store": check(store.map_err(|e| e.to_string())),
            "isolation": check(isolation.map_err(|e| e.to_string())),
        },
        "isolation_strategy": state.app.tenancy.isolation().name(),
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TENANCY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// A problem response from any error with a status and code.
pub(crate) fn problem(
    status: StatusCode,
    code: &'static str,
    detail: impl std::fmt::Display,
) -> Response {
    Problem::new(status, code, detail.to_string()).into_response()
}
