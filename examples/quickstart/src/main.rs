//! A multi-tenant API in one screen.
//!
//! ```text
//! cargo run -p example-quickstart
//! curl -H 'X-Tenant-Id: acme'   localhost:3000/whoami        # 200 {"tenant":"acme",…}
//! curl localhost:3000/tenants/globex/whoami                   # 200, path resolver
//! curl localhost:3000/whoami                                  # 401 tenant_required, naming the ways to name one
//! curl -H 'X-Tenant-Id: initech' localhost:3000/whoami        # 403 tenant_not_active (suspended)
//! curl -H 'X-Tenant-Id: nope' localhost:3000/whoami           # 403 unknown_tenant
//! ```
//!
//! `BIND` (default `127.0.0.1:3000`); `tenancy.yaml` and `TENANCY__*`
//! variables are read if present.

use axum::{Json, Router, routing::get};
use serde_json::{Value, json};
use tenancy::{MemoryStore, NewTenant, Tenancy, TenancyConfig, Tenant};

async fn whoami(tenant: Tenant) -> Json<Value> {
    // Anywhere below the handler, the tenant is also the task's current one.
    let current = tenancy::current().map(|id| id.to_string());
    Json(
        json!({ "tenant": tenant.slug, "name": tenant.name, "plan": tenant.plan, "current": current }),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tenancy = Tenancy::builder()
        .config(TenancyConfig::load()?) // tenancy.yaml if present, TENANCY__* env
        .store(MemoryStore::new())
        .build()?;

    let lifecycle = tenancy.lifecycle();
    lifecycle
        .create(NewTenant::new("acme", "Acme Corp")?.plan("pro"))
        .await?;
    lifecycle
        .create(NewTenant::new("globex", "Globex")?)
        .await?;
    let initech = lifecycle
        .create(NewTenant::new("initech", "Initech")?)
        .await?;
    lifecycle
        .suspend(&initech.id, Some("unpaid invoice"))
        .await?;

    let app = Router::new()
        .route("/whoami", get(whoami))
        .route("/tenants/{tenant}/whoami", get(whoami))
        .layer(tenancy.layer());

    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}  (try: curl -H 'X-Tenant-Id: acme' http://{addr}/whoami)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
