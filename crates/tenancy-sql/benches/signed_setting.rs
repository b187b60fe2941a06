//! Cost of the signed tenant setting (`PgRowLevel::signed`) against the
//! plain one, in one run, as an ordinary role (RLS applies; a superuser
//! would skip the policies and measure nothing):
//!
//! - `row_level_scoped_tx_one_query`: a scoped transaction and one small
//!   query (the signed form adds round trips and one signature check);
//!   `signed_cached_statement` sets the signed setting with a cached named
//!   statement instead of the library's unnamed one, to show what that
//!   choice (made for pgbouncer before 1.21) costs;
//! - `row_level_seq_scan_10k`: `count(*)` over a tenant's 10,000 rows by a
//!   sequential scan, to show the check runs once per statement (the
//!   policy's sub-select is an InitPlan). `signed_per_row_call` is a
//!   control whose policy calls the function without the sub-select, so
//!   once per row.
//!
//! `cargo bench -p tenancy-sql --bench signed_setting` (needs PostgreSQL on
//! 127.0.0.1:5432, or `TENANCY_TEST_PG`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};
use tenancy_core::TenantId;
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
    let role = format!("bench_app_{}", &name[14..26]);
    let base = admin_url()
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap();
    let key = TenantSigningKey::new(&[0x5a; 32]).unwrap();
    let (owner, app) = rt.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
        let owner: PgPool = PgPool::connect(&format!("{base}/{name}")).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE plain (id INTEGER NOT NULL, tenant_id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant_id, id));
             CREATE TABLE signed (LIKE plain INCLUDING ALL);
             CREATE TABLE big_plain (id INTEGER NOT NULL, tenant_id TEXT NOT NULL, body TEXT NOT NULL);
             CREATE TABLE big_signed (LIKE big_plain);
             CREATE TABLE big_per_row (LIKE big_plain);
             INSERT INTO plain SELECT g, t, 'x' FROM generate_series(1, 100) g, (VALUES ('bench'), ('other')) v(t);
             INSERT INTO signed SELECT * FROM plain;
             INSERT INTO big_plain SELECT g, t, 'x' FROM generate_series(1, 10000) g, (VALUES ('bench'), ('other')) v(t);
             INSERT INTO big_signed SELECT * FROM big_plain;
             INSERT INTO big_per_row SELECT * FROM big_plain;
             ANALYZE;
             CREATE ROLE \"{role}\" LOGIN NOSUPERUSER NOBYPASSRLS;
             GRANT SELECT ON plain, signed, big_plain, big_signed, big_per_row TO \"{role}\";"
        )))
        .execute(&owner)
        .await
        .unwrap();
        let plain = PgRowLevel::new(owner.clone());
        let signed = PgRowLevel::new(owner.clone()).signed(key.clone());
        for (rls, table) in [
            (&plain, "plain"),
            (&plain, "big_plain"),
            (&signed, "signed"),
            (&signed, "big_signed"),
            (&signed, "big_per_row"),
        ] {
            rls.register_table(table, "tenant_id").await.unwrap();
        }
        sqlx::raw_sql(
            "DROP POLICY tenancy_isolation ON big_per_row;
             CREATE POLICY tenancy_isolation ON big_per_row USING (tenant_id = tenancy_rls.current_tenant());",
        )
        .execute(&owner)
        .await
        .unwrap();
        let app: PgPool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&format!("postgres://{role}@{}/{name}", base.rsplit_once('@').unwrap().1))
            .await
            .unwrap();
        (owner, app)
    });
    let tenant: TenantId = "bench".parse().unwrap();
    let plain = TenantDb::new(PgRowLevel::new(app.clone()));
    let signed = TenantDb::new(PgRowLevel::new(app.clone()).signed(key));

    // The plans, for the report: the signed policy's check is an InitPlan.
    rt.block_on(async {
        let mut tx = signed.begin_for(&tenant).await.unwrap();
        let plan: Vec<String> = sqlx::query_scalar("EXPLAIN SELECT count(*) FROM big_signed")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        eprintln!("signed policy plan:\n  {}", plan.join("\n  "));
    });

    let mut group = c.benchmark_group("row_level_scoped_tx_one_query");
    for (label, db, table) in [("unsigned", &plain, "plain"), ("signed", &signed, "signed")] {
        let sql = format!("SELECT count(*) FROM {table} WHERE id < 50");
        group.bench_function(label, |b| {
            b.to_async(&rt).iter(|| async {
                let mut tx = db.begin_for(&tenant).await.unwrap();
                let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql.clone()))
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                assert_eq!(n, 49);
                n
            })
        });
    }
    // What the signed scope costs with a cached (named) statement instead
    // of the unnamed one the library uses for pgbouncer's sake.
    let signer = {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&[0x5a; 32]).unwrap();
        mac.update(b"bench");
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    group.bench_function("signed_cached_statement", |b| {
        b.to_async(&rt).iter(|| async {
            let mut tx = app.begin().await.unwrap();
            sqlx::query("SELECT set_config('tenancy.tenant_id', $1, true), set_config('tenancy.tenant_sig', $2, true)")
                .bind("bench")
                .bind(&signer)
                .execute(&mut *tx)
                .await
                .unwrap();
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM signed WHERE id < 50")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            assert_eq!(n, 49);
            n
        })
    });
    group.finish();

    let mut group = c.benchmark_group("row_level_seq_scan_10k");
    for (label, db, table) in [
        ("unsigned", &plain, "big_plain"),
        ("signed", &signed, "big_signed"),
        ("signed_per_row_call", &signed, "big_per_row"),
    ] {
        let sql = format!("SELECT count(*) FROM {table}");
        group.bench_function(label, |b| {
            b.to_async(&rt).iter(|| async {
                let mut tx = db.begin_for(&tenant).await.unwrap();
                let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql.clone()))
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                assert_eq!(n, 10_000);
                n
            })
        });
    }
    group.finish();

    rt.block_on(async {
        app.close().await;
        owner.close().await;
        let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
        for sql in [
            format!("DROP DATABASE \"{name}\" WITH (FORCE)"),
            format!("DROP ROLE \"{role}\""),
        ] {
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
                .unwrap();
        }
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
