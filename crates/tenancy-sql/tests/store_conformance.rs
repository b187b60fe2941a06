//! One store conformance suite for MemoryStore, SqliteStore and PgStore.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::json;
use tenancy_core::*;
use tenancy_sql::{PgStore, SqliteStore};

use common::{domain, name_update, new_tenant, slug_update};

/// Listing by status and search (the console's filters).
async fn search_conformance<S: TenantStore>(store: S) {
    for (slug, name) in [
        ("srch-alpha", "Alpha Widgets"),
        ("srch-beta", "Beta 100% Co"),
        ("srch-gamma", "gamma_under"),
    ] {
        store
            .create(NewTenant::new(slug, name).unwrap())
            .await
            .unwrap();
    }
    let beta = store.get_by_slug("srch-beta").await.unwrap().unwrap();
    store.activate(&beta.id).await.unwrap();
    let slugs = |page: TenantPage| {
        page.items
            .into_iter()
            .map(|t| t.slug.to_string())
            .collect::<Vec<_>>()
    };
    let q = |text: &str| ListQuery::all().search(text);
    assert_eq!(slugs(store.list(q("ALPHA")).await.unwrap()), ["srch-alpha"]);
    assert_eq!(
        slugs(store.list(q("widgets")).await.unwrap()),
        ["srch-alpha"]
    );
    // LIKE wildcards are literal text.
    assert_eq!(slugs(store.list(q("100%")).await.unwrap()), ["srch-beta"]);
    assert_eq!(slugs(store.list(q("a_u")).await.unwrap()), ["srch-gamma"]);
    assert!(slugs(store.list(q("a%b")).await.unwrap()).is_empty());
    assert_eq!(
        slugs(store.list(q(beta.id.as_str())).await.unwrap()),
        ["srch-beta"]
    );
    let page = store
        .list(q("srch").with_status(TenantStatus::Provisioning))
        .await
        .unwrap();
    assert_eq!(page.total, 2);
    assert_eq!(slugs(page), ["srch-alpha", "srch-gamma"]);
    let page = store
        .list(q("srch").with_status(TenantStatus::Active).page(0, 10))
        .await
        .unwrap();
    assert_eq!((page.total, slugs(page)), (1, vec!["srch-beta".to_owned()]));
    let page = store.list(q("srch").page(1, 1)).await.unwrap();
    assert_eq!((page.total, page.items.len()), (3, 1));
    // Active only by default.
    assert_eq!(
        slugs(
            store
                .list(ListQuery::active().search("srch"))
                .await
                .unwrap()
        ),
        ["srch-beta"]
    );
}

/// The audit log: newest first, by tenant, paged, values kept
/// exactly, entries outliving their tenant.
async fn audit_conformance<S: TenantStore + AuditStore>(store: S) {
    let a = store.create(new_tenant("aud-a", "A")).await.unwrap();
    let b = store.create(new_tenant("aud-b", "B")).await.unwrap();
    let before = json!({"status": "active", "name": "A \u{1F600} \"q\""});
    let after = json!({"status": "suspended", "reason": null, "n": 1.5});
    for i in 0..5 {
        let tenant = if i % 2 == 0 { &a.id } else { &b.id };
        let entry = store
            .record(
                NewAuditEntry::new(format!("admin:{i}"), "tenant.suspend")
                    .tenant(tenant.clone())
                    .change(Some(before.clone()), Some(after.clone())),
            )
            .await
            .unwrap();
        assert_eq!(entry.actor, format!("admin:{i}"));
        assert!((chrono::Utc::now() - entry.at).num_seconds() < 60);
    }
    store
        .record(NewAuditEntry::new("cli:root", "config.set"))
        .await
        .unwrap();

    let all = store.audit(AuditQuery::default()).await.unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(all[0].action, "config.set");
    assert_eq!(all[0].tenant_id, None);
    assert_eq!(all[0].before, None);

    let of_a = store
        .audit(AuditQuery::default().tenant(a.id.clone()))
        .await
        .unwrap();
    assert_eq!(of_a.len(), 3);
    assert!(of_a.iter().all(|e| e.tenant_id.as_ref() == Some(&a.id)));
    assert_eq!(of_a[0].before.as_ref(), Some(&before));
    assert_eq!(of_a[0].after.as_ref(), Some(&after));

    let page = store
        .audit(AuditQuery::default().tenant(a.id.clone()).limit(2))
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    let next = store
        .audit(AuditQuery {
            before: Some(page[1].id),
            ..AuditQuery::default().tenant(a.id.clone()).limit(2)
        })
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert!(next[0].id < page[1].id);

    // The entries outlive the tenant.
    store.delete(&a.id).await.unwrap();
    assert_eq!(
        store
            .audit(AuditQuery::default().tenant(a.id.clone()))
            .await
            .unwrap()
            .len(),
        3
    );
    let _ = b;
}

