//! What every command and route shares: the configuration, the store,
//! the isolation strategy and the CRUD resources, opened from one
//! database URL.

pub mod impersonation;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Sqlite, SqlitePool, Transaction};
use tenancy::config::ResourceConfig;
use tenancy::{Tenancy, TenancyConfig};
use tenancy_interceptor::service::ScopedTable;
use tenancy_interceptor::{Interceptor, TenantTables};
use tenancy_sql::deployment::Deployment;
use tenancy_sql::portable::TenantData;
use tenancy_sql::{
    DatabaseServer, Migration, Migrations, PgDatabaseIsolation, PgRowLevel, PgSchemaIsolation,
    PgStore, ScopedBegin, SqliteDatabaseIsolation, SqliteRowLevel, SqliteStore, TenantDb,
    TenantSigningKey,
};

/// Where the app's database and configuration are: what the global
/// options `--database-url` and `--config` say.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// Database URL: `sqlite://FILE` or `postgres://…`; [`DEFAULT_DATABASE_URL`] when `None`.
    pub database_url: Option<String>,
    /// Configuration file; `tenancy.yaml` (if present) and the environment when `None`.
    pub config: Option<PathBuf>,
}

impl Source {
    /// The database URL to open.
    pub fn url(&self) -> &str {
        self.database_url.as_deref().unwrap_or(DEFAULT_DATABASE_URL)
    }
}

/// Why the app could not be opened, or a tenant or its data found.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No tenant has this id or slug.
    #[error("no tenant \"{0}\": see `tenancy tenants list --all`")]
    TenantNotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] tenancy::StoreError),
    /// The configuration, the database or the strategy could not be set up;
    /// the message says what to fix.
    #[error("{0}")]
    Setup(String),
}

impl AppError {
    /// A set-up error with a message.
    pub fn setup(m: impl std::fmt::Display) -> Self {
        Self::Setup(m.to_string())
    }
}

/// The default database URL.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://tenancy.db";

/// One CRUD resource.
#[derive(Clone)]
pub struct Resource {
    /// Route segment.
    pub name: String,
    /// The scoped table.
    pub table: ScopedTable,
    /// Columns searched by `?q=`.
    pub search: Vec<String>,
    /// The exposed columns (the key first), to name a field in an error.
    pub columns: Vec<String>,
    /// The JSON type of each column when it is known (the built-in `notes`
    /// resource): a value of another type is refused before the database
    /// sees it, and the OpenAPI document says so. Empty for configured
    /// resources: any scalar is passed to the database.
    pub types: Vec<(String, ColumnType)>,
    /// Columns a create must give.
    pub required: Vec<String>,
    /// Columns the database assigns, refused in a body (the built-in
    /// `notes` key: an id a client picked could collide with the sequence
    /// that numbers every tenant's rows).
    pub read_only: Vec<String>,
}

/// The JSON type a column takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// A 64-bit integer.
    Integer,
    /// Text.
    Text,
}

/// How scoped transactions are opened.
#[derive(Clone)]
pub enum Db {
    /// SQLite, shared tables: statements scoped by the interceptor.
    SqliteRowLevel(SqlitePool),
    /// SQLite, a file per tenant.
    SqliteDatabase(SqliteDatabaseIsolation),
    /// PostgreSQL: RLS, schema or database scoping.
    Postgres(TenantDb<Postgres>),
}

/// The strategies that keep per-tenant migrations (schema, database).
#[derive(Clone)]
pub enum Migrator {
    /// A schema per tenant.
    PgSchema(PgSchemaIsolation),
    /// A Postgres database per tenant.
    PgDatabase(PgDatabaseIsolation),
    /// A SQLite file per tenant.
    SqliteDatabase(SqliteDatabaseIsolation),
}

