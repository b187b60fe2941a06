//! Multi-tenancy for axum services: find out which tenant each request
//! belongs to, check that the tenant may use the service, make it available
//! everywhere downstream, and keep every tenant's data apart.
//!
//! # Quick start
//!
//! ```
//! use axum::{Router, routing::get};
//! use tenancy::{MemoryStore, NewTenant, Tenancy, Tenant};
//!
//! async fn hello(tenant: Tenant) -> String {
//!     format!("hello, {}", tenant.name)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tenancy = Tenancy::builder()
//!     .config(tenancy::TenancyConfig::load()?) // tenancy.yaml + TENANCY__* (all optional)
//!     .store(MemoryStore::new())
//!     .build()?;
//! // Create tenants through the lifecycle: it provisions them and makes
//! // them active. (A store's own `create` leaves them `provisioning`.)
//! tenancy.lifecycle().create(NewTenant::new("acme", "Acme Corp")?).await?;
//!
//! let app: Router = Router::new()
//!     .route("/hello", get(hello))
//!     .layer(tenancy.layer());
//! // `curl -H 'X-Tenant-Id: acme' localhost:3000/hello` → "hello, Acme Corp"
//! # Ok(()) }
//! ```
//!
//! A request whose tenant cannot be served never reaches `hello`: the
//! [`Tenant`] extractor answers with an RFC 9457 problem.
//!
//! | Situation | Status | `code` |
//! |---|---|---|
//! | no tenant named (the detail says how to name one) | 401 | `tenant_required` |
//! | bearer token invalid or expired | 401 | `invalid_token` |
//! | malformed reference | 403 | `malformed_tenant` |
//! | unknown tenant | 403 | `unknown_tenant` |
//! | inactive / suspended / provisioning | 403 | `tenant_not_active` |
//! | not among the token's memberships | 403 | `not_a_member` |
//! | the request names different tenants (host, header, path) | 403 | `tenant_conflict` |
//! | a header naming the tenant (`Host`, `X-Tenant-Id`) is repeated | 400 | `ambiguous_request` |
//! | tenant store down | 503 | `tenant_store_unavailable` |
//! | over the tenant's rate limit | 429 | `rate_limited` |
//!
//! # Which resolvers to enable
//!
//! `resolution.resolvers` lists how requests may name their tenant; all are
//! asked (by priority, whatever the list order), and when they name
//! different tenants one rule decides (see [`resolve`] and the README's
//! table): without a token that is 403 `tenant_conflict`.
//! **Enable only what your clients use.** Each resolver is a way in: with
//! `header` on, any client can send `X-Tenant-Id: globex` to
//! `acme.app.example` and be served as globex (if globex is active). The
//! validator checks that the tenant may be served, not that the caller
//! belongs to it; only a token's memberships (below) or your own
//! authorization check that.
//!
//! | Your app | `resolution.resolvers` | Also set |
//! |---|---|---|
//! | one subdomain per tenant (`acme.app.example`) | `[subdomain]` (+ `domain` for custom domains) | `base_domain` |
//! | an API whose clients send a header | `[header]` | `header_name` if not `X-Tenant-Id` |
//! | users signed in with a token naming their tenant | `[jwt_claim]` | `auth.*`, `jwt_claim` |
//! | tenant in the URL (`/tenants/acme/…`) | `[path]` | `path_pattern` |
//!
//! The default enables all five (`jwt_claim`, `header`, `domain`,
//! `subdomain` when `base_domain` is set, `path`), which suits trying
//! things out, not production. The 401 detail names only the enabled ones.
//!
//! A subdomain app, configured in code:
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use tenancy::{MemoryStore, NewTenant, Tenancy, TenancyConfig, Tenant};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = TenancyConfig::default();
//! config.resolution.resolvers = vec!["subdomain".into()];
//! config.resolution.base_domain = Some("app.example".into());
//! let tenancy = Tenancy::builder().config(config).store(MemoryStore::new()).build()?;
//! tenancy.lifecycle().create(NewTenant::new("acme", "Acme")?).await?;
//! tenancy.lifecycle().create(NewTenant::new("globex", "Globex")?).await?;
//!
//! let app: Router = Router::new()
//!     .route("/", get(|t: Tenant| async move { t.name.clone() }))
//!     .layer(tenancy.layer());
//!
//! let get = |host: &str| Request::get("/").header("host", host).header("x-tenant-id", "globex").body(Body::empty());
//! let acme = app.clone().oneshot(get("acme.app.example")?).await?;
//! assert_eq!(acme.status(), StatusCode::OK); // the header is ignored: `header` is not enabled
//! assert_eq!(axum::body::to_bytes(acme.into_body(), 64).await?, "Acme");
//! let bare = app.clone().oneshot(get("app.example")?).await?;
//! assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
//! // The detail: "no tenant identified: send a subdomain of app.example"
//! # let body = axum::body::to_bytes(bare.into_body(), 1024).await?;
//! # assert!(String::from_utf8_lossy(&body).contains("no tenant identified: send a subdomain of app.example\""));
//! # Ok(()) }
//! ```
//!
//! **Path routing** only *reads* the tenant from the path: your routes
//! must include the segment, for example by nesting the tenant's routes
//! under the pattern (`path_pattern: /tenants/{tenant_id}/`):
//!
//! ```
//! # use axum::{Router, routing::get};
//! # use tenancy::Tenant;
//! # fn demo(tenancy: tenancy::Tenancy) {
//! let api = Router::new().route("/notes", get(|t: Tenant| async move { t.slug.to_string() }));
//! let app: Router = Router::new()
//!     .nest("/tenants/{tenant}", api) // GET /tenants/acme/notes
//!     .layer(tenancy.layer());
//! # }
//! ```
//!
//! Custom resolvers (a cookie, an API-key table) implement [`Resolver`] and
//! are added with [`TenancyBuilder::resolver`].
//!
//! # Plans, suspension, and everything else about a tenant
//!
//! [`LifecycleService`] (from [`Tenancy::lifecycle`]) changes tenants; it
//! takes a tenant's id or slug, publishes an event for each change and
//! makes every cached copy forget the tenant at once.
//!
//! ```
//! use tenancy::{MemoryStore, NewTenant, Tenancy, TenantStatus, TenantUpdate};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tenancy = Tenancy::builder().store(MemoryStore::new()).build()?;
//! let lifecycle = tenancy.lifecycle();
//! lifecycle.create(NewTenant::new("acme", "Acme")?.plan("free")).await?;
//!
//! lifecycle.update("acme", TenantUpdate::default().plan("pro")).await?;
//! let acme = lifecycle.suspend("acme", Some("unpaid invoice")).await?; // 403 from now on
//! assert_eq!(acme.status, TenantStatus::Suspended);
//! lifecycle.activate("acme").await?; // served again
//! # Ok(()) }
//! ```
//!
//! # Per-tenant settings in a handler
//!
//! The [`Setting`] extractor reads one typed value: the tenant's override,
//! else the default from `overrides.defaults`. See its page for an
//! example. Overrides are set with [`TenantConfigService::set`] (from
//! [`Tenancy::overrides`]), `tenancy config set`, or the admin API.
//!
//! # Rate limits
//!
//! [`TenancyBuilder::rate_limits`] makes [`Tenancy::layer`] limit every
//! tenant to `rate_limit.plans[plan]` requests per second, else
//! `rate_limit.default_rps`, unless the tenant's `rate_limit.rps` setting
//! says otherwise; [`TenancyBuilder::redis`](TenancyBuilder::redis) shares the buckets between
//! instances. The limits are part of the tenant layer: there is no second
//! layer to order.
//!
//! ```
//! use tenancy::{MemoryStore, Tenancy, TenancyConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = TenancyConfig::default();
//! config.rate_limit.default_rps = 50;
//! config.rate_limit.plans.insert("pro".into(), 1_000);
//! let tenancy = Tenancy::builder().config(config).store(MemoryStore::new()).rate_limits().build()?;
//! # Ok(()) }
//! ```
//!
//! # Signed-in users and their tenants (JWT membership)
//!
//! With `auth.jwt_secret` (HS256) or `auth.jwt_public_key_pem` (RS256) set,
//! the layer verifies `Authorization: Bearer` tokens. A token's
//! `tenant_id` claim names its default tenant (`jwt_claim` resolver); the
//! token's memberships are its `tenants` list (`tenants: ["acme", …]`), or,
//! without one, the claim's tenant alone. Every tenant the request names
//! (claim, domain, subdomain, path, header) must be a membership: 403
//! `not_a_member` otherwise, before anything is told about that tenant.
//! Among memberships, the header or path (the client's choice) picks.
//! An invalid token is 401, never ignored. Handlers read the verified
//! claims (the user's `sub`, …) with `Extension<VerifiedClaims>`.
//! Memberships are checked only when a request carries a token: an app
//! whose tenant routes are for signed-in users only should refuse requests
//! without one (see `examples/jwt-membership`).
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use jsonwebtoken::{EncodingKey, Header, encode};
//! use serde_json::json;
//! use tenancy::{MemoryStore, NewTenant, Tenancy, TenancyConfig, Tenant};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = TenancyConfig::default();
//! config.resolution.resolvers = vec!["jwt_claim".into(), "header".into()];
//! config.auth.jwt_secret = Some(tenancy::config::Secret::new("a-secret-of-at-least-32-bytes-long!"));
//! let tenancy = Tenancy::builder().config(config).store(MemoryStore::new()).build()?;
//! for slug in ["acme", "globex"] {
//!     tenancy.lifecycle().create(NewTenant::new(slug, slug)?).await?;
//! }
//! let app: Router = Router::new()
//!     .route("/", get(|t: Tenant| async move { t.slug.to_string() }))
//!     .layer(tenancy.layer());
//!
//! // A user of acme only (your sign-in service issues this).
//! let claims = json!({ "sub": "u1", "tenants": ["acme"], "exp": 4_102_444_800u64 });
//! let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(b"a-secret-of-at-least-32-bytes-long!"))?;
//! let ask = |tenant: &str| {
//!     Request::get("/").header("authorization", format!("Bearer {token}")).header("x-tenant-id", tenant).body(Body::empty())
//! };
//! assert_eq!(app.clone().oneshot(ask("acme")?).await?.status(), StatusCode::OK);
//! assert_eq!(app.clone().oneshot(ask("globex")?).await?.status(), StatusCode::FORBIDDEN); // not_a_member
//! # Ok(()) }
//! ```
//!
//! # The tenant's data
//!
//! One scoped-transaction API, [`TenantDb`], for every isolation strategy
//! (features `postgres`, `sqlite`): the same SQL runs against shared tables
//! under PostgreSQL row-level security ([`PgRowLevel`]), a schema per
//! tenant ([`PgSchemaIsolation`]), or a database per tenant
//! ([`PgDatabaseIsolation`], [`SqliteDatabaseIsolation`]). As an extractor
//! (`TenantDb<DB>: FromRef<S>`), it is bound to the request's tenant and
//! refuses requests without one; outside a request, [`TenantDb::begin`](TenantDb::begin)
//! uses [`current`] and refuses when there is none.
//!
//! ```
//! use axum::{Router, body::Body, extract::FromRef, routing::get};
//! use http::Request;
//! use tenancy::sqlx::{self, Sqlite};
//! use tenancy::{Migration, Migrations, NewTenant, SqliteDatabaseIsolation, SqliteStore, Tenancy, TenantDb};
//! use tower::ServiceExt;
//!
//! #[derive(Clone, FromRef)]
//! struct AppState {
//!     tenancy: Tenancy,
//!     db: TenantDb<Sqlite>,
//! }
//!
//! async fn count_notes(db: TenantDb<Sqlite>) -> Result<String, tenancy::DbError> {
//!     let mut tx = db.begin().await?; // this tenant's database, and only it
//!     let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM notes").fetch_one(&mut *tx).await?;
//!     tx.commit().await?;
//!     Ok(n.to_string())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let migrations = Migrations::new(vec![Migration {
//!     version: 1,
//!     name: "notes".into(),
//!     sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)".into(),
//! }])?;
//! let files = SqliteDatabaseIsolation::new(dir.path().join("tenants"), migrations);
//! let store = SqliteStore::connect(&format!("sqlite://{}", dir.path().join("tenancy.db").display())).await?;
//! let tenancy = Tenancy::builder().store(store).isolation(files.clone()).build()?;
//! let acme = tenancy.lifecycle().create(NewTenant::new("acme", "Acme")?).await?; // file made and migrated
//! tenancy.lifecycle().create(NewTenant::new("globex", "Globex")?).await?;
//!
//! let db = TenantDb::new(files);
//! let mut tx = db.begin_for(&acme.id).await?;
//! sqlx::query("INSERT INTO notes (body) VALUES ('hi')").execute(&mut *tx).await?;
//! tx.commit().await?;
//!
//! let app = Router::new()
//!     .route("/notes/count", get(count_notes))
//!     .layer(tenancy.layer())
//!     .with_state(AppState { tenancy, db });
//! let count = |t: &str| Request::get("/notes/count").header("x-tenant-id", t).body(Body::empty());
//! let acme_count = app.clone().oneshot(count("acme")?).await?;
//! assert_eq!(axum::body::to_bytes(acme_count.into_body(), 16).await?, "1");
//! let globex_count = app.clone().oneshot(count("globex")?).await?;
//! assert_eq!(axum::body::to_bytes(globex_count.into_body(), 16).await?, "0");
//! # Ok(()) }
//! ```
//!
//! `DbError` answers as a problem (503 when the database is unreachable).
//!
//! # Background jobs
//!
//! The tenant of a request is task-local: [`current`] returns it anywhere
//! below the handler. Work that outlives the request carries it with
//! [`spawn`]; work started elsewhere (a queue consumer, a cron job) enters
//! a tenant with [`with_tenant`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let acme: tenancy::TenantId = "acme-id".parse()?;
//! let job = tenancy::with_tenant(acme.clone(), async {
//!     // inside: tenancy::current(), TenantDb::begin(), cache_key(…) all see acme
//!     tenancy::spawn(async { tenancy::current() }).await
//! });
//! assert_eq!(job.await?, Some(acme));
//! assert_eq!(tenancy::current(), None); // and nowhere else
//! # Ok(()) }
//! ```
//!
//! # Several instances
//!
//! With [`PgStore`] shared by all instances, call [`Tenancy::listen`](Tenancy::listen) in
//! each: a suspension, config change or domain change made anywhere
//! applies everywhere at once, instead of when cache entries expire.
//!
//! # Cargo features
//!
//! - `axum` (default): [`Tenancy::layer`], the [`Tenant`] and [`Setting`]
//!   extractors, [`RequireTenantLayer`], rate limits; `TenantDb` as an
//!   extractor when a SQL feature is on.
//! - `jwt` (default): HS256/RS256 bearer-token verification.
//! - `postgres`: [`PgStore`], [`PgRowLevel`], [`PgSchemaIsolation`],
//!   [`PgDatabaseIsolation`], [`Tenancy::listen`](Tenancy::listen).
//! - `sqlite`: [`SqliteStore`], [`SqliteRowLevel`] (through the query
//!   interceptor), [`SqliteDatabaseIsolation`].
//! - `interceptor`: the SQL query interceptor alone ([`interceptor`](mod@interceptor)).
//! - `redis`: rate-limit buckets shared through Redis ([`RedisBackend`]).
//! - `nats`: publish every tenant event to NATS ([`nats::NatsEventSink`]).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
pub mod metrics;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(all(feature = "postgres", feature = "sqlite"))]
pub mod open;
#[cfg(feature = "axum")]
mod setting;

