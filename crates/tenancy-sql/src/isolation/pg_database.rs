//! Database-per-tenant isolation on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Postgres, Transaction};
use tenancy_core::config::DeprovisionPolicy;
use tenancy_core::{IsolationError, IsolationStrategy, TenantId, TenantInfo};

use super::{db_error, step_error};
use crate::db::{DbError, ScopedBegin};
use crate::ident::{archive_name, archived_id, quote_ident, tenant_object_name};
use crate::migrate::{Applied, Migrations, apply};

/// One database per tenant, named `tenant_<id>`, on one of several
/// database servers, reached through a role of its own.
///
/// A new tenant is placed on the server with the fewest tenants per unit of
/// weight; the placement is recorded in `tenancy_placements` in the home
/// database (the store's), and routing follows it. Tenant pools are opened
/// on demand and kept in a bounded cache, so thousands of tenants need at
/// most `max_pools` open pools (each of `connections_per_tenant`
/// connections at most).
///
/// # Each tenant connects as its own role
///
/// Provisioning (and [`PgDatabaseIsolation::migrate_tenant`], so `tenancy
/// migrate` upgrades tenants made before roles existed) gives each tenant
/// database a `LOGIN` role of the same name, `tenant_<id>`: `NOSUPERUSER
/// NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION`, owner of
/// its database, which no one else may connect to (`CONNECT` and
/// `TEMPORARY` are revoked from `PUBLIC`). Tenant pools log in as that
/// role, so migrations run as it and its tables are its own; objects left
/// by the server's admin role in that database (tenants made before) are
/// handed over to it, in that database only. Another tenant's role, or any
/// ordinary role, gets "permission denied" connecting. Only the admin role
/// (made a member of each tenant role when it is not a superuser) and
/// superusers can reach every database.
///
/// Migrations therefore run without superuser rights: one that creates an
/// untrusted extension fails (trusted ones, such as `pgcrypto`, work, the
/// role owning its database).
///
/// # Passwords
///
/// Nothing per tenant is stored. The home database keeps one random secret
/// per deployment (`tenancy_deployment`, key `tenant_role_secret`, made on
/// first use; readable only by the store's role), and a tenant role's
/// password is the hex of HMAC-SHA256(secret, tenant id), computed when a
/// pool connects. The server is only ever sent a SCRAM-SHA-256 verifier of
/// it (salt derived the same way, 4096 iterations), so the password itself
/// appears in no statement, server log or `pg_stat_activity`. Each
/// database is marked as this deployment's (`COMMENT ON DATABASE`), so
/// `tenancy doctor` tells it from another deployment's on a shared server.
///
/// Roles are cluster-wide: two deployments sharing a server must not share
/// tenant ids (their database names would collide first).
///
/// Upgrading from a version without tenant roles: run `tenancy migrate`
/// (or [`PgDatabaseIsolation::migrate_tenant`] for each tenant) before
/// serving, since until then a tenant's pool logs in as a role that does
/// not exist yet; `tenancy doctor` lists the tenants still to upgrade.
///
/// # Deprovisioning
///
/// - `keep` leaves database and role as they are.
/// - `drop` drops the database, then the role unless it still owns
///   something on that server (an archive of the tenant): it is then only
///   made `NOLOGIN`.
/// - `archive` renames the database, gives it to the admin role, revokes
///   every privilege on it from `PUBLIC` and the tenant role, and makes the
///   role `NOLOGIN`. The role is kept: it still owns the tables inside the
///   archive. Provisioning the tenant again (re-activation) logs it in
///   again with a new database; its archive stays out of reach.
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
    /// A server reached through `admin` (its role needs `CREATEDB` and
    /// `CREATEROLE`, or is a superuser), taking tenants in proportion to
    /// `weight` (at least 1).
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

    /// The pool of its admin role.
    pub(crate) fn admin(&self) -> &PgPool {
        &self.admin
    }
}

struct Inner {
    home: PgPool,
    servers: Vec<DatabaseServer>,
    migrations: Migrations,
    pools: quick_cache::sync::Cache<TenantId, PgPool>,
    connections_per_tenant: u32,
    placements_ready: tokio::sync::OnceCell<()>,
    credentials: tokio::sync::OnceCell<Credentials>,
}

