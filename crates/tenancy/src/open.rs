//! A deployment from one database URL and the configuration: the store,
//! the isolation strategy `lifecycle.isolation_strategy` names, and what
//! opens its scoped transactions, wired the way `tenancy serve` wires them.
//!
//! ```no_run
//! # async fn run() -> Result<(), tenancy::open::OpenError> {
//! use tenancy::open::Open;
//! use tenancy::{Migrations, TenancyConfig};
//!
//! let config = TenancyConfig::load().expect("tenancy.yaml");
//! let opened = Open::new("sqlite://app.db", config)
//!     // Row level: the shared tables, made first, then scoped by tenant_id.
//!     .shared_setup("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, title TEXT)")
//!     .shared_table("notes")
//!     // Schema and database strategies: what each tenant's own space holds.
//!     .tenant_migrations(Migrations::none())
//!     .connect()
//!     .await?;
//! let tenancy = opened.tenancy; // resolvers, validator, lifecycle, layer…
//! # Ok(()) }
//! ```
//!
//! What it does, by URL and strategy:
//!
//! | | `row_level` | `schema` | `database` |
//! |---|---|---|---|
//! | `postgres://…` | RLS on the shared tables (installed by `lifecycle.owner_database_url` when set, the server's role then only granted reads and writes; the setting signed with `lifecycle.row_level_signing_key`) | [`PgSchemaIsolation`] | [`PgDatabaseIsolation`] over `lifecycle.database_servers` |
//! | `sqlite://FILE` | the query interceptor on the shared tables | refused | [`SqliteDatabaseIsolation`], files in `FILE.tenants/` |
//!
//! The store's tables are migrated first, and the strategy is recorded in
//! the database: opening it later under another strategy (or other
//! servers) is refused while it holds tenants.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Sqlite, SqlitePool, Transaction};
use tenancy_core::{TenancyConfig, TenantId};
use tenancy_interceptor::{Interceptor, TenantTables};
use tenancy_sql::deployment::Deployment;
use tenancy_sql::{
    Applied, DatabaseServer, DbError, Migrations, PgDatabaseIsolation, PgRowLevel,
    PgSchemaIsolation, PgStore, ScopedBegin, SqliteDatabaseIsolation, SqliteRowLevel, SqliteStore,
    TenantDb, TenantSigningKey,
};

use crate::{Tenancy, TenancyBuilder};

/// Why a deployment could not be opened. Each says what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL is neither `postgres://…` nor `sqlite://…`, or is malformed.
    #[error("invalid database URL {url}: {reason} (expected sqlite://FILE or postgres://…)")]
    InvalidUrl {
        /// The URL, its password hidden.
        url: String,
        /// Why.
        reason: String,
    },
    /// A database could not be reached.
    #[error("{what}: cannot connect to {url}: {source}")]
    Connect {
        /// Which database (the main one, the owner's, a server's).
        what: String,
        /// The URL, its password hidden.
        url: String,
        /// Why.
        source: sqlx::Error,
    },
    /// The configuration asks for something this URL cannot do.
    #[error("{0}")]
    Config(String),
    /// Setting up the store, the strategy or the shared tables failed.
    #[error("{0}")]
    Setup(String),
    /// The toolkit could not be built from the configuration.
    #[error(transparent)]
    Build(#[from] crate::BuildError),
}

fn setup(e: impl std::fmt::Display) -> OpenError {
    OpenError::Setup(e.to_string())
}

/// How scoped transactions are opened under the opened strategy.
#[derive(Clone)]
pub enum ScopedDb {
    /// PostgreSQL: row-level security, a schema or a database per tenant.
    Postgres(TenantDb<Postgres>),
    /// SQLite, shared tables: every statement is scoped by the query
    /// interceptor, so a transaction on the main pool is the tenant's.
    SqliteShared(SqlitePool),
    /// SQLite, a file per tenant.
    SqliteFiles(SqliteDatabaseIsolation),
}