pub use builder::{BuildError, Tenancy, TenancyBuilder, rate_limit_config};
#[cfg(feature = "axum")]
pub use setting::{Entitlements, Setting, SettingError, TenantSetting};

/// The audit log of admin actions, kept beside the tenants.
pub use tenancy_core::audit;
pub use tenancy_core::cache_key::{NoTenantScope, cache_key, current_cache_key};
/// Settings: `tenancy.yaml` under a `tenancy:` key, with
/// `TENANCY__SECTION__KEY` environment overrides.
pub use tenancy_core::config;
pub use tenancy_core::context::{current, current_info, spawn, with_tenant};
/// What `tenancy doctor` reports: check ids, severities, findings.
pub use tenancy_core::doctor;
/// Tenant domains: normalisation, verification status, the resolver.
pub use tenancy_core::domain;
/// Impersonation grants: short-lived, single-use, kept beside the tenants.
pub use tenancy_core::impersonation;
/// Isolation strategies: the trait every strategy implements.
pub use tenancy_core::isolation;
/// Tenants' own identity providers (`auth.issuer`).
pub use tenancy_core::issuers;
/// Plans and what a tenant may do (`plans.*`, `features.*`, `limits.*`).
pub use tenancy_core::plans;
/// Pending tenants for instant signup.
pub use tenancy_core::pool;
/// Resolvers: the built-in ones and how to write your own.
pub use tenancy_core::resolve;
/// Usage metering: per-tenant counters and what the store keeps of them.
pub use tenancy_core::usage;
pub use tenancy_core::{
    CachedConfigStore, ConfigError, ConfigMap, ConfigStore, ConfigValueError, DeprovisionPolicy,
    Domain, DomainResolver, DomainStatus, DomainStore, EventBus, EventSink, InvalidSlug,
    InvalidTenantId, IsolationError, IsolationStrategy, LifecycleError, LifecycleService,
    ListQuery, Membership, MemoryStore, NewTenant, PendingPool, PendingStore, PendingTenant,
    PoolError, Rejection, ResolutionContext, Resolver, ResolverChain, RowLevel, Slug, StoreError,
    TenancyConfig, TenantConfigService, TenantDomain, TenantEvent, TenantId, TenantInfo,
    TenantPage, TenantRef, TenantStatus, TenantStore, TenantUpdate, Validator, VerifiedClaims,
};

