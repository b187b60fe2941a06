//! The `domain` resolver's cache (as V2): a hit never reaches the
//! store, concurrent misses for one host make one lookup, unknown hosts
//! are cached, a failing store is not cached.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tenancy_core::*;

use common::{domain, new_tenant};

#[derive(Clone, Default)]
struct Slow {
    inner: MemoryStore,
    lookups: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

#[async_trait]
impl DomainStore for Slow {
    async fn add_domain(&self, d: TenantDomain) -> Result<TenantDomain, StoreError> {
        self.inner.add_domain(d).await
    }
    async fn get_domain(&self, d: &str) -> Result<Option<TenantDomain>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("down".into()));
        }
        self.inner.get_domain(d).await
    }
    async fn list_domains(&self, t: &TenantId) -> Result<Vec<TenantDomain>, StoreError> {
        self.inner.list_domains(t).await
    }
    async fn verify_domain(&self, d: &str) -> Result<Option<TenantDomain>, StoreError> {
        self.inner.verify_domain(d).await
    }
    async fn remove_domain(&self, d: &str) -> Result<Option<TenantDomain>, StoreError> {
        self.inner.remove_domain(d).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_skip_the_store_and_misses_are_coalesced() {
    let store = Slow::default();
    let acme = store
        .inner
        .create(new_tenant("acme", "Acme"))
        .await
        .unwrap();
    store
        .add_domain(domain("portal.acme.com", &acme.id, true, true))
        .await
        .unwrap();
    let resolver = DomainResolver::new(Arc::new(store.clone()), Default::default());
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let r = resolver.clone();
        tasks.push(tokio::spawn(
            async move { r.tenant_of("Portal.ACME.com").await },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().as_str(), acme.id.as_str());
    }
    assert_eq!(
        store.lookups.load(Ordering::SeqCst),
        1,
        "one lookup for 20 misses"
    );
    for host in ["portal.acme.com", "portal.acme.com:443", "PORTAL.acme.com."] {
        assert!(resolver.tenant_of(host).await.is_some());
    }
    assert_eq!(
        store.lookups.load(Ordering::SeqCst),
        1,
        "hits never reach the store"
    );

    // Unknown hosts: cached too.
    for _ in 0..5 {
        assert!(resolver.tenant_of("bogus.example.com").await.is_none());
    }
    assert_eq!(store.lookups.load(Ordering::SeqCst), 2);
    // Malformed hosts never reach the store.
    for bad in ["../etc", "a..b", "x'; drop", "[::1]:80", "10.0.0.1"] {
        assert!(resolver.tenant_of(bad).await.is_none());
    }
    assert_eq!(store.lookups.load(Ordering::SeqCst), 2);

    // A failing store: no answer, and nothing cached.
    store.down.store(true, Ordering::SeqCst);
    assert!(resolver.tenant_of("other.example.com").await.is_none());
    store.down.store(false, Ordering::SeqCst);
    store
        .add_domain(domain("other.example.com", &acme.id, false, true))
        .await
        .unwrap();
    assert!(resolver.tenant_of("other.example.com").await.is_some());
}

/// Every resolver is asked on every request, so a host that can never be
/// a domain (an IP address, a single label) must be answered at once, not
/// on the path that waits, and never reach the store.
#[test]
fn hosts_that_cannot_be_domains_are_answered_without_waiting() {
    let store = Slow::default();
    let resolver = DomainResolver::new(Arc::new(store.clone()), Default::default());
    let headers = http::HeaderMap::new();
    for host in [
        "127.0.0.1",
        "127.0.0.1:8080",
        "localhost:3000",
        "[::1]:8080",
        "10.0.0.7",
    ] {
        let ctx =
            resolve::ResolutionContext::new(&http::Method::GET, Some(host), "/", None, &headers);
        assert_eq!(
            resolver.resolve_now(&ctx),
            resolve::Answer::NotFound,
            "{host}"
        );
    }
    // A name not seen yet is looked up (the path that waits).
    let ctx = resolve::ResolutionContext::new(
        &http::Method::GET,
        Some("portal.acme.com"),
        "/",
        None,
        &headers,
    );
    assert_eq!(resolver.resolve_now(&ctx), resolve::Answer::Wait);
    assert_eq!(store.lookups.load(Ordering::SeqCst), 0);
}
