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
mod connections;
mod console;
mod crud;
mod docs;
mod gateway;
mod metrics;
mod openapi;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tenancy::{Problem, RequireTenantLayer};

use crate::app::{App, AppError, Source};

/// How `tenancy serve` listens.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Address to listen on [default: `server.bind`]; port 0 picks a free port.
    pub bind: Option<String>,
    /// Bearer token of the admin API [default: `server.admin_token`, else
    /// generated and printed once].
    pub admin_token: Option<String>,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The app could not be opened.
    #[error(transparent)]
    App(#[from] AppError),
    /// The admin token is too short.
    #[error(
        "the admin token must be at least 16 characters (--admin-token or TENANCY__SERVER__ADMIN_TOKEN)"
    )]
    ShortAdminToken,
    /// The address cannot be listened on.
    #[error("cannot listen on {bind}: {source} (choose another --bind)")]
    Listen {
        /// The address.
        bind: String,
        /// Why.
        source: std::io::Error,
    },
    /// An integration (Redis, the change listener) could not be set up;
    /// the message says what to fix.
    #[error("{0}")]
    Setup(String),
    /// Accepting connections failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// `server.refuse_unsafe_start` is on and the doctor found critical
    /// isolation defects (each was printed).
    #[error(
        "{0} critical isolation finding(s) and server.refuse_unsafe_start is on: fix them (see `tenancy doctor`) or turn it off"
    )]
    Unsafe(usize),
}

/// Shared state of the handlers: one pointer, since axum clones the state
/// for every handler and middleware of every request.
#[derive(Clone)]
pub(crate) struct ServerState(Arc<Shared>);

impl std::ops::Deref for ServerState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`ServerState`] points to.
pub(crate) struct Shared {
    pub app: App,
    pub admin_token: Arc<str>,
    /// Built once: parsing JWT keys per request would be wasteful. The
    /// tenant routes and `/resolve` share it (and so its rate limits).
    pub layer: tenancy::TenantLayer,
    /// What the tenant layer counts, for `GET /metrics`.
    pub metrics: tenancy::metrics::RequestMetrics,
    /// The change listener (PostgreSQL), for its status in `GET /metrics`.
    pub listener: metrics::Listener,
    /// `GET /openapi.json`, rendered once.
    pub openapi: Arc<str>,
    /// Tenants whose storage was found missing, for `GET /health`.
    pub missing_storage: MissingStorage,
    /// How many refused admin requests the audit log still takes.
    pub refusals: admin::RefusalBudget,
    /// This server's job workers (`jobs.workers` above 0), to wake them.
    pub jobs: Option<tenancy_sql::jobs::Worker>,
    /// This server's usage flusher (`usage.enabled`), to flush before a
    /// report.
    pub usage_flusher: Option<tenancy_sql::usage::UsageFlusher>,
}

impl ServerState {
    /// Wakes this server's idle job workers (a job was just enqueued).
    pub(crate) fn wake_workers(&self) {
        if let Some(worker) = &self.jobs {
            worker.wake();
        }
    }
}

/// Tenants whose schema, database or file a request found missing lately
/// (bounded; an entry is dropped when it is not seen again for 5 minutes).
#[derive(Default)]
pub(crate) struct MissingStorage(
    std::sync::Mutex<std::collections::HashMap<tenancy::TenantId, std::time::Instant>>,
);

impl MissingStorage {
    const KEEP: std::time::Duration = std::time::Duration::from_secs(300);
    const CAPACITY: usize = 1_000;

    fn record(&self, tenant: &tenancy::TenantId) {
        let mut seen = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= Self::CAPACITY && !seen.contains_key(tenant) {
            seen.retain(|_, at| at.elapsed() < Self::KEEP);
            if seen.len() >= Self::CAPACITY {
                return;
            }
        }
        seen.insert(tenant.clone(), std::time::Instant::now());
    }

    fn recent(&self) -> Vec<tenancy::TenantId> {
        let mut seen = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.retain(|_, at| at.elapsed() < Self::KEEP);
        let mut ids: Vec<_> = seen.keys().cloned().collect();
        ids.sort();
        ids
    }
}

/// Notes each tenant whose storage a tenant route found missing.
async fn note_missing_storage(
    State(state): State<ServerState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let tenant = req
        .extensions()
        .get::<tenancy::TenantState>()
        .and_then(|s| match s {
            tenancy::TenantState::Resolved(t) => Some(t.id.clone()),
            tenancy::TenantState::Refused(_) => None,
        });
    let response = next.run(req).await;
    if let (Some(tenant), Some(crud::StorageMissing)) =
        (tenant, response.extensions().get::<crud::StorageMissing>())
    {
        state.missing_storage.record(&tenant);
    }
    response
}

