//! Shared tables under PostgreSQL row-level security (RLS).
//!
//! Every tenant's notes live in one `notes` table with a `tenant_id`
//! column. [`PgRowLevel::register_table`] puts the table under RLS, enabled
//! *and forced* (so even the table's owner is bound), with a policy that
//! compares `tenant_id` with the transaction-local setting
//! `tenancy.tenant_id`, and makes the column default to that setting.
//! `TenantDb::begin` sets it in the same round trip as `BEGIN`, from the
//! request's tenant. A transaction without it matches no row: SQL that
//! forgot its tenant sees nothing and can write nothing (fail closed).
//!
//! # Who connects as whom
//!
//! RLS never binds superusers or `BYPASSRLS` roles, whatever the policy
//! says. Every scoped transaction switches to the ordinary request role
//! `tenancy_request`, so even a pool of `postgres` is bound inside
//! `TenantDb::begin`; but SQL injected into a transaction could switch
//! back (`RESET ROLE`), and queries outside a scoped transaction are not
//! switched at all. So this example still uses two connections:
//!
//! - `DATABASE_URL`, the database's owner: creates the table, an ordinary
//!   role (`APP_ROLE`, default `notes_app`: `LOGIN NOSUPERUSER
//!   NOBYPASSRLS`, owning nothing), grants it the table, and registers the
//!   table with `PgRowLevel`. The tenant store (`PgStore`) and the change
//!   listener use it too: their tables are not tenant data.
//! - the pool that serves requests connects as `APP_ROLE`: `DATABASE_URL`
//!   with the user replaced. The role gets no password here, which works
//!   where the server trusts local connections (as a development server
//!   does). The app refuses to start if that role could bypass RLS.
//!
//! In production the owner's steps are migrations, and the app's role has
//! its own password and URL.
//!
//! ```text
//! createdb -h 127.0.0.1 -U postgres notes_rls     # a database of its own
//! DATABASE_URL=postgres://postgres@127.0.0.1/notes_rls cargo run -p example-pg-row-level
//! curl -XPOST localhost:3000/notes -H 'X-Tenant-Id: acme' -H 'content-type: application/json' -d '{"body":"hi"}'
//! curl localhost:3000/notes -H 'X-Tenant-Id: acme'     # {"tenant":"acme","notes":[{"id":1,"body":"hi"}]}
//! curl localhost:3000/notes -H 'X-Tenant-Id: globex'   # {"tenant":"globex","notes":[]}
//! curl -i localhost:3000/notes                         # 401 tenant_required
//! psql -h 127.0.0.1 -U notes_app notes_rls -c 'SELECT count(*) FROM notes'   # 0: no tenant set
//! ```
//!
//! Tenants `acme` and `globex` are created at start-up (if missing); the
//! `X-Tenant-Id` header (id or slug) names the tenant of a request.

use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tenancy::sql::ident::quote_ident;
use tenancy::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tenancy::sqlx::{self, AssertSqlSafe, PgPool, Postgres};
use tenancy::{
    LifecycleError, NewTenant, PgRowLevel, PgStore, StoreError, Tenancy, TenancyConfig, Tenant,
    TenantDb,
};

#[derive(Clone, FromRef)]
struct AppState {
    tenancy: Tenancy,
    db: TenantDb<Postgres>,
}

#[derive(Deserialize)]
struct NewNote {
    body: String,
}

/// `GET /notes`: the tenant's notes. No `WHERE tenant_id = …`: RLS adds it.
async fn list_notes(
    tenant: Tenant,
    db: TenantDb<Postgres>,
) -> Result<Json<Value>, tenancy::DbError> {
    let mut tx = db.begin().await?; // scoped to the request's tenant
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let notes: Vec<Value> = rows
        .into_iter()
        .map(|(id, body)| json!({ "id": id, "body": body }))
        .collect();
    Ok(Json(json!({ "tenant": tenant.slug, "notes": notes })))
}

