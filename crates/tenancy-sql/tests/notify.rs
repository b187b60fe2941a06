//! A change made by one process is seen by every other process's
//! validator and config cache at once, through Postgres LISTEN/NOTIFY.
//!
//! Each "process" has its own pool, `PgStore`, validator, config cache and
//! lifecycle service; only the database is shared. Delays are printed
//! (`cargo test -p tenancy-sql --test notify -- --nocapture`); the bounds
//! asserted are generous on purpose (speed is measured by
//! `cargo bench -p tenancy-sql --bench invalidation`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgListener};
use tenancy_core::*;
use tenancy_sql::{CHANGES_CHANNEL, ChangeTargets, PgChangeListener, PgStore};

use common::{PgTestDb, name_update, new_tenant, pg_store, slug_update, within};

/// One service process: its own pool and caches over the shared database.
struct Process {
    store: PgStore,
    validator: Validator,
    config_cache: CachedConfigStore,
    lifecycle: LifecycleService,
    overrides: TenantConfigService,
}

impl Process {
    async fn start(url: &str) -> Self {
        let store = pg_store(url).await;
        let validator = Validator::new(Arc::new(store.clone()), &Default::default());
        let config_cache = CachedConfigStore::new(Arc::new(store.clone()), &Default::default());
        let lifecycle =
            LifecycleService::new(Arc::new(store.clone())).invalidates(validator.clone());
        let defaults = [("theme".to_owned(), json!("light"))].into_iter().collect();
        let overrides = TenantConfigService::new(Arc::new(config_cache.clone()), defaults);
        Self {
            store,
            validator,
            config_cache,
            lifecycle,
            overrides,
        }
    }

    /// Starts this process's change listener under a unique application
    /// name and waits until it listens.
    async fn listen(&self, url: &str) -> (PgChangeListener, String) {
        let app = format!("tenancy-test-{}", uuid::Uuid::new_v4().simple());
        let options = url
            .parse::<PgConnectOptions>()
            .unwrap()
            .application_name(&app);
        let targets = ChangeTargets::new()
            .validator(self.validator.clone())
            .config_cache(self.config_cache.clone());
        let listener = PgChangeListener::spawn(options, targets);
        tokio::time::timeout(Duration::from_secs(10), listener.listening())
            .await
            .expect("the listener connects");
        (listener, app)
    }
}

/// Waits until `listener` has applied `n` notifications, so what the test
/// caches next is not invalidated by an earlier change arriving late.
async fn settle(listener: &PgChangeListener, n: u64) {
    let done = within(Duration::from_secs(5), || async {
        listener.status().notifications >= n
    })
    .await;
    assert!(done.is_some(), "{:?}", listener.status());
}

