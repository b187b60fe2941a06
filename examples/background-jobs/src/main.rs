//! Background work that knows its tenant.
//!
//! - `POST /reports` answers 202 at once and builds the report in a task
//!   started with `tenancy::spawn`, which carries the request's tenant:
//!   inside, `tenancy::current()` (and so `TenantDb::begin`, cache keys…)
//!   is that tenant. A plain `tokio::spawn` would run with no tenant, and
//!   every tenant-scoped call in it would refuse.
//! - A periodic job, outside any request, lists the active tenants (a
//!   suspended one is skipped) and runs each tenant's work inside
//!   `tenancy::with_tenant`.
//! - Results are stored under tenant-prefixed keys (`tenancy::cache_key`),
//!   so no tenant can read another's.
//!
//! ```text
//! cargo run -p example-background-jobs
//! curl -XPOST localhost:3000/reports -H 'X-Tenant-Id: acme'    # 202 {"report":1}
//! curl localhost:3000/reports -H 'X-Tenant-Id: acme'           # acme's reports and nightly run, no one else's
//! curl -XPOST localhost:3000/reports -H 'X-Tenant-Id: initech' # 403 tenant_not_active (suspended)
//! ```
//!
//! `JOB_INTERVAL_MS` (default 60000) sets how often the periodic job runs;
//! `BIND` (default `127.0.0.1:3000`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tenancy::{ListQuery, MemoryStore, NewTenant, StoreError, Tenancy, Tenant, TenantInfo};

/// Results under tenant-prefixed keys (`t:{tenant}:…`): stands in for
/// Redis or a table.
#[derive(Clone, Default)]
struct Results(Arc<Mutex<BTreeMap<String, Value>>>);

impl Results {
    /// Stores `value` under the current tenant's `parts` key; outside a
    /// tenant scope there is no key, and nothing is stored.
    fn put_for_current(&self, parts: &[&str], value: Value) -> Result<(), tenancy::NoTenantScope> {
        let key = tenancy::current_cache_key(parts)?;
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, value);
        Ok(())
    }

    /// The current tenant's entries under `kind`, and only them.
    fn of_current(&self, kind: &str) -> Vec<Value> {
        let Ok(prefix) = tenancy::current_cache_key(&[kind, ""]) else {
            return Vec::new(); // no tenant, nothing to see
        };
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[derive(Clone, Default)]
struct AppState {
    results: Results,
    next_report: Arc<AtomicU64>,
}

/// Starts the report and answers at once; the task keeps the tenant.
async fn start_report(tenant: Tenant, State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let n = state.next_report.fetch_add(1, Ordering::Relaxed) + 1;
    let requested_for = tenant.id.clone();
    let results = state.results.clone();
    tenancy::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await; // the slow part, after the response
        let ran_as = tenancy::current(); // the request's tenant, carried by spawn
        let report = json!({
            "report": n,
            "requested_for": requested_for,
            "ran_as": ran_as,
        });
        // Zero-padded, so the keys sort in order.
        if let Err(e) = results.put_for_current(&["report", &format!("{n:08}")], report) {
            eprintln!("report {n}: {e}");
        }
    });
    (StatusCode::ACCEPTED, Json(json!({ "report": n })))
}

async fn list_reports(tenant: Tenant, State(state): State<AppState>) -> Json<Value> {
    // The handler runs in the request's tenant scope: `of_current` sees
    // this tenant's keys only.
    Json(json!({
        "tenant": tenant.id,
        "reports": state.results.of_current("report"),
        "nightly": state.results.of_current("nightly"),
    }))
}

/// Outside any request: every `every`, each active tenant's work, one at
/// a time, in its own tenant scope.
async fn periodic(tenancy: Tenancy, results: Results, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for run in 1.. {
        tick.tick().await;
        match for_each_active_tenant(&tenancy, run, &results).await {
            Ok(n) => println!("periodic run {run} done ({n} tenants)"),
            Err(e) => eprintln!("periodic run {run}: cannot list tenants: {e}"),
        }
    }
}

/// Pages through the active tenants (suspended ones are not listed).
async fn for_each_active_tenant(
    tenancy: &Tenancy,
    run: u64,
    results: &Results,
) -> Result<u64, StoreError> {
    let (mut offset, limit) = (0, 100);
    loop {
        let page = tenancy
            .store()
            .list(ListQuery::active().page(offset, limit))
            .await?;
        let last = page.items.len() < usize::try_from(limit).unwrap_or(usize::MAX);
        for tenant in page.items {
            offset += 1;
            let id = tenant.id.clone();
            tenancy::with_tenant(id, nightly(tenant, run, results.clone())).await;
        }
        if last {
            return Ok(offset);
        }
    }
}

/// One tenant's periodic work: runs inside `with_tenant`.
async fn nightly(tenant: TenantInfo, run: u64, results: Results) {
    let ran_as = tenancy::current();
    println!(
        "nightly run {run}: {} (current tenant {})",
        tenant.slug,
        ran_as.as_ref().map_or("none", |id| id.as_str())
    );
    let entry = json!({ "run": run, "ran_as": ran_as });
    if let Err(e) = results.put_for_current(&["nightly", "latest"], entry) {
        eprintln!("nightly run {run} for {}: {e}", tenant.slug);
    }
}

/// Shows, once, that outside a tenant scope there is no tenant: scoped
/// calls refuse rather than guess (`TenantDb::begin` too).
fn log_outside_scope() {
    match (tenancy::current(), tenancy::current_cache_key(&["report"])) {
        (None, Err(e)) => println!("outside a tenant scope: current() is None; cache key: {e}"),
        (current, key) => eprintln!("unexpected tenant scope: {current:?}, {key:?}"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tenancy = Tenancy::builder().store(MemoryStore::new()).build()?;
    for slug in ["acme", "globex", "initech"] {
        tenancy
            .lifecycle()
            .create(NewTenant::new(slug, slug)?)
            .await?;
    }
    tenancy
        .lifecycle()
        .suspend("initech", Some("unpaid invoice"))
        .await?;

    log_outside_scope();
    let state = AppState::default();
    let every = std::env::var("JOB_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(60), Duration::from_millis);
    tokio::spawn(periodic(tenancy.clone(), state.results.clone(), every));

    let app = Router::new()
        .route("/reports", get(list_reports).post(start_report))
        .layer(tenancy.layer())
        .with_state(state);
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