const PLACEMENTS: &str = "CREATE TABLE IF NOT EXISTS tenancy_placements (\
    tenant_id TEXT PRIMARY KEY, server TEXT NOT NULL, placed_at TIMESTAMPTZ NOT NULL DEFAULT now())";

impl PgDatabaseIsolation {
    /// What a database's comment starts with when a deployment marked it as
    /// its own.
    pub(crate) const MARK_PREFIX: &str = "tenancy deployment ";

    /// Databases on the server `admin` is connected to (its role needs
    /// `CREATEDB` and `CREATEROLE`, or is a superuser), migrated with
    /// `migrations`; at most 64 tenant pools open, 4 connections each.
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
                credentials: tokio::sync::OnceCell::new(),
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
            credentials: tokio::sync::OnceCell::new(),
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

    /// The pool of one tenant's database (opened lazily, cached), logged in
    /// as the tenant's role.
    pub async fn pool_for(&self, tenant: &TenantId) -> Result<PgPool, DbError> {
        let inner = &self.inner;
        let pool = inner
            .pools
            .get_or_insert_async(tenant, async {
                let server = self.server_of(tenant).await?;
                let connect = self.tenant_connect(server, tenant).await?;
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

    /// How the tenant's role reaches its database on `server`: the admin's
    /// options (host, TLS, …) with the tenant's database, role and password.
    async fn tenant_connect(
        &self,
        server: &DatabaseServer,
        tenant: &TenantId,
    ) -> Result<PgConnectOptions, DbError> {
        let name = tenant_object_name(tenant)?;
        let password = self.credentials().await?.password(tenant)?;
        Ok((*server.admin.connect_options())
            .clone()
            .database(&name)
            .username(&name)
            .password(&password))
    }

    /// The deployment's credentials, read (or made) once per process.
    async fn credentials(&self) -> Result<&Credentials, DbError> {
        self.inner
            .credentials
            .get_or_try_init(|| async {
                let secret = crate::deployment::tenant_role_secret(&self.inner.home).await?;
                Ok::<_, DbError>(Credentials { secret })
            })
            .await
    }

    /// The mark of this deployment's databases (their comment), if the
    /// store at `home` has made its secret yet. Reads only.
    pub(crate) async fn recorded_mark(home: &PgPool) -> Result<Option<String>, DbError> {
        match crate::deployment::recorded_tenant_role_secret(home).await? {
            Some(secret) => Ok(Some(Credentials { secret }.mark()?)),
            None => Ok(None),
        }
    }

    async fn forget_pool(&self, tenant: &TenantId) {
        if let Some((_, pool)) = self.inner.pools.remove(tenant) {
            pool.close().await;
        }
    }

    /// Applies missing migrations to one tenant's database, all or nothing,
    /// as the tenant's role. First sets up (or repairs) that role and the
    /// database's privileges, and hands over objects another role left in
    /// the database: a tenant made before tenant roles existed is upgraded
    /// here. A database that does not exist is an error
    /// ([`DbError::MissingStorage`]), never created behind the operator's
    /// back.
    pub async fn migrate_tenant(&self, tenant: &TenantId) -> Result<Applied, DbError> {
        let server = self.server_of(tenant).await?;
        self.set_up_role(server, tenant).await?;
        let pool = self.pool_for(tenant).await?;
        self.migrate_on(server, tenant, &pool).await
    }

    /// Hands over what the tenant's role does not own in its database,
    /// then applies the migrations through `pool` (logged in as that role).
    async fn migrate_on(
        &self,
        server: &DatabaseServer,
        tenant: &TenantId,
        pool: &PgPool,
    ) -> Result<Applied, DbError> {
        let foreign: bool = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT EXISTS ({})",
            foreign_objects("(SELECT oid FROM pg_roles WHERE rolname = current_user)")
        )))
        .fetch_one(pool)
        .await?;
        if foreign {
            self.hand_over(server, tenant).await?;
        }
        let mut tx = pool.begin().await?;
        let applied = apply::<sqlx::Postgres>(&mut tx, &self.inner.migrations).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Gives the tenant's role every object of its database it does not
    /// own (tables made by the admin before tenant roles existed), as the
    /// admin connected to that database only: never `REASSIGN OWNED`, which
    /// would also hand over the admin's objects shared by the whole server
    /// (every other database it owns). What the admin creates there later
    /// (a table made by hand) is the tenant role's to use at once (default
    /// privileges, in that database only), and its own at the next
    /// migration.
    async fn hand_over(&self, server: &DatabaseServer, tenant: &TenantId) -> Result<(), DbError> {
        let name = tenant_object_name(tenant)?;
        let quoted = quote_ident(&name)?;
        let options = (*server.admin.connect_options()).clone().database(&name);
        let mut conn = sqlx::PgConnection::connect_with(&options).await?;
        // `quoted` is a validated identifier (`[A-Za-z0-9_-]`, quoted); the
        // object names are PostgreSQL's own quoted output (regclass, …).
        let role = format!("'{quoted}'::regrole");
        // One transaction, one at a time per tenant (the lock is this
        // database's). Schema `public` belongs to `pg_database_owner`, whose
        // rights reach an admin that is not superuser only through the
        // database's owner, the tenant role, and only while that role
        // inherits: it does for the length of this transaction, which no
        // other session sees.
        let done = sqlx::raw_sql(AssertSqlSafe(format!(
            "SELECT pg_advisory_xact_lock(7261638, hashtext('{name}')); \
             ALTER ROLE {quoted} INHERIT; \
             DO $tenancy$ DECLARE o record; BEGIN \
             FOR o IN {} ORDER BY 1 LOOP \
             EXECUTE format('ALTER %s %s OWNER TO %s', o.kind, o.name, '{quoted}'); \
             END LOOP; END $tenancy$; \
             ALTER ROLE {quoted} NOINHERIT; \
             ALTER DEFAULT PRIVILEGES FOR ROLE CURRENT_USER GRANT ALL ON SCHEMAS TO {quoted}; \
             ALTER DEFAULT PRIVILEGES FOR ROLE CURRENT_USER GRANT ALL ON TABLES TO {quoted}; \
             ALTER DEFAULT PRIVILEGES FOR ROLE CURRENT_USER GRANT ALL ON SEQUENCES TO {quoted}; \
             ALTER DEFAULT PRIVILEGES FOR ROLE CURRENT_USER GRANT ALL ON FUNCTIONS TO {quoted}; \
             ALTER DEFAULT PRIVILEGES FOR ROLE CURRENT_USER GRANT ALL ON TYPES TO {quoted}",
            foreign_objects(&role)
        )))
        .execute(&mut conn)
        .await;
        let _ = conn.close().await;
        done?;
        Ok(())
    }

    /// Creates the tenant's role if missing and makes it own its database,
    /// the only one besides the admin that may connect to it. Quick when
    /// everything is in place already (one catalog query); otherwise done
    /// under a lock per role, so concurrent calls (two processes migrating,
    /// provisioning racing `tenancy migrate`) do not collide.
    async fn set_up_role(&self, server: &DatabaseServer, tenant: &TenantId) -> Result<(), DbError> {
        let name = tenant_object_name(tenant)?;
        let quoted = quote_ident(&name)?;
        let credentials = self.credentials().await?;
        let mark = credentials.mark()?;
        let state = RoleState::read(&server.admin, &name, &mark).await?;
        if !state.database {
            return Err(Self::missing(server, &name));
        }
        if state.in_place() {
            return Ok(());
        }
        let verifier = sql_literal(&credentials.verifier(&name, &credentials.password(tenant)?)?)?;
        let mut tx = server.admin.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(7261638, hashtext($1))")
            .bind(&name)
            .execute(&mut *tx)
            .await?;
        let mut state = RoleState::read(&mut *tx, &name, &mark).await?;
        if state.in_place() {
            // Another call set it up while this one waited.
            tx.commit().await?;
            return Ok(());
        }
        let mut statements = Vec::new();
        if !state.role {
            // A savepoint: another deployment or strategy on this server may
            // create the same role at this moment (its lock is not ours).
            let mut create = tx.begin().await?;
            match sqlx::query(AssertSqlSafe(format!(
                "CREATE ROLE {quoted} WITH {ROLE_ATTRIBUTES} PASSWORD {verifier}"
            )))
            .execute(&mut *create)
            .await
            {
                Ok(_) => create.commit().await?,
                Err(e) if is_duplicate(&e) => {
                    create.rollback().await?;
                }
                Err(e) => return Err(e.into()),
            }
            state = RoleState::read(&mut *tx, &name, &mark).await?;
        }
        let mut fix = state.wrong_attributes();
        if !fix.is_empty() || !state.marked {
            // Repaired, or made by another deployment (another secret):
            // its password is this deployment's from now on.
            fix.push(format!("PASSWORD {verifier}"));
            statements.push(format!("ALTER ROLE {quoted} WITH {}", fix.join(" ")));
        }
        if !state.member {
            // A non-superuser admin may only give the database to a role
            // it is a member of.
            statements.push(format!("GRANT {quoted} TO CURRENT_USER"));
        }
        if !state.owned {
            statements.push(format!("ALTER DATABASE {quoted} OWNER TO {quoted}"));
        }
        statements.push(format!(
            "REVOKE CONNECT, TEMPORARY ON DATABASE {quoted} FROM PUBLIC"
        ));
        statements.push(format!(
            "GRANT CONNECT, TEMPORARY ON DATABASE {quoted} TO {quoted}"
        ));
        statements.push(format!(
            "COMMENT ON DATABASE {quoted} IS {}",
            sql_literal(&mark)?
        ));
        sqlx::raw_sql(AssertSqlSafe(statements.join("; ")))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    fn missing(server: &DatabaseServer, name: &str) -> DbError {
        DbError::MissingStorage(format!(
            "database {name} does not exist on server `{}`: restore it from a backup, or create it \
             empty (CREATE DATABASE \"{name}\") and migrate again",
            server.name
        ))
    }

    /// Drops the tenant role `role` on `server` unless a database of that
    /// name is still there or the role owns a database; when other objects
    /// still depend on it (the tables inside an archive), it is made
    /// `NOLOGIN` instead.
    async fn drop_role_if_unused(server: &DatabaseServer, role: &str) -> Result<(), DbError> {
        let quoted = quote_ident(role)?;
        let (exists, used): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1), \
             EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 \
                     OR datdba = (SELECT oid FROM pg_roles WHERE rolname = $1))",
        )
        .bind(role)
        .fetch_one(&server.admin)
        .await?;
        if !exists || used {
            return Ok(());
        }
        match sqlx::query(AssertSqlSafe(format!("DROP ROLE IF EXISTS {quoted}")))
            .execute(&server.admin)
            .await
        {
            Ok(_) => Ok(()),
            // dependent_objects_still_exist
            Err(e) if sql_state(&e).as_deref() == Some("2BP01") => {
                sqlx::query(AssertSqlSafe(format!("ALTER ROLE {quoted} NOLOGIN")))
                    .execute(&server.admin)
                    .await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
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
    /// that has it; for a tenant's database or archive, also its role on a
    /// server where nothing of that tenant is left.
    pub async fn drop_named(&self, name: &str) -> Result<(), DbError> {
        let quoted = quote_ident(name)?;
        let role = match archived_id(name) {
            Some(id) => Some(format!("tenant_{id}")),
            None => name.starts_with("tenant_").then(|| name.to_owned()),
        };
        for server in &self.inner.servers {
            sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"
            )))
            .execute(&server.admin)
            .await?;
            if let Some(role) = &role {
                Self::drop_role_if_unused(server, role).await?;
            }
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

    /// Moving a tenant, step 3: its database created on server `to`, with
    /// the tenant's role there (same name and password), and migrated as
    /// that role; returns a pool on it logged in as that role, so the copy
    /// is written by (and owned by) the tenant (placement unchanged).
    pub async fn create_on(&self, tenant: &TenantId, to: &str) -> Result<PgPool, DbError> {
        let server = self.server_named(to)?;
        let name = tenant_object_name(tenant)?;
        let quoted = quote_ident(&name)?;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {quoted}")))
            .execute(&server.admin)
            .await?;
        let made = async {
            self.set_up_role(server, tenant).await?;
            let connect = self.tenant_connect(server, tenant).await?;
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .connect_lazy_with(connect);
            match self.migrate_on(server, tenant, &pool).await {
                Ok(_) => Ok(pool),
                Err(e) => {
                    pool.close().await;
                    Err(e)
                }
            }
        }
        .await;
        if made.is_err() {
            let _ = self.drop_on(tenant, to).await;
        }
        made
    }

    /// Drops the tenant's database on server `on` (the copy of a failed
    /// move, or the source of a finished one), and its role there unless
    /// something of the tenant is left on that server.
    pub async fn drop_on(&self, tenant: &TenantId, on: &str) -> Result<(), DbError> {
        self.admin_on(tenant, on, |quoted| {
            format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        })
        .await?;
        Self::drop_role_if_unused(self.server_named(on)?, &tenant_object_name(tenant)?).await
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

    /// Drops the tenant's database on `server`, then its role there
    /// (unless something else of the tenant is left on that server).
    async fn drop_database(
        &self,
        server: &DatabaseServer,
        tenant: &TenantId,
        quoted: &str,
    ) -> Result<(), DbError> {
        self.forget_pool(tenant).await;
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"
        )))
        .execute(&server.admin)
        .await?;
        Self::drop_role_if_unused(server, &tenant_object_name(tenant)?).await
    }

    /// Archives the tenant's database `name` on `server` (it exists): no
    /// session left, renamed, given to the admin role, no privilege left to
    /// `PUBLIC` or the tenant's role, and that role made `NOLOGIN`.
    async fn archive(
        &self,
        server: &DatabaseServer,
        tenant: &TenantId,
        name: &str,
    ) -> Result<(), IsolationError> {
        let name_error = |e| db_error("database", "archive name", e);
        let quoted = quote_ident(name).map_err(name_error)?;
        let archived = archive_name(tenant, chrono::Utc::now().timestamp())
            .and_then(|n| quote_ident(&n))
            .map_err(name_error)?;
        self.forget_pool(tenant).await;
        // Renaming needs the database free of sessions.
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(name)
        .execute(&server.admin)
        .await
        .map_err(step_error("database", "disconnect sessions"))?;
        sqlx::query(AssertSqlSafe(format!(
            "ALTER DATABASE {quoted} RENAME TO {archived}"
        )))
        .execute(&server.admin)
        .await
        .map_err(step_error("database", "archive database"))?;
        let role_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(name)
                .fetch_one(&server.admin)
                .await
                .map_err(step_error("database", "look up role"))?;
        let mut statements = vec![
            format!("ALTER DATABASE {archived} OWNER TO CURRENT_USER"),
            format!("REVOKE ALL ON DATABASE {archived} FROM PUBLIC"),
        ];
        if role_exists {
            statements.push(format!("REVOKE ALL ON DATABASE {archived} FROM {quoted}"));
            statements.push(format!("ALTER ROLE {quoted} NOLOGIN"));
        }
        sqlx::raw_sql(AssertSqlSafe(statements.join("; ")))
            .execute(&server.admin)
            .await
            .map(|_| ())
            .map_err(step_error("database", "lock archive"))
    }
}

