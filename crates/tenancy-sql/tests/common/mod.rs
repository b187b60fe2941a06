//! Test support: a fresh PostgreSQL database per test, dropped afterwards.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use sqlx::Connection;
use sqlx::postgres::PgConnection;

mod own_runtime;
#[allow(unused_imports)]
pub use own_runtime::on_own_runtime;
#[path = "../../../tenancy-core/tests/common/tenants.rs"]
mod tenants;
#[allow(unused_imports)]
pub use tenants::*;

/// The server tests use (`TENANCY_TEST_PG` overrides it).
pub fn admin_url() -> String {
    std::env::var("TENANCY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `admin_url` with another database name.
pub fn url_for(db: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{db}")
}

/// A database that exists for one test.
pub struct PgTestDb {
    pub name: String,
    pub url: String,
}

impl PgTestDb {
    pub async fn new() -> Self {
        let name = format!("tenancy_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url()).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is required for this test at {} ({e}); start it with scripts/test.sh",
                admin_url()
            )
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = url_for(&name);
        PgTestDb { name, url }
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        on_own_runtime(move || async move {
            if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await;
            }
        });
    }
}

/// A migrated PostgreSQL store at `url` (a pool of 4).
pub async fn pg_store(url: &str) -> tenancy_sql::PgStore {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .unwrap();
    migrated(tenancy_sql::PgStore::new(pool)).await
}

/// `store`, migrated.
pub async fn migrated(store: tenancy_sql::PgStore) -> tenancy_sql::PgStore {
    store.migrate().await.unwrap();
    store
}

/// A migrated SQLite store in the file `path`.
pub async fn sqlite_store(path: &std::path::Path) -> tenancy_sql::SqliteStore {
    let url = format!("sqlite://{}", path.display());
    let store = tenancy_sql::SqliteStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// For benches: the number in the environment variable `var`, else `default`.
pub fn rounds(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// For benches: a runtime with two worker threads.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

impl PgTestDb {
    /// A pool of at most `max_connections` on this database.
    pub async fn pool(&self, max_connections: u32) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(max_connections)
            .connect(&self.url)
            .await
            .unwrap()
    }
}

/// Puts the table `notes` (tenant field `tenant_id`) under row-level
/// security, as its owner `owner`.
pub async fn register_notes(owner: &sqlx::PgPool) {
    tenancy_sql::PgRowLevel::new(owner.clone())
        .register_table("notes", "tenant_id")
        .await
        .unwrap();
}

/// Polls `check` every 10 ms until it holds, for at most `limit`: how long
/// it took, or `None`.
pub async fn within<F, Fut>(limit: std::time::Duration, mut check: F) -> Option<std::time::Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
