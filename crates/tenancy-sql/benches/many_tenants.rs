//! Operating at scale:
//! 1. time to migrate N tenant schemas (default 1,000) with a 5-table
//!    migration, 4 at a time (what `tenancy migrate --jobs 4` does);
//! 2. M tenants (default 10,000) in SQLite database-per-tenant mode, each
//!    served one scoped query, with at most 16 pools open.
//!
//! `cargo bench -p tenancy-sql --bench many_tenants -- [N] [M]`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Connection};
use tenancy_core::{DeprovisionPolicy, IsolationStrategy, NewTenant, TenantInfo};
use tenancy_sql::*;

fn tenant(id: String) -> TenantInfo {
    NewTenant::new("bench", "B")
        .unwrap()
        .id(id.parse().unwrap())
        .into_info(chrono::Utc::now())
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let schemas_n = args.next().unwrap_or(1000);
    let files_n = args.next().unwrap_or(10_000);
    let admin_url = std::env::var("TENANCY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // 1. schemas
        let name = format!("tenancy_bench_{}", uuid::Uuid::new_v4().simple());
        let url = admin_url.rsplit_once('/').map(|(b, _)| format!("{b}/{name}")).unwrap();
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await.unwrap();
        let pool = PgPoolOptions::new().max_connections(4).connect(&url).await.unwrap();
        let tenants: Vec<TenantInfo> = (0..schemas_n).map(|i| tenant(format!("m{}_{i}", &name[14..20]))).collect();
        let empty = PgSchemaIsolation::new(pool.clone(), Migrations::none());
        for t in &tenants {
            empty.provision(t).await.unwrap();
        }
        let five: Vec<Migration> = (1..=5)
            .map(|i| Migration {
                version: i,
                name: format!("t{i}"),
                sql: format!("CREATE TABLE t{i} (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now()); CREATE INDEX t{i}_name ON t{i} (name);"),
            })
            .collect();
        let schemas = PgSchemaIsolation::new(pool.clone(), Migrations::new(five).unwrap());
        let started = Instant::now();
        let limit = Arc::new(tokio::sync::Semaphore::new(4));
        let mut set = tokio::task::JoinSet::new();
        for t in tenants.clone() {
            let (s, limit) = (schemas.clone(), limit.clone());
            set.spawn(async move {
                let _p = limit.acquire_owned().await;
                s.migrate_tenant(&t.id).await.unwrap()
            });
        }
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap().to, 5);
        }
        let secs = started.elapsed().as_secs_f64();
        println!("migrated {schemas_n} tenant schemas to a 5-table migration (4 jobs) in {secs:.1} s ({:.0} tenants/s)", schemas_n as f64 / secs);
        for t in &tenants {
            schemas.deprovision(t, DeprovisionPolicy::Drop).await.unwrap();
        }
        pool.close().await;
        sqlx::query(AssertSqlSafe(format!("DROP DATABASE \"{name}\" WITH (FORCE)"))).execute(&mut admin).await.unwrap();

        // 2. many SQLite tenant files, bounded pools
        let dir = tempfile::tempdir().unwrap();
        let notes = Migrations::new(vec![Migration { version: 1, name: "notes".into(), sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)".into() }]).unwrap();
        let files = SqliteDatabaseIsolation::with_max_pools(dir.path(), notes, 16);
        let started = Instant::now();
        let mut max_open = 0;
        let db = TenantDb::new(files.clone());
        for i in 0..files_n {
            let t = tenant(format!("f{i}"));
            files.provision(&t).await.unwrap();
            let mut tx = db.begin_for(&t.id).await.unwrap();
            sqlx::query("INSERT INTO notes (body) VALUES ('x')").execute(&mut *tx).await.unwrap();
            tx.commit().await.unwrap();
            max_open = max_open.max(files.open_pools());
        }
        println!(
            "{files_n} SQLite tenant databases provisioned and served in {:.1} s; open pools never above {max_open} (bound 16)",
            started.elapsed().as_secs_f64()
        );
        assert!(max_open <= 16);
    });
}
