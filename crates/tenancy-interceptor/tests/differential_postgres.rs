//! Differential test on the machine's real Postgres: every corpus statement
//! run as written on an oracle database holding only tenant A's rows (no
//! tenant column) must give exactly what the rewritten statement gives with
//! tenant A bound on a shared database holding A, B and C (colliding keys);
//! for writes, A's final rows must match the oracle's and B's and C's rows
//! must not change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../../tenancy-sql/tests/common/own_runtime.rs"]
mod own_runtime;

use common::{ALL_TABLES, Case, TENANT_TABLES, corpus, data, schema, sorted};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Column, Connection, Executor, PgConnection, Row, TypeInfo};
use tenancy_interceptor::{Dialect, Interceptor, TenantTables};

use own_runtime::on_own_runtime;

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

async fn admin() -> PgConnection {
    PgConnection::connect(ADMIN_URL).await.unwrap_or_else(|e| {
        panic!(
            "this test needs the real Postgres at 127.0.0.1:5432 (user postgres, trust auth): {e}"
        )
    })
}

/// A fresh database, dropped when the guard goes out of scope.
struct TempDb {
    name: String,
}

impl TempDb {
    async fn create(prefix: &str) -> (TempDb, PgConnection) {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin().await;
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
        let conn = PgConnection::connect(&format!("postgres://postgres@127.0.0.1:5432/{name}"))
            .await
            .unwrap();
        (TempDb { name }, conn)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        on_own_runtime(move || async move {
            let mut admin = admin().await;
            let _ = admin
                .execute(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await;
        });
    }
}

fn cell(row: &PgRow, i: usize) -> serde_json::Value {
    use serde_json::Value as J;
    if let Ok(v) = row.try_get::<Option<i32>, _>(i) {
        return v.map_or(J::Null, J::from);
    }
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return v.map_or(J::Null, J::from);
    }
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return v.map_or(J::Null, J::from);
    }
    if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
        return v.map_or(J::Null, J::from);
    }
    if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
        return v.map_or(J::Null, J::from);
    }
    panic!(
        "undecodable column type {}",
        row.columns()[i].type_info().name()
    )
}

/// A row as JSON text, without the tenant column.
fn render(row: &PgRow) -> String {
    let cells: Vec<serde_json::Value> = row
        .columns()
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name() != "tenant_id")
        .map(|(i, c)| serde_json::json!([c.name(), cell(row, i)]))
        .collect();
    serde_json::Value::Array(cells).to_string()
}

async fn run(
    conn: &mut PgConnection,
    sql: &str,
    params: &[i32],
    tenant: Option<&str>,
) -> Result<Vec<String>, String> {
    let mut q = sqlx::query(AssertSqlSafe(sql.to_owned()));
    for p in params {
        q = q.bind(*p);
    }
    if let Some(t) = tenant {
        q = q.bind(t.to_owned());
    }
    let rows = q.fetch_all(&mut *conn).await.map_err(|e| e.to_string())?;
    Ok(rows.iter().map(render).collect())
}

async fn setup(conn: &mut PgConnection, shared: bool) {
    for s in schema(shared).into_iter().chain(data(shared)) {
        conn.execute(AssertSqlSafe(s)).await.unwrap();
    }
}

async fn state(conn: &mut PgConnection, table: &str, filter: &str) -> Vec<String> {
    sorted(
        run(conn, &format!("SELECT * FROM {table} {filter}"), &[], None)
            .await
            .unwrap(),
    )
}

async fn check_case(
    case: &Case,
    interceptor: &Interceptor,
    oracle: &mut PgConnection,
    shared: &mut PgConnection,
    others_before: &[Vec<String>],
) -> Result<(), String> {
    let rewritten = interceptor
        .rewrite(case.sql, Dialect::Postgres)
        .map_err(|e| format!("refused: {e}"))?;
    if let Some(i) = rewritten.tenant_param() {
        if i != case.params.len() + 1 {
            return Err(format!("tenant parameter is ${i}"));
        }
    }
    let mut otx = oracle.begin().await.unwrap();
    let mut stx = shared.begin().await.unwrap();
    let expected = run(&mut otx, case.sql, case.params, None)
        .await
        .map_err(|e| format!("oracle failed (corpus bug): {e}"))?;
    let tenant = rewritten.tenant_param().map(|_| "A");
    let got = run(&mut stx, rewritten.sql(), case.params, tenant)
        .await
        .map_err(|e| format!("rewritten failed: {e}\n  rewritten: {}", rewritten.sql()))?;
    let mut problems = Vec::new();
    if sorted(expected.clone()) != sorted(got.clone()) {
        problems.push(format!(
            "results differ\n  expected {expected:?}\n  got      {got:?}"
        ));
    }
    for (k, table) in ALL_TABLES.iter().enumerate() {
        let tenant_table = TENANT_TABLES.contains(table);
        let filter = if tenant_table {
            "WHERE tenant_id = 'A'"
        } else {
            ""
        };
        let a_rows = state(&mut stx, table, filter).await;
        let o_rows = state(&mut otx, table, "").await;
        if a_rows != o_rows {
            problems.push(format!(
                "final state of {table} differs\n  oracle {o_rows:?}\n  shared {a_rows:?}"
            ));
        }
        if tenant_table {
            let others = state(&mut stx, table, "WHERE tenant_id <> 'A'").await;
            if others != others_before[k] {
                problems.push(format!("other tenants' rows of {table} changed"));
            }
        }
    }
    otx.rollback().await.unwrap();
    stx.rollback().await.unwrap();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n  rewritten: {}",
            problems.join("\n  "),
            rewritten.sql()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_statements_match_the_single_tenant_oracle() {
    let (_oracle_db, mut oracle) = TempDb::create("tenancy_oracle").await;
    let (_shared_db, mut shared) = TempDb::create("tenancy_shared").await;
    setup(&mut oracle, false).await;
    setup(&mut shared, true).await;
    let interceptor = Interceptor::new(TenantTables::new(TENANT_TABLES).column("tenant_id"));

    let mut others_before = Vec::new();
    for table in ALL_TABLES {
        others_before.push(if TENANT_TABLES.contains(&table) {
            state(&mut shared, table, "WHERE tenant_id <> 'A'").await
        } else {
            Vec::new()
        });
    }

    let cases: Vec<Case> = corpus().into_iter().filter(|c| c.postgres).collect();
    assert!(cases.len() >= 60, "corpus too small: {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) =
            check_case(case, &interceptor, &mut oracle, &mut shared, &others_before).await
        {
            failures.push(format!("{}\n  {e}", case.sql));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} statements failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    eprintln!("{} statements checked against the oracle", cases.len());
}
