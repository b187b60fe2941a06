//! Provisioning throughput of the schema strategy with a 5-table
//! migration: creates N tenant schemas (4 at a time), prints tenants/s.
//!
//! `cargo bench -p tenancy-sql --bench provisioning -- 100`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Connection};
use tenancy_core::{DeprovisionPolicy, IsolationStrategy, NewTenant};
use tenancy_sql::*;

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    let admin_url = std::env::var("TENANCY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let name = format!("tenancy_bench_{}", uuid::Uuid::new_v4().simple());
        let url = admin_url.rsplit_once('/').map(|(b, _)| format!("{b}/{name}")).unwrap();
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await.unwrap();
        let pool = PgPoolOptions::new().max_connections(4).connect(&url).await.unwrap();
        let tables: Vec<Migration> = (1..=5)
            .map(|i| Migration {
                version: i,
                name: format!("table{i}"),
                sql: format!(
                    "CREATE TABLE t{i} (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now()); CREATE INDEX t{i}_name ON t{i} (name);"
                ),
            })
            .collect();
        let schemas = PgSchemaIsolation::new(pool.clone(), Migrations::new(tables).unwrap());
        let tenants: Vec<_> = (0..n)
            .map(|i| NewTenant::new(&format!("p{i}"), "P").unwrap().id(format!("p{}_{i}", &name[14..22]).parse().unwrap()).into_info(chrono::Utc::now()))
            .collect();
        let started = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for chunk in tenants.chunks(n.div_ceil(4)) {
            let (s, chunk) = (schemas.clone(), chunk.to_vec());
            set.spawn(async move {
                for t in chunk {
                    s.provision(&t).await.unwrap();
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!("provisioned {n} schemas (5 tables + 5 indexes each) in {secs:.2} s: {:.1} tenants/s", n as f64 / secs);
        for t in &tenants {
            schemas.deprovision(t, DeprovisionPolicy::Drop).await.unwrap();
        }
        pool.close().await;
        sqlx::query(AssertSqlSafe(format!("DROP DATABASE \"{name}\" WITH (FORCE)"))).execute(&mut admin).await.unwrap();
    });
}
