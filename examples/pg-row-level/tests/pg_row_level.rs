//! Runs the row-level example on a database and a role of its own, and
//! checks isolation over HTTP and directly in SQL as the application's
//! role.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use example_support::{Running, client};
use serde_json::{Value, json};
use tenancy::sqlx::postgres::PgPoolOptions;
use tenancy::sqlx::{self, AssertSqlSafe, Connection, PgConnection, PgPool};

/// The server the tests use (`TENANCY_TEST_PG` overrides it).
fn admin_url() -> String {
    std::env::var("TENANCY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database and a role for this test, both dropped when it ends (also
/// when it fails).
struct Throwaway {
    db: String,
    role: String,
}

impl Throwaway {
    async fn new() -> Self {
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} ({e}): run scripts/test.sh", admin_url()));
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (db, role) = (format!("ex_rls_{id}"), format!("ex_rls_app_{id}"));
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
        Self { db, role }
    }

    /// This database, as `user`.
    fn url(&self, user: &str) -> String {
        let admin = admin_url();
        let (rest, _) = admin.rsplit_once('/').unwrap();
        let (scheme, host) = rest.split_once("://").unwrap();
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        format!("{scheme}://{user}@{host}/{}", self.db)
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let (db, role) = (self.db.clone(), self.role.clone());
        // Drop is not async: a private runtime on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                    for sql in [
                        format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
                        format!("DROP ROLE IF EXISTS \"{role}\""),
                    ] {
                        let _ = sqlx::query(AssertSqlSafe(sql)).execute(&mut admin).await;
                    }
                }
            });
        })
        .join();
    }
}

#[tokio::test]
async fn tenants_share_a_table_and_never_see_each_other() {
    let t = Throwaway::new().await;
    let app = Running::start(
        env!("CARGO_BIN_EXE_example-pg-row-level"),
        &[("DATABASE_URL", &t.url("postgres")), ("APP_ROLE", &t.role)],
    );
    let http = client();
    for (tenant, body) in [("acme", "a1"), ("acme", "a2"), ("globex", "g1")] {
        let res = http
            .post(app.url("/notes"))
            .header("x-tenant-id", tenant)
            .json(&json!({ "body": body }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{tenant}: {}", res.text().await.unwrap());
    }
    let list = |tenant: Option<&'static str>| {
        let req = http.get(app.url("/notes"));
        match tenant {
            Some(t) => req.header("x-tenant-id", t),
            None => req,
        }
        .send()
    };
    let bodies = |v: &Value| -> Vec<String> {
        v["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["body"].as_str().unwrap().to_owned())
            .collect()
    };
    let acme: Value = list(Some("acme")).await.unwrap().json().await.unwrap();
    assert_eq!(acme["tenant"], "acme");
    assert_eq!(bodies(&acme), ["a1", "a2"], "acme sees its own notes only");
    let globex: Value = list(Some("globex")).await.unwrap().json().await.unwrap();
    assert_eq!(bodies(&globex), ["g1"], "globex sees its own notes only");
    let res = list(Some("initech")).await.unwrap();
    assert_eq!(res.status(), 403, "unknown tenant");
    let res = list(None).await.unwrap();
    assert_eq!(res.status(), 401, "no tenant");
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "tenant_required"
    );

    // In SQL. The owner (a superuser: RLS does not bind it) sees every row,
    // each with the tenant_id its transaction defaulted to.
    let owner = PgPool::connect(&t.url("postgres")).await.unwrap();
    let id_of = async |slug: &str| -> String {
        sqlx::query_scalar("SELECT id FROM tenancy_tenants WHERE slug = $1")
            .bind(slug)
            .fetch_one(&owner)
            .await
            .unwrap()
    };
    let (acme_id, globex_id) = (id_of("acme").await, id_of("globex").await);
    let per_tenant: Vec<(String, i64)> =
        sqlx::query_as("SELECT tenant_id, count(*) FROM notes GROUP BY tenant_id ORDER BY 2 DESC")
            .fetch_all(&owner)
            .await
            .unwrap();
    assert_eq!(
        per_tenant,
        [(acme_id.clone(), 2), (globex_id.clone(), 1)],
        "the rows are there, in one shared table"
    );
    owner.close().await;

    // As the application's role, without a tenant: nothing (fail closed).
    let app_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&t.url(&t.role))
        .await
        .unwrap();
    let (unscoped,): (i64,) = sqlx::query_as("SELECT count(*) FROM notes")
        .fetch_one(&app_pool)
        .await
        .unwrap();
    assert_eq!(unscoped, 0, "no tenant set: no row visible");
    let touched = sqlx::query("UPDATE notes SET body = 'x'")
        .execute(&app_pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(touched, 0, "no tenant set: no row writable");
    let err = sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, 'x')")
        .bind(&acme_id)
        .execute(&app_pool)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501"),
        "no tenant set: no insert ({err})"
    );

    // Scoped to acme (as TenantDb does): acme's rows, and an INSERT naming
    // globex's tenant_id is refused by the policy.
    let mut tx = app_pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('tenancy.tenant_id', $1, true)")
        .bind(&acme_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    let (scoped,): (i64,) = sqlx::query_as("SELECT count(*) FROM notes")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(scoped, 2);
    let err = sqlx::query("INSERT INTO notes (tenant_id, body) VALUES ($1, 'planted')")
        .bind(&globex_id)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501"),
        "another tenant's tenant_id: {err}"
    );
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();
    app_pool.close().await;

    // And globex still has exactly its one note.
    let globex: Value = list(Some("globex")).await.unwrap().json().await.unwrap();
    assert_eq!(bodies(&globex), ["g1"]);
    drop(app);
}
