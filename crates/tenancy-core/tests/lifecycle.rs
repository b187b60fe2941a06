//! Lifecycle transitions, events and provisioning failures (L1–L2, I2).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::json;
use tenancy_core::*;
use tokio::sync::broadcast::Receiver;

use common::{name_update, new_tenant, slug_update};

fn drain(rx: &mut Receiver<TenantEvent>) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    while let Ok(e) = rx.try_recv() {
        kinds.push(e.kind());
    }
    kinds
}

/// Records calls; fails provisioning when told to.
#[derive(Clone, Default)]
struct Recording {
    calls: Arc<Mutex<Vec<String>>>,
    fail_provision: bool,
}

#[async_trait]
impl IsolationStrategy for Recording {
    fn name(&self) -> &str {
        "recording"
    }
    async fn provision(&self, t: &TenantInfo) -> Result<(), IsolationError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("provision {}", t.slug));
        if self.fail_provision {
            return Err(IsolationError::new(
                "recording",
                "create schema",
                "disk full",
            ));
        }
        Ok(())
    }
    async fn deprovision(
        &self,
        t: &TenantInfo,
        policy: DeprovisionPolicy,
    ) -> Result<(), IsolationError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("deprovision {} {policy:?}", t.slug));
        Ok(())
    }
}

fn service(strategy: Recording, policy: DeprovisionPolicy) -> (LifecycleService, MemoryStore) {
    let store = MemoryStore::new();
    let svc = LifecycleService::new(Arc::new(store.clone()))
        .provisioner(Provisioner::new(Arc::new(strategy)).policy(policy));
    (svc, store)
}

#[tokio::test]
async fn every_transition_publishes_its_event() {
    let (svc, _) = service(Recording::default(), DeprovisionPolicy::Keep);
    let mut rx = svc.event_bus().subscribe();

    let t = svc
        .create(new_tenant("acme", "Acme").plan("pro"))
        .await
        .unwrap();
    assert_eq!(t.status, TenantStatus::Active);
    assert_eq!(drain(&mut rx), ["created"]);

    let t = svc.update(&t.id, name_update("Acme 2")).await.unwrap();
    assert_eq!(
        (t.name.as_str(), t.plan.as_deref()),
        ("Acme 2", Some("pro"))
    );
    assert_eq!(drain(&mut rx), ["updated"]);

    let t = svc.suspend(&t.id, Some("unpaid")).await.unwrap();
    assert_eq!(
        (t.status, t.status_reason.as_deref()),
        (TenantStatus::Suspended, Some("unpaid"))
    );
    assert_eq!(drain(&mut rx), ["suspended"]);

    let t = svc.deactivate(&t.id).await.unwrap();
    assert_eq!(t.status, TenantStatus::Inactive);
    assert_eq!(drain(&mut rx), ["deactivated"]);

    let t = svc.activate(&t.id).await.unwrap();
    assert_eq!(t.status, TenantStatus::Active);
    assert_eq!(t.status_reason, None);
    assert_eq!(drain(&mut rx), ["activated"]);

    let t = svc.suspend(&t.id, None).await.unwrap();
    let t = svc.activate(&t.id).await.unwrap();
    assert_eq!(drain(&mut rx), ["suspended", "activated"]);

    svc.delete(&t.id).await.unwrap();
    assert_eq!(drain(&mut rx), ["deleted"]);
    assert!(svc.store().get(&t.id).await.unwrap().is_none());
}

#[tokio::test]
async fn repeating_a_status_is_a_no_op_without_event() {
    let (svc, _) = service(Recording::default(), DeprovisionPolicy::Keep);
    let t = svc.create(new_tenant("acme", "Acme")).await.unwrap();
    let mut rx = svc.event_bus().subscribe();
    svc.activate(&t.id).await.unwrap();
    svc.deactivate(&t.id).await.unwrap();
    svc.deactivate(&t.id).await.unwrap();
    assert_eq!(drain(&mut rx), ["deactivated"]);
}

#[tokio::test]
async fn provisioning_tenants_cannot_be_suspended_or_deactivated() {
    let store = MemoryStore::new();
    let svc = LifecycleService::new(Arc::new(store.clone()))
        .provisioner(Provisioner::new(Arc::new(Recording::default())).auto_provision(false));
    let t = svc.create(new_tenant("acme", "Acme")).await.unwrap();
    assert_eq!(t.status, TenantStatus::Provisioning);
    assert!(matches!(
        svc.suspend(&t.id, None).await,
        Err(LifecycleError::Store(StoreError::InvalidTransition {
            from: TenantStatus::Provisioning,
            ..
        }))
    ));
    assert!(matches!(
        svc.deactivate(&t.id).await,
        Err(LifecycleError::Store(StoreError::InvalidTransition { .. }))
    ));
    let t = svc.provision(&t.id).await.unwrap();
    assert_eq!(t.status, TenantStatus::Active);
    assert!(matches!(
        svc.provision(&t.id).await,
        Err(LifecycleError::Store(StoreError::InvalidTransition { .. }))
    ));
}