/// The attributes of a tenant role: it logs in, and nothing more.
const ROLE_ATTRIBUTES: &str =
    "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION";

/// How a tenant role, its database and their privileges stand, from the
/// admin's side (one catalog query).
#[derive(sqlx::FromRow)]
struct RoleState {
    role: bool,
    login: bool,
    superuser: bool,
    bypassrls: bool,
    createdb: bool,
    createrole: bool,
    inherit: bool,
    replication: bool,
    /// The admin can act as the role (superuser, or a member).
    member: bool,
    database: bool,
    owned: bool,
    /// The role may connect to its database.
    connects: bool,
    /// `PUBLIC` may connect to (or make temporary tables in) it.
    public: bool,
    /// Its comment is this deployment's mark.
    marked: bool,
}

impl RoleState {
    async fn read<'e>(
        conn: impl sqlx::PgExecutor<'e>,
        name: &str,
        mark: &str,
    ) -> Result<Self, sqlx::Error> {
        sqlx::query_as(
            "SELECT r.oid IS NOT NULL AS role, \
                    COALESCE(r.rolcanlogin, false) AS login, \
                    COALESCE(r.rolsuper, false) AS superuser, \
                    COALESCE(r.rolbypassrls, false) AS bypassrls, \
                    COALESCE(r.rolcreatedb, false) AS createdb, \
                    COALESCE(r.rolcreaterole, false) AS createrole, \
                    COALESCE(r.rolinherit, false) AS inherit, \
                    COALESCE(r.rolreplication, false) AS replication, \
                    COALESCE(pg_has_role(current_user, r.oid, 'USAGE'), false) AS member, \
                    d.oid IS NOT NULL AS database, \
                    COALESCE(d.datdba = r.oid, false) AS owned, \
                    COALESCE(has_database_privilege(r.oid, d.oid, 'CONNECT'), false) AS connects, \
                    COALESCE(has_database_privilege('public', d.oid, 'CONNECT') \
                             OR has_database_privilege('public', d.oid, 'TEMPORARY'), false) AS public, \
                    COALESCE(shobj_description(d.oid, 'pg_database') = $2, false) AS marked \
             FROM (SELECT 1) AS one \
             LEFT JOIN pg_roles r ON r.rolname = $1 \
             LEFT JOIN pg_database d ON d.datname = $1",
        )
        .bind(name)
        .bind(mark)
        .fetch_one(conn)
        .await
    }

    /// The `ALTER ROLE` clauses that correct its attributes.
    fn wrong_attributes(&self) -> Vec<String> {
        [
            (!self.login, "LOGIN"),
            (self.superuser, "NOSUPERUSER"),
            (self.bypassrls, "NOBYPASSRLS"),
            (self.createdb, "NOCREATEDB"),
            (self.createrole, "NOCREATEROLE"),
            (self.inherit, "NOINHERIT"),
            (self.replication, "NOREPLICATION"),
        ]
        .into_iter()
        .filter(|(wrong, _)| *wrong)
        .map(|(_, clause)| clause.to_owned())
        .collect()
    }

    /// Everything is as [`PgDatabaseIsolation::set_up_role`] leaves it.
    fn in_place(&self) -> bool {
        self.role
            && self.wrong_attributes().is_empty()
            && self.member
            && self.database
            && self.owned
            && self.connects
            && !self.public
            && self.marked
    }
}