impl Migrator {
    /// Applies the missing migrations to one tenant, all or nothing.
    pub async fn migrate_tenant(
        &self,
        tenant: &tenancy::TenantId,
    ) -> Result<tenancy_sql::Applied, tenancy_sql::DbError> {
        match self {
            Self::PgSchema(s) => s.migrate_tenant(tenant).await,
            Self::PgDatabase(d) => d.migrate_tenant(tenant).await,
            Self::SqliteDatabase(f) => f.migrate_tenant(tenant).await,
        }
    }
}

/// Everything a command needs.
#[derive(Clone)]
pub struct App {
    /// The configuration.
    pub config: TenancyConfig,
    /// The toolkit, wired on the store.
    pub tenancy: Tenancy,
    /// Scoped transactions.
    pub db: Db,
    /// The CRUD resources.
    pub resources: Arc<Vec<Resource>>,
    /// Per-tenant migrations, under the schema and database strategies.
    pub migrator: Option<Migrator>,
    /// The main database (the store's, and the shared tables').
    pub main: MainPool,
    /// The migration version every tenant of this deployment is at: the
    /// latest of `lifecycle.migrations_dir` (or of the built-in `notes`
    /// migration).
    pub migration_version: i64,
    /// The key signing the row-level tenant setting, when configured
    /// (`lifecycle.row_level_signing_key`).
    pub signing_key: Option<TenantSigningKey>,
}

