//! `tenancy migrate` end to end: parallel, one tenant's failure
//! reported without stopping the others, resumable, new tenants at the
//! latest version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection};

use common::{PgTestDb, strs};

fn tenancy(dir: &Path, url: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenancy"));
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .args(["--database-url", url])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn write(dir: &Path, name: &str, sql: &str) {
    std::fs::write(dir.join(name), sql).unwrap();
}

/// Runs the scenario on `url` with `strategy`; `version_of(slug)` reads a
/// tenant's recorded version; `plant(slug)` makes v3 fail for that tenant.
async fn scenario<V, P, FV, FP>(url: &str, strategy: &str, version_of: V, plant: P, unplant: P)
where
    V: Fn(String) -> FV,
    P: Fn(String) -> FP,
    FV: std::future::Future<Output = i64>,
    FP: std::future::Future<Output = ()>,
{
    let work = tempfile::tempdir().unwrap();
    let migrations = work.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    write(
        &migrations,
        "0001_items.sql",
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);",
    );
    let env = [
        ("TENANCY__LIFECYCLE__ISOLATION_STRATEGY", strategy),
        (
            "TENANCY__LIFECYCLE__MIGRATIONS_DIR",
            migrations.to_str().unwrap(),
        ),
    ];
    for slug in ["t-one", "t-two", "t-three"] {
        let out = tenancy(
            work.path(),
            url,
            &env,
            &["tenants", "create", "--slug", slug, "--name", slug],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for slug in ["t-one", "t-two", "t-three"] {
        assert_eq!(
            version_of(slug.into()).await,
            1,
            "provisioning applied the migrations"
        );
    }
    // v2 for all; v3 fails for t-two only (a row with id 1 already exists there).
    write(
        &migrations,
        "0002_more.sql",
        "CREATE TABLE more (id INTEGER PRIMARY KEY);",
    );
    write(
        &migrations,
        "0003_seed.sql",
        "INSERT INTO items (id, name) VALUES (1, 'seed');",
    );
    plant("t-two".into()).await;
    let out = tenancy(
        work.path(),
        url,
        &env,
        &["migrate", "--jobs", "2", "--json"],
    );
    assert!(
        !out.status.success(),
        "a failed tenant makes the exit status 1"
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["migrated"].as_array().unwrap().len(),
        2,
        "{summary}"
    );
    assert_eq!(summary["failed"][0]["slug"], "t-two", "{summary}");
    assert!(
        summary["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("0003_seed"),
        "{summary}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed to migrate"));
    assert_eq!(version_of("t-one".into()).await, 3);
    assert_eq!(
        version_of("t-two".into()).await,
        1,
        "the failed tenant stays at its previous version"
    );
    assert_eq!(version_of("t-three".into()).await, 3);

    // Fix and re-run: only t-two is migrated.
    unplant("t-two".into()).await;
    let out = tenancy(work.path(), url, &env, &["migrate", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let migrated = strs(&summary["migrated"], "slug");
    assert_eq!(migrated, ["t-two"]);
    assert_eq!(summary["current"].as_array().unwrap().len(), 2);
    assert_eq!(version_of("t-two".into()).await, 3);

    // A tenant created later starts at the latest version.
    let out = tenancy(
        work.path(),
        url,
        &env,
        &["tenants", "create", "--slug", "t-late", "--name", "late"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(version_of("t-late".into()).await, 3);

    // Plain-text output: a summary line.
    let out = tenancy(work.path(), url, &env, &["migrate"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("migrated: 0, already current: 4, failed: 0")
    );
}

async fn tenant_id(url: &str, slug: &str) -> String {
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar("SELECT id FROM tenancy_tenants WHERE slug = $1")
            .bind(slug)
            .fetch_one(&mut c)
            .await
            .unwrap()
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar("SELECT id FROM tenancy_tenants WHERE slug = ?1")
            .bind(slug)
            .fetch_one(&mut c)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn migrate_schemas_on_postgres() {
    // The database and the tenants' cluster-wide roles go with `db`.
    let db = PgTestDb::new().await;
    let url = db.url.clone();
    let u = url.clone();
    let version_of = |slug: String| {
        let u = u.clone();
        async move {
            let id = tenant_id(&u, &slug).await;
            let mut c = sqlx::PgConnection::connect(&u).await.unwrap();
            sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT COALESCE(MAX(version), 0) FROM \"tenant_{id}\"._tenancy_migrations"
            )))
            .fetch_one(&mut c)
            .await
            .unwrap()
        }
    };
    let sql_in = |u: String, template: &'static str| {
        move |slug: String| {
            let u = u.clone();
            async move {
                let id = tenant_id(&u, &slug).await;
                let mut c = sqlx::PgConnection::connect(&u).await.unwrap();
                sqlx::query(AssertSqlSafe(
                    template.replace("{schema}", &format!("\"tenant_{id}\"")),
                ))
                .execute(&mut c)
                .await
                .unwrap();
            }
        }
    };
    scenario(
        &url,
        "schema",
        version_of,
        sql_in(
            url.clone(),
            "INSERT INTO {schema}.items (id, name) VALUES (1, 'planted')",
        ),
        sql_in(url.clone(), "DELETE FROM {schema}.items"),
    )
    .await;
}

#[tokio::test]
async fn migrate_sqlite_files() {
    let db_dir = tempfile::tempdir().unwrap();
    let file = db_dir.path().join("main.db");
    let url = format!("sqlite://{}", file.display());
    let tenant_file = {
        let (u, f) = (url.clone(), file.clone());
        move |slug: String| {
            let (u, f) = (u.clone(), f.clone());
            async move {
                let id = tenant_id(&format!("{u}?mode=rw"), &slug).await;
                format!("sqlite://{}.tenants/tenant_{id}.db", f.display())
            }
        }
    };
    let tf = tenant_file.clone();
    let version_of = move |slug: String| {
        let tf = tf.clone();
        async move {
            let mut c = sqlx::SqliteConnection::connect(&tf(slug).await)
                .await
                .unwrap();
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _tenancy_migrations")
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    };
    let run_sql = |sql: &'static str| {
        let tf = tenant_file.clone();
        move |slug: String| {
            let tf = tf.clone();
            async move {
                let mut c = sqlx::SqliteConnection::connect(&tf(slug).await)
                    .await
                    .unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
        }
    };
    scenario(
        &url,
        "database",
        version_of,
        run_sql("INSERT INTO items (id, name) VALUES (1, 'planted')"),
        run_sql("DELETE FROM items"),
    )
    .await;
}