#[tokio::test]
async fn failed_provisioning_leaves_nothing_and_names_the_step() {
    let strategy = Recording {
        fail_provision: true,
        ..Default::default()
    };
    let (svc, store) = service(strategy, DeprovisionPolicy::Keep);
    let mut rx = svc.event_bus().subscribe();
    let err = svc.create(new_tenant("acme", "Acme")).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("create schema") && text.contains("disk full"),
        "{text}"
    );
    assert!(
        store.get_by_slug("acme").await.unwrap().is_none(),
        "no half-made tenant"
    );
    assert_eq!(store.list(ListQuery::all()).await.unwrap().total, 0);
    assert!(
        drain(&mut rx).is_empty(),
        "no Created event for a failed tenant"
    );
}

#[tokio::test]
async fn deactivate_and_delete_run_the_deprovision_policy() {
    let strategy = Recording::default();
    let (svc, _) = service(strategy.clone(), DeprovisionPolicy::Archive);
    let t = svc.create(new_tenant("acme", "Acme")).await.unwrap();
    svc.deactivate(&t.id).await.unwrap();
    svc.activate(&t.id).await.unwrap();
    svc.delete(&t.id).await.unwrap();
    assert_eq!(
        *strategy.calls.lock().unwrap(),
        [
            "provision acme",
            "deprovision acme Archive",
            "provision acme",
            "deprovision acme Archive"
        ]
    );
}

#[tokio::test]
async fn duplicate_and_invalid_input_are_refused_clearly() {
    let (svc, _) = service(Recording::default(), DeprovisionPolicy::Keep);
    svc.create(new_tenant("acme", "Acme")).await.unwrap();
    let err = svc.create(new_tenant("acme", "Other")).await.unwrap_err();
    assert!(
        matches!(err, LifecycleError::Store(StoreError::DuplicateSlug(ref s)) if s == "acme"),
        "{err}"
    );
    assert!(NewTenant::new("Robert'); DROP TABLE tenants;--", "x").is_err());
    let missing: TenantId = "missing".parse().unwrap();
    assert!(matches!(
        svc.suspend(&missing, None).await,
        Err(LifecycleError::Store(StoreError::NotFound(_)))
    ));
    let given = NewTenant::new("globex", "Globex")
        .unwrap()
        .id("globex-1".parse().unwrap());
    assert_eq!(svc.create(given).await.unwrap().id.as_str(), "globex-1");
    let dup = NewTenant::new("globex2", "Globex")
        .unwrap()
        .id("globex-1".parse().unwrap());
    assert!(matches!(
        svc.create(dup).await,
        Err(LifecycleError::Store(StoreError::DuplicateId(_)))
    ));
}

/// Ids and slugs are one namespace: a reference always names one tenant
/// (issue 26, finding 5).
#[tokio::test]
async fn ids_and_slugs_are_one_namespace() {
    let (svc, store) = service(Recording::default(), DeprovisionPolicy::Keep);
    let tb = svc
        .create(
            NewTenant::new("tb", "B")
                .unwrap()
                .id("b-uuid".parse().unwrap()),
        )
        .await
        .unwrap();
    let acme = svc.create(new_tenant("acme", "Acme")).await.unwrap();
    // A slug equal to another tenant's id.
    let err = svc.create(new_tenant("b-uuid", "Evil")).await.unwrap_err();
    assert!(
        matches!(&err, LifecycleError::Store(StoreError::NameTaken { name, other: "id" }) if name == "b-uuid"),
        "{err}"
    );
    assert!(err.to_string().contains("one namespace"), "{err}");
    // An id equal to another tenant's slug.
    let err = svc
        .create(
            NewTenant::new("other", "Other")
                .unwrap()
                .id("acme".parse().unwrap()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            LifecycleError::Store(StoreError::NameTaken { other: "slug", .. })
        ),
        "{err}"
    );
    // A rename onto another tenant's id; a rename onto its own id is fine.
    let err = svc
        .update(&acme.id, slug_update("b-uuid"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LifecycleError::Store(StoreError::NameTaken { .. })),
        "{err}"
    );
    svc.update(&tb.id, slug_update("b-uuid")).await.unwrap();
    // Nothing refused was written: `b-uuid` still names tb alone.
    assert_eq!(store.find("b-uuid").await.unwrap().unwrap().id, tb.id);
    assert_eq!(store.find("acme").await.unwrap().unwrap().id, acme.id);
}

#[tokio::test]
async fn events_serialize_with_their_kind() {
    let (svc, _) = service(Recording::default(), DeprovisionPolicy::Keep);
    let mut rx = svc.event_bus().subscribe();
    let t = svc.create(new_tenant("acme", "Acme")).await.unwrap();
    svc.suspend(&t.id, Some("fraud")).await.unwrap();
    let _created = rx.recv().await.unwrap();
    let suspended = serde_json::to_value(rx.recv().await.unwrap()).unwrap();
    assert_eq!(suspended["kind"], json!("suspended"));
    assert_eq!(suspended["reason"], json!("fraud"));
    assert_eq!(suspended["tenant"]["slug"], json!("acme"));
    assert_eq!(suspended["tenant"]["status"], json!("suspended"));
}