/// The main database's pool.
#[derive(Clone)]
pub enum MainPool {
    /// PostgreSQL.
    Postgres(sqlx::PgPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

/// The column that holds the tenant id in shared tables.
pub const TENANT_COLUMN: &str = "tenant_id";

/// The built-in `notes` resource, used when `server.resources` is empty.
pub fn builtin_notes() -> ResourceConfig {
    ResourceConfig {
        name: "notes".into(),
        table: None,
        key: "id".into(),
        columns: vec![
            "id".into(),
            "title".into(),
            "body".into(),
            "created_at".into(),
        ],
        search: vec!["title".into(), "body".into()],
    }
}

const NOTES_SQLITE: &str = "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id TEXT NOT NULL, \
    title TEXT NOT NULL, body TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))); \
    CREATE INDEX IF NOT EXISTS notes_tenant ON notes (tenant_id, id);";
const NOTES_PG: &str = "CREATE TABLE IF NOT EXISTS notes (id BIGSERIAL PRIMARY KEY, tenant_id TEXT NOT NULL, \
    title TEXT NOT NULL, body TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL DEFAULT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')); \
    CREATE INDEX IF NOT EXISTS notes_tenant ON notes (tenant_id, id);";

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl App {
    /// Loads config and opens the store and strategy `source` names.
    pub async fn open(source: &Source) -> Result<App, AppError> {
        Self::open_with_migrations(source, None).await
    }

    /// [`App::open`], with `migrations_dir` replacing
    /// `lifecycle.migrations_dir` when given.
    pub async fn open_with_migrations(
        source: &Source,
        migrations_dir: Option<PathBuf>,
    ) -> Result<App, AppError> {
        let mut config = match &source.config {
            Some(path) => TenancyConfig::load_from(Some(path)),
            None => TenancyConfig::load(),
        }
        .map_err(AppError::setup)?;
        if migrations_dir.is_some() {
            config.lifecycle.migrations_dir = migrations_dir;
        }
        let url = source.url().to_owned();
        let strategy = config.lifecycle.isolation_strategy.clone();
        let resource_configs = if config.server.resources.is_empty() {
            vec![builtin_notes()]
        } else {
            config.server.resources.clone()
        };
        let use_builtin_notes = config.server.resources.is_empty();
        let tables: Vec<String> = resource_configs
            .iter()
            .map(|r| r.table.clone().unwrap_or_else(|| r.name.clone()))
            .collect();
        let interceptor = Interceptor::new(TenantTables::new(tables.iter()));
        let app_migrations = match &config.lifecycle.migrations_dir {
            Some(dir) => Some(Migrations::from_dir(dir).map_err(AppError::setup)?),
            None => None,
        };

        let mut builder = Tenancy::builder().config(config.clone()).override_resolver(
            crate::app::impersonation::ImpersonationResolver {
                claim: config.resolution.jwt_claim.as_str().into(),
            },
        );
        if let Some(url) = &config.integration.nats_url {
            let sink = tenancy::nats::NatsEventSink::connect(url)
                .await
                .map_err(AppError::setup)?;
            builder = builder.event_bus(tenancy::EventBus::new().with_sink(sink));
        }
        let mut migrator = None;
        let mut signing_key = None;
        let migration_version = match (&app_migrations, use_builtin_notes) {
            (Some(m), _) => m.latest(),
            (None, true) => 1,
            (None, false) => 0,
        };
        let main;
        let (tenancy, db) = if is_postgres(&url) {
            // A database that is down: requests wait at most 2 s for a
            // connection (a blip passes unnoticed), then get 503.
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(std::time::Duration::from_secs(2))
                .connect(&url)
                .await
                .map_err(|e| AppError::setup(format!("cannot connect to {}: {e}", redact(&url))))?;
            main = MainPool::Postgres(pool.clone());
            // The role that owns the tables sets them up; the server's own
            // role (an ordinary one) is then only granted reads and writes.
            let owner = match &config.lifecycle.owner_database_url {
                Some(owner_url) => {
                    if strategy != "row_level" {
                        return Err(AppError::setup(
                            "lifecycle.owner_database_url is used by the row_level strategy only",
                        ));
                    }
                    Some(
                        PgPoolOptions::new()
                            .max_connections(2)
                            .acquire_timeout(std::time::Duration::from_secs(5))
                            .connect(owner_url)
                            .await
                            .map_err(|e| {
                                AppError::setup(format!(
                                    "lifecycle.owner_database_url: cannot connect to {}: {e}",
                                    redact(owner_url)
                                ))
                            })?,
                    )
                }
                None => None,
            };
            signing_key = match &config.lifecycle.row_level_signing_key {
                None => None,
                Some(_) if owner.is_none() => {
                    return Err(AppError::setup(
                        "lifecycle.row_level_signing_key needs lifecycle.owner_database_url: the key is \
                         installed by the role that owns the tables, and the server must connect as \
                         another, ordinary role (one that owned the key could read it)",
                    ));
                }
                Some(hex) => Some(TenantSigningKey::from_hex(hex.expose()).map_err(|e| {
                    AppError::setup(format!("lifecycle.row_level_signing_key: {e}"))
                })?),
            };
            let ddl = owner.clone().unwrap_or_else(|| pool.clone());
            let store = PgStore::new(pool.clone());
            PgStore::new(ddl.clone())
                .migrate()
                .await
                .map_err(AppError::setup)?;
            let servers: Vec<&str> = if config.lifecycle.database_servers.is_empty() {
                vec!["default"]
            } else {
                config
                    .lifecycle
                    .database_servers
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect()
            };
            Deployment::new(strategy.as_str())
                .servers(servers)
                .check_pg(&ddl)
                .await
                .map_err(AppError::setup)?;
            let tenant_migrations = tenant_migrations(app_migrations, use_builtin_notes, NOTES_PG)?;
            let (builder, db) = match strategy.as_str() {
                "row_level" => {
                    if use_builtin_notes {
                        sqlx::raw_sql(NOTES_PG)
                            .execute(&ddl)
                            .await
                            .map_err(AppError::setup)?;
                    }
                    let with_key = |rls: PgRowLevel| match &signing_key {
                        Some(key) => rls.signed(key.clone()),
                        None => rls,
                    };
                    let owner_rls = with_key(PgRowLevel::new(ddl.clone()));
                    for table in &tables {
                        owner_rls
                            .register_table(table, "tenant_id")
                            .await
                            .map_err(|e| {
                                AppError::setup(format!(
                                    "cannot enable row-level security on {table}: {e}"
                                ))
                            })?;
                    }
                    let rls = match &owner {
                        None => owner_rls,
                        Some(owner) => {
                            grant_reads_and_writes(owner, &pool).await?;
                            let mut rls = with_key(PgRowLevel::new(pool.clone()));
                            for table in &tables {
                                rls = rls
                                    .with_table(table, "tenant_id")
                                    .map_err(AppError::setup)?;
                            }
                            rls
                        }
                    };
                    if signing_key.is_some() {
                        tenancy::IsolationStrategy::check(&rls).await.map_err(|e| {
                            AppError::setup(format!("lifecycle.row_level_signing_key: {e}"))
                        })?;
                    }
                    (builder.isolation(rls.clone()), TenantDb::new(rls))
                }
                "schema" => {
                    let schemas = PgSchemaIsolation::new(pool.clone(), tenant_migrations);
                    migrator = Some(Migrator::PgSchema(schemas.clone()));
                    (builder.isolation(schemas.clone()), TenantDb::new(schemas))
                }
                "database" => {
                    let mut servers = Vec::new();
                    for server in &config.lifecycle.database_servers {
                        let admin = PgPoolOptions::new()
                            .max_connections(4)
                            .acquire_timeout(std::time::Duration::from_secs(5))
                            .connect(&server.url)
                            .await
                            .map_err(|e| {
                                AppError::setup(format!(
                                    "lifecycle.database_servers `{}`: cannot connect to {}: {e}",
                                    server.name,
                                    redact(&server.url)
                                ))
                            })?;
                        servers.push(DatabaseServer::new(
                            server.name.clone(),
                            admin,
                            server.weight,
                        ));
                    }
                    let dbs =
                        PgDatabaseIsolation::with_servers(pool.clone(), servers, tenant_migrations);
                    migrator = Some(Migrator::PgDatabase(dbs.clone()));
                    (builder.isolation(dbs.clone()), TenantDb::new(dbs))
                }
                other => return Err(unknown_strategy(other)),
            };
            let tenancy = builder.store(store).build().map_err(AppError::setup)?;
            (tenancy, Db::Postgres(db))
        } else {
            if config.lifecycle.owner_database_url.is_some()
                || config.lifecycle.row_level_signing_key.is_some()
            {
                return Err(AppError::setup(
                    "lifecycle.owner_database_url and lifecycle.row_level_signing_key need PostgreSQL \
                     (SQLite has no row-level security: its row level goes through the query interceptor)",
                ));
            }
            let pool = open_sqlite(&url).await?;
            main = MainPool::Sqlite(pool.clone());
            let store = SqliteStore::new(pool.clone());
            store.migrate().await.map_err(AppError::setup)?;
            if strategy != "schema" {
                Deployment::new(strategy.as_str())
                    .check_sqlite(&pool)
                    .await
                    .map_err(AppError::setup)?;
            }
            let (builder, db) = match strategy.as_str() {
                "row_level" => {
                    if use_builtin_notes {
                        sqlx::raw_sql(NOTES_SQLITE)
                            .execute(&pool)
                            .await
                            .map_err(AppError::setup)?;
                    }
                    let rows = SqliteRowLevel::new(pool.clone(), interceptor.clone());
                    (builder.isolation(rows), Db::SqliteRowLevel(pool.clone()))
                }
                "database" => {
                    let tenant_migrations =
                        tenant_migrations(app_migrations, use_builtin_notes, NOTES_SQLITE)?;
                    let files = SqliteDatabaseIsolation::new(tenant_dir(&url), tenant_migrations);
                    migrator = Some(Migrator::SqliteDatabase(files.clone()));
                    (builder.isolation(files.clone()), Db::SqliteDatabase(files))
                }
                "schema" => {
                    return Err(AppError::setup(
                        "isolation strategy `schema` needs PostgreSQL: pass --database-url postgres://… \
                         or set lifecycle.isolation_strategy to row_level or database",
                    ));
                }
                other => return Err(unknown_strategy(other)),
            };
            let tenancy = builder.store(store).build().map_err(AppError::setup)?;
            (tenancy, db)
        };

        let resources = resource_configs
            .iter()
            .map(|r| {
                let table = r.table.clone().unwrap_or_else(|| r.name.clone());
                Ok(Resource {
                    name: r.name.clone(),
                    table: ScopedTable::new(interceptor.clone(), &table, &r.key, &r.columns)
                        .map_err(|e| {
                            AppError::setup(format!("server.resources `{}`: {e}", r.name))
                        })?,
                    search: r.search.clone(),
                    columns: std::iter::once(r.key.clone())
                        .chain(r.columns.iter().cloned())
                        .collect(),
                    types: if use_builtin_notes {
                        vec![
                            ("id".into(), ColumnType::Integer),
                            ("title".into(), ColumnType::Text),
                            ("body".into(), ColumnType::Text),
                            ("created_at".into(), ColumnType::Text),
                        ]
                    } else {
                        Vec::new()
                    },
                    required: if use_builtin_notes {
                        vec!["title".into()]
                    } else {
                        Vec::new()
                    },
                    read_only: if use_builtin_notes {
                        vec!["id".into()]
                    } else {
                        Vec::new()
                    },
                })
            })
            .collect::<Result<Vec<_>, AppError>>()?;
        Ok(App {
            config,
            tenancy,
            db,
            resources: Arc::new(resources),
            migrator,
            main,
            migration_version,
            signing_key,
        })
    }

    /// Waits (at most 5 s) until events queued for sinks such as NATS are
    /// delivered, so a one-shot command does not exit with them; says how
    /// many were not.
    pub async fn flush_events(&self) {
        let bus = self.tenancy.events();
        if !bus.flush(std::time::Duration::from_secs(5)).await {
            eprintln!(
                "warning: {} tenant events could not be delivered to their sinks (is NATS up?)",
                bus.pending()
            );
        }
    }

    /// Records an admin action in the audit log. The action has
    /// happened already, so a failure to record is reported on stderr and
    /// in the log, not turned into a failure of the action.
    pub async fn audit(&self, entry: tenancy::audit::NewAuditEntry) {
        let Some(log) = self.tenancy.audit() else {
            return;
        };
        if let Err(error) = log.record(entry.clone()).await {
            tracing::error!(%error, action = %entry.action, actor = %entry.actor, "cannot record an audit entry");
            eprintln!(
                "warning: the audit log did not record {} by {}: {error}",
                entry.action, entry.actor
            );
        }
    }

    /// The isolation strategy's name (`row_level`, `schema`, `database`).
    pub fn strategy(&self) -> &str {
        &self.config.lifecycle.isolation_strategy
    }

    /// Where `tenant`'s tables live, its rows told apart by `column` in
    /// shared tables.
    pub async fn tenant_data(
        &self,
        tenant: &tenancy::TenantId,
        column: &str,
    ) -> Result<TenantData, AppError> {
        let cannot = |e: &dyn std::fmt::Display| {
            AppError::setup(format!("cannot open the data of tenant {tenant}: {e}"))
        };
        let data = match (&self.main, &self.migrator) {
            (MainPool::Postgres(pool), None) => {
                TenantData::pg_shared(pool.clone(), tenant.clone(), column)
                    .map(|data| self.signed(data))
            }
            (MainPool::Postgres(pool), Some(Migrator::PgSchema(_))) => {
                TenantData::pg_schema(pool.clone(), tenant.clone(), column)
            }
            (_, Some(Migrator::PgDatabase(dbs))) => {
                let pool = dbs.pool_for(tenant).await.map_err(|e| cannot(&e))?;
                TenantData::pg_database(pool, tenant.clone(), column)
            }
            (MainPool::Sqlite(pool), None) => {
                TenantData::sqlite_shared(pool.clone(), tenant.clone(), column)
            }
            (_, Some(Migrator::SqliteDatabase(files))) => {
                let pool = files.pool_for(tenant).await.map_err(|e| cannot(&e))?;
                TenantData::sqlite_database(pool, tenant.clone(), column)
            }
            (MainPool::Sqlite(_), Some(Migrator::PgSchema(_))) => {
                return Err(AppError::setup("schema isolation needs PostgreSQL"));
            }
        };
        data.map_err(|e| cannot(&e))
    }

    /// Finds a tenant by id or slug, or says how to find one.
    pub async fn tenant(&self, reference: &str) -> Result<tenancy::TenantInfo, AppError> {
        self.tenancy.store().find(reference).await?.ok_or_else(|| {
            AppError::TenantNotFound(
                reference
                    .chars()
                    .take(64)
                    .collect::<String>()
                    .escape_debug()
                    .to_string(),
            )
        })
    }

    /// A SQLite transaction scoped to `tenant` (by file), or unscoped on
    /// shared tables where the interceptor scopes every statement; `None`
    /// on PostgreSQL.
    pub async fn sqlite_tx(
        &self,
        tenant: &tenancy::TenantId,
    ) -> Result<Option<Transaction<'static, Sqlite>>, tenancy_sql::DbError> {
        match &self.db {
            Db::SqliteRowLevel(pool) => Ok(Some(pool.begin().await?)),
            Db::SqliteDatabase(files) => Ok(Some(files.begin_for(tenant).await?)),
            Db::Postgres(_) => Ok(None),
        }
    }

    /// The resource served as `name`.
    pub fn resource(&self, name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.name == name)
    }
}