fn suspended(result: Result<Arc<TenantInfo>, Rejection>) -> bool {
    result == Err(Rejection::NotActive(TenantStatus::Suspended))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_sees_tenant_and_config_changes_within_a_second() {
    let db = PgTestDb::new().await;
    let a = Process::start(&db.url).await;
    let b = Process::start(&db.url).await;
    // A third process without a listener shows what the cache alone does.
    let c = Process::start(&db.url).await;
    let (listener, _) = b.listen(&db.url).await;

    let acme = a
        .lifecycle
        .create(new_tenant("acme", "Acme"))
        .await
        .unwrap();
    // Created, then activated.
    settle(&listener, 2).await;
    let by_slug = TenantRef::new("acme");
    let by_id = TenantRef::new(acme.id.as_str());
    for p in [&b, &c] {
        assert!(p.validator.validate(&by_slug).await.is_ok());
        assert!(p.validator.validate(&by_id).await.is_ok());
    }
    assert!(b.validator.cached_entries() >= 2);

    // Suspension: B refuses by slug and by id within a second.
    a.lifecycle.suspend(&acme.id, Some("unpaid")).await.unwrap();
    let seen = within(Duration::from_secs(1), || async {
        suspended(b.validator.validate(&by_slug).await)
    })
    .await;
    println!("suspension seen by the other process after {seen:?}");
    assert!(seen.is_some(), "B still serves the suspended tenant");
    assert!(suspended(b.validator.validate(&by_id).await));
    // Without a listener the cached tenant is still served (TTL 300 s).
    assert!(c.validator.validate(&by_slug).await.is_ok());

    // Reactivation is seen too (the suspended record was cached).
    a.lifecycle.activate(&acme.id).await.unwrap();
    let seen = within(Duration::from_secs(1), || async {
        b.validator.validate(&by_slug).await.is_ok()
    })
    .await;
    println!("activation seen after {seen:?}");
    assert!(seen.is_some());

    // Slug rename: the old slug stops resolving, a new one that B had
    // cached as unknown starts resolving.
    let renamed = TenantRef::new("acme-corp");
    assert_eq!(
        b.validator.validate(&renamed).await,
        Err(Rejection::Unknown)
    );
    a.lifecycle
        .update(&acme.id, slug_update("acme-corp"))
        .await
        .unwrap();
    let seen = within(Duration::from_secs(1), || async {
        b.validator.validate(&by_slug).await == Err(Rejection::Unknown)
            && b.validator.validate(&renamed).await.is_ok()
    })
    .await;
    println!("slug rename seen after {seen:?}");
    assert!(seen.is_some());

    // Config: B's cached override map follows A's writes.
    assert_eq!(
        b.overrides.get(&acme.id, "theme").await.unwrap(),
        Some(json!("light"))
    );
    a.overrides
        .set(&acme.id, "theme", json!("dark"))
        .await
        .unwrap();
    let seen = within(Duration::from_secs(1), || async {
        b.overrides.get(&acme.id, "theme").await.unwrap() == Some(json!("dark"))
    })
    .await;
    println!("config change seen after {seen:?}");
    assert!(seen.is_some(), "B still serves the old override");
    a.overrides.delete(&acme.id, "theme").await.unwrap();
    let seen = within(Duration::from_secs(1), || async {
        b.overrides.get(&acme.id, "theme").await.unwrap() == Some(json!("light"))
    })
    .await;
    println!("config removal seen after {seen:?}");
    assert!(seen.is_some());

    // Deletion.
    a.lifecycle.delete(&acme.id).await.unwrap();
    let seen = within(Duration::from_secs(1), || async {
        b.validator.validate(&by_id).await == Err(Rejection::Unknown)
    })
    .await;
    println!("deletion seen after {seen:?}");
    assert!(seen.is_some());

    let status = listener.status();
    assert!(status.connected);
    assert_eq!(status.connections, 1);
    assert!(status.notifications >= 6, "{status:?}");
    listener.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_survives_a_terminated_connection_and_clears_its_caches() {
    let db = PgTestDb::new().await;
    let a = Process::start(&db.url).await;
    let b = Process::start(&db.url).await;
    let (listener, app) = b.listen(&db.url).await;
    let acme = a
        .lifecycle
        .create(new_tenant("acme", "Acme"))
        .await
        .unwrap();
    settle(&listener, 2).await;
    let acme_ref = TenantRef::new("acme");
    assert!(b.validator.validate(&acme_ref).await.is_ok());
    assert!(b.validator.cached_entries() > 0);

    for round in 1..=2u64 {
        let terminated: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&app)
        .fetch_all(a.store.pool())
        .await
        .unwrap();
        assert_eq!(terminated, [true], "one listener backend to terminate");
        let start = Instant::now();

        let back = within(Duration::from_secs(5), || async {
            let s = listener.status();
            s.connected && s.connections > round
        })
        .await;
        println!("round {round}: listener reconnected after {back:?}");
        assert!(back.is_some(), "no reconnection: {:?}", listener.status());
        // Cleared on reconnection: anything cached may have missed changes.
        assert_eq!(b.validator.cached_entries(), 0);

        // Changes are still seen.
        match round {
            1 => {
                assert!(b.validator.validate(&acme_ref).await.is_ok());
                a.lifecycle.suspend(&acme.id, None).await.unwrap();
                let seen = within(Duration::from_secs(5), || async {
                    suspended(b.validator.validate(&acme_ref).await)
                })
                .await;
                println!(
                    "round {round}: suspension seen after {seen:?} ({:?} after the termination)",
                    start.elapsed()
                );
                assert!(seen.is_some());
            }
            _ => {
                assert!(suspended(b.validator.validate(&acme_ref).await));
                a.lifecycle.activate(&acme.id).await.unwrap();
                let seen = within(Duration::from_secs(5), || async {
                    b.validator.validate(&acme_ref).await.is_ok()
                })
                .await;
                println!("round {round}: activation seen after {seen:?}");
                assert!(seen.is_some());
            }
        }
    }
    drop(listener);
    // Dropping the handle stops the task and closes its connection.
    let gone = within(Duration::from_secs(5), || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(&app)
                .fetch_one(a.store.pool())
                .await
                .unwrap();
        n == 0
    })
    .await;
    println!("listener connection closed {gone:?} after the handle was dropped");
    assert!(gone.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_notifications_clear_the_caches() {
    let db = PgTestDb::new().await;
    let a = Process::start(&db.url).await;
    let b = Process::start(&db.url).await;
    let (listener, _) = b.listen(&db.url).await;
    let acme = a
        .lifecycle
        .create(new_tenant("acme", "Acme"))
        .await
        .unwrap();
    settle(&listener, 2).await;
    assert!(b.validator.validate(&TenantRef::new("acme")).await.is_ok());
    b.overrides.get(&acme.id, "theme").await.unwrap();
    let clears = listener.status().clears;

    sqlx::query("SELECT pg_notify($1, 'not json')")
        .bind(CHANGES_CHANNEL)
        .execute(a.store.pool())
        .await
        .unwrap();
    let cleared = within(Duration::from_secs(1), || async {
        listener.status().clears > clears
    })
    .await;
    assert!(cleared.is_some());
    assert_eq!(b.validator.cached_entries(), 0);
    let status = listener.status();
    assert!(status.connected);
    assert_eq!(status.connections, 1);
}

/// Receives the next notification on `listener`, or panics after 5 s.
async fn next_notice(listener: &mut PgListener) -> serde_json::Value {
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification within 5 s")
        .unwrap();
    assert_eq!(n.channel(), CHANGES_CHANNEL);
    serde_json::from_str(n.payload()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_change_is_announced_and_failed_ones_are_not() {
    let db = PgTestDb::new().await;
    let a = Process::start(&db.url).await;
    let mut raw = PgListener::connect(&db.url).await.unwrap();
    raw.listen(CHANGES_CHANNEL).await.unwrap();
    let store = &a.store;

    let acme = store.create(new_tenant("acme", "Acme")).await.unwrap();
    let id = acme.id.as_str();
    let tenant = |slug: &str, previous: Option<&str>| json!({"kind": "tenant", "id": id, "slug": slug, "previous_slug": previous});
    let config = json!({"kind": "config", "id": id, "slug": null, "previous_slug": null});
    assert_eq!(next_notice(&mut raw).await, tenant("acme", None));
    let globex = store.create(new_tenant("globex", "Globex")).await.unwrap();
    next_notice(&mut raw).await;
    store.activate(&acme.id).await.unwrap();
    assert_eq!(next_notice(&mut raw).await, tenant("acme", None));

    // Changes that fail (and roll back) announce nothing.
    assert!(store.create(new_tenant("acme", "Again")).await.is_err());
    assert!(
        store
            .update(&acme.id, slug_update("globex"),)
            .await
            .is_err()
    );
    assert!(
        store
            .set_status(&acme.id, TenantStatus::Provisioning, None)
            .await
            .is_err()
    );
    let missing: TenantId = "missing".parse().unwrap();
    assert!(store.suspend(&missing, None).await.is_err());
    assert!(
        store
            .set_config(&missing, "theme", json!("dark"))
            .await
            .is_err()
    );
    assert!(!store.delete_config(&acme.id, "absent").await.unwrap());
    assert!(!store.delete(&missing).await.unwrap());
    // A transaction that announces and then rolls back sends nothing.
    {
        let mut tx = store.pool().begin().await.unwrap();
        sqlx::query("SELECT pg_notify($1, 'rolled back')")
            .bind(CHANGES_CHANNEL)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
    }

    // The next notification is the next committed change, in order.
    store.suspend(&acme.id, Some("unpaid")).await.unwrap();
    assert_eq!(next_notice(&mut raw).await, tenant("acme", None));
    store
        .update(&acme.id, name_update("Acme Corp"))
        .await
        .unwrap();
    assert_eq!(next_notice(&mut raw).await, tenant("acme", None));
    store
        .update(&acme.id, slug_update("acme-corp"))
        .await
        .unwrap();
    assert_eq!(
        next_notice(&mut raw).await,
        tenant("acme-corp", Some("acme"))
    );
    store
        .set_config(&acme.id, "theme", json!("dark"))
        .await
        .unwrap();
    assert_eq!(next_notice(&mut raw).await, config);
    assert!(store.delete_config(&acme.id, "theme").await.unwrap());
    assert_eq!(next_notice(&mut raw).await, config);
    assert!(store.delete(&acme.id).await.unwrap());
    assert_eq!(next_notice(&mut raw).await, tenant("acme-corp", None));
    assert!(store.delete(&globex.id).await.unwrap());
    assert_eq!(next_notice(&mut raw).await["id"], json!(globex.id.as_str()));
}

/// The listener checks its idle connection every 10 s by interrupting its
/// wait for notifications: no notification may be lost to that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_checks_lose_no_notifications() {
    let db = PgTestDb::new().await;
    let a = Process::start(&db.url).await;
    let b = Process::start(&db.url).await;
    let (listener, _) = b.listen(&db.url).await;
    let acme = a
        .lifecycle
        .create(new_tenant("acme", "Acme"))
        .await
        .unwrap();
    settle(&listener, 2).await;

    // Past the first keepalive check (10 s), with a change every 50 ms.
    let start = Instant::now();
    let mut sent = 2;
    while start.elapsed() < Duration::from_millis(11_500) {
        a.store
            .set_config(&acme.id, "counter", json!(sent))
            .await
            .unwrap();
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    settle(&listener, sent).await;
    let status = listener.status();
    println!("{status:?} after {sent} changes over {:?}", start.elapsed());
    assert_eq!(status.notifications, sent);
    assert_eq!(status.connections, 1);
    assert!(status.connected);

    // And the next suspension is still seen at once.
    assert!(b.validator.validate(&TenantRef::new("acme")).await.is_ok());
    a.lifecycle.suspend(&acme.id, None).await.unwrap();
    let seen = within(Duration::from_secs(1), || async {
        suspended(b.validator.validate(&TenantRef::new("acme")).await)
    })
    .await;
    assert!(seen.is_some());
}
