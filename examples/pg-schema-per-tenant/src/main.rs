//! A PostgreSQL schema per tenant, with the tenant in the URL.
//!
//! - [`PgSchemaIsolation`] gives each tenant a schema `tenant_<id>`, owned
//!   by a role of the same name, created and migrated when the tenant is
//!   created (the migrations are `migrations/*.sql`, compiled into the
//!   binary). `TenantDb::begin` runs `SET LOCAL ROLE "tenant_<id>"` and
//!   points `search_path` at the schema for that transaction only, so the
//!   handlers' SQL is the same as for one shared schema (`SELECT … FROM
//!   notes`), and SQL naming another tenant's schema gets "permission
//!   denied".
//! - Only the `path` resolver is on (`/tenants/{tenant_id}/`, id or slug),
//!   and the tenant's routes are nested under that pattern: the resolver
//!   reads the tenant from the path, the routes must include it.
//! - `POST /signup` creates a tenant (schema and tables included).
//!   `POST /admin/tenants/{tenant}/suspend` and `…/activate` change its
//!   status, effective at its next request; they need `Authorization:
//!   Bearer $ADMIN_TOKEN` (without `ADMIN_TOKEN` they refuse everyone).
//!
//! `DATABASE_URL` must be allowed to create roles and schemas (`CREATEROLE`
//! and `CREATE` on the database; `postgres` in development). Give the
//! example a database of its own:
//!
//! ```text
//! createdb -h 127.0.0.1 -U postgres notes_schemas
//! DATABASE_URL=postgres://postgres@127.0.0.1/notes_schemas ADMIN_TOKEN=s3cret \
//!     cargo run -p example-pg-schema-per-tenant
//! curl -XPOST localhost:3000/signup -H 'content-type: application/json' -d '{"slug":"acme","name":"Acme"}'
//! curl -XPOST localhost:3000/tenants/acme/notes -H 'content-type: application/json' -d '{"body":"hi"}'
//! curl localhost:3000/tenants/acme/notes           # {"tenant":"acme","notes":[{"id":1,"body":"hi"}]}
//! psql -h 127.0.0.1 -U postgres notes_schemas -c '\dn'   # tenant_<acme's id>
//! curl -XPOST localhost:3000/admin/tenants/acme/suspend -H 'Authorization: Bearer s3cret'
//! curl -i localhost:3000/tenants/acme/notes        # 403 tenant_not_active
//! ```

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tenancy::sqlx::{self, Postgres};
use tenancy::{
    LifecycleError, Migration, Migrations, NewTenant, PgSchemaIsolation, PgStore, Problem,
    StoreError, Tenancy, TenancyConfig, Tenant, TenantDb,
};

/// The migrations, compiled into the binary; applied to every tenant's
/// schema when the tenant is created.
fn migrations() -> Result<Migrations, tenancy::DbError> {
    Migrations::new(vec![
        Migration {
            version: 1,
            name: "notes".into(),
            sql: include_str!("../migrations/0001_notes.sql").into(),
        },
        Migration {
            version: 2,
            name: "note_created_at".into(),
            sql: include_str!("../migrations/0002_note_created_at.sql").into(),
        },
    ])
}

#[derive(Clone, FromRef)]
struct AppState {
    tenancy: Tenancy,
    db: TenantDb<Postgres>,
    admin: AdminToken,
}

#[derive(Deserialize)]
struct NewNote {
    body: String,
}