#[cfg(feature = "jwt")]
pub use tenancy_axum::JwtVerifier;
#[cfg(feature = "redis")]
pub use tenancy_axum::RedisBackend;
/// Feature, quota and other per-tenant gates on routes, and their problems.
#[cfg(feature = "axum")]
pub use tenancy_axum::feature;
#[cfg(feature = "axum")]
pub use tenancy_axum::{
    Principal, Problem, RateLimits, RequireTenantLayer, Tenant, TenantError, TenantLayer,
    TenantState,
};

/// The SQL query interceptor: scopes any statement to the current tenant,
/// and refuses what it cannot scope.
#[cfg(feature = "interceptor")]
pub use tenancy_interceptor as interceptor;

/// The sqlx version the SQL layer uses.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use sqlx;
/// Background jobs: the domain types (the queue needs `postgres` or
/// `sqlite`).
#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
pub use tenancy_core::jobs;
/// The SQL layer in full (portability, identifiers, change notification).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use tenancy_sql as sql;
/// Background jobs that keep their tenant: the queue and workers.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use tenancy_sql::jobs;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use tenancy_sql::{DbError, Migration, Migrations, ScopedBegin, TenantDb};
#[cfg(feature = "postgres")]
pub use tenancy_sql::{
    PgChangeListener, PgDatabaseIsolation, PgRowLevel, PgSchemaIsolation, PgStore, TenantSigningKey,
};
#[cfg(feature = "sqlite")]
pub use tenancy_sql::{SqliteChangeListener, SqliteDatabaseIsolation, SqliteRowLevel, SqliteStore};
