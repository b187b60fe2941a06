//! Database-per-tenant isolation on PostgreSQL.

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
use crate::migrate::{Applied, Migrations, apply};

/// One database per tenant, named `tenant_<id>`, on one of several
/// database servers.
///
/// A new tenant is placed on the server with the fewest tenants per unit of
/// weight; the placement is recorded in `tenancy_placements` in the home
/// database (the store's), and routing follows it. Tenant pools are opened
/// on demand and kept in a bounded cache, so thousands of tenants need at
/// most `max_pools` open pools (each of `connections_per_tenant`
/// connections at most).
#[derive(Clone)]
pub struct PgDatabaseIsolation {
    inner: Arc<Inner>,
}

/// A database server tenants can be placed on.
#[derive(Clone, Debug)]
pub struct DatabaseServer {
    name: String,
    admin: PgPool,
    weight: u32,
}

impl DatabaseServer {
    /// A server reached through `admin` (its role needs `CREATEDB`), taking
    /// tenants in proportion to `weight` (at least 1).
    pub fn new(name: impl Into<String>, admin: PgPool, weight: u32) -> Self {
        Self {
            name: name.into(),
            admin,
            weight: weight.max(1),
        }
    }

    /// Its name, as recorded in placements.
    pub fn name(&self) -> &str {
        &self.name
    }
}

struct Inner {
    home: PgPool,
    servers: Vec<DatabaseServer>,
    migrations: Migrations,
    pools: quick_cache::sync::Cache<TenantId, PgPool>,
    connections_per_tenant: u32,
    placements_ready: tokio::sync::OnceCell<()>,
}

const PLACEMENTS: &str = "CREATE TABLE IF NOT EXISTS tenancy_placements (\
    tenant_id TEXT PRIMARY KEY, server TEXT NOT NULL, placed_at TIMESTAMPTZ NOT NULL DEFAULT now())";

impl PgDatabaseIsolation {
    /// Databases on the server `admin` is connected to (its role needs
    /// `CREATEDB`), migrated with `migrations`; at most 64 tenant pools
    /// open, 4 connections each.
    pub fn new(admin: PgPool, migrations: Migrations) -> Self {
        let server = DatabaseServer::new("default", admin.clone(), 1);
        Self::with_servers(admin, vec![server], migrations)
    }