impl ScopedDb {
    /// A SQLite transaction for `tenant` (its file, or the shared pool
    /// whose statements the interceptor scopes); `None` on PostgreSQL.
    pub async fn sqlite_tx(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<Transaction<'static, Sqlite>>, DbError> {
        match self {
            Self::SqliteShared(pool) => Ok(Some(pool.begin().await?)),
            Self::SqliteFiles(files) => Ok(Some(files.begin_for(tenant).await?)),
            Self::Postgres(_) => Ok(None),
        }
    }
}

/// The strategies that keep a migration version per tenant (a schema or a
/// database of its own).
#[derive(Clone)]
pub enum TenantMigrator {
    /// A schema per tenant.
    PgSchema(PgSchemaIsolation),
    /// A PostgreSQL database per tenant.
    PgDatabase(PgDatabaseIsolation),
    /// A SQLite file per tenant.
    SqliteFiles(SqliteDatabaseIsolation),
}

impl TenantMigrator {
    /// Applies the missing migrations to one tenant, all or nothing.
    pub async fn migrate_tenant(&self, tenant: &TenantId) -> Result<Applied, DbError> {
        match self {
            Self::PgSchema(s) => s.migrate_tenant(tenant).await,
            Self::PgDatabase(d) => d.migrate_tenant(tenant).await,
            Self::SqliteFiles(f) => f.migrate_tenant(tenant).await,
        }
    }
}

/// The main database: the store's, and the shared tables'.
#[derive(Clone)]
pub enum MainPool {
    /// PostgreSQL.
    Postgres(PgPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

/// An opened deployment.
#[derive(Clone)]
pub struct Opened {
    /// The toolkit, wired on the store and the strategy.
    pub tenancy: Tenancy,
    /// Scoped transactions.
    pub scoped: ScopedDb,
    /// Per-tenant migrations (schema and database strategies).
    pub migrator: Option<TenantMigrator>,
    /// The main database.
    pub main: MainPool,
    /// The key signing the row-level tenant setting, when configured.
    pub signing_key: Option<TenantSigningKey>,
    /// What applying [`Open::shared_migrations`] did (row level, when
    /// there were any).
    pub shared_applied: Option<Applied>,
}

/// What to open: a URL, the configuration, and what the application adds
/// (its shared tables, its per-tenant migrations, its resolvers).
#[must_use = "nothing is opened until .connect() is awaited"]
pub struct Open {
    url: String,
    config: TenancyConfig,
    tenant_migrations: Migrations,
    shared_setup: Option<String>,
    shared_migrations: Migrations,
    shared_tables: Vec<String>,
    tenant_column: String,
    customize: Option<Box<dyn FnOnce(TenancyBuilder) -> TenancyBuilder + Send>>,
}

impl std::fmt::Debug for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Open")
            .field("url", &redact(&self.url))
            .field("shared_tables", &self.shared_tables)
            .finish_non_exhaustive()
    }
}

impl Open {
    /// Opens `url` (`postgres://…` or `sqlite://FILE`) under `config`.
    pub fn new(url: impl Into<String>, config: TenancyConfig) -> Self {
        Self {
            url: url.into(),
            config,
            tenant_migrations: Migrations::none(),
            shared_setup: None,
            shared_migrations: Migrations::none(),
            shared_tables: Vec::new(),
            tenant_column: "tenant_id".into(),
            customize: None,
        }
    }

    /// The migrations of each tenant's own schema or database (schema and
    /// database strategies).
    pub fn tenant_migrations(mut self, migrations: Migrations) -> Self {
        self.tenant_migrations = migrations;
        self
    }

    /// SQL run on the main database (by the owner role on PostgreSQL)
    /// before the shared tables are scoped, under the row-level strategy:
    /// typically `CREATE TABLE IF NOT EXISTS …`.
    pub fn shared_setup(mut self, sql: impl Into<String>) -> Self {
        self.shared_setup = Some(sql.into());
        self
    }

    /// The application's migrations of the main database's shared tables
    /// (row-level strategy), applied at connect by the owner role (on
    /// PostgreSQL, after the set-up [`PgRowLevel::install`] does, so a
    /// migration can register a table with `SELECT
    /// tenancy_register_table('projects')`). Versions are recorded in the
    /// main database's `_tenancy_migrations`: each applies once.
    pub fn shared_migrations(mut self, migrations: Migrations) -> Self {
        self.shared_migrations = migrations;
        self
    }

