//! Cost of scoping on PostgreSQL: a transaction with one query, scoped by
//! each strategy, against the same transaction unscoped, in one run.
//!
//! `cargo bench -p tenancy-sql --bench scoping` (needs PostgreSQL on
//! 127.0.0.1:5432, or `TENANCY_TEST_PG`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};
use tenancy_core::{IsolationStrategy, NewTenant, TenantId};
use tenancy_sql::*;

fn admin_url() -> String {
    std::env::var("TENANCY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let name = format!("tenancy_bench_{}", uuid::Uuid::new_v4().simple());
    let url = admin_url()
        .rsplit_once('/')
        .map(|(b, _)| format!("{b}/{name}"))
        .unwrap();
    let (pool, rls, schemas, dbs, tenant) = rt.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await.unwrap();
        let pool: PgPool = PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE notes (id INTEGER NOT NULL, tenant_id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant_id, id));
             INSERT INTO notes SELECT g, 'bench', 'x' FROM generate_series(1, 100) g;",
        )
        .execute(&pool)
        .await
        .unwrap();
        let rls = PgRowLevel::new(pool.clone());
        rls.register_table("notes", "tenant_id").await.unwrap();
        let migrations = Migrations::new(vec![Migration {
            version: 1,
            name: "notes".into(),
            sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL); INSERT INTO notes SELECT g, 'x' FROM generate_series(1, 100) g;".into(),
        }])
        .unwrap();
        let schemas = PgSchemaIsolation::new(pool.clone(), migrations.clone());
        let dbs = PgDatabaseIsolation::new(pool.clone(), migrations).pool_limits(4, 1);
        let tenant = NewTenant::new("bench", "Bench").unwrap().id(format!("b{}", &name[14..26]).parse().unwrap()).into_info(chrono::Utc::now());
        schemas.provision(&tenant).await.unwrap();
        dbs.provision(&tenant).await.unwrap();
        (pool, rls, schemas, dbs, tenant)
    });
    let rls_tenant: TenantId = "bench".parse().unwrap();
    let (rls_db, schema_db, database_db) = (
        TenantDb::new(rls),
        TenantDb::new(schemas.clone()),
        TenantDb::new(dbs.clone()),
    );

    let mut group = c.benchmark_group("scoped_tx_one_query");
    group.bench_function("unscoped", |b| {
        b.to_async(&rt).iter(|| async {
            let mut tx = pool.begin().await.unwrap();
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes WHERE id < 50")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            n
        })
    });
    for (label, db, t) in [
        ("row_level_rls", &rls_db, &rls_tenant),
        ("schema", &schema_db, &tenant.id),
        ("database", &database_db, &tenant.id),
    ] {
        group.bench_function(label, |b| {
            b.to_async(&rt).iter(|| async {
                let mut tx = db.begin_for(t).await.unwrap();
                let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes WHERE id < 50")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                assert_eq!(n, 49);
                n
            })
        });
    }
    group.finish();

    rt.block_on(async {
        schemas
            .deprovision(&tenant, tenancy_core::DeprovisionPolicy::Drop)
            .await
            .unwrap();
        dbs.deprovision(&tenant, tenancy_core::DeprovisionPolicy::Drop)
            .await
            .unwrap();
        pool.close().await;
        let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
