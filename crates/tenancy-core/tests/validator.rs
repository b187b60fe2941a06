//! Validator: caching, negative caching, coalescing, invalidation (V1–V2).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tenancy_core::config::ValidationConfig;
use tenancy_core::*;

use common::{name_update, new_tenant, slug_update};

/// Counts store lookups; can be made slow or unavailable.
#[derive(Clone, Default)]
struct CountingStore {
    inner: MemoryStore,
    lookups: Arc<AtomicUsize>,
    delay: Option<Duration>,
    down: Arc<AtomicBool>,
}

impl CountingStore {
    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
    async fn counted(&self) -> Result<(), StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("connection refused".into()));
        }
        Ok(())
    }
}

type Res<T> = Result<T, StoreError>;

#[async_trait]
impl TenantStore for CountingStore {
    async fn get(&self, id: &TenantId) -> Res<Option<TenantInfo>> {
        self.counted().await?;
        self.inner.get(id).await
    }
    async fn get_by_slug(&self, slug: &str) -> Res<Option<TenantInfo>> {
        self.inner.get_by_slug(slug).await
    }
    async fn list(&self, q: ListQuery) -> Res<TenantPage> {
        self.inner.list(q).await
    }
    async fn create(&self, t: NewTenant) -> Res<TenantInfo> {
        self.inner.create(t).await
    }
    async fn update(&self, id: &TenantId, u: TenantUpdate) -> Res<TenantInfo> {
        self.inner.update(id, u).await
    }
    async fn set_status(&self, id: &TenantId, s: TenantStatus, r: Option<&str>) -> Res<TenantInfo> {
        self.inner.set_status(id, s, r).await
    }
    async fn delete(&self, id: &TenantId) -> Res<bool> {
        self.inner.delete(id).await
    }
}

async fn setup(
    store: CountingStore,
    config: &ValidationConfig,
) -> (Validator, LifecycleService, TenantInfo) {
    let validator = Validator::new(Arc::new(store.clone()), config);
    let lifecycle =
        LifecycleService::new(Arc::new(store.inner.clone())).invalidates(validator.clone());
    let acme = lifecycle.create(new_tenant("acme", "Acme")).await.unwrap();
    (validator, lifecycle, acme)
}

fn r(s: &str) -> TenantRef {
    TenantRef::new(s)
}

#[tokio::test]
async fn cache_hit_makes_no_store_call() {
    let store = CountingStore::default();
    let (validator, _, acme) = setup(store.clone(), &Default::default()).await;
    let first = validator.validate(&r(acme.id.as_str())).await.unwrap();
    assert_eq!(first.id, acme.id);
    let after_miss = store.lookups();
    assert_eq!(after_miss, 1);
    for _ in 0..100 {
        validator.validate(&r(acme.id.as_str())).await.unwrap();
    }
    assert_eq!(
        store.lookups(),
        after_miss,
        "cache hits must not reach the store"
    );
}

#[tokio::test]
async fn slug_and_id_both_resolve() {
    let (validator, _, acme) = setup(CountingStore::default(), &Default::default()).await;
    assert_eq!(validator.validate(&r("acme")).await.unwrap().id, acme.id);
    assert_eq!(
        validator
            .validate(&r(acme.id.as_str()))
            .await
            .unwrap()
            .slug
            .as_str(),
        "acme"
    );
}

#[tokio::test]
async fn suspension_is_seen_at_once_under_id_and_slug() {
    let (validator, lifecycle, acme) = setup(CountingStore::default(), &Default::default()).await;
    validator.validate(&r("acme")).await.unwrap();
    validator.validate(&r(acme.id.as_str())).await.unwrap();
    lifecycle.suspend(&acme.id, Some("unpaid")).await.unwrap();
    assert_eq!(
        validator.validate(&r("acme")).await.unwrap_err(),
        Rejection::NotActive(TenantStatus::Suspended)
    );
    assert_eq!(
        validator.validate(&r(acme.id.as_str())).await.unwrap_err(),
        Rejection::NotActive(TenantStatus::Suspended)
    );
    lifecycle.activate(&acme.id).await.unwrap();
    assert!(validator.validate(&r("acme")).await.is_ok());
}

