//! The load-test target of `scripts/load-test.sh`: one trivial handler
//! served twice by the same process, so wrk can measure what the tenant
//! layer costs against a baseline in the same run.
//!
//! - `GET /bare/hello`: the handler alone.
//! - `GET /api/hello`: the same handler behind the layer exactly as
//!   `tenancy serve` stacks it (header resolver, validator, rate limits,
//!   request metrics) and taking the [`Tenant`] extractor.
//!
//! ```text
//! cargo run --release -p example-load-bench
//! curl localhost:3001/bare/hello
//! curl -H 'X-Tenant-Id: acme' localhost:3001/api/hello
//! ```
//!
//! `BIND` (default `127.0.0.1:3001`). The store is a [`MemoryStore`]: a
//! cache hit never reaches the store, which is what is being measured.

use axum::{Router, routing::get};
use tenancy::metrics::RequestMetrics;
use tenancy::{MemoryStore, NewTenant, RateLimits, Tenancy, TenancyConfig, Tenant};

async fn bare() -> &'static str {
    "hello"
}

async fn tenant_hello(_tenant: Tenant) -> &'static str {
    "hello"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = TenancyConfig::default();
    // The limiter stays in the path, with a limit the load cannot reach.
    config.rate_limit.default_rps = 1_000_000_000;
    let tenancy = Tenancy::builder()
        .config(config.clone())
        .store(MemoryStore::new())
        .build()?;
    tenancy
        .lifecycle()
        .create(NewTenant::new("acme", "Acme Corp")?)
        .await?;
    let limits = RateLimits::new(&config.rate_limit).overrides(tenancy.overrides().clone());
    let layer = tenancy
        .layer()
        .rate_limits(limits)
        .metrics(RequestMetrics::new(config.server.metrics_tenants));

    let app = Router::new().route("/bare/hello", get(bare)).merge(
        Router::new()
            .route("/api/hello", get(tenant_hello))
            .layer(layer),
    );

    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3001".into());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