    /// A shared table whose rows belong to tenants, by its tenant column
    /// (row-level strategy: RLS on PostgreSQL, the interceptor on SQLite).
    pub fn shared_table(mut self, table: impl Into<String>) -> Self {
        self.shared_tables.push(table.into());
        self
    }

    /// The column holding the tenant id in shared tables [default: `tenant_id`].
    pub fn tenant_column(mut self, column: impl Into<String>) -> Self {
        self.tenant_column = column.into();
        self
    }

    /// Adds to the toolkit before it is built (resolvers, an event bus…);
    /// several calls apply in order.
    pub fn customize(
        mut self,
        f: impl FnOnce(TenancyBuilder) -> TenancyBuilder + Send + 'static,
    ) -> Self {
        self.customize = Some(match self.customize.take() {
            Some(before) => Box::new(move |builder| f(before(builder))),
            None => Box::new(f),
        });
        self
    }

    /// Connects, migrates the store, checks the recorded strategy, sets up
    /// the strategy and builds the toolkit.
    pub async fn connect(self) -> Result<Opened, OpenError> {
        if is_postgres(&self.url) {
            self.connect_postgres().await
        } else {
            self.connect_sqlite().await
        }
    }

    fn builder(&mut self) -> TenancyBuilder {
        let builder = Tenancy::builder().config(self.config.clone());
        match self.customize.take() {
            Some(customize) => customize(builder),
            None => builder,
        }
    }

    async fn connect_postgres(mut self) -> Result<Opened, OpenError> {
        let strategy = self.config.lifecycle.isolation_strategy.clone();
        let builder = self.builder();
        let lifecycle = &self.config.lifecycle;
        // A database that is down: requests wait at most 2 s for a
        // connection (a blip passes unnoticed), then get 503.
        let pool = pg_pool(&self.url, 16, Duration::from_secs(2), "the database").await?;
        // The role that owns the tables sets them up; the server's own
        // role (an ordinary one) is then only granted reads and writes.
        let owner = match &lifecycle.owner_database_url {
            Some(_) if strategy != "row_level" => {
                return Err(OpenError::Config(
                    "lifecycle.owner_database_url is used by the row_level strategy only".into(),
                ));
            }
            Some(owner_url) => Some(
                pg_pool(
                    owner_url,
                    2,
                    Duration::from_secs(5),
                    "lifecycle.owner_database_url",
                )
                .await?,
            ),
            None => None,
        };
        let signing_key = match &lifecycle.row_level_signing_key {
            None => None,
            Some(_) if owner.is_none() => {
                return Err(OpenError::Config(
                    "lifecycle.row_level_signing_key needs lifecycle.owner_database_url: the key is \
                     installed by the role that owns the tables, and the server must connect as \
                     another, ordinary role (one that owned the key could read it)"
                        .into(),
                ));
            }
            Some(hex) => {
                Some(TenantSigningKey::from_hex(hex.expose()).map_err(|e| {
                    OpenError::Config(format!("lifecycle.row_level_signing_key: {e}"))
                })?)
            }
        };
        let ddl = owner.clone().unwrap_or_else(|| pool.clone());
        let store = PgStore::new(pool.clone());
        PgStore::new(ddl.clone()).migrate().await.map_err(setup)?;
        let servers: Vec<&str> = if lifecycle.database_servers.is_empty() {
            vec!["default"]
        } else {
            lifecycle
                .database_servers
                .iter()
                .map(|s| s.name.as_str())
                .collect()
        };
        Deployment::new(strategy.as_str())
            .servers(servers)
            .check_pg(&ddl)
            .await
            .map_err(setup)?;
        let tenant_migrations = std::mem::take(&mut self.tenant_migrations);
        let mut migrator = None;
        let mut shared_applied = None;
        let (builder, db) =
            match strategy.as_str() {
                "row_level" => {
                    run_setup(self.shared_setup.as_deref(), &ddl).await?;
                    let with_key = |rls: PgRowLevel| match &signing_key {
                        Some(key) => rls.signed(key.clone()),
                        None => rls,
                    };
                    let owner_rls = with_key(PgRowLevel::new(ddl.clone()));
                    // The request role, tenancy_register_table, the signed
                    // setting; then the application's migrations.
                    if self.shared_migrations.is_empty() {
                        owner_rls
                            .install()
                            .await
                            .map_err(|e| setup(format!("cannot set up row-level security: {e}")))?;
                    } else {
                        shared_applied =
                            Some(owner_rls.migrate(&self.shared_migrations).await.map_err(
                                |e| setup(format!("cannot migrate the shared tables: {e}")),
                            )?);
                    }
                    for table in &self.shared_tables {
                        owner_rls
                            .register_table(table, &self.tenant_column)
                            .await
                            .map_err(|e| {
                                setup(format!("cannot enable row-level security on {table}: {e}"))
                            })?;
                    }
                    let rls = match &owner {
                        None => owner_rls,
                        Some(owner) => {
                            grant_reads_and_writes(owner, &pool, &owner_rls).await?;
                            let mut rls = with_key(PgRowLevel::new(pool.clone()));
                            for table in &self.shared_tables {
                                rls = rls.with_table(table, &self.tenant_column).map_err(setup)?;
                            }
                            rls
                        }
                    };
                    if signing_key.is_some() {
                        tenancy_core::IsolationStrategy::check(&rls)
                            .await
                            .map_err(|e| {
                                OpenError::Config(format!("lifecycle.row_level_signing_key: {e}"))
                            })?;
                    }
                    (builder.isolation(rls.clone()), TenantDb::new(rls))
                }
                "schema" => {
                    let schemas = PgSchemaIsolation::new(pool.clone(), tenant_migrations);
                    migrator = Some(TenantMigrator::PgSchema(schemas.clone()));
                    (builder.isolation(schemas.clone()), TenantDb::new(schemas))
                }
                "database" => {
                    let mut servers = Vec::new();
                    for server in &lifecycle.database_servers {
                        let admin = pg_pool(
                            &server.url,
                            4,
                            Duration::from_secs(5),
                            &format!("lifecycle.database_servers `{}`", server.name),
                        )
                        .await?;
                        servers.push(DatabaseServer::new(
                            server.name.clone(),
                            admin,
                            server.weight,
                        ));
                    }
                    let dbs =
                        PgDatabaseIsolation::with_servers(pool.clone(), servers, tenant_migrations);
                    migrator = Some(TenantMigrator::PgDatabase(dbs.clone()));
                    (builder.isolation(dbs.clone()), TenantDb::new(dbs))
                }
                other => return Err(unknown_strategy(other)),
            };
        let tenancy = builder.store(store).build()?;
        Ok(Opened {
            tenancy,
            scoped: ScopedDb::Postgres(db),
            migrator,
            main: MainPool::Postgres(pool),
            signing_key,
            shared_applied,
        })
    }