/// `GET /tenants/{tenant}/notes`: the same SQL for every tenant.
async fn list_notes(
    tenant: Tenant,
    db: TenantDb<Postgres>,
) -> Result<Json<Value>, tenancy::DbError> {
    let mut tx = db.begin().await?; // this tenant's schema, for this transaction
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

/// `POST /tenants/{tenant}/notes`.
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

#[derive(Deserialize)]
struct Signup {
    slug: String,
    name: String,
}

/// The problem for a refused lifecycle call.
fn lifecycle_problem(err: LifecycleError) -> Response {
    let (status, code) = match &err {
        LifecycleError::Store(StoreError::NotFound(_)) => {
            (StatusCode::NOT_FOUND, "tenant_not_found")
        }
        LifecycleError::Store(StoreError::DuplicateSlug(_) | StoreError::DuplicateId(_)) => {
            (StatusCode::CONFLICT, "duplicate")
        }
        LifecycleError::Store(StoreError::InvalidSlug(_)) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_slug")
        }
        LifecycleError::Store(StoreError::InvalidTransition { .. }) => {
            (StatusCode::CONFLICT, "invalid_transition")
        }
        LifecycleError::Store(StoreError::Unavailable(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "lifecycle_failed"),
    };
    Problem::new(status, code, err.to_string()).into_response()
}

/// `POST /signup`: a new tenant, its schema made and migrated.
async fn signup(State(tenancy): State<Tenancy>, Json(body): Json<Signup>) -> Response {
    let new = match NewTenant::new(&body.slug, body.name) {
        Ok(new) => new,
        Err(e) => {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_slug",
                e.to_string(),
            )
            .into_response();
        }
    };
    match tenancy.lifecycle().create(new).await {
        Ok(tenant) => (StatusCode::CREATED, Json(tenant)).into_response(),
        Err(e) => lifecycle_problem(e),
    }
}

/// The operator's token (`ADMIN_TOKEN`); `None` refuses every request.
#[derive(Clone)]
struct AdminToken(Option<Arc<str>>);

/// An extractor: the request carries `Authorization: Bearer <ADMIN_TOKEN>`.
struct Operator;

impl<S> FromRequestParts<S> for Operator
where
    AdminToken: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let AdminToken(expected) = AdminToken::from_ref(state);
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match (expected, given) {
            (Some(expected), Some(given)) if same(expected.as_bytes(), given.as_bytes()) => {
                Ok(Operator)
            }
            _ => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "admin_token_required",
                "send Authorization: Bearer <ADMIN_TOKEN>",
            )),
        }
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /admin/tenants/{tenant}/suspend` (id or slug).
async fn suspend(
    _: Operator,
    State(tenancy): State<Tenancy>,
    Path(tenant): Path<String>,
) -> Response {
    match tenancy
        .lifecycle()
        .suspend(&tenant, Some("suspended by an operator"))
        .await
    {
        Ok(tenant) => Json(tenant).into_response(),
        Err(e) => lifecycle_problem(e),
    }
}

/// `POST /admin/tenants/{tenant}/activate` (id or slug).
async fn activate(
    _: Operator,
    State(tenancy): State<Tenancy>,
    Path(tenant): Path<String>,
) -> Response {
    match tenancy.lifecycle().activate(&tenant).await {
        Ok(tenant) => Json(tenant).into_response(),
        Err(e) => lifecycle_problem(e),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| {
        "set DATABASE_URL to a database of its own (e.g. postgres://postgres@127.0.0.1/notes_schemas after `createdb notes_schemas`)"
    })?;
    let admin = AdminToken(
        std::env::var("ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(Arc::from),
    );
    let pool = sqlx::PgPool::connect(&url).await?;
    let schemas = PgSchemaIsolation::new(pool, migrations()?);

    let mut config = TenancyConfig::default();
    config.resolution.resolvers = vec!["path".into()];
    config.resolution.path_pattern = "/tenants/{tenant_id}/".into();
    let tenancy = Tenancy::builder()
        .config(config)
        .store(PgStore::connect(&url).await?)
        .isolation(schemas.clone()) // lifecycle.create provisions the schema
        .build()?;
    // Suspensions made by other instances apply here at once. Stops when
    // dropped: keep it for as long as the server runs.
    let _changes = tenancy.listen(url.parse()?);

    // The tenant's routes, nested under the pattern the resolver reads.
    let tenant_api = Router::new().route("/notes", get(list_notes).post(add_note));
    let app = Router::new()
        .nest("/tenants/{tenant}", tenant_api)
        .layer(tenancy.layer()) // applies to the routes above only
        .route("/signup", post(signup))
        .route("/admin/tenants/{tenant}/suspend", post(suspend))
        .route("/admin/tenants/{tenant}/activate", post(activate))
        .with_state(AppState {
            tenancy,
            db: TenantDb::new(schemas),
            admin,
        });
    let addr = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}  (tenant routes under /tenants/<slug>/)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
