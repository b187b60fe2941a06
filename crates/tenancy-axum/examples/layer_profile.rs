//! A profiling harness for the tenant layer's hit path: `n` requests
//! through one router, in a function of its own so a profiler can count
//! just them, then the mean time per request.
//!
//! ```text
//! cargo build --release -p tenancy-axum --example layer_profile
//! # instructions per request (deterministic): run n=1000 and n=11000, subtract, divide by 10000
//! valgrind --tool=callgrind --toggle-collect='layer_profile::run_measured' \
//!     target/release/examples/layer_profile layer 11000
//! # wall time per request (noisy on a shared machine: take the least of several runs)
//! target/release/examples/layer_profile noop 1000000
//! ```
//!
//! Modes: `noop` (a no-op layer, trivial handler), `noop_ext` (the same
//! with a `Method` extractor), `layer` (the tenant layer, header resolver,
//! cache hit), `layer_ext` (the same with the `Tenant` extractor).
//! `scripts/profile-layer.sh` runs all four both ways.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::Request;
use std::sync::Arc;
use tenancy_axum::{Tenant, TenantLayer};
use tenancy_core::resolve::HeaderResolver;
use tenancy_core::*;
use tower::ServiceExt;

fn request() -> Request<Body> {
    // What an API client sends, the tenant header last.
    Request::get("/notes")
        .header("host", "api.example.com")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        )
        .header("accept", "application/json")
        .header("accept-encoding", "gzip, br")
        .header("authorization", "Bearer 0123456789abcdef")
        .header("x-request-id", "7f3c2a9e-1b4d-4c8e-9a6f-2d5e8b1c0a37")
        .header("x-tenant-id", "acme")
        .body(Body::empty())
        .unwrap()
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "layer".into());
    let n: usize = std::env::args()
        .nth(2)
        .map_or(1_000_000, |n| n.parse().expect("n: a number of requests"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = MemoryStore::new();
    let validator = Validator::new(Arc::new(store.clone()), &Default::default());
    rt.block_on(async {
        LifecycleService::new(Arc::new(store.clone()))
            .create(NewTenant::new("acme", "Acme").unwrap())
            .await
            .unwrap();
    });
    let app: Router = match mode.as_str() {
        "noop" => Router::new()
            .route("/notes", get(|| async { "ok" }))
            .layer(tower::layer::util::Identity::new())
            .with_state(()),
        "noop_ext" => Router::new()
            .route("/notes", get(|_m: http::Method| async { "ok" }))
            .layer(tower::layer::util::Identity::new())
            .with_state(()),
        "layer" => Router::new()
            .route("/notes", get(|| async { "ok" }))
            .layer(TenantLayer::new(
                ResolverChain::new().with(HeaderResolver::default()),
                validator.clone(),
            ))
            .with_state(()),
        "layer_ext" => Router::new()
            .route("/notes", get(|_t: Tenant| async { "ok" }))
            .layer(TenantLayer::new(
                ResolverChain::new().with(HeaderResolver::default()),
                validator.clone(),
            ))
            .with_state(()),
        other => panic!("unknown mode {other:?}: noop, noop_ext, layer or layer_ext"),
    };
    warm_up(&rt, &app);
    // Steady state: the coarse clock that cache hits read starts with the
    // first cached entry, on a thread that calibrates first.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    run_measured(&rt, &app, n);
    println!("{}", started.elapsed().as_nanos() / n as u128);
}

/// The requests a profiler counts (`--toggle-collect` names this function).
#[inline(never)]
fn run_measured(rt: &tokio::runtime::Runtime, app: &Router, n: usize) {
    run(rt, app, n);
}

/// The requests before: caches filled, the coarse clock started.
#[inline(never)]
fn warm_up(rt: &tokio::runtime::Runtime, app: &Router) {
    run(rt, app, 100);
}

#[inline(always)]
fn run(rt: &tokio::runtime::Runtime, app: &Router, n: usize) {
    rt.block_on(async {
        for _ in 0..n {
            let res = app
                .clone()
                .oneshot(request())
                .await
                .unwrap_or_else(|e| match e {});
            assert_eq!(res.status(), 200);
        }
    });
}
