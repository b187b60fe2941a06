//! Row-level isolation on SQLite, through the query interceptor.

use async_trait::async_trait;
use sqlx::sqlite::{SqliteArguments, SqlitePool, SqliteQueryResult, SqliteRow};
use sqlx::{AssertSqlSafe, Encode, Sqlite, Transaction, Type};
use tenancy_core::config::DeprovisionPolicy;
use tenancy_core::{IsolationError, IsolationStrategy, TenantId, TenantInfo};
use tenancy_interceptor::{Dialect, Interceptor};

use crate::db::DbError;

/// Shared tables with a tenant column on SQLite, which has no row-level
/// security: every statement goes through the
/// [`Interceptor`](tenancy_interceptor::Interceptor), which adds the tenant
/// predicate (and the tenant column to inserts) or refuses the statement.
///
/// Statements run through an [`InterceptedTx`]; the SQL is the same text the
/// application would write for the other strategies.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use tenancy::interceptor::{Interceptor, TenantTables};
/// use tenancy::SqliteRowLevel;
/// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
/// sqlx::query("CREATE TABLE notes (id INTEGER, tenant_id TEXT NOT NULL, body TEXT)").execute(&pool).await?;
/// let rows = SqliteRowLevel::new(pool, Interceptor::new(TenantTables::new(["notes"])));
/// let mut tx = rows.begin_for(&"acme".parse()?).await?;
/// tx.query("INSERT INTO notes (id, body) VALUES (?1, ?2)")?.bind(1).bind("hi").execute(&mut tx).await?;
/// let n = tx.query("SELECT id FROM notes")?.fetch_all(&mut tx).await?.len();
/// assert_eq!(n, 1);
/// tx.commit().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct SqliteRowLevel {
    pool: SqlitePool,
    interceptor: Interceptor,
}

impl SqliteRowLevel {
    /// Row-level isolation over `pool` for the tables `interceptor` knows.
    pub fn new(pool: SqlitePool, interceptor: Interceptor) -> Self {
        Self { pool, interceptor }
    }

    /// A transaction whose statements are scoped to `tenant`.
    pub async fn begin_for(&self, tenant: &TenantId) -> Result<InterceptedTx, DbError> {
        Ok(InterceptedTx {
            tx: self.pool.begin().await?,
            tenant: tenant.clone(),
            interceptor: self.interceptor.clone(),
        })
    }

    /// A transaction scoped to the current task's tenant.
    pub async fn begin(&self) -> Result<InterceptedTx, DbError> {
        let tenant = tenancy_core::context::current().ok_or(DbError::NoTenant)?;
        self.begin_for(&tenant).await
    }

    /// The interceptor.
    pub fn interceptor(&self) -> &Interceptor {
        &self.interceptor
    }
}

/// A transaction in which every statement is rewritten for one tenant.
pub struct InterceptedTx {
    tx: Transaction<'static, Sqlite>,
    tenant: TenantId,
    interceptor: Interceptor,
}

impl InterceptedTx {
    /// Rewrites `sql` for the tenant (or refuses it). Bind the statement's
    /// own parameters in order; the tenant is bound last, automatically.
    pub fn query(&self, sql: &str) -> Result<ScopedQuery, DbError> {
        let rewritten = self
            .interceptor
            .rewrite(sql, Dialect::Sqlite)
            .map_err(|refusal| DbError::Refused(refusal.to_string()))?;
        Ok(ScopedQuery {
            sql: rewritten.sql().to_owned(),
            tenant_param: rewritten.tenant_param(),
            args: SqliteArguments::default(),
            bound: 0,
            error: None,
        })
    }

    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), DbError> {
        Ok(self.tx.commit().await?)
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), DbError> {
        Ok(self.tx.rollback().await?)
    }
}

impl std::fmt::Debug for InterceptedTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterceptedTx")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// A rewritten statement waiting for its parameters.
pub struct ScopedQuery {
    sql: String,
    tenant_param: Option<usize>,
    args: SqliteArguments,
    bound: usize,
    error: Option<String>,
}