#[tokio::test]
async fn slug_rename_frees_the_old_slug_at_once() {
    let (validator, lifecycle, acme) = setup(CountingStore::default(), &Default::default()).await;
    validator.validate(&r("acme")).await.unwrap();
    lifecycle
        .update(&acme.id, slug_update("acme2"))
        .await
        .unwrap();
    assert_eq!(
        validator.validate(&r("acme")).await.unwrap_err(),
        Rejection::Unknown
    );
    assert_eq!(validator.validate(&r("acme2")).await.unwrap().id, acme.id);
}

#[tokio::test]
async fn unknown_tenants_are_cached_briefly() {
    let store = CountingStore::default();
    let config = ValidationConfig {
        negative_ttl_secs: 1,
        ..Default::default()
    };
    let (validator, _, _) = setup(store.clone(), &config).await;
    let before = store.lookups();
    for _ in 0..50 {
        assert_eq!(
            validator.validate(&r("nope")).await.unwrap_err(),
            Rejection::Unknown
        );
    }
    assert_eq!(
        store.lookups(),
        before + 1,
        "a flood of one bogus id makes one store call"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    validator.validate(&r("nope")).await.unwrap_err();
    assert_eq!(
        store.lookups(),
        before + 2,
        "the negative entry expires after its short TTL"
    );
}

#[tokio::test]
async fn creating_a_tenant_clears_its_negative_entry() {
    let (validator, lifecycle, _) = setup(CountingStore::default(), &Default::default()).await;
    assert_eq!(
        validator.validate(&r("globex")).await.unwrap_err(),
        Rejection::Unknown
    );
    lifecycle
        .create(new_tenant("globex", "Globex"))
        .await
        .unwrap();
    assert!(validator.validate(&r("globex")).await.is_ok());
}

#[tokio::test]
async fn concurrent_misses_are_coalesced() {
    let store = CountingStore {
        delay: Some(Duration::from_millis(100)),
        ..Default::default()
    };
    let (validator, _, acme) = setup(store.clone(), &Default::default()).await;
    let before = store.lookups();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let v = validator.clone();
            let id = acme.id.clone();
            tokio::spawn(async move { v.validate(&TenantRef::from(&id)).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().id, acme.id);
    }
    assert_eq!(
        store.lookups(),
        before + 1,
        "64 concurrent misses for one key share one lookup"
    );
}

#[tokio::test]
async fn malformed_references_never_reach_the_store() {
    let store = CountingStore::default();
    let (validator, _, _) = setup(store.clone(), &Default::default()).await;
    let before = store.lookups();
    let long = "a".repeat(8192);
    for bad in [
        "",
        "../etc/passwd",
        "a b",
        "x'; DROP TABLE tenants;--",
        "\u{7}bell",
        "é",
        long.as_str(),
    ] {
        assert_eq!(
            validator.validate(&r(bad)).await.unwrap_err(),
            Rejection::Malformed,
            "{bad:?}"
        );
    }
    assert_eq!(store.lookups(), before);
}

#[tokio::test]
async fn store_down_refuses_and_is_not_cached() {
    let store = CountingStore::default();
    let (validator, _, acme) = setup(store.clone(), &Default::default()).await;
    store.down.store(true, Ordering::SeqCst);
    assert_eq!(
        validator.validate(&r(acme.id.as_str())).await.unwrap_err(),
        Rejection::StoreUnavailable
    );
    store.down.store(false, Ordering::SeqCst);
    assert!(
        validator.validate(&r(acme.id.as_str())).await.is_ok(),
        "a failure must not be cached"
    );
}

#[tokio::test]
async fn cache_is_bounded_and_clear_empties_it() {
    let store = CountingStore::default();
    let config = ValidationConfig {
        cache_capacity: 10,
        ..Default::default()
    };
    let (validator, _, _) = setup(store.clone(), &config).await;
    for i in 0..100 {
        let _ = validator.validate(&r(&format!("bogus-{i}"))).await;
    }
    assert!(validator.cached_entries() <= 10);
    validator.clear();
    assert_eq!(validator.cached_entries(), 0);
}

// The per-thread front (hot tenants copied per thread) must never serve
// what an invalidation removed, nor another validator's tenant.

#[tokio::test]
async fn a_hot_tenant_is_suspended_at_once_through_every_threads_copy() {
    let (validator, lifecycle, acme) = setup(CountingStore::default(), &Default::default()).await;
    let by_slug = TenantRef::new("acme");
    let by_id = TenantRef::from(&acme.id);
    // Warm: several hits on each reference copy it into this thread.
    for _ in 0..5 {
        assert!(validator.validate(&by_slug).await.is_ok());
        assert!(validator.validate(&by_id).await.is_ok());
    }
    // Other threads serve it from their own copies too.
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let validator = validator.clone();
            let by_slug = by_slug.clone();
            std::thread::spawn(move || {
                for _ in 0..5 {
                    assert!(matches!(
                        validator.validate_cached(by_slug.as_str()),
                        Some(Ok(_))
                    ));
                }
                validator
            })
        })
        .collect();
    let validators: Vec<Validator> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    lifecycle.suspend(&acme.id, Some("unpaid")).await.unwrap();
    let suspended = Err(Rejection::NotActive(TenantStatus::Suspended));
    assert_eq!(validator.validate(&by_slug).await, suspended);
    assert_eq!(validator.validate(&by_id).await, suspended);
    // Each other thread's next answer is the new one (a miss, then the store).
    for v in validators {
        let by_slug = by_slug.clone();
        let seen = std::thread::spawn(move || v.validate_cached(by_slug.as_str()))
            .join()
            .unwrap();
        assert!(
            !matches!(seen, Some(Ok(_))),
            "a thread served a suspended tenant"
        );
    }

    lifecycle.activate(&acme.id).await.unwrap();
    for _ in 0..5 {
        assert!(validator.validate(&by_slug).await.is_ok());
    }
    lifecycle
        .update(&acme.id, name_update("Acme Renamed"))
        .await
        .unwrap();
    assert_eq!(
        validator.validate(&by_slug).await.unwrap().name,
        "Acme Renamed",
        "an update is seen at once too"
    );
}

