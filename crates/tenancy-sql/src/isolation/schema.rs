//! Schema-per-tenant isolation on PostgreSQL.

use async_trait::async_trait;
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Postgres, Transaction};
use tenancy_core::config::DeprovisionPolicy;
use tenancy_core::{IsolationError, IsolationStrategy, TenantId, TenantInfo};

use super::{db_error, step_error};
use crate::db::{DbError, ScopedBegin};
use crate::ident::{archive_name, quote_ident, tenant_literal, tenant_object_name};
use crate::migrate::{Applied, Migrations, apply};

/// One schema per tenant, named `tenant_<id>` (exact case, quoted; ids of
/// at most 40 characters of `[A-Za-z0-9_-]`, anything else is refused).
///
/// Each schema is owned by a role of the same name (`NOLOGIN`), granted to
/// the application's role. A scoped transaction runs `SET LOCAL ROLE
/// "tenant_<id>"` and a transaction-local `search_path`: unqualified names
/// resolve in the tenant's schema, and even hand-written SQL naming another
/// tenant's schema gets "permission denied". Nothing is set on the session.
///
/// Provisioning creates role, schema and tables in one transaction:
/// PostgreSQL DDL is transactional, so a failure leaves nothing behind.
/// The application's role needs `CREATEROLE` (or be the owner of the
/// database and a superuser in development).
#[derive(Clone)]
pub struct PgSchemaIsolation {
    pool: PgPool,
    migrations: Migrations,
    index_ready: std::sync::Arc<tokio::sync::OnceCell<()>>,
}

/// The version index: each tenant schema's migration version, written in
/// the same transaction as the schema's own `_tenancy_migrations`, so
/// `tenancy migrate` learns which of thousands of schemas are behind in one
/// query. A schema without a row is migrated the long way (and gets one).
const VERSION_INDEX: &str = "CREATE TABLE IF NOT EXISTS tenancy_schema_versions (\
    tenant_id TEXT PRIMARY KEY, version BIGINT NOT NULL)";

impl PgSchemaIsolation {
    /// Schemas in the database of `pool`, migrated with `migrations`.
    pub fn new(pool: PgPool, migrations: Migrations) -> Self {
        Self {
            pool,
            migrations,
            index_ready: Default::default(),
        }
    }

    /// Creates the version index once per process (under an advisory lock:
    /// concurrent `CREATE TABLE IF NOT EXISTS` can collide).
    async fn version_index(&self) -> Result<(), DbError> {
        self.index_ready
            .get_or_try_init(|| async {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(7261637)")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(VERSION_INDEX).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok::<(), DbError>(())
            })
            .await
            .map(|_| ())
    }

    /// Every tenant's recorded migration version (the version index). A
    /// tenant missing here has never been migrated by this version of the
    /// toolkit: migrate it with [`PgSchemaIsolation::migrate_tenant`].
    pub async fn recorded_versions(
        &self,
    ) -> Result<std::collections::HashMap<String, i64>, DbError> {
        self.version_index().await?;
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT tenant_id, version FROM tenancy_schema_versions")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// The quoted schema of `tenant`.
    pub fn schema_of(tenant: &TenantId) -> Result<String, DbError> {
        quote_ident(&tenant_object_name(tenant)?)
    }

    /// Applies missing migrations to one tenant's schema (creating it if
    /// needed), all or nothing.
    pub async fn migrate_tenant(&self, tenant: &TenantId) -> Result<Applied, DbError> {
        let name = tenant_object_name(tenant)?;
        let schema = quote_ident(&name)?;
        self.version_index().await?;
        let mut tx = self.pool.begin().await?;
        // What exists already, in one query: a migrate over thousands of
        // existing schemas is round trips, so those skip the DDL (and its
        // notices) entirely.
        let (role, member, schema_exists): (bool, bool, bool) = sqlx::query_as(
            "SELECT r.oid IS NOT NULL, r.oid IS NOT NULL AND pg_has_role(current_user, r.oid, 'MEMBER'), \
             EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) \
             FROM (SELECT (SELECT oid FROM pg_roles WHERE rolname = $1) AS oid) AS r",
        )
        .bind(&name)
        .fetch_one(&mut *tx)
        .await?;
        let mut setup = Vec::new();
        if !role {
            setup.push(format!("CREATE ROLE {schema} NOLOGIN"));
        }
        if !member {
            setup.push(format!("GRANT {schema} TO CURRENT_USER"));
        }
        if !schema_exists {
            setup.push(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {schema}"
            ));
        }
        // `name` and `schema` are validated (`[A-Za-z0-9_-]`, quoted).
        setup.push(format!(
            "SET LOCAL ROLE {schema}; SELECT set_config('search_path', '{schema}', true)"
        ));
        sqlx::raw_sql(AssertSqlSafe(setup.join("; ")))
            .execute(&mut *tx)
            .await?;
        let applied = apply::<sqlx::Postgres>(&mut tx, &self.migrations).await?;
        // Back to the application's role for the index, same transaction.
        let id = tenant_literal(tenant)?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "RESET ROLE; RESET search_path; \
             INSERT INTO tenancy_schema_versions (tenant_id, version) VALUES ({id}, {}) \
             ON CONFLICT (tenant_id) DO UPDATE SET version = EXCLUDED.version",
            applied.to
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// The migrations applied at provisioning.
    pub fn migrations(&self) -> &Migrations {
        &self.migrations
    }
}

#[async_trait]
impl ScopedBegin<Postgres> for PgSchemaIsolation {
    async fn begin_for(
        &self,
        tenant: &TenantId,
    ) -> Result<Transaction<'static, Postgres>, DbError> {
        let schema = Self::schema_of(tenant)?;
        // BEGIN, the tenant's role and search_path, transaction-local, in
        // one round trip; `schema` is a validated, quoted identifier.
        // The role is looked up BEFORE `BEGIN`: when it is missing (a tenant
        // never provisioned, or dropped) the error ends the implicit
        // transaction and the connection goes back to the pool clean. Failing
        // after `BEGIN` would leave it in an aborted transaction block that
        // sqlx does not roll back, poisoning every later borrower.
        let begin = format!(
            "SELECT '{schema}'::regrole; BEGIN; SET LOCAL ROLE {schema}; \
             SELECT set_config('search_path', '{schema}', true)"
        );
        Ok(self.pool.begin_with(AssertSqlSafe(begin)).await?)
    }
}