/// Runs the server until Ctrl-C / SIGTERM.
pub async fn run(source: &Source, options: ServeOptions) -> Result<(), ServeError> {
    init_tracing();
    let app = App::open(source).await?;
    start_checks(&app, source).await?;
    let admin_token: Arc<str> = match options.admin_token.or_else(|| {
        app.config
            .server
            .admin_token
            .as_ref()
            .map(|s| s.expose().to_owned())
    }) {
        Some(token) => Arc::from(token),
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
    if admin_token.len() < 16 {
        return Err(ServeError::ShortAdminToken);
    }
    let bind = options
        .bind
        .unwrap_or_else(|| app.config.server.bind.clone());
    let listener = match tokio::net::TcpListener::bind(&bind).await {
        Ok(listener) => listener,
        Err(source) => return Err(ServeError::Listen { bind, source }),
    };
    let addr: SocketAddr = listener.local_addr()?;
    let server = Server::new(app, source, admin_token).await?;
    let (max_connections, descriptors) = connections::connection_cap(server.config.max_connections);
    println!(
        "tenancy serve: listening on http://{addr} (database {}, isolation {}; at most {max_connections} connections{})",
        crate::app::redact(source.url()),
        server.strategy,
        descriptors
            .map(|n| format!(", descriptor limit {n}"))
            .unwrap_or_default()
    );
    if let Some(warning) = server.auth.warning() {
        eprintln!("WARNING: {warning}");
    }
    connections::serve(
        listener,
        server.router.clone(),
        &server.config,
        max_connections,
        shutdown(),
    )
    .await?;
    server.stop().await;
    Ok(())
}

/// The doctor's checks at start (SPEC G3): each critical finding printed;
/// with `server.refuse_unsafe_start`, any of them stops the start. A check
/// that cannot run is reported and does not stop it (the doctor says why).
async fn start_checks(app: &App, source: &Source) -> Result<(), ServeError> {
    let report = match crate::ops::doctor::examine(app, source.url()).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("WARNING: the isolation checks could not run: {e}");
            return Ok(());
        }
    };
    let critical: Vec<_> = crate::ops::doctor::critical(&report).collect();
    for f in &critical {
        eprintln!(
            "CRITICAL {} {}: {} (fix: {})",
            f.check, f.object, f.detail, f.fix
        );
    }
    if !critical.is_empty() && app.config.server.refuse_unsafe_start {
        return Err(ServeError::Unsafe(critical.len()));
    }
    Ok(())
}

/// `tenancy serve` without its socket: every route over an opened app, and
/// what keeps its caches current (the change listeners, the pending pool's
/// refill), which stop when it is dropped. [`Server::service`] answers
/// requests in process, inside the same edges as on the socket.
pub struct Server {
    router: Router,
    config: tenancy::config::ServerConfig,
    strategy: String,
    auth: AuthMode,
    _sqlite_changes: Option<tenancy_sql::SqliteChangeListener>,
    _refill: Option<tenancy::pool::RefillTask>,
    _workers: Option<tenancy_sql::jobs::RunningWorkers>,
    flusher: Option<tenancy_sql::usage::RunningFlusher>,
    _sampler: Option<AbortOnDrop>,
}

