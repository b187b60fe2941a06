//! Two processes on one SQLite file (two pools here): a tenant or config
//! change made through one is seen by the other's caches within a second,
//! through the store's change log (`SqliteChangeListener`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tenancy_core::*;
use tenancy_sql::{ChangeTargets, SqliteChangeListener, SqliteStore};

use common::{new_tenant, sqlite_store, within};

async fn open(path: &std::path::Path) -> SqliteStore {
    sqlite_store(path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_changes_reach_the_caches_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenancy.db");
    let here = open(&path).await;
    let there = open(&path).await;

    let validator = Validator::new(Arc::new(here.clone()), &Default::default());
    let config = CachedConfigStore::new(Arc::new(here.clone()), &Default::default());
    let listener = SqliteChangeListener::spawn(
        here.pool().clone(),
        ChangeTargets::new()
            .validator(validator.clone())
            .config_cache(config.clone()),
    );

    let acme = there.create(new_tenant("acme", "Acme")).await.unwrap();
    there
        .set_status(&acme.id, TenantStatus::Active, None)
        .await
        .unwrap();
    let acme_ref = TenantRef::new("acme");
    // Cached here: active, and its config.
    assert!(validator.validate(&acme_ref).await.is_ok());
    there
        .set_config(&acme.id, "theme", json!("dark"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        config.overrides(&acme.id).await.unwrap().get("theme"),
        Some(&json!("dark"))
    );

    // Suspended by the other process: refused here within a second.
    there
        .set_status(&acme.id, TenantStatus::Suspended, Some("test"))
        .await
        .unwrap();
    let took = within(Duration::from_secs(1), || async {
        validator.validate(&acme_ref).await.is_err()
    })
    .await;
    assert!(
        took.is_some(),
        "the suspension was not seen within a second"
    );

    // A config change: the cached overrides follow within a second.
    there
        .set_config(&acme.id, "theme", json!("light"))
        .await
        .unwrap();
    let took = within(Duration::from_secs(1), || async {
        config.overrides(&acme.id).await.unwrap().get("theme") == Some(&json!("light"))
    })
    .await;
    assert!(
        took.is_some(),
        "the config change was not seen within a second"
    );

    // A change that rolls back announces nothing (and leaves no entry).
    let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenancy_changes")
        .fetch_one(there.pool())
        .await
        .unwrap();
    let mut tx = there.pool().begin().await.unwrap();
    sqlx::query("UPDATE tenancy_tenants SET name = 'x' WHERE id = ?1")
        .bind(acme.id.as_str())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenancy_changes")
        .fetch_one(there.pool())
        .await
        .unwrap();
    assert_eq!(before, after);
    listener.shutdown().await;
}
