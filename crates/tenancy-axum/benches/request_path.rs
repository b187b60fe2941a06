//! The per-request cost of `TenantLayer`: one request through an axum
//! router with the layer (header resolver, validator cache hit, `Tenant`
//! extractor) against the same router without it.
//!
//! `with_layer_and_metrics` adds `RequestMetrics` to the same
//! layer: its difference to `with_layer_cache_hit` is what metrics cost.
//!
//! The `layer_alone` group measures the same layer around a plain tower
//! service instead (no router), with each request built outside the
//! timing and the response future polled once: a baseline of about a
//! quarter of the router's, so the layer's own share is less lost in the
//! run-to-run noise.
//!
//! `cargo bench -p tenancy-axum --bench request_path`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::Response;
use axum::routing::get;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Request;
use tenancy_axum::{Tenant, TenantLayer};
use tenancy_core::resolve::HeaderResolver;
use tenancy_core::*;
use tower::ServiceExt;

use common::{bench_app, request};

#[path = "common/alloc.rs"]
mod alloc;
use alloc::ALLOCATIONS;

#[global_allocator]
static GLOBAL: alloc::CountingAlloc = alloc::CountingAlloc;

/// Allocations made by one request through `app` (the smallest of 10).
fn allocations_per_request<S>(rt: &tokio::runtime::Runtime, app: &S) -> usize
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible> + Clone,
{
    (0..10)
        .map(|_| {
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            rt.block_on(async {
                assert_ok(app.clone().oneshot(request()).await);
            });
            ALLOCATIONS.load(Ordering::Relaxed) - before
        })
        .min()
        .unwrap_or(0)
}

/// Counts every store lookup, to show the cached path makes none.
#[derive(Clone)]
struct Counting(MemoryStore, Arc<AtomicUsize>);

type Res<T> = Result<T, StoreError>;

#[async_trait]
impl TenantStore for Counting {
    async fn get(&self, id: &TenantId) -> Res<Option<TenantInfo>> {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.get(id).await
    }
    async fn get_by_slug(&self, slug: &str) -> Res<Option<TenantInfo>> {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.get_by_slug(slug).await
    }
    async fn list(&self, q: ListQuery) -> Res<TenantPage> {
        self.0.list(q).await
    }
    async fn create(&self, t: NewTenant) -> Res<TenantInfo> {
        self.0.create(t).await
    }
    async fn update(&self, id: &TenantId, u: TenantUpdate) -> Res<TenantInfo> {
        self.0.update(id, u).await
    }
    async fn set_status(&self, id: &TenantId, s: TenantStatus, r: Option<&str>) -> Res<TenantInfo> {
        self.0.set_status(id, s, r).await
    }
    async fn delete(&self, id: &TenantId) -> Res<bool> {
        self.0.delete(id).await
    }
}

/// A `layer_alone` handler: what axum does for any extractor (split the
/// request, run the extractor `E` on its parts), then an empty response.
/// `Method` for the baseline, `Tenant` under the tenant layer.
async fn extracting<E: FromRequestParts<()>>(req: Request<Body>) -> Result<Response, Infallible> {
    let (mut parts, _body) = req.into_parts();
    let value = E::from_request_parts(&mut parts, &()).await;
    assert!(
        std::hint::black_box(&value).is_ok(),
        "the extractor succeeds"
    );
    Ok(Response::new(Body::empty()))
}

/// One request through `service`, whose future must answer at its first
/// poll (the hit path awaits nothing).
fn answer_now<S>(service: &mut S, req: Request<Body>) -> Response
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible>,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut cx).is_ready());
    let mut future = std::pin::pin!(service.call(req));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(response)) => response,
        Poll::Ready(Err(never)) => match never {},
        Poll::Pending => panic!("the hit path answers at its first poll"),
    }
}