/// A background task stopped with the server.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Server {
    /// Builds the routes over `app` (opened from `source`), the admin API
    /// behind `admin_token`.
    pub async fn new(app: App, source: &Source, admin_token: Arc<str>) -> Result<Self, ServeError> {
        let mut limiter = tenancy::RateLimits::new(&tenancy::rate_limit_config(&app.config))
            .overrides(app.tenancy.overrides().clone());
        if let Some(url) = &app.config.integration.redis_url {
            let backend = tenancy::RedisBackend::connect(url).await.map_err(|e| {
                ServeError::Setup(format!(
                    "integration.redis_url: {e} (start Redis or unset TENANCY__INTEGRATION__REDIS_URL)"
                ))
            })?;
            limiter = limiter.redis(backend);
        }
        // With Postgres, every process hears every change at once.
        let changes = match &app.db {
            crate::app::ScopedDb::Postgres(_) => {
                let options: sqlx::postgres::PgConnectOptions = source
                    .url()
                    .parse()
                    .map_err(|e| ServeError::Setup(format!("{e}")))?;
                let mut targets = tenancy_sql::ChangeTargets::new()
                    .validator(app.tenancy.validator().clone())
                    .config_cache(app.tenancy.config_store().clone())
                    .tenant_issuers(app.tenancy.tenant_issuers().clone());
                if let Some(domains) = app.tenancy.domains() {
                    targets = targets.domains(domains.clone());
                }
                if let Some(crate::app::TenantMigrator::PgDatabase(dbs)) = &app.migrator {
                    // A move switches a tenant's server: drop its pool at once.
                    targets = targets.database_pools(dbs.clone());
                }
                Some(Arc::new(tenancy_sql::PgChangeListener::spawn(
                    options, targets,
                )))
            }
            _ => None,
        };
        // With SQLite, every process (another `tenancy serve`, the CLI) is
        // heard through the store's change log within a second.
        let _sqlite_changes = match &app.main {
            crate::app::MainPool::Sqlite(pool) => {
                let mut targets = tenancy_sql::ChangeTargets::new()
                    .validator(app.tenancy.validator().clone())
                    .config_cache(app.tenancy.config_store().clone())
                    .tenant_issuers(app.tenancy.tenant_issuers().clone());
                if let Some(domains) = app.tenancy.domains() {
                    targets = targets.domains(domains.clone());
                }
                Some(tenancy_sql::SqliteChangeListener::spawn(
                    pool.clone(),
                    targets,
                ))
            }
            crate::app::MainPool::Postgres(_) => None,
        };
        // Tenants' own identity providers, read now (the layer would load
        // them before its first decision, and refuses while it cannot).
        if let Err(e) = app.tenancy.tenant_issuers().load().await {
            tracing::warn!(error = %e, "cannot read the tenants' identity providers (auth.issuer) yet");
        }
        let metrics = tenancy::metrics::RequestMetrics::new(app.config.server.metrics_tenants);
        let layer = app
            .tenancy
            .layer()
            .rate_limits(limiter)
            .metrics(metrics.clone());
        let app_resources = app.resources.clone();
        // Each tenant's plan limit of running jobs, where claims read it.
        if let Err(e) = crate::ops::plans::sync_job_limits(&app).await {
            tracing::warn!(error = %e, "cannot write the tenants' jobs_concurrency to the queue");
        }
        // Background jobs: the toolkit's own (exports, trial ends), run here.
        let jobs =
            (app.config.jobs.workers > 0).then(|| crate::ops::jobs::worker(Arc::new(app.clone())));
        // Usage: counted in memory, added to the store every flush.
        let usage_flusher = app.config.usage.enabled.then(|| {
            tenancy_sql::usage::UsageFlusher::new(app.tenancy.usage().clone(), app.usage.clone())
        });
        let flusher = usage_flusher.clone().map(|flusher| {
            flusher.spawn(std::time::Duration::from_secs(app.config.usage.flush_secs))
        });
        // Tenants' storage, sampled (usage.storage_sample_secs): the first
        // time a few seconds after start, then at each interval.
        let every = app.config.usage.storage_sample_secs;
        let _sampler = (app.config.usage.enabled && every > 0).then(|| {
            let app = app.clone();
            AbortOnDrop(tokio::spawn(async move {
                let mut first = true;
                loop {
                    let wait = if first { every.min(5) } else { every };
                    first = false;
                    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                    let sampled = crate::ops::usage::sample_storage(&app).await;
                    tracing::debug!(sampled, "tenants' storage sampled");
                }
            }))
        });
        let _workers = jobs
            .clone()
            .map(|worker| worker.spawn(app.config.jobs.workers as usize));
        let state = ServerState(Arc::new(Shared {
            app,
            admin_token,
            layer,
            metrics,
            listener: changes,
            openapi: Arc::from(openapi::document(&app_resources)),
            missing_storage: MissingStorage::default(),
            refusals: admin::RefusalBudget::new(),
            jobs,
            usage_flusher,
        }));
        // Pending tenants are provisioned in the background.
        let _refill = state
            .app
            .tenancy
            .pending_pool()
            .map(tenancy::PendingPool::spawn_refill);
        let config = state.app.config.server.clone();
        let auth = auth_mode(&state.app.config);
        let (router, strategy) = router(state);
        Ok(Self {
            router,
            config,
            strategy,
            auth,
            _sqlite_changes,
            _refill,
            _workers,
            flusher,
            _sampler,
        })
    }

    /// Stops what runs beside the routes, flushing the usage counted since
    /// the last flush.
    pub async fn stop(mut self) {
        if let Some(flusher) = self.flusher.take() {
            flusher.stop().await;
        }
    }

    /// Every route inside the edges a request on the socket goes through
    /// (its id, its bounded body, its deadline): for `tower::ServiceExt::oneshot`.
    pub fn service(
        &self,
    ) -> impl tower::Service<
        axum::extract::Request,
        Response = Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static {
        connections::edges(self.router.clone(), &self.config)
    }
}