    async fn connect_sqlite(mut self) -> Result<Opened, OpenError> {
        let strategy = self.config.lifecycle.isolation_strategy.clone();
        if self.config.lifecycle.owner_database_url.is_some()
            || self.config.lifecycle.row_level_signing_key.is_some()
        {
            return Err(OpenError::Config(
                "lifecycle.owner_database_url and lifecycle.row_level_signing_key need PostgreSQL \
                 (SQLite has no row-level security: its row level goes through the query interceptor)"
                    .into(),
            ));
        }
        let pool = open_sqlite(&self.url).await?;
        let store = SqliteStore::new(pool.clone());
        store.migrate().await.map_err(setup)?;
        if strategy != "schema" {
            Deployment::new(strategy.as_str())
                .check_sqlite(&pool)
                .await
                .map_err(setup)?;
        }
        let builder = self.builder();
        let mut migrator = None;
        let mut shared_applied = None;
        let (builder, scoped) = match strategy.as_str() {
            "row_level" => {
                run_setup(self.shared_setup.as_deref(), &pool).await?;
                if !self.shared_migrations.is_empty() {
                    shared_applied = Some(
                        self.shared_migrations
                            .apply_sqlite(&pool)
                            .await
                            .map_err(|e| setup(format!("cannot migrate the shared tables: {e}")))?,
                    );
                }
                let interceptor = Interceptor::new(TenantTables::new(self.shared_tables.iter()));
                let rows = SqliteRowLevel::new(pool.clone(), interceptor);
                (
                    builder.isolation(rows),
                    ScopedDb::SqliteShared(pool.clone()),
                )
            }
            "database" => {
                let tenant_migrations =
                    std::mem::replace(&mut self.tenant_migrations, Migrations::none());
                let files = SqliteDatabaseIsolation::new(tenant_dir(&self.url), tenant_migrations);
                migrator = Some(TenantMigrator::SqliteFiles(files.clone()));
                (
                    builder.isolation(files.clone()),
                    ScopedDb::SqliteFiles(files),
                )
            }
            "schema" => {
                return Err(OpenError::Config(
                    "isolation strategy `schema` needs PostgreSQL: pass --database-url postgres://… \
                     or set lifecycle.isolation_strategy to row_level or database"
                        .into(),
                ));
            }
            other => return Err(unknown_strategy(other)),
        };
        let tenancy = builder.store(store).build()?;
        Ok(Opened {
            tenancy,
            scoped,
            migrator,
            main: MainPool::Sqlite(pool),
            signing_key: None,
            shared_applied,
        })
    }
}