    /// Databases spread over `servers`, placements recorded in `home`.
    /// With no server given, `home`'s server is the only one.
    pub fn with_servers(
        home: PgPool,
        mut servers: Vec<DatabaseServer>,
        migrations: Migrations,
    ) -> Self {
        if servers.is_empty() {
            servers.push(DatabaseServer::new("default", home.clone(), 1));
        }
        Self {
            inner: Arc::new(Inner {
                home,
                servers,
                migrations,
                pools: quick_cache::sync::Cache::new(64),
                connections_per_tenant: 4,
                placements_ready: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// Changes the pool bounds.
    pub fn pool_limits(self, max_pools: usize, connections_per_tenant: u32) -> Self {
        let inner = Inner {
            home: self.inner.home.clone(),
            servers: self.inner.servers.clone(),
            migrations: self.inner.migrations.clone(),
            pools: quick_cache::sync::Cache::new(max_pools.max(1)),
            connections_per_tenant: connections_per_tenant.max(1),
            placements_ready: tokio::sync::OnceCell::new(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    async fn placements(&self) -> Result<(), sqlx::Error> {
        self.inner
            .placements_ready
            .get_or_try_init(|| async {
                sqlx::query(PLACEMENTS)
                    .execute(&self.inner.home)
                    .await
                    .map(|_| ())
            })
            .await
            .map(|_| ())
    }

    /// The server a tenant is placed on, if it was placed.
    pub async fn placement_of(&self, tenant: &TenantId) -> Result<Option<String>, DbError> {
        self.placements().await?;
        Ok(
            sqlx::query_scalar("SELECT server FROM tenancy_placements WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(&self.inner.home)
                .await?,
        )
    }

    /// The server of `tenant`: its recorded placement, else the first
    /// server (tenants created before placements existed).
    async fn server_of(&self, tenant: &TenantId) -> Result<&DatabaseServer, DbError> {
        let placed = self.placement_of(tenant).await?;
        let servers = &self.inner.servers;
        match placed {
            Some(name) => servers.iter().find(|s| s.name == name).ok_or_else(|| {
                DbError::Migration(format!(
                    "tenant {tenant} is placed on server `{name}`, which is not configured"
                ))
            }),
            None => servers
                .first()
                .ok_or_else(|| DbError::Migration("no database server configured".into())),
        }
    }

    /// Places a new tenant on the server with the fewest tenants per unit of
    /// weight and records it (an existing placement is kept).
    async fn place(&self, tenant: &TenantId) -> Result<&DatabaseServer, DbError> {
        if self.placement_of(tenant).await?.is_some() {
            return self.server_of(tenant).await;
        }
        let counts: Vec<(String, i64)> =
            sqlx::query_as("SELECT server, count(*) FROM tenancy_placements GROUP BY server")
                .fetch_all(&self.inner.home)
                .await?;
        let load = |s: &DatabaseServer| {
            let n = counts
                .iter()
                .find(|(name, _)| *name == s.name)
                .map_or(0, |(_, n)| *n);
            n as f64 / f64::from(s.weight)
        };
        let chosen = self
            .inner
            .servers
            .iter()
            .min_by(|a, b| load(a).total_cmp(&load(b)))
            .ok_or_else(|| DbError::Migration("no database server configured".into()))?;
        sqlx::query(
            "INSERT INTO tenancy_placements (tenant_id, server) VALUES ($1, $2) ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(&chosen.name)
        .execute(&self.inner.home)
        .await?;
        self.server_of(tenant).await
    }

    async fn unplace(&self, tenant: &TenantId) -> Result<(), sqlx::Error> {
        self.placements().await?;
        sqlx::query("DELETE FROM tenancy_placements WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .execute(&self.inner.home)
            .await
            .map(|_| ())
    }

    /// The servers tenants are placed on.
    pub fn servers(&self) -> &[DatabaseServer] {
        &self.inner.servers
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
                let server = self.server_of(tenant).await?;
                let connect: PgConnectOptions =
                    (*server.admin.connect_options()).clone().database(&name);
                Ok::<_, DbError>(
                    PgPoolOptions::new()
                        .max_connections(inner.connections_per_tenant)
                        .min_connections(0)
                        .idle_timeout(Duration::from_secs(60))
                        // A server that is down fails within 2 s, never
                        // holds a request for sqlx's default 30 s.
                        .acquire_timeout(Duration::from_secs(2))
                        .connect_lazy_with(connect),
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
        let applied = apply::<sqlx::Postgres>(&mut tx, &self.inner.migrations).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// The names of every database on every configured server.
    pub async fn database_names(&self) -> Result<Vec<String>, DbError> {
        let mut names = Vec::new();
        for server in &self.inner.servers {
            let found: Vec<String> =
                sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE NOT datistemplate")
                    .fetch_all(&server.admin)
                    .await?;
            names.extend(found);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Drops the database `name` (a validated identifier) on every server
    /// that has it.
    pub async fn drop_named(&self, name: &str) -> Result<(), DbError> {
        let quoted = quote_ident(name)?;
        for server in &self.inner.servers {
            sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"
            )))
            .execute(&server.admin)
            .await?;
        }
        Ok(())
    }

    fn server_named(&self, name: &str) -> Result<&DatabaseServer, DbError> {
        self.inner
            .servers
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                DbError::Migration(format!(
                    "no database server `{name}` is configured (servers: {})",
                    self.inner
                        .servers
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// Moving a tenant, step 1: the name of its current server, after
    /// checking that `to` is configured and another server, and that the
    /// tenant's database does not exist there yet.
    pub async fn move_check(&self, tenant: &TenantId, to: &str) -> Result<String, DbError> {
        let from = self.server_of(tenant).await?.name.clone();
        let target = self.server_named(to)?;
        if from == to {
            return Err(DbError::Refused(format!(
                "tenant {tenant} is already on server `{to}`"
            )));
        }
        let name = tenant_object_name(tenant)?;
        if Self::exists(target, &name).await? {
            return Err(DbError::Refused(format!(
                "server `{to}` already has a database {name} (left by an earlier failed move?): drop it there first"
            )));
        }
        Ok(from)
    }

    /// Moving a tenant, step 2: writes to its database pause. New sessions
    /// are read-only and every open session is ended, so no write can land
    /// on the source after this returns.
    pub async fn pause_writes(&self, tenant: &TenantId) -> Result<(), DbError> {
        let server = self.server_of(tenant).await?;
        let name = tenant_object_name(tenant)?;
        let quoted = quote_ident(&name)?;
        sqlx::query(AssertSqlSafe(format!(
            "ALTER DATABASE {quoted} SET default_transaction_read_only = on"
        )))
        .execute(&server.admin)
        .await?;
        self.forget_pool(tenant).await;
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&name)
        .execute(&server.admin)
        .await?;
        Ok(())
    }

    /// Undoes [`PgDatabaseIsolation::pause_writes`] on server `on`.
    pub async fn resume_writes(&self, tenant: &TenantId, on: &str) -> Result<(), DbError> {
        self.admin_on(tenant, on, |quoted| {
            format!("ALTER DATABASE {quoted} RESET default_transaction_read_only")
        })
        .await
    }

    /// Moving a tenant, step 3: its database created on server `to` and
    /// migrated; returns a pool on it (placement unchanged).
    pub async fn create_on(&self, tenant: &TenantId, to: &str) -> Result<PgPool, DbError> {
        let server = self.server_named(to)?;
        let name = tenant_object_name(tenant)?;
        let quoted = quote_ident(&name)?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
            .execute(&server.admin)
            .await?;
        let connect: PgConnectOptions = (*server.admin.connect_options()).clone().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy_with(connect);
        let migrated = async {
            let mut tx = pool.begin().await?;
            apply::<sqlx::Postgres>(&mut tx, &self.inner.migrations).await?;
            tx.commit().await?;
            Ok::<_, DbError>(())
        }
        .await;
        if let Err(e) = migrated {
            pool.close().await;
            let _ = self.drop_on(tenant, to).await;
            return Err(e);
        }
        Ok(pool)
    }

    /// Drops the tenant's database on server `on` (the copy of a failed
    /// move, or the source of a finished one).
    pub async fn drop_on(&self, tenant: &TenantId, on: &str) -> Result<(), DbError> {
        self.admin_on(tenant, on, |quoted| {
            format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        })
        .await
    }

    /// Runs, as the admin of server `on`, the statement `sql` writes about
    /// the tenant's database (its quoted name).
    async fn admin_on(
        &self,
        tenant: &TenantId,
        on: &str,
        sql: impl FnOnce(&str) -> String,
    ) -> Result<(), DbError> {
        let server = self.server_named(on)?;
        let quoted = quote_ident(&tenant_object_name(tenant)?)?;
        sqlx::query(AssertSqlSafe(sql(&quoted)))
            .execute(&server.admin)
            .await?;
        Ok(())
    }

    /// Moving a tenant, step 4: its placement switched to `to` and
    /// announced (`NOTIFY tenancy_changes`, in the same transaction), so
    /// every process with a [`PgChangeListener`](crate::PgChangeListener)
    /// watching this isolation drops its pool and routes to `to` at once.
    pub async fn switch_placement(&self, tenant: &TenantInfo, to: &str) -> Result<(), DbError> {
        self.server_named(to)?;
        let mut tx = self.inner.home.begin().await?;
        let done = sqlx::query(
            "UPDATE tenancy_placements SET server = $2, placed_at = now() WHERE tenant_id = $1",
        )
        .bind(tenant.id.as_str())
        .bind(to)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            sqlx::query("INSERT INTO tenancy_placements (tenant_id, server) VALUES ($1, $2)")
                .bind(tenant.id.as_str())
                .bind(to)
                .execute(&mut *tx)
                .await?;
        }
        let change = crate::notify::Change::Tenant {
            id: tenant.id.to_string(),
            slug: tenant.slug.to_string(),
            previous_slug: None,
        };
        sqlx::query(crate::notify::NOTIFY_SQL)
            .bind(change.payload())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.forget_pool(&tenant.id).await;
        Ok(())
    }

    /// Drops the cached pool of `tenant` (its placement may have changed);
    /// its connections close in the background once released.
    pub async fn forget(&self, tenant: &TenantId) {
        if let Some((_, pool)) = self.inner.pools.remove(tenant) {
            tokio::spawn(async move { pool.close().await });
        }
    }

    /// Drops every cached pool.
    pub fn forget_all(&self) {
        self.inner.pools.clear();
    }

    async fn exists(server: &DatabaseServer, name: &str) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&server.admin)
            .await
    }

    async fn drop_database(
        &self,
        server: &DatabaseServer,
        tenant: &TenantId,
        quoted: &str,
    ) -> Result<(), sqlx::Error> {
        self.forget_pool(tenant).await;
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"
        )))
        .execute(&server.admin)
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

    fn migration_version(&self) -> Option<i64> {
        Some(self.inner.migrations.latest())
    }

    /// Places the tenant, creates its database (if missing) and migrates
    /// it; when this call created it and a later step fails, the database
    /// is dropped and the placement removed again.
    async fn provision(&self, tenant: &TenantInfo) -> Result<(), IsolationError> {
        let name = tenant_object_name(&tenant.id).map_err(|e| db_error("database", "name", e))?;
        let quoted = quote_ident(&name).map_err(|e| db_error("database", "name", e))?;
        let was_placed = self
            .placement_of(&tenant.id)
            .await
            .map_err(|e| db_error("database", "placement", e))?
            .is_some();
        let server = self
            .place(&tenant.id)
            .await
            .map_err(|e| db_error("database", "placement", e))?;
        let undo_placement = || async {
            if !was_placed && let Err(e) = self.unplace(&tenant.id).await {
                tracing::error!(tenant_id = %tenant.id, error = %e, "could not remove a failed placement");
            }
        };
        let created = match Self::exists(server, &name).await {
            Ok(true) => false,
            Ok(false) => match sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
                .execute(&server.admin)
                .await
            {
                Ok(_) => true,
                Err(e) => {
                    undo_placement().await;
                    return Err(IsolationError::new("database", "create database", e));
                }
            },
            Err(e) => {
                undo_placement().await;
                return Err(IsolationError::new("database", "look up database", e));
            }
        };
        if let Err(e) = self.migrate_tenant(&tenant.id).await {
            if created {
                if let Err(cleanup) = self.drop_database(server, &tenant.id, &quoted).await {
                    tracing::error!(database = %name, error = %cleanup, "could not drop a half-made tenant database");
                }
                undo_placement().await;
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
        if policy == DeprovisionPolicy::Keep {
            return Ok(());
        }
        let server = self
            .server_of(&tenant.id)
            .await
            .map_err(|e| db_error("database", "placement", e))?;
        if policy == DeprovisionPolicy::Drop {
            self.drop_database(server, &tenant.id, &quoted)
                .await
                .map_err(step_error("database", "drop database"))?;
        } else if Self::exists(server, &name)
            .await
            .map_err(step_error("database", "look up database"))?
        {
            self.forget_pool(&tenant.id).await;
            let archived = archive_name(&tenant.id, chrono::Utc::now().timestamp())
                .and_then(|n| quote_ident(&n))
                .map_err(|e| db_error("database", "archive name", e))?;
            // Renaming needs the database free of sessions.
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(&name)
            .execute(&server.admin)
            .await
            .map_err(step_error("database", "disconnect sessions"))?;
            sqlx::query(AssertSqlSafe(format!(
                "ALTER DATABASE {quoted} RENAME TO {archived}"
            )))
            .execute(&server.admin)
            .await
            .map_err(step_error("database", "archive database"))?;
        }
        self.unplace(&tenant.id)
            .await
            .map_err(step_error("database", "remove placement"))
    }

    async fn check(&self) -> Result<(), IsolationError> {
        for server in &self.inner.servers {
            sqlx::query("SELECT 1")
                .execute(&server.admin)
                .await
                .map_err(|e| {
                    IsolationError::new(
                        "database",
                        &format!("health check of server `{}`", server.name),
                        e,
                    )
                })?;
        }
        Ok(())
    }
}