/// How the tenant routes are protected: reported at start, in
/// `GET /health` and on the console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthMode {
    /// No token verification configured: anyone naming a tenant reaches
    /// its data.
    Open,
    /// Tokens are verified when sent (and their memberships enforced), but
    /// a request without one still reaches the tenant it names
    /// (`auth.required: false`).
    Optional,
    /// Every tenant route needs a verified token (`auth.required`, the
    /// default once an issuer, secret or key is configured).
    Required,
}

impl AuthMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }

    /// What an operator must know at start.
    pub(crate) fn warning(self) -> Option<&'static str> {
        match self {
            Self::Open => Some(
                "no authentication is configured (auth.jwt_secret, auth.jwt_public_key_pem or auth.jwt_public_key_file): \
                 any caller naming a tenant (header, subdomain, path or domain) reaches its data through /api and /resolve",
            ),
            Self::Optional => Some(
                "auth.required is false: tokens are verified when sent, but a request without one still reaches \
                 the tenant it names; keep tenant routes behind a gateway that requires a token",
            ),
            Self::Required => None,
        }
    }
}

pub(crate) fn auth_mode(config: &tenancy::TenancyConfig) -> AuthMode {
    let auth = &config.auth;
    match (auth.requires_token(), auth.is_configured()) {
        (true, _) => AuthMode::Required,
        (false, true) => AuthMode::Optional,
        (false, false) => AuthMode::Open,
    }
}

/// The whole HTTP surface.
pub(crate) fn router(state: ServerState) -> (Router, String) {
    let strategy = state.app.tenancy.isolation().name().to_owned();
    // The tenant layers, innermost first, on each method of each tenant
    // route: a method a route does not serve is 405 before any tenant is
    // resolved or required. The tenant layer sees the full path, so `path`
    // resolution finds `/tenants/{tenant}/…`; admin, health and TLS routes
    // name tenants in their own way, and `/resolve` runs the layer once, on
    // the forwarded request.
    let tenant_api = crud::routes(|methods| {
        methods
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                note_missing_storage,
            ))
            .route_layer(RequireTenantLayer::new())
            .route_layer(state.app.tenancy.request_quota())
            .route_layer(state.layer.clone())
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                admin::impersonate::accept,
            ))
    });
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
        .route("/resolve", get(gateway::resolve))
        .route("/tls/ask", get(gateway::tls_ask))
        .merge(tenant_api)
        .nest("/admin", admin::routes(state.clone()));
    let router = router.fallback(not_found).with_state(state);
    (router, strategy)
}

async fn not_found() -> Response {
    Problem::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
}

#[utoipa::path(get,
    path = "/health",
    tag = "meta",
    summary = "Store and isolation checks",
    responses((status = 200, description = "All checks ok, or `degraded` (some tenants' storage is missing); `auth` is `open` when no authentication is configured (any caller naming a tenant reaches its data) or `optional`", body = Object),
        (status = 503, description = "A check is down", body = Object)))]
pub(super) async fn health(State(state): State<ServerState>) -> Response {
    let store = state.app.tenancy.store().check().await;
    let isolation = state.app.tenancy.isolation().check().await;
    let check = |r: Result<(), String>| match r {
        Ok(()) => json!({"status": "ok"}),
        Err(e) => json!({"status": "down", "error": e}),
    };
    let ok = store.is_ok() && isolation.is_ok();
    let missing = state.missing_storage.recent();
    let status = match (ok, missing.is_empty()) {
        (false, _) => "down",
        (true, false) => "degraded",
        (true, true) => "ok",
    };
    let auth = auth_mode(&state.app.config);
    let mut body = json!({
        "status": status,
        "checks": {
            "store": check(store.map_err(|e| e.to_string())),
            "isolation": check(isolation.map_err(|e| e.to_string())),
            "tenant_storage": if missing.is_empty() {
                json!({"status": "ok"})
            } else {
                json!({
                    "status": "degraded",
                    "error": "requests found these tenants' storage missing (tenant_storage_missing) in the last 5 minutes",
                    "missing": missing.iter().take(100).collect::<Vec<_>>(),
                    "count": missing.len(),
                })
            },
        },
        "isolation_strategy": state.app.tenancy.isolation().name(),
        "auth": auth.as_str(),
    });
    if let Some(warning) = auth.warning() {
        body["auth_warning"] = json!(warning);
    }
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