#[async_trait]
impl IsolationStrategy for PgSchemaIsolation {
    fn name(&self) -> &str {
        "schema"
    }

    fn migration_version(&self) -> Option<i64> {
        Some(self.migrations.latest())
    }

    async fn provision(&self, tenant: &TenantInfo) -> Result<(), IsolationError> {
        self.migrate_tenant(&tenant.id)
            .await
            .map(|_| ())
            .map_err(|e| db_error("schema", "create schema and migrate", e))
    }

    async fn deprovision(
        &self,
        tenant: &TenantInfo,
        policy: DeprovisionPolicy,
    ) -> Result<(), IsolationError> {
        let schema = Self::schema_of(&tenant.id).map_err(|e| db_error("schema", "name", e))?;
        if policy != DeprovisionPolicy::Keep {
            self.version_index()
                .await
                .map_err(|e| db_error("schema", "version index", e))?;
            sqlx::query("DELETE FROM tenancy_schema_versions WHERE tenant_id = $1")
                .bind(tenant.id.as_str())
                .execute(&self.pool)
                .await
                .map_err(step_error("schema", "version index"))?;
        }
        let sql = match policy {
            DeprovisionPolicy::Keep => return Ok(()),
            DeprovisionPolicy::Archive => {
                let archived = archive_name(&tenant.id, chrono::Utc::now().timestamp())
                    .and_then(|n| quote_ident(&n))
                    .map_err(|e| db_error("schema", "archive name", e))?;
                format!("ALTER SCHEMA {schema} RENAME TO {archived}")
            }
            DeprovisionPolicy::Drop => {
                // Objects of the tenant's role in this database, then the role.
                let mut tx = self
                    .pool
                    .begin()
                    .await
                    .map_err(step_error("schema", "drop"))?;
                let role_exists: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                        .bind(
                            tenant_object_name(&tenant.id)
                                .map_err(|e| db_error("schema", "name", e))?,
                        )
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(step_error("schema", "look up role"))?;
                sqlx::query(AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&mut *tx)
                .await
                .map_err(step_error("schema", "drop schema"))?;
                if role_exists {
                    for sql in [
                        format!("DROP OWNED BY {schema}"),
                        format!("DROP ROLE {schema}"),
                    ] {
                        sqlx::query(AssertSqlSafe(sql))
                            .execute(&mut *tx)
                            .await
                            .map_err(step_error("schema", "drop role"))?;
                    }
                }
                return tx.commit().await.map_err(step_error("schema", "commit"));
            }
        };
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(tenant_object_name(&tenant.id).map_err(|e| db_error("schema", "name", e))?)
                .fetch_one(&self.pool)
                .await
                .map_err(step_error("schema", "look up schema"))?;
        if !exists {
            return Ok(());
        }
        sqlx::query(AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(step_error("schema", "deprovision"))
    }

    async fn check(&self) -> Result<(), IsolationError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(step_error("schema", "health check"))
    }
}