/// The objects of the current database, outside the system schemas and
/// not part of an extension, that `role` (an SQL expression giving its
/// oid) does not own: rows of (order, `ALTER` keyword, quoted name).
/// Sequences of identity and serial columns follow their table. Schema
/// `public` of a new database is owned by `pg_database_owner`, whose
/// rights a `NOINHERIT` role does not use: it is handed over too.
fn foreign_objects(role: &str) -> String {
    const USER_SCHEMA: &str = "n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'";
    let extension = |catalog: &str, oid: &str, also: &str| {
        format!(
            "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass \
             AND d.objid = {oid} AND (d.deptype = 'e'{also}))"
        )
    };
    format!(
        "SELECT 1 AS ord, 'SCHEMA' AS kind, quote_ident(n.nspname) AS name FROM pg_namespace n \
         WHERE n.nspowner <> {role} AND {USER_SCHEMA} AND {} \
         UNION ALL \
         SELECT 2, CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' \
                WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, \
                c.oid::regclass::text \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relowner <> {role} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') \
           AND {USER_SCHEMA} AND {} \
         UNION ALL \
         SELECT 3, CASE p.prokind WHEN 'a' THEN 'AGGREGATE' WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, \
                p.oid::regprocedure::text \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE p.proowner <> {role} AND {USER_SCHEMA} AND {} \
         UNION ALL \
         SELECT 4, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.oid::regtype::text \
         FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
         WHERE t.typowner <> {role} AND t.typtype IN ('c', 'd', 'e', 'r') \
           AND (t.typtype <> 'c' OR EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind = 'c')) \
           AND {USER_SCHEMA} AND {}",
        extension("pg_namespace", "n.oid", ""),
        extension(
            "pg_class",
            "c.oid",
            " OR (c.relkind = 'S' AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))"
        ),
        extension("pg_proc", "p.oid", " OR d.deptype = 'i'"),
        extension("pg_type", "t.oid", " OR d.deptype = 'i'"),
    )
}