impl App {
    /// `data`, signing its tenant setting when a key is configured.
    pub fn signed(&self, data: TenantData) -> TenantData {
        match &self.signing_key {
            Some(key) => data.signed(key),
            None => data,
        }
    }
}

/// Grants the role of `app` reads and writes on the tables (and
/// sequences) `owner` made, nothing more.
async fn grant_reads_and_writes(owner: &PgPool, app: &PgPool) -> Result<(), AppError> {
    let cannot = |e: sqlx::Error| {
        AppError::setup(format!(
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
    sqlx::raw_sql(AssertSqlSafe(format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}; \
         GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}"
    )))
    .execute(owner)
    .await
    .map_err(cannot)?;
    Ok(())
}

fn unknown_strategy(name: &str) -> AppError {
    AppError::setup(format!(
        "lifecycle.isolation_strategy `{name}` is unknown: use row_level, schema or database"
    ))
}

fn tenant_migrations(
    app: Option<Migrations>,
    builtin_notes: bool,
    notes_sql: &str,
) -> Result<Migrations, AppError> {
    match (app, builtin_notes) {
        (Some(m), _) => Ok(m),
        (None, true) => Migrations::new(vec![Migration {
            version: 1,
            name: "tenancy_notes".into(),
            sql: notes_sql.to_owned(),
        }])
        .map_err(AppError::setup),
        (None, false) => Ok(Migrations::none()),
    }
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

async fn open_sqlite(url: &str) -> Result<SqlitePool, AppError> {
    use std::str::FromStr;
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| {
            AppError::setup(format!(
                "invalid database URL {url}: {e} (expected sqlite://FILE or postgres://…)"
            ))
        })?
        .create_if_missing(true)
        .foreign_keys(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(std::time::Duration::from_secs(5));
    SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .map_err(|e| AppError::setup(format!("cannot open {url}: {e}")))
}

/// A URL with its password hidden.
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

/// Parses a CLI value: JSON if it parses, else a string.
pub fn json_or_string(value: &str) -> Value {
    serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()))
}

/// A tenant record as an audit before/after value.
pub fn audit_value(tenant: &tenancy::TenantInfo) -> Option<Value> {
    serde_json::to_value(tenant).ok()
}