/// Allocations made by one `answer_now` (the smallest of 10), the request
/// built before counting.
fn allocations_answering<S>(service: &mut S) -> usize
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible>,
{
    (0..10)
        .map(|_| {
            let req = routed_request();
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            let response = answer_now(service, req);
            let made = ALLOCATIONS.load(Ordering::Relaxed) - before;
            drop(response);
            made
        })
        .min()
        .unwrap_or(0)
}

/// An extension every request carries by the time an axum handler sees
/// it (axum inserts the matched path and URL parameters): with one in
/// place, the `layer_alone` requests have an extension map on both sides,
/// as they would in axum, and the layer's count shows only its own.
#[derive(Clone)]
struct Routed;

/// A request as it reaches a handler in axum (see [`Routed`]).
fn routed_request() -> Request<Body> {
    let mut req = request();
    req.extensions_mut().insert(Routed);
    req
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let lookups = Arc::new(AtomicUsize::new(0));
    let store = Counting(MemoryStore::new(), lookups.clone());
    let validator = Validator::new(Arc::new(store.clone()), &Default::default());
    rt.block_on(async {
        let lifecycle = LifecycleService::new(Arc::new(store.0.clone()));
        lifecycle
            .create(NewTenant::new("acme", "Acme").unwrap_or_else(|e| panic!("{e}")))
            .await
            .ok();
    });

    // Every router is finished with `with_state(())`, as `axum::serve`
    // finishes it once at start-up: an unfinished router converts (and
    // allocates) its route again on every call, which a server never does.
    let without: Router = Router::new()
        .route("/notes", get(|| async { "ok" }))
        .with_state(());
    // The same route under a layer that does nothing: what axum's
    // `Router::layer` costs by itself (it boxes the layered route).
    let noop: Router = Router::new()
        .route("/notes", get(|| async { "ok" }))
        .layer(tower::layer::util::Identity::new())
        .with_state(());
    let with: Router = Router::new()
        .route("/notes", get(|_t: Tenant| async { "ok" }))
        .layer(TenantLayer::new(
            ResolverChain::new().with(HeaderResolver::default()),
            validator.clone(),
        ))
        .with_state(());

    // The two halves of the tenant layer's cost: an extractor under the
    // no-op layer (what axum charges for any extractor: it splits the
    // request into parts and back), and the tenant layer with a handler
    // that extracts nothing.
    let noop_ext: Router = Router::new()
        .route("/notes", get(|_m: http::Method| async { "ok" }))
        .layer(tower::layer::util::Identity::new())
        .with_state(());
    let with_noext: Router = Router::new()
        .route("/notes", get(|| async { "ok" }))
        .layer(TenantLayer::new(
            ResolverChain::new().with(HeaderResolver::default()),
            validator.clone(),
        ))
        .with_state(());
    // The tenant layer around the whole router (`TenantLayer::layer`)
    // rather than through `Router::layer`: no per-route boxing by axum, so
    // its difference to `without_layer` is the layer and the extractor
    // alone.
    let around = tower::Layer::layer(
        &TenantLayer::new(
            ResolverChain::new().with(HeaderResolver::default()),
            validator.clone(),
        ),
        Router::new()
            .route("/notes", get(|_t: Tenant| async { "ok" }))
            .with_state(()),
    );
    let metrics = tenancy_axum::RequestMetrics::new(100);
    let with_metrics: Router = Router::new()
        .route("/notes", get(|_t: Tenant| async { "ok" }))
        .layer(
            TenantLayer::new(
                ResolverChain::new().with(HeaderResolver::default()),
                validator.clone(),
            )
            .metrics(metrics.clone()),
        )
        .with_state(());

    // Warm the cache (one store lookup), then measure hits only.
    rt.block_on(async {
        for app in [&with, &with_metrics] {
            assert_ok(app.clone().oneshot(request()).await);
        }
    });
    let warm = lookups.load(Ordering::Relaxed);
    let (bare, noop_layered, layered, wrapped) = (
        allocations_per_request(&rt, &without),
        allocations_per_request(&rt, &noop),
        allocations_per_request(&rt, &with),
        allocations_per_request(&rt, &around),
    );
    println!(
        "allocations per request: {bare} without the layer, {noop_layered} under a no-op layer, \
         {layered} with the tenant layer (+{} over the no-op layer), {wrapped} with the tenant \
         layer around the router (+{} over none)",
        layered.saturating_sub(noop_layered),
        wrapped.saturating_sub(bare)
    );

    let mut group = c.benchmark_group("request_path");
    bench_app(&mut group, &rt, "without_layer", &without);
    bench_app(&mut group, &rt, "noop_layer", &noop);
    bench_app(&mut group, &rt, "noop_layer_method_extractor", &noop_ext);
    bench_app(&mut group, &rt, "with_layer_no_extractor", &with_noext);
    bench_app(&mut group, &rt, "with_layer_around_router", &around);
    bench_app(&mut group, &rt, "with_layer_cache_hit", &with);
    // Outcome, latency and per-tenant counters on the same path.
    bench_app(&mut group, &rt, "with_layer_and_metrics", &with_metrics);
    // The same as the first, measured again after: how far the figures
    // drift within one run (the noise floor of the comparison above).
    bench_app(&mut group, &rt, "with_layer_cache_hit_again", &with);
    group.finish();
    assert!(metrics.outcomes()[0] > 0, "the metrics counted");

    // The layer around a plain service: resolve, validate (cache hit),
    // extension, task-local scope and the `Tenant` extractor, against the
    // same service with the `Method` extractor and no layer.
    let mut base = tower::service_fn(extracting::<http::Method>);
    let mut layered = tower::Layer::layer(
        &TenantLayer::new(
            ResolverChain::new().with(HeaderResolver::default()),
            validator.clone(),
        ),
        tower::service_fn(extracting::<Tenant>),
    );
    answer_now(&mut layered, routed_request()); // fills this thread's cache copy
    println!(
        "allocations per request around a plain service: {} without the layer, {} with it",
        allocations_answering(&mut base),
        allocations_answering(&mut layered)
    );
    let mut group = c.benchmark_group("layer_alone");
    group.bench_function("method_extractor", |b| {
        b.iter_batched(
            routed_request,
            |req| answer_now(&mut base, req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("tenant_layer_tenant_extractor", |b| {
        b.iter_batched(
            routed_request,
            |req| answer_now(&mut layered, req),
            BatchSize::SmallInput,
        )
    });
    // Again, after: the drift within one run.
    group.bench_function("method_extractor_again", |b| {
        b.iter_batched(
            routed_request,
            |req| answer_now(&mut base, req),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    // The recording alone (two clock reads, three counters, one histogram
    // observation), away from the noise of a whole request.
    let acme_id: TenantId = "acme-id".parse().unwrap_or_else(|e| panic!("{e}"));
    let many = tenancy_axum::RequestMetrics::new(100);
    for i in 0..100 {
        many.record_resolved_for_bench(&format!("t{i}").parse().unwrap_or_else(|e| panic!("{e}")));
    }
    c.bench_function("metrics_record_only", |b| {
        b.iter(|| metrics.record_resolved_for_bench(std::hint::black_box(&acme_id)))
    });
    c.bench_function("metrics_record_only_beyond_tracked", |b| {
        b.iter(|| many.record_resolved_for_bench(std::hint::black_box(&acme_id)))
    });

    let reference = TenantRef::new("acme");
    c.bench_function("validator_cache_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { validator.validate(&reference).await.is_ok() })
    });

    let during = lookups.load(Ordering::Relaxed) - warm;
    println!("store lookups during the cached benches: {during}");
    assert_eq!(
        during, 0,
        "the cached request path must not touch the store"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

/// Asserts the (infallible) answer is 200.
fn assert_ok(res: Result<Response, Infallible>) {
    let res = res.unwrap_or_else(|e| match e {});
    assert_eq!(res.status(), 200);
}