#[tokio::test]
async fn list_pages_and_filters_inactive() {
    let (svc, store) = service(Recording::default(), DeprovisionPolicy::Keep);
    for i in 0..5 {
        let t = svc
            .create(NewTenant::new(&format!("t{i}"), "T").unwrap())
            .await
            .unwrap();
        if i % 2 == 1 {
            svc.suspend(&t.id, None).await.unwrap();
        }
    }
    assert_eq!(store.list(ListQuery::active()).await.unwrap().total, 3);
    let page = store.list(ListQuery::all().page(1, 2)).await.unwrap();
    assert_eq!((page.total, page.items.len()), (5, 2));
    assert_eq!(page.items[0].slug.as_str(), "t1");
}

#[test]
fn registry_knows_row_level_and_names_the_setting_for_unknown() {
    let mut registry = IsolationRegistry::new();
    assert_eq!(registry.get("row_level").unwrap().name(), "row_level");
    let err = registry.get("sharded").err().unwrap();
    assert!(err.to_string().contains("lifecycle.isolation_strategy"));
    registry.register(Arc::new(Recording::default()));
    assert_eq!(registry.names(), ["recording", "row_level"]);
}

/// A sink that fails while `down`, records what it delivered.
#[derive(Clone, Default)]
struct Flaky {
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    got: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl tenancy_core::EventSink for Flaky {
    async fn deliver(
        &self,
        event: &TenantEvent,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("sink down".into());
        }
        self.got.lock().unwrap().push(event.tenant_id().to_string());
        Ok(())
    }
}

/// A sink that is down never holds up a change; its events are
/// queued (bounded: beyond 10,000 they are dropped and counted) and
/// delivered in order once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_sink_never_blocks_and_catches_up_in_order() {
    let sink = Flaky::default();
    sink.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let bus = EventBus::new().with_sink(sink.clone());
    let started = std::time::Instant::now();
    let total = 10_050;
    for i in 0..total {
        let tenant = NewTenant::new(&format!("t-{i}"), "T")
            .unwrap()
            .id(format!("id-{i:05}").parse().unwrap())
            .into_info(chrono::Utc::now());
        bus.publish(TenantEvent::Created { tenant }).await;
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "publishing waited on the sink"
    );
    let dropped = bus.dropped();
    assert!(
        dropped >= 49,
        "beyond the bound events are dropped and counted: {dropped}"
    );
    sink.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(bus.flush(std::time::Duration::from_secs(30)).await);
    let got = sink.got.lock().unwrap().clone();
    assert_eq!(got.len() as u64 + dropped, total as u64);
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted, "delivered in order");
}

/// A trial that ended (SPEC E5): the validator refuses the tenant at once
/// (or serves it when a fallback plan takes it over), and `end_trial`
/// suspends it with reason `trial_expired` or moves it to the fallback
/// plan, each with its event, once.
#[tokio::test]
async fn a_trial_ends_with_its_event_once() {
    let (svc, store) = service(Recording::default(), DeprovisionPolicy::Keep);
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    let ended = svc
        .create(new_tenant("ended", "Ended").trial_ends_at(past))
        .await
        .unwrap();
    let running = svc
        .create(new_tenant("running", "Running").trial_ends_at(future))
        .await
        .unwrap();
    let strict = Validator::new(Arc::new(store.clone()), &Default::default());
    let lenient = Validator::new(Arc::new(store.clone()), &Default::default()).trial_fallback(true);
    let ended_ref = TenantRef::new("ended");
    assert_eq!(
        strict.validate(&ended_ref).await,
        Err(Rejection::TrialExpired)
    );
    assert!(lenient.validate(&ended_ref).await.is_ok());
    assert!(strict.validate(&TenantRef::new("running")).await.is_ok());

    let mut rx = svc.event_bus().subscribe();
    assert!(svc.end_trial(&running.id, None).await.unwrap().is_none());
    let suspended = svc.end_trial(&ended.id, None).await.unwrap().unwrap();
    assert_eq!(suspended.status, TenantStatus::Suspended);
    assert_eq!(
        suspended.status_reason.as_deref(),
        Some(tenancy_core::tenant::TRIAL_EXPIRED)
    );
    assert!(
        svc.end_trial(&ended.id, None).await.unwrap().is_none(),
        "once"
    );
    assert_eq!(drain(&mut rx), ["suspended"]);
    // Activated after choosing a plan: the ended trial is cleared.
    let active = svc.activate(&ended.id).await.unwrap();
    assert_eq!(active.trial_ends_at, None);

    let other = svc
        .create(new_tenant("other", "Other").trial_ends_at(past))
        .await
        .unwrap();
    let mut rx = svc.event_bus().subscribe();
    let moved = svc
        .end_trial(&other.id, Some("free"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (moved.status, moved.plan.as_deref()),
        (TenantStatus::Active, Some("free"))
    );
    assert_eq!(moved.trial_ends_at, None);
    assert_eq!(drain(&mut rx), ["updated"]);
}