impl ScopedQuery {
    /// Binds the next parameter of the statement.
    pub fn bind<T>(mut self, value: T) -> Self
    where
        T: for<'q> Encode<'q, Sqlite> + Type<Sqlite> + Send + 'static,
    {
        use sqlx::Arguments;
        if let Err(e) = self.args.add(value) {
            self.error.get_or_insert(e.to_string());
        }
        self.bound += 1;
        self
    }

    fn finish(mut self, tenant: &TenantId) -> Result<(String, SqliteArguments), DbError> {
        use sqlx::Arguments;
        if let Some(e) = self.error {
            return Err(DbError::Refused(format!("cannot bind a parameter: {e}")));
        }
        if let Some(index) = self.tenant_param {
            // The tenant must land exactly at its index: refuse a statement
            // whose own parameters are not all bound.
            if self.bound + 1 != index {
                return Err(DbError::Refused(format!(
                    "the statement takes {} parameter(s) but {} were bound",
                    index - 1,
                    self.bound
                )));
            }
            self.args
                .add(tenant.as_str().to_owned())
                .map_err(|e| DbError::Refused(format!("cannot bind the tenant: {e}")))?;
        }
        Ok((self.sql, self.args))
    }

    /// Runs the statement; returns rows affected.
    pub async fn execute(self, tx: &mut InterceptedTx) -> Result<SqliteQueryResult, DbError> {
        let (sql, args) = self.finish(&tx.tenant)?;
        Ok(sqlx::query_with(AssertSqlSafe(sql), args)
            .execute(&mut *tx.tx)
            .await?)
    }

    /// Runs the statement; returns every row.
    pub async fn fetch_all(self, tx: &mut InterceptedTx) -> Result<Vec<SqliteRow>, DbError> {
        let (sql, args) = self.finish(&tx.tenant)?;
        Ok(sqlx::query_with(AssertSqlSafe(sql), args)
            .fetch_all(&mut *tx.tx)
            .await?)
    }

    /// Runs the statement; returns the first row, if any.
    pub async fn fetch_optional(
        self,
        tx: &mut InterceptedTx,
    ) -> Result<Option<SqliteRow>, DbError> {
        let (sql, args) = self.finish(&tx.tenant)?;
        Ok(sqlx::query_with(AssertSqlSafe(sql), args)
            .fetch_optional(&mut *tx.tx)
            .await?)
    }
}

impl std::fmt::Debug for ScopedQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedQuery")
            .field("sql", &self.sql)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IsolationStrategy for SqliteRowLevel {
    fn name(&self) -> &str {
        "row_level"
    }

    async fn provision(&self, _tenant: &TenantInfo) -> Result<(), IsolationError> {
        Ok(())
    }

    /// `drop` deletes the tenant's rows from every tenant table (rewritten
    /// `DELETE`s, so only that tenant's rows); `keep`/`archive` keep them.
    async fn deprovision(
        &self,
        tenant: &TenantInfo,
        policy: DeprovisionPolicy,
    ) -> Result<(), IsolationError> {
        if policy != DeprovisionPolicy::Drop {
            return Ok(());
        }
        let fail = |step: &str, e: DbError| IsolationError::new("row_level", step, e);
        let mut tx = self
            .begin_for(&tenant.id)
            .await
            .map_err(|e| fail("begin", e))?;
        for table in self.interceptor.tables().table_names() {
            let sql = format!(
                "DELETE FROM {}",
                crate::ident::validate_table(&table).map_err(|e| fail("table name", e))?
            );
            tx.query(&sql)
                .map_err(|e| fail("delete rows", e))?
                .execute(&mut tx)
                .await
                .map_err(|e| fail("delete rows", e))?;
        }
        tx.commit().await.map_err(|e| fail("commit", e))
    }

    async fn check(&self) -> Result<(), IsolationError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| IsolationError::new("row_level", "health check", e))
    }
}