#[tokio::test]
async fn clear_and_reference_invalidation_reach_the_threads_copies() {
    let (validator, _lifecycle, _acme) = setup(CountingStore::default(), &Default::default()).await;
    let acme = TenantRef::new("acme");
    for _ in 0..5 {
        assert!(validator.validate(&acme).await.is_ok());
    }
    validator.clear();
    assert!(
        validator.validate_cached(acme.as_str()).is_none(),
        "after clear() the next answer is a miss"
    );
    for _ in 0..5 {
        assert!(validator.validate(&acme).await.is_ok());
    }
    validator.invalidate_reference("acme").await;
    assert!(validator.validate_cached(acme.as_str()).is_none());
}

#[tokio::test]
async fn two_validators_never_share_copies() {
    // The same slug names different tenants in two stores: active in one,
    // still provisioning in the other. Neither validator has seen an
    // invalidation, so only their identity tells their copies apart.
    let (store_a, store_b) = (MemoryStore::new(), MemoryStore::new());
    let a = store_a.create(new_tenant("acme", "A")).await.unwrap();
    store_a
        .set_status(&a.id, TenantStatus::Active, None)
        .await
        .unwrap();
    store_b.create(new_tenant("acme", "B")).await.unwrap();
    let active = Validator::new(Arc::new(store_a), &Default::default());
    let other = Validator::new(Arc::new(store_b), &Default::default());
    let acme = TenantRef::new("acme");
    for _ in 0..10 {
        assert_eq!(active.validate(&acme).await.unwrap().name, "A");
        assert_eq!(
            other.validate(&acme).await,
            Err(Rejection::NotActive(TenantStatus::Provisioning))
        );
    }
    // A validator made later, over an empty store, knows no `acme`.
    let empty = Validator::new(Arc::new(MemoryStore::new()), &Default::default());
    for _ in 0..3 {
        assert!(active.validate(&acme).await.is_ok());
        assert_eq!(empty.validate(&acme).await, Err(Rejection::Unknown));
    }
}
