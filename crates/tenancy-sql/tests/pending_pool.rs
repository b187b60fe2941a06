//! The pending pool on PostgreSQL, schema and database
//! strategies: a claimed tenant is fully migrated (even when migrations
//! were added after its member was provisioned), concurrent signups never
//! share a member, a taken slug leaves the member in the pool, and prune
//! removes members with their isolation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::postgres::PgPool;
use tenancy_core::config::DeprovisionPolicy;
use tenancy_core::*;
use tenancy_sql::*;

use common::new_tenant;

fn tables(n: i64) -> Migrations {
    Migrations::new(
        (1..=n)
            .map(|v| Migration {
                version: v,
                name: format!("t{v}"),
                sql: format!("CREATE TABLE t{v} (id INTEGER PRIMARY KEY, body TEXT)"),
            })
            .collect(),
    )
    .unwrap()
}

fn lifecycle(
    store: &PgStore,
    strategy: Arc<dyn IsolationStrategy>,
    target: usize,
) -> (LifecycleService, PendingPool) {
    let pool = PendingPool::new(Arc::new(store.clone()), strategy.clone(), target);
    let lifecycle = LifecycleService::new(Arc::new(store.clone()))
        .provisioner(Provisioner::new(strategy).policy(DeprovisionPolicy::Drop))
        .pending_pool(pool.clone());
    (lifecycle, pool)
}

async fn ready_ids(pool: &PendingPool) -> HashSet<TenantId> {
    pool.members()
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.ready)
        .map(|m| m.id)
        .collect()
}

/// Tables the tenant sees through a scoped transaction.
async fn visible_tables(db: &TenantDb<sqlx::Postgres>, tenant: &TenantId) -> Vec<String> {
    let mut tx = db.begin_for(tenant).await.unwrap();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name LIKE 't%' ORDER BY 1",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    names
}

/// The whole behaviour, on one strategy. `make(migrations)` builds the
/// strategy over the same database.
async fn pool_suite<S, F>(store: &PgStore, make: F)
where
    S: IsolationStrategy + ScopedBegin<sqlx::Postgres> + Clone,
    F: Fn(Migrations) -> S,
{
    // Members provisioned with two migrations.
    let old = make(tables(2));
    let (_, pool) = lifecycle(store, Arc::new(old.clone()), 3);
    let added = pool.fill().await.unwrap();
    assert_eq!(added.len(), 3);
    let status = pool.status().await.unwrap();
    assert_eq!(
        (status.ready, status.provisioning, status.target),
        (3, 0, 3)
    );
    assert!(pool.fill().await.unwrap().is_empty(), "already full");
    // A member is not a tenant: nothing lists or finds it.
    assert_eq!(store.list(ListQuery::all()).await.unwrap().total, 0);
    let members = ready_ids(&pool).await;
    for id in &members {
        assert!(store.get(id).await.unwrap().is_none());
    }

    // The application now has a third migration; signup claims an old
    // member and tops it up.
    let new = make(tables(3));
    let (lifecycle, pool) = lifecycle(store, Arc::new(new.clone()), 3);
    let acme = lifecycle
        .create(new_tenant("acme", "Acme").plan("pro"))
        .await
        .unwrap();
    assert!(members.contains(&acme.id), "claimed from the pool");
    assert_eq!(acme.status, TenantStatus::Active);
    assert_eq!(acme.plan.as_deref(), Some("pro"));
    assert_eq!(
        store.get_by_slug("acme").await.unwrap().unwrap().id,
        acme.id
    );
    let db = TenantDb::new(new.clone());
    assert_eq!(visible_tables(&db, &acme.id).await, ["t1", "t2", "t3"]);
    assert_eq!(ready_ids(&pool).await.len(), 2);
    assert!(!ready_ids(&pool).await.contains(&acme.id));

    // A taken slug fails the claim and the member stays.
    let err = lifecycle
        .create(new_tenant("acme", "Again"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LifecycleError::Store(StoreError::DuplicateSlug(_))),
        "{err}"
    );
    assert_eq!(ready_ids(&pool).await.len(), 2);

    // Concurrent signups: each claims its own member, the rest provision.
    pool.fill_to(6).await.unwrap();
    let before = ready_ids(&pool).await;
    assert_eq!(before.len(), 6);
    let signups = (0..8).map(|i| {
        let lifecycle = lifecycle.clone();
        async move {
            lifecycle
                .create(NewTenant::new(&format!("signup-{i}"), "S").unwrap())
                .await
                .unwrap()
        }
    });
    let created = futures_join_all(signups).await;
    let ids: HashSet<&TenantId> = created.iter().map(|t| &t.id).collect();
    assert_eq!(ids.len(), 8, "no two signups share an id");
    let from_pool = created.iter().filter(|t| before.contains(&t.id)).count();
    assert_eq!(from_pool, 6, "every free member claimed exactly once");
    assert!(ready_ids(&pool).await.is_empty());
    for t in &created {
        assert_eq!(visible_tables(&db, &t.id).await, ["t1", "t2", "t3"]);
    }

    // Prune: beyond the target, then everything, isolation included.
    pool.fill_to(4).await.unwrap();
    let report = pool.prune(false).await.unwrap();
    assert_eq!(report.removed.len(), 1);
    assert_eq!(ready_ids(&pool).await.len(), 3);
    let pruned = &report.removed[0];
    assert!(
        db.begin_for(pruned).await.is_err(),
        "a pruned member's isolation is gone"
    );
    assert_eq!(pool.prune(true).await.unwrap().removed.len(), 3);
    assert_eq!(pool.status().await.unwrap().ready, 0);

    // Leave nothing cluster-wide behind (roles, databases).
    for t in created.iter().chain(std::iter::once(&acme)) {
        lifecycle
            .delete_with_policy(&t.id, DeprovisionPolicy::Drop)
            .await
            .unwrap();
    }
}

/// `join_all` without another dependency: spawn and await each.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

async fn store_on(db: &common::PgTestDb) -> (PgStore, PgPool) {
    let pool = db.pool(12).await;
    let store = PgStore::new(pool.clone());
    store.migrate().await.unwrap();
    (store, pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pool_with_schema_per_tenant() {
    let db = common::PgTestDb::new().await;
    let (store, pool) = store_on(&db).await;
    pool_suite(&store, |m| PgSchemaIsolation::new(pool.clone(), m)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pool_with_database_per_tenant() {
    let db = common::PgTestDb::new().await;
    let (store, pool) = store_on(&db).await;
    pool_suite(&store, |m| {
        PgDatabaseIsolation::new(pool.clone(), m).pool_limits(1, 2)
    })
    .await;
}
