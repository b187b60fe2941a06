//! Per-tenant config: precedence, typed reads, cache invalidation (O1–O2).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use serde_json::{Value, json};
use tenancy_core::config::OverridesConfig;
use tenancy_core::*;

use common::new_tenant;

#[derive(Clone, Default)]
struct CountingConfig {
    inner: MemoryStore,
    reads: Arc<AtomicUsize>,
}

#[async_trait]
impl ConfigStore for CountingConfig {
    async fn get_config(&self, t: &TenantId, k: &str) -> Result<Option<Value>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_config(t, k).await
    }
    async fn all_config(&self, t: &TenantId) -> Result<ConfigMap, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.all_config(t).await
    }
    async fn set_config(&self, t: &TenantId, k: &str, v: Value) -> Result<(), StoreError> {
        self.inner.set_config(t, k, v).await
    }
    async fn delete_config(&self, t: &TenantId, k: &str) -> Result<bool, StoreError> {
        self.inner.delete_config(t, k).await
    }
}

async fn setup() -> (
    TenantConfigService,
    CountingConfig,
    TenantId,
    TenantId,
    EventBus,
) {
    let store = CountingConfig::default();
    let mut ids = Vec::new();
    for (slug, name) in [("acme", "A"), ("globex", "B")] {
        ids.push(store.inner.create(new_tenant(slug, name)).await.unwrap().id);
    }
    let (a, b) = (ids[0].clone(), ids[1].clone());
    let cached = CachedConfigStore::new(Arc::new(store.clone()), &OverridesConfig::default());
    let defaults: ConfigMap = [
        ("theme".to_string(), json!("light")),
        ("rate_limit.rps".to_string(), json!(100)),
    ]
    .into_iter()
    .collect();
    let bus = EventBus::new();
    let svc = TenantConfigService::new(Arc::new(cached), defaults).with_bus(bus.clone());
    (svc, store, a, b, bus)
}

#[tokio::test]
async fn override_beats_default_beats_none() {
    let (svc, _, a, b, _) = setup().await;
    assert_eq!(svc.get(&a, "theme").await.unwrap(), Some(json!("light")));
    assert_eq!(svc.get(&a, "missing").await.unwrap(), None);
    svc.set(&a, "theme", json!("dark")).await.unwrap();
    assert_eq!(svc.get(&a, "theme").await.unwrap(), Some(json!("dark")));
    assert_eq!(
        svc.get(&b, "theme").await.unwrap(),
        Some(json!("light")),
        "other tenants keep the default"
    );
    assert!(svc.delete(&a, "theme").await.unwrap());
    assert_eq!(svc.get(&a, "theme").await.unwrap(), Some(json!("light")));
}

#[tokio::test]
async fn typed_get_and_wrong_type_error_names_the_key() {
    let (svc, _, a, _, _) = setup().await;
    assert_eq!(
        svc.get_as::<u32>(&a, "rate_limit.rps").await.unwrap(),
        Some(100)
    );
    svc.set(&a, "rate_limit.rps", json!("fast")).await.unwrap();
    let err = svc.get_as::<u32>(&a, "rate_limit.rps").await.unwrap_err();
    assert!(err.to_string().contains("rate_limit.rps"), "{err}");
}

#[tokio::test]
async fn effective_merges_with_tenant_winning() {
    let (svc, _, a, _, _) = setup().await;
    svc.set(&a, "theme", json!("dark")).await.unwrap();
    svc.set(&a, "beta", json!(true)).await.unwrap();
    let eff = svc.effective(&a).await.unwrap();
    assert_eq!(eff.get("theme"), Some(&json!("dark")));
    assert_eq!(eff.get("beta"), Some(&json!(true)));
    assert_eq!(eff.get("rate_limit.rps"), Some(&json!(100)));
}

#[tokio::test]
async fn cached_reads_skip_the_store_and_writes_invalidate() {
    let (svc, store, a, _, _) = setup().await;
    svc.get(&a, "theme").await.unwrap();
    let reads = store.reads.load(Ordering::SeqCst);
    for _ in 0..20 {
        svc.get(&a, "theme").await.unwrap();
        svc.effective(&a).await.unwrap();
    }
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        reads,
        "hits must not read the store"
    );
    svc.set(&a, "theme", json!("dark")).await.unwrap();
    assert_eq!(
        svc.get(&a, "theme").await.unwrap(),
        Some(json!("dark")),
        "a write is seen at once"
    );
}

#[tokio::test]
async fn writes_publish_config_changed() {
    let (svc, _, a, _, bus) = setup().await;
    let mut rx = bus.subscribe();
    svc.set(&a, "theme", json!("dark")).await.unwrap();
    svc.delete(&a, "theme").await.unwrap();
    svc.delete(&a, "theme").await.unwrap();
    let e1 = rx.try_recv().unwrap();
    let e2 = rx.try_recv().unwrap();
    assert!(
        rx.try_recv().is_err(),
        "removing an absent key changes nothing"
    );
    assert_eq!(
        e1,
        TenantEvent::ConfigChanged {
            tenant_id: a.clone(),
            key: "theme".into(),
            value: Some(json!("dark"))
        }
    );
    assert_eq!(
        e2,
        TenantEvent::ConfigChanged {
            tenant_id: a,
            key: "theme".into(),
            value: None
        }
    );
}

#[tokio::test]
async fn bad_keys_and_unknown_tenants_are_refused() {
    let (svc, _, _, _, _) = setup().await;
    let a: TenantId = "nope".parse().unwrap();
    assert!(matches!(
        svc.set(&a, "theme", json!(1)).await,
        Err(StoreError::NotFound(_))
    ));
    let (svc, _, a, _, _) = setup().await;
    for bad in ["", "a b", "x'--", &"k".repeat(200)] {
        assert!(
            matches!(
                svc.set(&a, bad, json!(1)).await,
                Err(StoreError::InvalidConfigKey(_))
            ),
            "{bad:?}"
        );
    }
}
