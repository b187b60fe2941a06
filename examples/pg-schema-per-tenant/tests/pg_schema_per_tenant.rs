//! Runs the schema-per-tenant example on a database of its own: sign-up
//! makes a migrated schema, notes land in their tenant's schema only, a
//! suspension applies at the next request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use example_support::{Running, client};
use serde_json::{Value, json};
use tenancy::sqlx::{self, AssertSqlSafe, Connection, PgConnection, PgPool, Postgres};
use tenancy::{Migrations, PgSchemaIsolation, TenantDb, TenantId};

const ADMIN_TOKEN: &str = "example-admin-token";

/// The server the tests use (`TENANCY_TEST_PG` overrides it).
fn admin_url() -> String {
    std::env::var("TENANCY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database for this test, dropped with the roles of its tenant schemas
/// (roles are cluster-wide) when the test ends, also when it fails.
struct Throwaway {
    name: String,
    url: String,
}

impl Throwaway {
    async fn new() -> Self {
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} ({e}): run scripts/test.sh", admin_url()));
        let name = format!("ex_schema_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
        let admin = admin_url();
        let (base, _) = admin.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        Self { name, url }
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let (name, url) = (self.name.clone(), self.url.clone());
        // Drop is not async: a private runtime on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut roles: Vec<String> = Vec::new();
                if let Ok(mut db) = PgConnection::connect(&url).await {
                    roles = sqlx::query_scalar(
                        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'",
                    )
                    .fetch_all(&mut db)
                    .await
                    .unwrap_or_default();
                    let _ = db.close().await;
                }
                if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::query(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                    for role in roles {
                        // Names read back from pg_namespace, quoted after
                        // the same check the library makes.
                        if let Ok(role) = tenancy::sql::ident::quote_ident(&role) {
                            let _ =
                                sqlx::query(AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
                                    .execute(&mut admin)
                                    .await;
                        }
                    }
                }
            });
        })
        .join();
    }
}

#[tokio::test]
async fn each_tenant_has_its_own_schema() {
    let t = Throwaway::new().await;
    let app = Running::start(
        env!("CARGO_BIN_EXE_example-pg-schema-per-tenant"),
        &[("DATABASE_URL", &t.url), ("ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    let http = client();
    let pool = PgPool::connect(&t.url).await.unwrap();

    // Sign-up creates the tenant and its schema.
    let mut ids = Vec::new();
    for slug in ["acme", "globex"] {
        let res = http
            .post(app.url("/signup"))
            .json(&json!({"slug": slug, "name": slug}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        let tenant: Value = res.json().await.unwrap();
        assert_eq!(tenant["status"], "active");
        let id: TenantId = tenant["id"].as_str().unwrap().parse().unwrap();
        let schema_exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'tenant_' || $1)",
        )
        .bind(id.as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(schema_exists, "{slug}'s schema tenant_{id}");
        ids.push(id);
    }
    let res = http
        .post(app.url("/signup"))
        .json(&json!({"slug": "acme", "name": "again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409, "a slug is taken once");

    for (tenant, body) in [("acme", "a1"), ("acme", "a2"), ("globex", "g1")] {
        let res = http
            .post(app.url(&format!("/tenants/{tenant}/notes")))
            .json(&json!({ "body": body }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    let list = |tenant: &str| {
        http.get(app.url(&format!("/tenants/{tenant}/notes")))
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
    let acme: Value = list("acme").await.unwrap().json().await.unwrap();
    assert_eq!(acme["tenant"], "acme");
    assert_eq!(bodies(&acme), ["a1", "a2"]);
    let globex: Value = list("globex").await.unwrap().json().await.unwrap();
    assert_eq!(bodies(&globex), ["g1"]);
    // By id as well as by slug.
    let by_id: Value = list(ids[1].as_str()).await.unwrap().json().await.unwrap();
    assert_eq!(bodies(&by_id), ["g1"]);

    // In SQL: each tenant's rows are in its own schema, fully migrated.
    for (id, expected) in ids.iter().zip([2i64, 1]) {
        // A validated, quoted identifier: names cannot be bound.
        let schema = PgSchemaIsolation::schema_of(id).unwrap();
        let (n,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT count(*) FROM {schema}.notes"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(n, expected, "{schema}.notes");
        let (version,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT max(version) FROM {schema}._tenancy_migrations"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(version, 2, "{schema} has both migrations");
    }
    // A transaction scoped to acme cannot read globex's schema by name.
    let db: TenantDb<Postgres> =
        TenantDb::new(PgSchemaIsolation::new(pool.clone(), Migrations::none()));
    let mut tx = db.begin_for(&ids[0]).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM notes")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let globex_schema = PgSchemaIsolation::schema_of(&ids[1]).unwrap();
    let err = sqlx::query(AssertSqlSafe(format!(
        "SELECT count(*) FROM {globex_schema}.notes"
    )))
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501"),
        "permission denied: {err}"
    );
    tx.rollback().await.unwrap();
    pool.close().await;

    // Suspension, by an operator, applies at the next request.
    let suspend = http.post(app.url("/admin/tenants/acme/suspend"));
    let res = suspend.try_clone().unwrap().send().await.unwrap();
    assert_eq!(res.status(), 401, "the admin routes need the token");
    let res = suspend.bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "suspended");
    let res = list("acme").await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "tenant_not_active"
    );
    assert_eq!(
        list("globex").await.unwrap().status(),
        200,
        "others unaffected"
    );
    let res = http
        .post(app.url("/admin/tenants/acme/activate"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let acme: Value = list("acme").await.unwrap().json().await.unwrap();
    assert_eq!(bodies(&acme), ["a1", "a2"], "served again, data kept");

    // Only the path names the tenant: a header is ignored.
    let res = http
        .get(app.url("/tenants/acme/notes"))
        .header("x-tenant-id", "globex")
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["tenant"], "acme");
    let res = list("nope").await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "unknown_tenant");

    drop(app);
}
