//! A response future polled again after it finished panics, as tower-http's
//! do: the mistake shows at once instead of as an empty 200 or a request
//! that never ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use axum::response::Response;
use http::{Request, StatusCode};
use tenancy_axum::{RequireTenantLayer, TenantLayer};
use tenancy_core::resolve::HeaderResolver;
use tenancy_core::*;
use tower::{Layer, Service, service_fn};

/// Polls `fut` to its answer, then once more: the second poll must panic.
fn polled_twice_panics<F: Future<Output = Result<Response, std::convert::Infallible>>>(
    fut: F,
) -> StatusCode {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    let status = match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(response)) => response.status(),
        _ => panic!("the answer is ready at once"),
    };
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = fut.as_mut().poll(&mut cx);
    }));
    let message = again.expect_err("a second poll panics");
    let text = message
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| message.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(text.contains("polled after completion"), "{text}");
    status
}

fn ok_service() -> impl Service<
    Request<()>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone {
    service_fn(|_req: Request<()>| async { Ok(Response::new(axum::body::Body::empty())) })
}

#[test]
fn the_guard_refusal_panics_when_polled_again() {
    let mut guarded = RequireTenantLayer::new().layer(ok_service());
    // No tenant layer in front: the guard answers 500 at once.
    let fut = guarded.call(Request::new(()));
    assert_eq!(polled_twice_panics(fut), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test(flavor = "current_thread")]
async fn the_tenant_layer_answer_panics_when_polled_again() {
    let store = Arc::new(MemoryStore::new());
    LifecycleService::new(store.clone())
        .create(NewTenant::new("acme", "Acme").unwrap())
        .await
        .unwrap();
    let validator = Validator::new(store, &Default::default());
    let layer = TenantLayer::new(
        ResolverChain::new().with(HeaderResolver::default()),
        validator,
    )
    .rate_limits(tenancy_axum::RateLimits::new(
        &tenancy_core::config::RateLimitConfig {
            default_rps: 1,
            ..Default::default()
        },
    ));
    let mut service = layer.layer(ok_service());
    let request = || {
        Request::get("/")
            .header("x-tenant-id", "acme")
            .body(())
            .unwrap()
    };
    // Warm the cache, spend the one token: the next answer is the layer's own 429.
    for _ in 0..3 {
        let _ = tower::ServiceExt::ready(&mut service).await;
        let _ = service.call(request()).await;
    }
    let fut = service.call(request());
    assert_eq!(polled_twice_panics(fut), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "current_thread")]
async fn the_guard_pass_through_panics_when_polled_again() {
    let tenant = acme_layer()
        .await
        .validator()
        .validate(&TenantRef::new("acme"))
        .await
        .unwrap();
    let mut guarded = RequireTenantLayer::new().layer(ok_service());
    let mut request = Request::new(());
    request
        .extensions_mut()
        .insert(tenancy_axum::TenantState::Resolved(tenant));
    let fut = guarded.call(request);
    assert_eq!(polled_twice_panics(fut), StatusCode::OK);
}

/// A tenant layer over a store holding the active tenant `acme`.
async fn acme_layer() -> TenantLayer {
    let store = Arc::new(MemoryStore::new());
    LifecycleService::new(store.clone())
        .create(NewTenant::new("acme", "Acme").unwrap())
        .await
        .unwrap();
    TenantLayer::new(
        ResolverChain::new().with(HeaderResolver::default()),
        Validator::new(store, &Default::default()),
    )
}

fn acme_request() -> Request<()> {
    Request::get("/")
        .header("x-tenant-id", "acme")
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn every_tenant_layer_future_panics_when_polled_again() {
    let mut service = acme_layer().await.layer(ok_service());
    // A cache miss: the path that waits (the store answers at once).
    let fut = service.call(acme_request());
    assert_eq!(polled_twice_panics(fut), StatusCode::OK);
    // A cache hit: the inner future in the tenant's scope.
    let fut = service.call(acme_request());
    assert_eq!(polled_twice_panics(fut), StatusCode::OK);
    // A refusal recorded for the handler (here it answers 200 anyway).
    let fut = service.call(Request::new(()));
    assert_eq!(polled_twice_panics(fut), StatusCode::OK);
}