/// Domains: unique across tenants, one primary, pending until
/// verified, gone with their tenant; and the `domain` resolver over them.
async fn domain_conformance<S: TenantStore + DomainStore + Clone>(store: S) {
    let a = store.create(new_tenant("dom-a", "A")).await.unwrap();
    let b = store.create(new_tenant("dom-b", "B")).await.unwrap();
    let portal: Domain = "Portal.A.test.".parse().unwrap();
    let added = store
        .add_domain(TenantDomain::new(portal.clone(), a.id.clone(), true, false))
        .await
        .unwrap();
    assert_eq!(added.status, DomainStatus::Pending);
    assert!(added.token.len() > 20);
    for claimant in [&a, &b] {
        let err = store
            .add_domain(TenantDomain::new(
                portal.clone(),
                claimant.id.clone(),
                false,
                false,
            ))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::DomainTaken(_)), "{err}");
    }
    let err = store
        .add_domain(TenantDomain::new(
            "x.a.test".parse().unwrap(),
            "ghost".parse().unwrap(),
            false,
            false,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    // A second primary demotes the first.
    store
        .add_domain(domain("www.a.test", &a.id, true, true))
        .await
        .unwrap();
    let list = store.list_domains(&a.id).await.unwrap();
    let names: Vec<(&str, bool)> = list
        .iter()
        .map(|d| (d.domain.as_str(), d.primary))
        .collect();
    assert_eq!(names, [("www.a.test", true), ("portal.a.test", false)]);
    assert_eq!(
        store.get_domain("portal.a.test").await.unwrap().unwrap(),
        list[1]
    );
    assert!(store.list_domains(&b.id).await.unwrap().is_empty());

    // Only verified domains resolve; the resolver caches, invalidation is
    // immediate.
    let resolver = DomainResolver::new(std::sync::Arc::new(store.clone()), Default::default());
    assert_eq!(resolver.tenant_of("portal.a.test").await, None, "pending");
    assert_eq!(
        resolver
            .tenant_of("www.a.test")
            .await
            .map(|r| r.as_str().to_owned()),
        Some(a.id.to_string())
    );
    let verified = store.verify_domain("portal.a.test").await.unwrap().unwrap();
    assert_eq!(verified.status, DomainStatus::Verified);
    assert!(verified.verified_at.is_some());
    assert_eq!(
        resolver.tenant_of("portal.a.test").await,
        None,
        "negatively cached"
    );
    resolver.invalidate("portal.a.test");
    for host in [
        "portal.a.test",
        "PORTAL.A.test",
        "portal.a.test.",
        "portal.a.test:8443",
    ] {
        assert_eq!(
            resolver
                .tenant_of(host)
                .await
                .map(|r| r.as_str().to_owned()),
            Some(a.id.to_string()),
            "{host}"
        );
    }
    assert!(store.verify_domain("nope.test").await.unwrap().is_none());
    assert!(
        store
            .remove_domain("portal.a.test")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .remove_domain("portal.a.test")
            .await
            .unwrap()
            .is_none()
    );
    resolver.invalidate("portal.a.test");
    assert_eq!(resolver.tenant_of("portal.a.test").await, None, "removed");
    // A deleted tenant's domains go with it.
    store.delete(&a.id).await.unwrap();
    assert!(store.get_domain("www.a.test").await.unwrap().is_none());
}

async fn conformance<S: TenantStore + ConfigStore>(store: S) {
    // create: generated id, Provisioning, metadata default
    let acme = store
        .create(new_tenant("acme", "Acme").plan("pro"))
        .await
        .unwrap();
    assert_eq!(acme.status, TenantStatus::Provisioning);
    assert_eq!(acme.metadata, json!({}));
    assert!(TenantId::new(acme.id.as_str()).is_ok());
    let given = NewTenant::new("globex", "Globex")
        .unwrap()
        .id("globex-1".parse().unwrap())
        .metadata(json!({"tier": 2}));
    let globex = store.create(given).await.unwrap();
    assert_eq!(globex.id.as_str(), "globex-1");

    // get / get_by_slug / find round-trip every field
    let got = store.get(&acme.id).await.unwrap().unwrap();
    assert_eq!(
        (got.slug.as_str(), got.name.as_str(), got.plan.as_deref()),
        ("acme", "Acme", Some("pro"))
    );
    assert_eq!(
        got.created_at.timestamp_millis(),
        acme.created_at.timestamp_millis()
    );
    assert_eq!(
        store.get_by_slug("globex").await.unwrap().unwrap().metadata,
        json!({"tier": 2})
    );
    assert_eq!(
        store.find("globex-1").await.unwrap().unwrap().slug.as_str(),
        "globex"
    );
    assert_eq!(store.find("acme").await.unwrap().unwrap().id, acme.id);
    assert!(
        store
            .get(&"missing".parse().unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.find("missing").await.unwrap().is_none());

    // duplicates
    assert!(matches!(
        store.create(new_tenant("acme", "Again")).await,
        Err(StoreError::DuplicateSlug(s)) if s == "acme"
    ));
    assert!(matches!(
        store
            .create(
                NewTenant::new("other", "O")
                    .unwrap()
                    .id("globex-1".parse().unwrap())
            )
            .await,
        Err(StoreError::DuplicateId(_))
    ));

    // update: only given fields; slug uniqueness; plan cleared with Some(None)
    let updated = store
        .update(&acme.id, name_update("Acme Corp"))
        .await
        .unwrap();
    assert_eq!(
        (
            updated.name.as_str(),
            updated.plan.as_deref(),
            updated.slug.as_str()
        ),
        ("Acme Corp", Some("pro"), "acme")
    );
    assert!(updated.updated_at >= acme.updated_at);
    let cleared = store
        .update(
            &acme.id,
            TenantUpdate {
                plan: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.plan, None);
    assert!(matches!(
        store.update(&acme.id, slug_update("globex")).await,
        Err(StoreError::DuplicateSlug(_))
    ));
    assert!(matches!(
        store
            .update(&"missing".parse().unwrap(), TenantUpdate::default())
            .await,
        Err(StoreError::NotFound(_))
    ));

    // status transitions
    assert!(matches!(
        store.suspend(&acme.id, Some("x")).await,
        Err(StoreError::InvalidTransition {
            from: TenantStatus::Provisioning,
            to: TenantStatus::Suspended,
            ..
        })
    ));
    assert_eq!(
        store.activate(&acme.id).await.unwrap().status,
        TenantStatus::Active
    );
    let s = store.suspend(&acme.id, Some("unpaid")).await.unwrap();
    assert_eq!(
        (s.status, s.status_reason.as_deref()),
        (TenantStatus::Suspended, Some("unpaid"))
    );
    assert_eq!(
        store.deactivate(&acme.id).await.unwrap().status,
        TenantStatus::Inactive
    );
    assert_eq!(store.activate(&acme.id).await.unwrap().status_reason, None);
    assert!(matches!(
        store
            .set_status(&acme.id, TenantStatus::Provisioning, None)
            .await,
        Err(StoreError::InvalidTransition { .. })
    ));
    assert!(matches!(
        store.activate(&"missing".parse().unwrap()).await,
        Err(StoreError::NotFound(_))
    ));

    // list: active only vs all, paging, stable order
    let active = store.list(ListQuery::active()).await.unwrap();
    assert_eq!((active.total, active.items.len()), (1, 1));
    let all = store.list(ListQuery::all()).await.unwrap();
    assert_eq!(all.total, 2);
    assert_eq!(all.items[0].id, acme.id, "ordered by creation");
    let page = store.list(ListQuery::all().page(1, 1)).await.unwrap();
    assert_eq!(
        (page.total, page.items.len(), page.items[0].id.as_str()),
        (2, 1, "globex-1")
    );

    // config store
    assert_eq!(store.get_config(&acme.id, "theme").await.unwrap(), None);
    store
        .set_config(&acme.id, "theme", json!("dark"))
        .await
        .unwrap();
    store
        .set_config(&acme.id, "limits", json!({"rps": 5}))
        .await
        .unwrap();
    store
        .set_config(&acme.id, "theme", json!("light"))
        .await
        .unwrap();
    assert_eq!(
        store.get_config(&acme.id, "theme").await.unwrap(),
        Some(json!("light"))
    );
    assert_eq!(store.all_config(&acme.id).await.unwrap().len(), 2);
    assert!(
        store.all_config(&globex.id).await.unwrap().is_empty(),
        "config is per tenant"
    );
    assert!(store.delete_config(&acme.id, "theme").await.unwrap());
    assert!(!store.delete_config(&acme.id, "theme").await.unwrap());
    assert!(matches!(
        store.set_config(&acme.id, "bad key", json!(1)).await,
        Err(StoreError::InvalidConfigKey(_))
    ));
    assert!(matches!(
        store
            .set_config(&"missing".parse().unwrap(), "k", json!(1))
            .await,
        Err(StoreError::NotFound(_))
    ));

    // hostile values are stored as data, never interpreted
    let hostile = store
        .update(
            &globex.id,
            name_update("x'); DROP TABLE tenancy_tenants;--"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get(&globex.id).await.unwrap().unwrap().name,
        hostile.name
    );

    // delete removes the tenant and its config
    assert!(store.delete(&acme.id).await.unwrap());
    assert!(!store.delete(&acme.id).await.unwrap());
    assert!(store.get(&acme.id).await.unwrap().is_none());
    assert!(store.all_config(&acme.id).await.unwrap().is_empty());
    assert!(
        store.get_by_slug("acme").await.unwrap().is_none(),
        "the slug is free again"
    );
    store.create(new_tenant("acme", "Reborn")).await.unwrap();
    store.check().await.unwrap();
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(MemoryStore::new()).await;
    domain_conformance(MemoryStore::new()).await;
    audit_conformance(MemoryStore::new()).await;
    search_conformance(MemoryStore::new()).await;
}

#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tenancy.db").display());
    conformance(SqliteStore::connect(&url).await.unwrap()).await;
    domain_conformance(SqliteStore::connect(&url).await.unwrap()).await;
    audit_conformance(SqliteStore::connect(&url).await.unwrap()).await;
    search_conformance(SqliteStore::connect(&url).await.unwrap()).await;
    // Reopening keeps the data and re-running migrations is harmless.
    let again = SqliteStore::connect(&url).await.unwrap();
    assert!(again.get_by_slug("globex").await.unwrap().is_some());
}

#[tokio::test]
async fn sqlite_memory_store_conforms() {
    conformance(SqliteStore::connect("sqlite::memory:").await.unwrap()).await;
}

#[tokio::test]
async fn pg_store_conforms() {
    let db = common::PgTestDb::new().await;
    conformance(PgStore::connect(&db.url).await.unwrap()).await;
    domain_conformance(PgStore::connect(&db.url).await.unwrap()).await;
    audit_conformance(PgStore::connect(&db.url).await.unwrap()).await;
    search_conformance(PgStore::connect(&db.url).await.unwrap()).await;
    let again = PgStore::connect(&db.url).await.unwrap();
    assert!(again.get_by_slug("globex").await.unwrap().is_some());
}

#[tokio::test]
async fn unreachable_databases_are_clear_errors() {
    let err = PgStore::connect("postgres://postgres@127.0.0.1:1/none")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(ref m) if m.contains("PostgreSQL")),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nonexistent-dir/x/tenancy.db");
    let err = SqliteStore::connect(&format!("sqlite://{}", missing.display()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nonexistent-dir"), "{err}");
}
