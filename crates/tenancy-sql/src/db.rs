//! [`TenantDb`]: one scoped-transaction API for every strategy.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{Database, Transaction};
use tenancy_core::{TenantId, context};

/// Errors of the SQL layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// `begin()` ran outside any tenant scope.
    #[error(
        "no current tenant: call begin() inside a request behind TenantLayer, or inside tenancy::with_tenant"
    )]
    NoTenant,
    /// A name derived from a tenant or given by the application is unsafe.
    #[error("{0}")]
    UnsafeName(String),
    /// A migration could not be read or applied.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The query interceptor refused the statement (it could not prove it
    /// stays within the tenant).
    #[error("{0}")]
    Refused(String),
    /// The tenant's storage (its SQLite file) is not there: the tenant was
    /// never provisioned, or its file was removed by hand.
    #[error("{0}")]
    MissingStorage(String),
    /// The database failed.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

/// How a strategy opens a transaction scoped to one tenant.
///
/// Implemented by every isolation strategy of this crate; implement it to
/// plug in your own.
#[async_trait]
pub trait ScopedBegin<DB: Database>: Send + Sync + 'static {
    /// A transaction that can only see and change `tenant`'s data.
    async fn begin_for(&self, tenant: &TenantId) -> Result<Transaction<'static, DB>, DbError>;
}

/// Scoped transactions for the current tenant, whatever the strategy:
/// application SQL is the same for row-level, schema and database
/// isolation.
///
/// In a handler it is an extractor bound to the request's tenant (see the
/// `tenancy` crate docs); elsewhere `begin` uses the task's tenant:
///
/// ```
/// use tenancy::{MemoryStore, Migration, Migrations, NewTenant, SqliteDatabaseIsolation, Tenancy, TenantDb};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let migrations = Migrations::new(vec![Migration {
///     version: 1,
///     name: "notes".into(),
///     sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)".into(),
/// }])?;
/// let files = SqliteDatabaseIsolation::new(dir.path(), migrations);
/// let tenancy = Tenancy::builder().store(MemoryStore::new()).isolation(files.clone()).build()?;
/// let acme = tenancy.lifecycle().create(NewTenant::new("acme", "Acme")?).await?; // its file
///
/// let db = TenantDb::new(files);
/// assert!(db.begin().await.is_err()); // no tenant: refused, never unscoped
/// let notes = tenancy::with_tenant(acme.id, async {
///     let mut tx = db.begin().await?; // scoped to tenancy::current()
///     sqlx::query("INSERT INTO notes (body) VALUES ('hi')").execute(&mut *tx).await?;
///     let notes: Vec<(i64, String)> = sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
///         .fetch_all(&mut *tx)
///         .await?;
///     tx.commit().await?;
///     Ok::<_, tenancy::DbError>(notes)
/// }).await?;
/// assert_eq!(notes, [(1, "hi".to_owned())]);
/// # Ok(()) }
/// ```
pub struct TenantDb<DB: Database> {
    scope: Arc<dyn ScopedBegin<DB>>,
    /// Set when extracted in a handler: the request's tenant.
    tenant: Option<TenantId>,
}

impl<DB: Database> Clone for TenantDb<DB> {
    fn clone(&self) -> Self {
        Self {
            scope: self.scope.clone(),
            tenant: self.tenant.clone(),
        }
    }
}

impl<DB: Database> TenantDb<DB> {
    /// Scoped transactions opened by `strategy`.
    pub fn new(strategy: impl ScopedBegin<DB>) -> Self {
        Self {
            scope: Arc::new(strategy),
            tenant: None,
        }
    }

    /// A transaction scoped to the tenant: the request's when this
    /// `TenantDb` was extracted in a handler, else the current task's
    /// (`tenancy::current()`, set by the tenant layer and by
    /// `tenancy::with_tenant`). [`DbError::NoTenant`] outside a tenant
    /// scope: never an unscoped transaction.
    pub async fn begin(&self) -> Result<Transaction<'static, DB>, DbError> {
        match &self.tenant {
            Some(tenant) => self.scope.begin_for(tenant).await,
            None => {
                let tenant = context::current().ok_or(DbError::NoTenant)?;
                self.scope.begin_for(&tenant).await
            }
        }
    }

    /// The tenant this handle is bound to, when it was extracted in a
    /// handler.
    pub fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }

    /// A transaction scoped to an explicit tenant (jobs, admin tools).
    pub async fn begin_for(&self, tenant: &TenantId) -> Result<Transaction<'static, DB>, DbError> {
        self.scope.begin_for(tenant).await
    }
}

