//! Shared by the tenancy-axum benches.

use axum::body::Body;
use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;
use http::Request;
use tower::{Service, ServiceExt};

/// `GET /notes` for tenant `acme` (by its slug in `X-Tenant-Id`).
pub fn request() -> Request<Body> {
    Request::get("/notes")
        .header("x-tenant-id", "acme")
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Benchmarks, as `name`, one `request()` through a clone of `app`.
pub fn bench_app<S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    app: &S,
) where
    S: Service<Request<Body>> + Clone,
{
    group.bench_function(name, |b| {
        b.to_async(rt)
            .iter(|| async { app.clone().oneshot(request()).await })
    });
}
