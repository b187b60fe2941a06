//! Row-level isolation on PostgreSQL with Row-Level Security (SPEC I3).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Postgres, Transaction};
use tenancy_core::config::DeprovisionPolicy;
use tenancy_core::{IsolationError, IsolationStrategy, TenantId, TenantInfo};

use super::step_error;
use crate::db::{DbError, ScopedBegin};
use crate::ident::{tenant_literal, validate_table};

/// Shared tables with a tenant column, guarded by PostgreSQL Row-Level
/// Security keyed on the transaction-local setting `tenancy.tenant_id`.
///
/// [`PgRowLevel::register_table`] enables and forces RLS on a table (so the
/// table owner is bound too), adds a policy that compares the tenant column
/// with the setting for reads and writes, and makes the column default to
/// the setting so inserts need not name it. With no tenant set the setting
/// is `''`/NULL and the policy matches no row: unscoped use sees nothing.
///
/// Superusers and `BYPASSRLS` roles ignore RLS: connect the application as
/// an ordinary role.
#[derive(Clone)]
pub struct PgRowLevel {
    pool: PgPool,
    tables: Arc<Mutex<Vec<(String, String)>>>,
}

impl PgRowLevel {
    /// The transaction-local setting that holds the tenant id.
    pub const SETTING: &'static str = "tenancy.tenant_id";

    /// Row-level isolation over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            tables: Arc::default(),
        }
    }

    /// Puts `table` under RLS keyed on `column` (a `text` column).
    /// Idempotent. Run it as the table owner (e.g. in a migration step).
    pub async fn register_table(&self, table: &str, column: &str) -> Result<(), DbError> {
        let t = validate_table(table)?;
        let c = validate_table(column)?;
        let current = "NULLIF(current_setting('tenancy.tenant_id', true), '')";
        let mut tx = self.pool.begin().await?;
        for sql in [
            format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"),
            format!("ALTER TABLE {t} FORCE ROW LEVEL SECURITY"),
            format!("DROP POLICY IF EXISTS tenancy_isolation ON {t}"),
            format!(
                "CREATE POLICY tenancy_isolation ON {t} USING ({c} = {current}) WITH CHECK ({c} = {current})"
            ),
            format!("ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {current}"),
        ] {
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if !tables.iter().any(|(tt, _)| *tt == t) {
            tables.push((t, c));
        }
        Ok(())
    }

    /// Records a table whose RLS was set up elsewhere (by the owner, in a
    /// migration), so `drop` deprovisioning covers it. No SQL is run.
    pub fn with_table(self, table: &str, column: &str) -> Result<Self, DbError> {
        let entry = (validate_table(table)?, validate_table(column)?);
        {
            let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
            if !tables.contains(&entry) {
                tables.push(entry);
            }
        }
        Ok(self)
    }

    fn registered(&self) -> Vec<(String, String)> {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl ScopedBegin<Postgres> for PgRowLevel {
    async fn begin_for(
        &self,
        tenant: &TenantId,
    ) -> Result<Transaction<'static, Postgres>, DbError> {
        let literal = tenant_literal(tenant)?;
        // BEGIN and the transaction-local setting in one round trip.
        let begin = format!("BEGIN; SELECT set_config('tenancy.tenant_id', {literal}, true)");
        Ok(self.pool.begin_with(AssertSqlSafe(begin)).await?)
    }
}

#[async_trait]
impl IsolationStrategy for PgRowLevel {
    fn name(&self) -> &str {
        "row_level"
    }

    async fn provision(&self, _tenant: &TenantInfo) -> Result<(), IsolationError> {
        Ok(()) // shared tables: nothing per tenant
    }

    /// `drop` deletes the tenant's rows from every registered table, in one
    /// transaction scoped to the tenant and with an explicit predicate on the
    /// tenant column (RLS alone would not bind a superuser); `keep` and
    /// `archive` leave them.
    async fn deprovision(
        &self,
        tenant: &TenantInfo,
        policy: DeprovisionPolicy,
    ) -> Result<(), IsolationError> {
        if policy != DeprovisionPolicy::Drop {
            return Ok(());
        }
        let mut tx = self
            .begin_for(&tenant.id)
            .await
            .map_err(|e| IsolationError::new("row_level", "begin", e))?;
        // The predicate as well as RLS: superusers and BYPASSRLS roles (and
        // table owners without FORCE) are not bound by the policy, and an
        // unfiltered DELETE would then remove every tenant's rows.
        for (table, column) in self.registered() {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE {column} = NULLIF(current_setting('tenancy.tenant_id', true), '')"
            )))
                .execute(&mut *tx)
                .await
                .map_err(step_error("row_level", "delete rows"))?;
        }
        tx.commit().await.map_err(step_error("row_level", "commit"))
    }

    async fn check(&self) -> Result<(), IsolationError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(step_error("row_level", "health check"))
    }
}
