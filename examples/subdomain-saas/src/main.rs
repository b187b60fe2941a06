//! A SaaS with one subdomain per tenant: `acme.app.localhost` is acme's.
//!
//! - Only the `subdomain` resolver is enabled, so a header or a path can
//!   never switch tenants: the host decides.
//! - Sign-up happens on the bare domain (no tenant) and creates the tenant
//!   through the lifecycle, which makes and migrates its own SQLite file
//!   (`DATA_DIR/tenants/tenant_<id>.db`).
//! - Tenant routes take `TenantDb<Sqlite>`: a transaction on that tenant's
//!   file, and only that one.
//!
//! ```text
//! cargo run -p example-subdomain-saas
//! curl -XPOST localhost:3000/signup -H 'content-type: application/json' -d '{"slug":"acme","name":"Acme"}'   # 201
//! curl -XPOST localhost:3000/notes -H 'Host: acme.app.localhost' -H 'content-type: application/json' -d '{"body":"hi"}'
//! curl localhost:3000/notes -H 'Host: acme.app.localhost'                          # [{"id":1,"body":"hi"}]
//! curl localhost:3000/notes -H 'Host: acme.app.localhost' -H 'X-Tenant-Id: globex' # still acme's: the header is ignored
//! curl localhost:3000/notes -H 'Host: globex.app.localhost'                        # 403 unknown_tenant (until globex signs up)
//! curl localhost:3000/notes                                                       # 401: "send a subdomain of app.localhost"
//! ```
//!
//! (`*.localhost` resolves to the loopback address in most browsers and in
//! curl, so `curl acme.app.localhost:3000/notes` works too.)
//!
//! `BASE_DOMAIN` (default `app.localhost`), `DATA_DIR` (default
//! `./data-subdomain-saas`), `BIND` (default `127.0.0.1:3000`).

use std::path::PathBuf;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tenancy::sqlx::{self, Sqlite};
use tenancy::{
    LifecycleError, Migration, Migrations, NewTenant, Problem, SqliteDatabaseIsolation,
    SqliteStore, StoreError, Tenancy, TenancyConfig, Tenant, TenantDb, TenantInfo,
};

#[derive(Clone, FromRef)]
struct AppState {
    tenancy: Tenancy,
    db: TenantDb<Sqlite>,
}

#[derive(Deserialize)]
struct Signup {
    slug: String,
    name: String,
}

/// On the bare domain: creates the tenant and its database.
async fn signup(
    State(tenancy): State<Tenancy>,
    // `None` on the bare domain; a refused subdomain (unknown, suspended)
    // answers its 403 before this handler runs.
    on_tenant_site: Option<Tenant>,
    Json(body): Json<Signup>,
) -> Result<(StatusCode, Json<TenantInfo>), Problem> {
    if let Some(tenant) = on_tenant_site {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "sign up on the bare domain, not on {}'s subdomain",
                tenant.slug
            ),
        ));
    }
    let new = NewTenant::new(&body.slug, body.name).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_slug",
            e.to_string(),
        )
    })?;
    let tenant = tenancy
        .lifecycle()
        .create(new)
        .await
        .map_err(signup_problem)?;
    Ok((StatusCode::CREATED, Json(tenant)))
}

fn signup_problem(err: LifecycleError) -> Problem {
    match &err {
        LifecycleError::Store(StoreError::DuplicateSlug(_)) => {
            Problem::new(StatusCode::CONFLICT, "slug_taken", err.to_string())
        }
        LifecycleError::Store(StoreError::InvalidSlug(_)) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_slug",
            err.to_string(),
        ),
        LifecycleError::Store(StoreError::Unavailable(_)) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "tenant_store_unavailable",
            "the tenant store is unavailable: retry after the delay",
        )
        .retry_after(1),
        _ => {
            eprintln!("signup failed: {err}");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "signup_failed",
                "the tenant could not be created; nothing was kept: try again",
            )
        }
    }
}

#[derive(Deserialize)]
struct NewNote {
    body: String,
}

async fn list_notes(db: TenantDb<Sqlite>) -> Result<Json<Value>, tenancy::DbError> {
    let mut tx = db.begin().await?; // this tenant's file, and only it
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let notes: Vec<Value> = rows
        .into_iter()
        .map(|(id, body)| json!({ "id": id, "body": body }))
        .collect();
    Ok(Json(Value::Array(notes)))
}

async fn add_note(
    tenant: Tenant,
    db: TenantDb<Sqlite>,
    Json(note): Json<NewNote>,
) -> Result<(StatusCode, Json<Value>), tenancy::DbError> {
    let mut tx = db.begin().await?;
    let (id,): (i64,) = sqlx::query_as("INSERT INTO notes (body) VALUES (?) RETURNING id")
        .bind(&note.body)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "body": note.body, "tenant": tenant.slug })),
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base_domain = std::env::var("BASE_DOMAIN").unwrap_or_else(|_| "app.localhost".into());
    let data =
        PathBuf::from(std::env::var("DATA_DIR").unwrap_or_else(|_| "./data-subdomain-saas".into()));
    std::fs::create_dir_all(&data)?;

    // Configured in code: only the subdomain says which tenant a request is for.
    let mut config = TenancyConfig::default();
    config.resolution.resolvers = vec!["subdomain".into()];
    config.resolution.base_domain = Some(base_domain.clone());

    let migrations = Migrations::new(vec![Migration {
        version: 1,
        name: "notes".into(),
        sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)".into(),
    }])?;
    let files = SqliteDatabaseIsolation::new(data.join("tenants"), migrations);
    let store =
        SqliteStore::connect(&format!("sqlite://{}", data.join("tenancy.db").display())).await?;
    let tenancy = Tenancy::builder()
        .config(config)
        .store(store)
        .isolation(files.clone()) // the lifecycle makes each tenant's file
        .build()?;

    let app = Router::new()
        .route("/signup", post(signup))
        .route("/notes", get(list_notes).post(add_note))
        .layer(tenancy.layer())
        .with_state(AppState {
            tenancy,
            db: TenantDb::new(files),
        });

    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}  (tenants at <slug>.{base_domain})");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
