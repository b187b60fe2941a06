//! `tenancy::open`: a deployment from a URL and the configuration, as a
//! library user opens one (the binary's tests cover every strategy on
//! PostgreSQL through the same code).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tenancy::open::{MainPool, Open, OpenError, ScopedDb};
use tenancy::{NewTenant, TenancyConfig};

fn config(strategy: &str) -> TenancyConfig {
    let mut config = TenancyConfig::default();
    config.lifecycle.isolation_strategy = strategy.into();
    config
}

#[tokio::test]
async fn sqlite_row_level_scopes_the_shared_tables_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("app.db").display());
    let opened = Open::new(&url, config("row_level"))
        .shared_setup(
            "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, title TEXT)",
        )
        .shared_table("notes")
        .connect()
        .await
        .unwrap();
    assert!(matches!(opened.scoped, ScopedDb::SqliteShared(_)));
    assert!(matches!(opened.main, MainPool::Sqlite(_)));
    assert!(opened.migrator.is_none());
    assert_eq!(opened.tenancy.isolation().name(), "row_level");
    // The set-up ran: the table is there, and a tenant can be created.
    let acme = opened
        .tenancy
        .lifecycle()
        .create(NewTenant::new("acme", "Acme").unwrap())
        .await
        .unwrap();
    let MainPool::Sqlite(pool) = &opened.main else {
        unreachable!()
    };
    let n: i64 = tenancy::sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    assert!(opened.scoped.sqlite_tx(&acme.id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_database_opened_under_one_strategy_refuses_another_while_it_has_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("app.db").display());
    let opened = Open::new(&url, config("database")).connect().await.unwrap();
    assert!(matches!(opened.scoped, ScopedDb::SqliteFiles(_)));
    assert!(opened.migrator.is_some());
    opened
        .tenancy
        .lifecycle()
        .create(NewTenant::new("acme", "Acme").unwrap())
        .await
        .unwrap();
    drop(opened);
    let refused = Open::new(&url, config("row_level")).connect().await;
    let err = refused.err().expect("another strategy is refused");
    assert!(matches!(err, OpenError::Setup(_)), "{err}");
    assert!(err.to_string().contains("database"), "{err}");
}

#[tokio::test]
async fn bad_configuration_is_refused_with_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("app.db").display());
    for (strategy, expected) in [("schema", "needs PostgreSQL"), ("sharded", "is unknown")] {
        let err = Open::new(&url, config(strategy))
            .connect()
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, OpenError::Config(_)), "{strategy}: {err}");
        assert!(err.to_string().contains(expected), "{strategy}: {err}");
    }
    let missing = format!("sqlite://{}", dir.path().join("missing/x/y.db").display());
    let err = Open::new(&missing, config("row_level"))
        .connect()
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, OpenError::Setup(_)), "{err}");
    let err = Open::new("postgres://nobody@127.0.0.1:1/none", config("row_level"))
        .connect()
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, OpenError::Connect { .. }), "{err}");
}