/// The SQLSTATE of a database error.
fn sql_state(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|db| db.code())
        .map(|code| code.into_owned())
}

/// `CREATE ROLE` lost a race: `duplicate_object`, or `unique_violation` on
/// the catalog when both inserted at once.
fn is_duplicate(e: &sqlx::Error) -> bool {
    matches!(sql_state(e).as_deref(), Some("42710" | "23505"))
}

/// A single-quoted SQL literal of text this module made: hex, base64 and
/// the SCRAM verifier's separators, or the mark's words. Anything else is
/// refused (it could not close the literal, but is not ours either).
fn sql_literal(text: &str) -> Result<String, DbError> {
    let ok = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=$:- ".contains(&b));
    if ok {
        Ok(format!("'{text}'"))
    } else {
        Err(DbError::UnsafeName(
            "a tenant role's verifier or mark holds unexpected characters".into(),
        ))
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], DbError> {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
        .map_err(|e| DbError::Migration(format!("HMAC key: {e}")))?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes().into())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Iterations of the SCRAM verifiers (PostgreSQL's default).
const SCRAM_ITERATIONS: u32 = 4096;

/// What tenant roles' passwords are derived from: the deployment's secret.
/// Never printed (no `Debug`).
struct Credentials {
    secret: String,
}

impl Credentials {
    /// The password of `tenant`'s role: hex of HMAC-SHA256(secret, id).
    fn password(&self, tenant: &TenantId) -> Result<String, DbError> {
        Ok(hex(&hmac(
            self.secret.as_bytes(),
            &[b"tenant role password\0", tenant.as_str().as_bytes()],
        )?))
    }

    /// This deployment's mark on its databases: not secret, and tells
    /// nothing about the secret.
    fn mark(&self) -> Result<String, DbError> {
        let id = hmac(self.secret.as_bytes(), &[b"deployment mark"])?;
        Ok(format!(
            "{}{}",
            PgDatabaseIsolation::MARK_PREFIX,
            hex(&id[..8])
        ))
    }

    /// The SCRAM-SHA-256 verifier PostgreSQL stores for `role` logging in
    /// with `password`; its salt is derived from the secret and the role,
    /// so setting it again changes nothing.
    fn verifier(&self, role: &str, password: &str) -> Result<String, DbError> {
        let salt = hmac(self.secret.as_bytes(), &[b"scram salt\0", role.as_bytes()])?;
        scram_sha_256(password, &salt[..16], SCRAM_ITERATIONS)
    }
}

/// A SCRAM-SHA-256 verifier as PostgreSQL stores it (RFC 5802, RFC 7677):
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`. Sent in
/// `PASSWORD '…'`, it is stored as is: the password never reaches the
/// server. (The password is hex, which SASLprep leaves unchanged.)
fn scram_sha_256(password: &str, salt: &[u8], iterations: u32) -> Result<String, DbError> {
    // SaltedPassword = Hi(password, salt, i), PBKDF2 with HMAC-SHA256.
    let keyed = <HmacSha256 as Mac>::new_from_slice(password.as_bytes())
        .map_err(|e| DbError::Migration(format!("HMAC key: {e}")))?;
    let mut block: [u8; 32] = hmac(password.as_bytes(), &[salt, &1u32.to_be_bytes()])?;
    let mut salted = block;
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&block);
        block = mac.finalize().into_bytes().into();
        for (s, b) in salted.iter_mut().zip(block) {
            *s ^= b;
        }
    }
    let client_key = hmac(&salted, &[b"Client Key"])?;
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, &[b"Server Key"])?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key),
        b64.encode(server_key)
    ))
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

    /// Places the tenant, creates its database (if missing), its role, and
    /// migrates it as that role; when this call created the database and a
    /// later step fails, the database (and the role, if nothing else of the
    /// tenant needs it) is dropped and the placement removed again.
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
                .map_err(|e| db_error("database", "drop database and role", e))?;
        } else if Self::exists(server, &name)
            .await
            .map_err(step_error("database", "look up database"))?
        {
            self.archive(server, &tenant.id, &name).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> Credentials {
        Credentials {
            secret: "0123456789abcdef".repeat(4),
        }
    }

    #[test]
    fn passwords_are_derived_per_tenant_and_never_sent() {
        let c = credentials();
        let a = c.password(&"acme".parse().unwrap()).unwrap();
        let b = c.password(&"globex".parse().unwrap()).unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(a, c.password(&"acme".parse().unwrap()).unwrap());
        let other = Credentials {
            secret: "f".repeat(64),
        };
        assert_ne!(a, other.password(&"acme".parse().unwrap()).unwrap());

        let verifier = c.verifier("tenant_acme", &a).unwrap();
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
        assert!(!verifier.contains(&a));
        assert_eq!(verifier, c.verifier("tenant_acme", &a).unwrap(), "stable");
        assert!(sql_literal(&verifier).is_ok());
        let mark = c.mark().unwrap();
        assert!(mark.starts_with(PgDatabaseIsolation::MARK_PREFIX));
        assert!(!mark.contains(&c.secret[..16]));
    }

    #[test]
    fn only_our_own_text_becomes_a_literal() {
        assert_eq!(sql_literal("ab+/=$:- 09").unwrap(), "'ab+/=$:- 09'");
        for bad in ["a'b", "a\\b", "a;b", "é"] {
            assert!(sql_literal(bad).is_err(), "{bad}");
        }
    }
}
