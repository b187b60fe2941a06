//! The per-request cost of the in-process `RateLimits`: one request
//! through `TenantLayer` + `RateLimits` (with and without a config
//! service for overrides) against `TenantLayer` alone. The limit is high
//! enough that every request is admitted: this is the hot path.
//!
//! `cargo bench -p tenancy-axum --bench rate_limit`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use tenancy_axum::{RateLimits, Tenant, TenantLayer};
use tenancy_core::config::RateLimitConfig;
use tenancy_core::resolve::HeaderResolver;
use tenancy_core::*;
use tower::ServiceExt;

use common::{bench_app, request};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    rt.block_on(async {
        LifecycleService::new(store.clone())
            .create(NewTenant::new("acme", "Acme").unwrap())
            .await
            .unwrap();
    });
    let tenants = TenantLayer::new(
        ResolverChain::new().with(HeaderResolver::default()),
        Validator::new(store.clone(), &Default::default()),
    );
    let config = TenantConfigService::new(
        Arc::new(CachedConfigStore::new(store, &Default::default())),
        ConfigMap::new(),
    );
    let limits = RateLimitConfig {
        default_rps: 1_000_000_000,
        ..Default::default()
    };
    let route = || Router::new().route("/notes", get(|_t: Tenant| async { "ok" }));
    // Finished with `with_state(())` as `axum::serve` finishes a router.
    let tenant_only: Router = route().layer(tenants.clone()).with_state(());
    let limited: Router = route()
        .layer(tenants.clone().rate_limits(RateLimits::new(&limits)))
        .with_state(());
    let limited_overrides: Router = route()
        .layer(tenants.rate_limits(RateLimits::new(&limits).overrides(config)))
        .with_state(());

    // Warm the caches; every request must be admitted.
    rt.block_on(async {
        for app in [&tenant_only, &limited, &limited_overrides] {
            let res = app.clone().oneshot(request()).await.unwrap();
            assert_eq!(res.status(), 200);
        }
    });

    let mut group = c.benchmark_group("rate_limit");
    bench_app(&mut group, &rt, "tenant_layer_only", &tenant_only);
    bench_app(&mut group, &rt, "tenant_and_rate_limit", &limited);
    bench_app(
        &mut group,
        &rt,
        "tenant_and_rate_limit_with_overrides",
        &limited_overrides,
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