/// Runs the application's shared-table set-up, when it has one.
async fn run_setup<'e, E>(sql: Option<&str>, executor: E) -> Result<(), OpenError>
where
    E: sqlx::Executor<'e>,
{
    if let Some(sql) = sql {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(executor)
            .await
            .map_err(setup)?;
    }
    Ok(())
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` with its password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

async fn pg_pool(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
    what: &str,
) -> Result<PgPool, OpenError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect(url)
        .await
        .map_err(|source| OpenError::Connect {
            what: what.to_owned(),
            url: redact(url),
            source,
        })
}

/// Grants the role of `app` reads and writes on the tables (and
/// sequences) `owner` made, and the request role its scoped transactions
/// switch to; nothing more.
async fn grant_reads_and_writes(
    owner: &PgPool,
    app: &PgPool,
    owner_rls: &PgRowLevel,
) -> Result<(), OpenError> {
    let cannot = |e: sqlx::Error| {
        OpenError::Setup(format!(
            "lifecycle.owner_database_url: cannot grant the server's role its privileges: {e}"
        ))
    };
    // Quoted by PostgreSQL itself.
    let (role, same): (String, bool) =
        sqlx::query_as("SELECT quote_ident(current_user), current_user = $1")
            .bind(
                sqlx::query_scalar::<_, String>("SELECT current_user::text")
                    .fetch_one(owner)
                    .await
                    .map_err(cannot)?,
            )
            .fetch_one(app)
            .await
            .map_err(cannot)?;
    if same {
        return Ok(());
    }
    let unquoted: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(app)
        .await
        .map_err(cannot)?;
    owner_rls.allow_role(&unquoted).await.map_err(|e| {
        OpenError::Setup(format!(
            "lifecycle.owner_database_url: cannot let the server's role switch to the request role: {e}"
        ))
    })?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}; \
         GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}"
    )))
    .execute(owner)
    .await
    .map_err(cannot)?;
    Ok(())
}

fn unknown_strategy(name: &str) -> OpenError {
    OpenError::Config(format!(
        "lifecycle.isolation_strategy `{name}` is unknown: use row_level, schema or database"
    ))
}

/// The directory of per-tenant SQLite files: `<file>.tenants/` beside the
/// main file.
fn tenant_dir(url: &str) -> PathBuf {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    PathBuf::from(format!("{path}.tenants"))
}

async fn open_sqlite(url: &str) -> Result<SqlitePool, OpenError> {
    // Every tenant's rows (row level) and the store: readable by the owner
    // only, created so before SQLite creates it with the umask's mode.
    if let Some(path) = tenancy_sql::doctor::sqlite_file_of(url) {
        tenancy_sql::isolation::create_sqlite_file(&path)
            .map_err(|e| OpenError::Setup(format!("cannot create {}: {e}", path.display())))?;
    }
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| OpenError::InvalidUrl {
            url: redact(url),
            reason: e.to_string(),
        })?
        .create_if_missing(true)
        .foreign_keys(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .map_err(|e| OpenError::Setup(format!("cannot open {url}: {e}")))
}