impl<DB: Database> std::fmt::Debug for TenantDb<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantDb")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// `TenantDb` as an axum extractor (feature `axum`): the handle in the
/// router's state (`TenantDb<DB>: FromRef<S>`), bound to the request's
/// tenant. A request without a valid tenant is refused before the handler
/// runs, with the same 401/403 as the `Tenant` extractor.
#[cfg(feature = "axum")]
impl<S, DB> axum::extract::FromRequestParts<S> for TenantDb<DB>
where
    DB: Database,
    TenantDb<DB>: axum::extract::FromRef<S>,
    S: Send + Sync,
{
    type Rejection = tenancy_axum::TenantError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let tenant =
            <tenancy_axum::Tenant as axum::extract::FromRequestParts<S>>::from_request_parts(
                parts, state,
            )
            .await?;
        let mut db = <TenantDb<DB> as axum::extract::FromRef<S>>::from_ref(state);
        db.tenant = Some(tenant.id.clone());
        Ok(db)
    }
}

/// `DbError` as a problem+json response (feature `axum`), so handlers can
/// return `Result<_, DbError>`:
///
/// | Error | Status | `code` |
/// |---|---|---|
/// | database unreachable, out of resources, shutting down (SQLSTATE classes 08, 53, 57; I/O errors, pool timeouts) | 503 + `Retry-After` | `database_unavailable` |
/// | the tenant's database is read-only (a move paused its writes) | 503 + `Retry-After` | `writes_paused` |
/// | the tenant's schema, database, file or table is missing (SQLSTATE 3D000, 3F000, 42P01; SQLite `no such table`) | 503 + `Retry-After` | `tenant_storage_missing` |
/// | a unique key taken | 409 | `duplicate` |
/// | `fetch_one` found no row | 404 | `not_found` |
/// | anything else | 500 | `database_error`, details only in the log |
/// Whether a database error says the storage itself is gone: a database
/// (`3D000`), schema (`3F000`) or table (`42P01`) that does not exist, or
/// SQLite's `no such table`. A server fault, never the client's.
pub fn is_missing_storage(error: &(dyn sqlx::error::DatabaseError + 'static)) -> bool {
    match error.code().as_deref() {
        Some("3D000" | "3F000" | "42P01") => true,
        // SQLite reports a missing table as the generic SQLITE_ERROR (1).
        Some("1") => error.message().starts_with("no such table"),
        _ => false,
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for DbError {
    fn into_response(self) -> axum::response::Response {
        use http::StatusCode;
        use tenancy_axum::Problem;

        let unavailable = |code: &'static str, detail: &str, secs: u64| {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
                .retry_after(secs)
                .into_response()
        };
        let storage_missing = || {
            tracing::error!(error = %self, "tenant storage missing");
            unavailable(
                "tenant_storage_missing",
                "this tenant's storage (schema, database or file) is missing: an operator must restore it",
                30,
            )
        };
        if let Self::MissingStorage(_) = &self {
            return storage_missing();
        }
        if let Self::Sql(error) = &self {
            match error.as_database_error() {
                Some(db) if is_missing_storage(db) => return storage_missing(),
                Some(db) if db.code().as_deref() == Some("25006") => {
                    return unavailable(
                        "writes_paused",
                        "this tenant's data is being moved to another server: retry after the delay",
                        2,
                    );
                }
                Some(db)
                    if db
                        .code()
                        .is_some_and(|c| ["08", "53", "57"].iter().any(|k| c.starts_with(k))) =>
                {
                    tracing::error!(%error, "database unavailable");
                    return unavailable(
                        "database_unavailable",
                        "the database is unavailable: retry after the delay",
                        1,
                    );
                }
                Some(db) if db.is_unique_violation() => {
                    return Problem::new(
                        StatusCode::CONFLICT,
                        "duplicate",
                        "a row with this key already exists",
                    )
                    .into_response();
                }
                Some(_) => {}
                None => match error {
                    sqlx::Error::RowNotFound => {
                        return Problem::new(StatusCode::NOT_FOUND, "not_found", "no such row")
                            .into_response();
                    }
                    sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed => {
                        tracing::error!(%error, "database unavailable");
                        return unavailable(
                            "database_unavailable",
                            "the database is unavailable: retry after the delay",
                            1,
                        );
                    }
                    _ => {}
                },
            }
        }
        // The details may name tables or values: the log gets them, the
        // client does not.
        tracing::error!(error = %self, "database error");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "database_error",
            "the request failed in the database; the server log has the details",
        )
        .into_response()
    }
}
