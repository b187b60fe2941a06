//! What plans and usage cost on the request path (SPEC E2, E4), in one
//! run:
//!
//! - `metering/layer_without_usage` and `metering/layer_with_usage`: one
//!   request through the tenant layer (header resolver, validator cache
//!   hit, `Tenant` extractor) around a plain service, without and with
//!   `TenantLayer::usage` (counted in, counted by status class). The
//!   difference is what metering adds; `layer_without_usage_again`
//!   measures the drift within the run.
//! - `metering/record_only`: the meter's own work for one request (look up
//!   the tenant's counters among 1,000 tenants, count it in, count its
//!   answer).
//! - `entitlement/has_feature_cache_hit` and `limit_cache_hit`: a
//!   feature check and a limit lookup on an override-cache hit, as
//!   `Tenancy::has_feature` and `Tenancy::limit` make them.
//!
//! `cargo bench -p tenancy-axum --bench usage`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::Response;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Request;
use tenancy_axum::{Tenant, TenantLayer};
use tenancy_core::config::{OverridesConfig, PlanConfig};
use tenancy_core::plans::Plans;
use tenancy_core::resolve::HeaderResolver;
use tenancy_core::usage::UsageMeter;
use tenancy_core::*;

async fn extracting(req: Request<Body>) -> Result<Response, Infallible> {
    let (mut parts, _body) = req.into_parts();
    let tenant = Tenant::from_request_parts(&mut parts, &()).await;
    assert!(std::hint::black_box(&tenant).is_ok());
    Ok(Response::new(Body::empty()))
}

fn request() -> Request<Body> {
    Request::get("/notes")
        .header("x-tenant-id", "acme")
        .body(Body::empty())
        .unwrap()
}

/// One request through `service`, answered at its first poll.
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

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = MemoryStore::new();
    let acme = rt.block_on(async {
        LifecycleService::new(Arc::new(store.clone()))
            .create(NewTenant::new("acme", "Acme").unwrap().plan("pro"))
            .await
            .unwrap()
    });
    let validator = Validator::new(Arc::new(store.clone()), &Default::default());
    let layer = TenantLayer::new(
        ResolverChain::new().with(HeaderResolver::default()),
        validator.clone(),
    );
    let meter = UsageMeter::new();
    // 1,000 tenants metered already: the lookup is among them.
    for i in 0..1000 {
        meter.tenant(&format!("t{i}").parse().unwrap()).admit();
    }
    let mut plain = tower::Layer::layer(&layer, tower::service_fn(extracting));
    let mut metered = tower::Layer::layer(
        &layer.clone().usage(meter.clone()),
        tower::service_fn(extracting),
    );
    answer_now(&mut plain, request());
    answer_now(&mut metered, request());

    let mut group = c.benchmark_group("metering");
    group.bench_function("layer_without_usage", |b| {
        b.iter_batched(
            request,
            |req| answer_now(&mut plain, req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("layer_with_usage", |b| {
        b.iter_batched(
            request,
            |req| answer_now(&mut metered, req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("layer_without_usage_again", |b| {
        b.iter_batched(
            request,
            |req| answer_now(&mut plain, req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("record_only", |b| {
        b.iter(|| {
            let usage = meter.tenant(std::hint::black_box(&acme.id));
            usage.admit();
            usage.responded(200);
        })
    });
    group.finish();
    assert!(meter.month_used(&acme.id) > 0, "the meter counted");

    // Entitlements on an override-cache hit.
    let mut plans = BTreeMap::new();
    plans.insert(
        "pro".to_owned(),
        PlanConfig {
            features: vec!["sso".into(), "exports".into(), "audit".into()],
            limits: [
                ("requests_per_month".to_owned(), 100_000),
                ("rows.notes".to_owned(), 500),
            ]
            .into(),
        },
    );
    let plans = Plans::new(&plans).unwrap();
    let overrides = CachedConfigStore::new(Arc::new(store.clone()), &OverridesConfig::default());
    rt.block_on(async {
        use tenancy_core::ConfigStore;
        overrides
            .set_config(&acme.id, "theme", serde_json::json!("dark"))
            .await
            .unwrap();
        overrides.overrides(&acme.id).await.unwrap();
    });
    let mut group = c.benchmark_group("entitlement");
    group.bench_function("has_feature_cache_hit", |b| {
        b.to_async(&rt).iter(|| async {
            let o = overrides.overrides(&acme.id).await.unwrap();
            plans.has_feature(acme.plan.as_deref(), Some(&o), std::hint::black_box("sso"))
        })
    });
    group.bench_function("limit_cache_hit", |b| {
        b.to_async(&rt).iter(|| async {
            let o = overrides.overrides(&acme.id).await.unwrap();
            plans.limit(
                acme.plan.as_deref(),
                Some(&o),
                std::hint::black_box("rows.notes"),
            )
        })
    });
    group.bench_function("entitlements_built", |b| {
        b.to_async(&rt).iter(|| async {
            let o = overrides.overrides(&acme.id).await.unwrap();
            plans.entitlements(acme.plan.as_deref(), Some(&o))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
