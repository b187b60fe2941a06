//! The README's quick start, as written there (keep the two in step), run
//! against a throwaway PostgreSQL database with an ordinary role.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::{Router, extract::FromRef, routing::get};
use http::Request;
use http_body_util::BodyExt;
use tenancy::sqlx::{self, AssertSqlSafe, Postgres};
use tenancy::{
    NewTenant, PgRowLevel, PgStore, Setting, Tenancy, TenancyConfig, Tenant, TenantDb,
    TenantSetting,
};
use tower::ServiceExt;

#[derive(Clone, FromRef)]
struct AppState {
    tenancy: Tenancy,
    db: TenantDb<Postgres>,
}

#[derive(serde::Deserialize)]
struct MaxNotes(i64);
impl TenantSetting for MaxNotes {
    const KEY: &'static str = "notes.max";
}

async fn notes(
    tenant: Tenant,
    db: TenantDb<Postgres>,
    max: Option<Setting<MaxNotes>>,
) -> Result<String, tenancy::DbError> {
    let max = max.map_or(100, |Setting(MaxNotes(max))| max);
    let mut tx = db.begin().await?;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM notes")
        .fetch_one(&mut *tx)
        .await?;
    Ok(format!("{}: {n} of {max} notes", tenant.name))
}

async fn quick_start(
    url: &str,
    app_role_url: &str,
) -> Result<(Tenancy, Router), Box<dyn std::error::Error>> {
    let url = url.to_owned();
    let pool = sqlx::PgPool::connect(app_role_url).await?;
    let rows = PgRowLevel::new(pool.clone()).with_table("notes", "tenant_id")?;
    // If SQL injection into the app is in your threat model, sign the setting:
    // PgRowLevel::new(pool.clone()).signed(key) (see SECURITY.md, "signed form").
    let tenancy = Tenancy::builder()
        .config(TenancyConfig::load()?)
        .store(PgStore::connect(&url).await?)
        .isolation(rows.clone())
        .rate_limits()
        .build()?;
    let _changes = tenancy.listen(url.parse()?);
    tenancy
        .lifecycle()
        .create(NewTenant::new("acme", "Acme Corp")?.plan("pro"))
        .await?;
    tenancy.lifecycle().suspend("acme", Some("unpaid")).await?;

    let app = Router::new()
        .route("/notes", get(notes))
        .layer(tenancy.layer())
        .with_state(AppState {
            tenancy: tenancy.clone(),
            db: TenantDb::new(rows),
        });
    Ok((tenancy, app))
}

#[tokio::test]
async fn the_readme_quick_start_runs() {
    let admin = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (db, role) = (format!("readme_{id}"), format!("readme_app_{id}"));
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let owner = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, tenant_id TEXT NOT NULL, body TEXT NOT NULL);
         CREATE ROLE {role} LOGIN;
         GRANT SELECT, INSERT ON notes TO {role};"
    )))
    .execute(&owner)
    .await
    .unwrap();
    let owner_rls = PgRowLevel::new(owner.clone());
    owner_rls
        .register_table("notes", "tenant_id")
        .await
        .unwrap();
    owner_rls.allow_role(&role).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap(); // no tenancy.yaml here

    let (tenancy, app) = quick_start(&url, &format!("postgres://{role}@127.0.0.1:5432/{db}"))
        .await
        .unwrap();
    let ask = || {
        Request::get("/notes")
            .header("x-tenant-id", "acme")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(app.clone().oneshot(ask()).await.unwrap().status(), 403);
    tenancy.lifecycle().activate("acme").await.unwrap();
    let res = app.clone().oneshot(ask()).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "Acme Corp: 0 of 100 notes");

    drop((tenancy, app));
    owner.close().await;
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE {db} WITH (FORCE)")))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!("DROP ROLE {role}")))
        .execute(&admin)
        .await
        .unwrap();
}
