//! Database-per-tenant isolation on PostgreSQL (SPEC I5).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Postgres, Transaction};
use tenancy_core::config::DeprovisionPolicy;
use tenancy_core::{IsolationError, IsolationStrategy, TenantId, TenantInfo};

use super::{db_error, step_error};
use crate::db::{DbError, ScopedBegin};
use crate::ident::{archive_name, quote_ident, tenant_object_name};
use crate::migrate::{Applied, Migrations, apply_pg};

/// One database per tenant, named `tenant_<id>`, on the server of the admin
/// pool. Tenant pools are opened on demand and kept in a bounded cache, so
/// thousands of tenants need at most `max_pools` open pools (each of
/// `connections_per_tenant` connections at most).
#[derive(Clone)]
pub struct PgDatabaseIsolation {
    inner: Arc<Inner>,
}

struct Inner {
    admin: PgPool,
    connect: PgConnectOptions,
    migrations: Migrations,
    pools: quick_cache::sync::Cache<TenantId, PgPool>,
    connections_per_tenant: u32,
}

impl PgDatabaseIsolation {
    /// Databases on the server `admin` is connected to (its role needs
    /// `CREATEDB`), migrated with `migrations`; at most 64 tenant pools
    /// open, 4 connections each.
    pub fn new(admin: PgPool, migrations: Migrations) -> Self {
        let connect = (*admin.connect_options()).clone();
        Self {
            inner: Arc::new(Inner {
                admin,
                connect,
                migrations,
                pools: quick_cache::sync::Cache::new(64),
                connections_per_tenant: 4,
            }),
        }
    }

    /// Changes the pool bounds.
    pub fn pool_limits(self, max_pools: usize, connections_per_tenant: u32) -> Self {
        let inner = Inner {
            admin: self.inner.admin.clone(),
            connect: self.inner.connect.clone(),
            migrations: self.inner.migrations.clone(),
            pools: quick_cache::sync::Cache::new(max_pools.max(1)),
            connections_per_tenant: connections_per_tenant.max(1),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Open tenant pools right now (at most `max_pools`).
    pub fn open_pools(&self) -> usize {
        self.inner.pools.len()
    }

    /// The pool of one tenant's database (opened lazily, cached).
    pub async fn pool_for(&self, tenant: &TenantId) -> Result<PgPool, DbError> {
        let name = tenant_object_name(tenant)?;
        let inner = &self.inner;
        let pool = inner
            .pools
            .get_or_insert_async(tenant, async {
                Ok::<_, DbError>(
                    PgPoolOptions::new()
                        .max_connections(inner.connections_per_tenant)
                        .min_connections(0)
                        .idle_timeout(Duration::from_secs(60))
                        .connect_lazy_with(inner.connect.clone().database(&name)),
                )
            })
            .await?;
        Ok(pool)
    }

    async fn forget_pool(&self, tenant: &TenantId) {
        if let Some((_, pool)) = self.inner.pools.remove(tenant) {
            pool.close().await;
        }
    }

    /// Applies missing migrations to one tenant's database, all or nothing.
    pub async fn migrate_tenant(&self, tenant: &TenantId) -> Result<Applied, DbError> {
        let pool = self.pool_for(tenant).await?;
        let mut tx = pool.begin().await?;
        let applied = apply_pg(&mut tx, &self.inner.migrations).await?;
        tx.commit().await?;
        Ok(applied)
    }

    async fn exists(&self, name: &str) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&self.inner.admin)
            .await
    }

    async fn drop_database(&self, tenant: &TenantId, quoted: &str) -> Result<(), sqlx::Error> {
        self.forget_pool(tenant).await;
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"
        )))
        .execute(&self.inner.admin)
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl ScopedBegin<Postgres> for PgDatabaseIsolation {
    async fn begin_for(
        &self,
        tenant: &TenantId,
    ) -> Result<Transaction<'static, Postgres>, DbError> {
        Ok(self.pool_for(tenant).await?.begin().await?)
    }
}

#[async_trait]
impl IsolationStrategy for PgDatabaseIsolation {
    fn name(&self) -> &str {
        "database"
    }

    /// Creates the database (if missing) and migrates it; when this call
    /// created it and migrating fails, the database is dropped again.
    async fn provision(&self, tenant: &TenantInfo) -> Result<(), IsolationError> {
        let name = tenant_object_name(&tenant.id).map_err(|e| db_error("database", "name", e))?;
        let quoted = quote_ident(&name).map_err(|e| db_error("database", "name", e))?;
        let created = if self
            .exists(&name)
            .await
            .map_err(step_error("database", "look up database"))?
        {
            false
        } else {
            sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
                .execute(&self.inner.admin)
                .await
                .map_err(step_error("database", "create database"))?;
            true
        };
        if let Err(e) = self.migrate_tenant(&tenant.id).await {
            if created && let Err(cleanup) = self.drop_database(&tenant.id, &quoted).await {
                tracing::error!(database = %name, error = %cleanup, "could not drop a half-made tenant database");
            }
            return Err(db_error("database", "migrate", e));
        }
        Ok(())
    }

    async fn deprovision(
        &self,
        tenant: &TenantInfo,
        policy: DeprovisionPolicy,
    ) -> Result<(), IsolationError> {
        let name = tenant_object_name(&tenant.id).map_err(|e| db_error("database", "name", e))?;
        let quoted = quote_ident(&name).map_err(|e| db_error("database", "name", e))?;
        match policy {
            DeprovisionPolicy::Keep => Ok(()),
            DeprovisionPolicy::Drop => self
                .drop_database(&tenant.id, &quoted)
                .await
                .map_err(step_error("database", "drop database")),
            DeprovisionPolicy::Archive => {
                if !self
                    .exists(&name)
                    .await
                    .map_err(step_error("database", "look up database"))?
                {
                    return Ok(());
                }
                self.forget_pool(&tenant.id).await;
                let archived = archive_name(&tenant.id, chrono::Utc::now().timestamp())
                    .and_then(|n| quote_ident(&n))
                    .map_err(|e| db_error("database", "archive name", e))?;
                // Renaming needs the database free of sessions.
                sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
                    .bind(&name)
                    .execute(&self.inner.admin)
                    .await
                    .map_err(step_error("database", "disconnect sessions"))?;
                sqlx::query(AssertSqlSafe(format!(
                    "ALTER DATABASE {quoted} RENAME TO {archived}"
                )))
                .execute(&self.inner.admin)
                .await
                .map(|_| ())
                .map_err(step_error("database", "archive database"))
            }
        }
    }

    async fn check(&self) -> Result<(), IsolationError> {
        sqlx::query("SELECT 1")
            .execute(&self.inner.admin)
            .await
            .map(|_| ())
            .map_err(step_error("database", "health check"))
    }
}
