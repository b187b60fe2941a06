//! Usage in the store (SPEC E4) on PostgreSQL and SQLite: a flush applies
//! once however often it is tried, counts add and samples keep the largest,
//! a failed flush keeps its counts for the next one, reports cut by tenant
//! and hour, and a purge removes a tenant's rows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{TimeZone, Utc};
use common::{PgTestDb, pg_store, sqlite_store};
use tenancy::TenantId;
use tenancy::usage::{Metric, UsageDelta, UsageMeter};
use tenancy_sql::usage::{UsageFlusher, UsageStore};

fn delta(tenant: &str, metric: Metric, value: u64) -> UsageDelta {
    UsageDelta {
        tenant_id: tenant.parse().unwrap(),
        metric,
        value,
    }
}

fn total(rows: &[tenancy::usage::UsageRow], tenant: &str, metric: Metric) -> i64 {
    rows.iter()
        .filter(|r| r.tenant_id.as_str() == tenant && r.metric == metric.as_str())
        .map(|r| r.value)
        .sum()
}

/// Runs `sql` on the store's database (to break and mend it).
type Exec = Box<
    dyn Fn(&'static str) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

async fn scenario(store: UsageStore, exec: Exec) {
    let hour = Utc.with_ymd_and_hms(2026, 12, 7, 10, 0, 0).unwrap();
    let h = hour.timestamp();
    let batch = vec![
        delta("acme", Metric::Requests, 10),
        delta("acme", Metric::StorageBytes, 500),
        delta("globex", Metric::Requests, 3),
    ];
    assert!(store.record("i1-1", h, &batch).await.unwrap());
    // The same flush again (its commit was not confirmed): nothing more.
    assert!(!store.record("i1-1", h, &batch).await.unwrap());
    // Another flush in the same hour: counts add, samples keep the largest.
    let later = vec![
        delta("acme", Metric::Requests, 5),
        delta("acme", Metric::StorageBytes, 300),
    ];
    assert!(store.record("i2-1", h, &later).await.unwrap());
    let from = hour - chrono::Duration::hours(1);
    let to = hour + chrono::Duration::hours(1);
    let rows = store.report(None, from, to).await.unwrap();
    assert_eq!(total(&rows, "acme", Metric::Requests), 15);
    assert_eq!(total(&rows, "acme", Metric::StorageBytes), 500);
    assert_eq!(total(&rows, "globex", Metric::Requests), 3);
    // Cut by tenant and by hour.
    let acme: TenantId = "acme".parse().unwrap();
    let only = store.report(Some(&acme), from, to).await.unwrap();
    assert!(only.iter().all(|r| r.tenant_id == acme) && !only.is_empty());
    assert!(
        store
            .report(None, to, to + chrono::Duration::hours(1))
            .await
            .unwrap()
            .is_empty()
    );

    // A flush that fails keeps its counts, and the next one writes them,
    // once.
    let meter = UsageMeter::new();
    let flusher = UsageFlusher::new(meter.clone(), store.clone());
    meter.tenant(&"initech".parse().unwrap()).admit();
    meter.rows_created(&"initech".parse().unwrap(), 2);
    exec("ALTER TABLE tenancy_usage RENAME TO tenancy_usage_away").await;
    assert!(flusher.flush().await.is_err());
    meter.rows_created(&"initech".parse().unwrap(), 1);
    exec("ALTER TABLE tenancy_usage_away RENAME TO tenancy_usage").await;
    flusher.flush().await.unwrap();
    flusher.flush().await.unwrap();
    let now = Utc::now();
    let rows = store
        .report(
            Some(&"initech".parse().unwrap()),
            now - chrono::Duration::hours(2),
            now + chrono::Duration::hours(2),
        )
        .await
        .unwrap();
    assert_eq!(total(&rows, "initech", Metric::RowsCreated), 3, "{rows:?}");
    assert_eq!(total(&rows, "initech", Metric::Requests), 1, "{rows:?}");
    // The month's requests are read back for the monthly quota.
    assert_eq!(meter.month_used(&"initech".parse().unwrap()), 1);
    let totals = store.month_totals(now).await.unwrap();
    assert_eq!(totals[&"initech".parse::<TenantId>().unwrap()], 1);

    // A purge removes the tenant's rows, and only its.
    assert!(store.purge_tenant(&acme).await.unwrap() > 0);
    let rows = store.report(None, from, to).await.unwrap();
    assert_eq!(total(&rows, "acme", Metric::Requests), 0);
    assert_eq!(total(&rows, "globex", Metric::Requests), 3);
}

#[tokio::test]
async fn usage_flushes_once_on_postgres() {
    let db = PgTestDb::new().await;
    let store = pg_store(&db.url).await;
    let pool = store.pool().clone();
    let exec: Exec = Box::new(move |sql| {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        })
    });
    scenario(UsageStore::postgres(store.pool().clone()), exec).await;
}

#[tokio::test]
async fn usage_flushes_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir.path().join("t.db")).await;
    let pool = store.pool().clone();
    let exec: Exec = Box::new(move |sql| {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        })
    });
    scenario(UsageStore::sqlite(store.pool().clone()), exec).await;
}
