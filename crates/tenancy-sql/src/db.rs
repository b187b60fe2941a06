//! [`TenantDb`]: one scoped-transaction API for every strategy (SPEC I6).

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
/// ```no_run
/// # async fn demo(db: tenancy_sql::TenantDb<sqlx::Postgres>) -> Result<(), Box<dyn std::error::Error>> {
/// let mut tx = db.begin().await?; // scoped to tenancy::current()
/// let notes: Vec<(i32, String)> = sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
///     .fetch_all(&mut *tx)
///     .await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub struct TenantDb<DB: Database> {
    scope: Arc<dyn ScopedBegin<DB>>,
}

impl<DB: Database> Clone for TenantDb<DB> {
    fn clone(&self) -> Self {
        Self {
            scope: self.scope.clone(),
        }
    }
}

impl<DB: Database> TenantDb<DB> {
    /// Scoped transactions opened by `strategy`.
    pub fn new(strategy: impl ScopedBegin<DB>) -> Self {
        Self {
            scope: Arc::new(strategy),
        }
    }

    /// A transaction scoped to the current task's tenant
    /// ([`tenancy_core::context::current`]); [`DbError::NoTenant`] outside
    /// a tenant scope (never an unscoped transaction).
    pub async fn begin(&self) -> Result<Transaction<'static, DB>, DbError> {
        let tenant = context::current().ok_or(DbError::NoTenant)?;
        self.scope.begin_for(&tenant).await
    }

    /// A transaction scoped to an explicit tenant (jobs, admin tools).
    pub async fn begin_for(&self, tenant: &TenantId) -> Result<Transaction<'static, DB>, DbError> {
        self.scope.begin_for(tenant).await
    }
}

impl<DB: Database> std::fmt::Debug for TenantDb<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantDb").finish_non_exhaustive()
    }
}
