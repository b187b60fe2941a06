//! Issue 26, finding 8, through the binary: `tenancy serve` on PostgreSQL
//! row level with `lifecycle.owner_database_url` and
//! `lifecycle.row_level_signing_key` connects as an ordinary role, and SQL
//! that role runs cannot switch a transaction to another tenant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN_TOKEN, Cli, PgTestDb, Sending, admin_url, id_of, serve, strs};
use serde_json::{Value, json};
use sqlx::Connection;

const KEY: &str = "8d0f7f4c4d3b2a19e1c0b7a6958473625140f3e2d1c0b9a8f7e6d5c4b3a29180";

/// A login role without privileges, dropped (after its database) on drop.
struct AppRole(String);

impl AppRole {
    async fn new() -> Self {
        let name = format!("app_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {name} LOGIN")))
            .execute(&mut admin)
            .await
            .unwrap();
        Self(name)
    }
}

impl Drop for AppRole {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url()).await {
                        let _ =
                            sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {name}")))
                                .execute(&mut admin)
                                .await;
                    }
                });
        })
        .join();
    }
}

async fn call(
    method: &str,
    url: String,
    tenant: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .bearer_auth(ADMIN_TOKEN);
    if let Some(tenant) = tenant {
        req = req.header("x-tenant-id", tenant);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.sent().await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn serve_as_an_ordinary_role_with_a_signed_tenant_setting() {
    let role = AppRole::new().await;
    let db = PgTestDb::new().await;
    let app_url = db.url.replacen(
        "postgres://postgres@",
        &format!("postgres://{}@", role.0),
        1,
    );
    assert_ne!(app_url, db.url, "the test URL names the postgres role");

    // Misconfigurations are refused before anything runs.
    let mut lone_key = Cli::with_url(&app_url);
    lone_key.env.push((
        "TENANCY__LIFECYCLE__ROW_LEVEL_SIGNING_KEY".into(),
        KEY.into(),
    ));
    let err = lone_key.fail(&["tenants", "list"]);
    assert!(err.contains("needs lifecycle.owner_database_url"), "{err}");
    let mut as_owner = Cli::with_url(&db.url);
    as_owner.env.extend([
        (
            "TENANCY__LIFECYCLE__OWNER_DATABASE_URL".into(),
            db.url.clone(),
        ),
        (
            "TENANCY__LIFECYCLE__ROW_LEVEL_SIGNING_KEY".into(),
            KEY.into(),
        ),
    ]);
    let err = as_owner.fail(&["tenants", "list"]);
    assert!(
        err.contains("row_level_signing_key"),
        "a superuser pool is refused: {err}"
    );

    let mut cli = Cli::with_url(&app_url);
    cli.env.extend([
        (
            "TENANCY__LIFECYCLE__OWNER_DATABASE_URL".into(),
            db.url.clone(),
        ),
        (
            "TENANCY__LIFECYCLE__ROW_LEVEL_SIGNING_KEY".into(),
            KEY.into(),
        ),
    ]);
    let ta = id_of(&cli.create("ta", "A"));
    let tb = id_of(&cli.create("tb", "B"));
    let server = serve(&cli);
    for (slug, title) in [("ta", "a's note"), ("tb", "b's note")] {
        let (status, body) = call(
            "POST",
            format!("{}/api/notes", server.base),
            Some(slug),
            Some(json!({"title": title})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = call(
        "GET",
        format!("{}/api/notes", server.base),
        Some("ta"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let titles = strs(&body["items"], "title");
    assert_eq!(titles, ["a's note"]);

    // The server's role, in a transaction scoped to ta the way the server
    // scopes it, forges the setting: it reaches none of tb's rows.
    let mut app = sqlx::PgConnection::connect(&app_url).await.unwrap();
    let mut tx = app.begin().await.unwrap();
    sqlx::query("SELECT set_config('tenancy.tenant_id', $1, true)")
        .bind(&tb)
        .execute(&mut *tx)
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 0, "a forged tenant setting reads nothing");
    let written = sqlx::query("INSERT INTO notes (tenant_id, title) VALUES ($1, 'forged')")
        .bind(&tb)
        .execute(&mut *tx)
        .await;
    assert!(written.is_err(), "a forged tenant setting writes nothing");
    drop(tx);
    // Nor can it read the key.
    let key = sqlx::query("SELECT * FROM tenancy_rls.setting_key")
        .execute(&mut app)
        .await;
    assert!(key.is_err(), "the key is the owner's");

    // Export and import still see the tenant's rows under the signed form.
    let rows = cli.json(&["export", "notes", "--tenant-id", "ta"]);
    let titles = strs(&rows, "title");
    assert_eq!(titles, ["a's note"]);
    cli.ok(&["tenants", "export", "ta", "--output", "ta.tar"]);
    let lite = Cli::sqlite();
    std::fs::copy(cli.path("ta.tar"), lite.path("ta.tar")).unwrap();
    let copy = id_of(&lite.json(&["tenants", "import", "ta.tar", "--json"]));
    assert_eq!(copy, ta, "the archived id is free there");
    let rows = lite.json(&["export", "notes", "--tenant-id", "ta"]);
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    drop(server);
    drop(db);
}
