//! The `domain` resolver on a cache hit beside the `header` resolver, in
//! the same run (a hit never touches the store). Also the hit for
//! a host that needs normalising (upper case, port) and a negatively
//! cached unknown host.
//!
//! Both resolve without waiting on anything, so each is polled once
//! (`now_or_never`): no runtime overhead in the figures.
//!
//! `cargo bench -p tenancy-core --bench resolvers`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method};
use tenancy_core::resolve::HeaderResolver;
use tenancy_core::*;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = MemoryStore::new();
    let domains = rt.block_on(async {
        let acme = store
            .create(NewTenant::new("acme", "Acme").unwrap())
            .await
            .unwrap();
        store
            .add_domain(TenantDomain::new(
                "portal.acme.com".parse().unwrap(),
                acme.id,
                true,
                true,
            ))
            .await
            .unwrap();
        let resolver = DomainResolver::new(Arc::new(store.clone()), Default::default());
        for host in ["portal.acme.com", "unknown.example.com"] {
            resolver.tenant_of(host).await;
        }
        resolver
    });
    let header = HeaderResolver::new(http::HeaderName::from_static("x-tenant-id"));
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant-id", HeaderValue::from_static("acme"));
    let method = Method::GET;

    let mut group = c.benchmark_group("resolve");
    group.bench_function("header", |b| {
        let ctx = ResolutionContext::new(
            &method,
            Some("portal.acme.com"),
            "/api/notes",
            None,
            &headers,
        );
        b.iter(|| header.resolve(std::hint::black_box(&ctx)).now_or_never());
    });
    for (name, host) in [
        ("domain (cache hit)", "portal.acme.com"),
        (
            "domain (cache hit, Host with a port)",
            "portal.acme.com:8443",
        ),
        ("domain (cache hit, Host in upper case)", "Portal.ACME.com"),
        (
            "domain (unknown host, negatively cached)",
            "unknown.example.com",
        ),
    ] {
        group.bench_function(name, |b| {
            let ctx = ResolutionContext::new(&method, Some(host), "/api/notes", None, &headers);
            b.iter(|| domains.resolve(std::hint::black_box(&ctx)).now_or_never());
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