/// `POST /notes`: no `tenant_id` either; the column defaults to the
/// transaction's tenant, and the policy refuses any other value.
async fn add_note(
    db: TenantDb<Postgres>,
    Json(note): Json<NewNote>,
) -> Result<(StatusCode, Json<Value>), tenancy::DbError> {
    let mut tx = db.begin().await?;
    let (id,): (i64,) = sqlx::query_as("INSERT INTO notes (body) VALUES ($1) RETURNING id")
        .bind(&note.body)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "body": note.body })),
    ))
}

/// As the owner: the table, the application's role and its grants, and RLS
/// on the table (idempotent, so restarts are fine).
async fn set_up(owner: &PgPool, role: &str) -> Result<(), Box<dyn std::error::Error>> {
    sqlx::raw_sql(
        // The key leads with the tenant: a key of its own would tell one
        // tenant that another's id exists (`tenancy doctor` reports it).
        "CREATE TABLE IF NOT EXISTS notes (
             id        BIGSERIAL,
             tenant_id TEXT NOT NULL,
             body      TEXT NOT NULL,
             PRIMARY KEY (tenant_id, id)
         )",
    )
    .execute(owner)
    .await?;
    // Role names cannot be bound as parameters: `quote_ident` checked it
    // (letters, digits, '-', '_') and quoted it.
    let role_name = role;
    let role = quote_ident(role)?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DO $$ BEGIN
             CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS;
         EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO {role};
         GRANT USAGE ON SEQUENCE notes_id_seq TO {role};"
    )))
    .execute(owner)
    .await?;
    // ENABLE + FORCE ROW LEVEL SECURITY, the policy, the column default,
    // and the request role `tenancy_request` that every scoped transaction
    // switches to; the app's role may switch to it.
    let rls = PgRowLevel::new(owner.clone());
    rls.register_table("notes", "tenant_id").await?;
    rls.allow_role(role_name).await?;
    Ok(())
}

/// Refuses to serve through a role that RLS would not bind.
async fn check_bound_by_rls(app: &PgPool) -> Result<(), Box<dyn std::error::Error>> {
    let (role, bypasses): (String, bool) = sqlx::query_as(
        "SELECT rolname::text, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(app)
    .await?;
    if bypasses {
        return Err(format!(
            "role {role} is a superuser or has BYPASSRLS: row-level security would not apply; set APP_ROLE to an ordinary role"
        )
        .into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| {
        "set DATABASE_URL to a database of its own, as its owner (e.g. postgres://postgres@127.0.0.1/notes_rls after `createdb notes_rls`)"
    })?;
    let role = std::env::var("APP_ROLE").unwrap_or_else(|_| "notes_app".into());
    let owner_options: PgConnectOptions = url.parse()?;
    let owner = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(owner_options.clone())
        .await?;
    set_up(&owner, &role).await?;
    owner.close().await;

    // Requests run as the ordinary role: RLS applies to every query.
    let app_pool = PgPoolOptions::new()
        .max_connections(10)
        .connect_with(owner_options.clone().username(&role))
        .await?;
    check_bound_by_rls(&app_pool).await?;
    // The table's RLS is already set up: just record it (for `drop`
    // deprovisioning), no SQL.
    let rows = PgRowLevel::new(app_pool).with_table("notes", "tenant_id")?;

    let mut config = TenancyConfig::default();
    config.resolution.resolvers = vec!["header".into()];
    let tenancy = Tenancy::builder()
        .config(config)
        .store(PgStore::connect(&url).await?)
        .isolation(rows.clone())
        .build()?;
    // Changes made by other instances (a suspension, say) apply here at
    // once. Stops when dropped: keep it for as long as the server runs.
    let _changes = tenancy.listen(owner_options);

    for slug in ["acme", "globex"] {
        match tenancy
            .lifecycle()
            .create(NewTenant::new(slug, slug)?)
            .await
        {
            Ok(_) | Err(LifecycleError::Store(StoreError::DuplicateSlug(_))) => {}
            Err(e) => return Err(e.into()),
        }
    }

    let app = Router::new()
        .route("/notes", get(list_notes).post(add_note))
        .layer(tenancy.layer())
        .with_state(AppState {
            tenancy,
            db: TenantDb::new(rows),
        });
    let addr = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}  (tenants acme and globex, named by X-Tenant-Id)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
