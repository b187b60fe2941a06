//! What every command and route shares: the configuration, the store,
//! the isolation strategy and the CRUD resources, opened from one
//! database URL.

pub mod impersonation;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use sqlx::{Sqlite, Transaction};
use tenancy::config::ResourceConfig;
use tenancy::open::Open;
pub use tenancy::open::{MainPool, ScopedDb, TenantMigrator};
use tenancy::{Tenancy, TenancyConfig};
use tenancy_interceptor::service::ScopedTable;
use tenancy_interceptor::{Interceptor, TenantTables};
use tenancy_sql::portable::TenantData;
use tenancy_sql::{Migration, Migrations, TenantSigningKey};

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

/// Everything a command needs.
#[derive(Clone)]
pub struct App {
    /// The configuration.
    pub config: TenancyConfig,
    /// The toolkit, wired on the store.
    pub tenancy: Tenancy,
    /// Scoped transactions.
    pub db: ScopedDb,
    /// The CRUD resources.
    pub resources: Arc<Vec<Resource>>,
    /// Per-tenant migrations, under the schema and database strategies.
    pub migrator: Option<TenantMigrator>,
    /// The main database (the store's, and the shared tables').
    pub main: MainPool,
    /// The background job queue, in the main database.
    pub jobs: tenancy_sql::jobs::JobQueue,
    /// Usage per tenant and hour, in the main database.
    pub usage: tenancy_sql::usage::UsageStore,
    /// The migration version every tenant of this deployment is at: the
    /// latest of `lifecycle.migrations_dir` (or of the built-in `notes`
    /// migration).
    pub migration_version: i64,
    /// The key signing the row-level tenant setting, when configured
    /// (`lifecycle.row_level_signing_key`).
    pub signing_key: Option<TenantSigningKey>,
    /// What applying `lifecycle.migrations_dir` to the shared tables did
    /// when the app was opened (row level).
    pub shared_applied: Option<tenancy_sql::Applied>,
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
/// The primary key leads with the tenant column: a key of its own would
/// tell one tenant that another's id exists (and Citus needs it).
const NOTES_PG: &str = "CREATE TABLE IF NOT EXISTS notes (id BIGSERIAL, tenant_id TEXT NOT NULL, \
    title TEXT NOT NULL, body TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL DEFAULT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
    PRIMARY KEY (tenant_id, id));";

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

        let migration_version = match (&app_migrations, use_builtin_notes) {
            (Some(m), _) => m.latest(),
            (None, true) => 1,
            (None, false) => 0,
        };
        let postgres = tenancy::open::is_postgres(&url);
        let notes_sql = if postgres { NOTES_PG } else { NOTES_SQLITE };
        let mut open = Open::new(url, config.clone());
        if let (Some(m), "row_level") = (
            &app_migrations,
            config.lifecycle.isolation_strategy.as_str(),
        ) {
            // Row level: the application's migrations are the shared tables'.
            open = open.shared_migrations(m.clone());
        }
        let mut open = open.tenant_migrations(tenant_migrations(
            app_migrations,
            use_builtin_notes,
            notes_sql,
        )?);
        if use_builtin_notes {
            open = open.shared_setup(notes_sql);
        }
        for table in &tables {
            open = open.shared_table(table);
        }
        let sink = match &config.integration.nats_url {
            Some(url) => Some(
                tenancy::nats::NatsEventSink::connect(url)
                    .await
                    .map_err(AppError::setup)?,
            ),
            None => None,
        };
        let claim = config.resolution.jwt_claim.as_str().into();
        let opened = open
            .customize(move |builder| {
                let builder =
                    builder.override_resolver(impersonation::ImpersonationResolver { claim });
                match sink {
                    Some(sink) => builder.event_bus(tenancy::EventBus::new().with_sink(sink)),
                    None => builder,
                }
            })
            .connect()
            .await
            .map_err(AppError::setup)?;

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
            tenancy: opened.tenancy,
            db: opened.scoped,
            resources: Arc::new(resources),
            migrator: opened.migrator,
            jobs: match &opened.main {
                MainPool::Postgres(pool) => tenancy_sql::jobs::JobQueue::postgres(pool.clone()),
                MainPool::Sqlite(pool) => tenancy_sql::jobs::JobQueue::sqlite(pool.clone()),
            },
            usage: match &opened.main {
                MainPool::Postgres(pool) => tenancy_sql::usage::UsageStore::postgres(pool.clone()),
                MainPool::Sqlite(pool) => tenancy_sql::usage::UsageStore::sqlite(pool.clone()),
            },
            main: opened.main,
            migration_version,
            signing_key: opened.signing_key,
            shared_applied: opened.shared_applied,
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
            (MainPool::Postgres(pool), Some(TenantMigrator::PgSchema(_))) => {
                TenantData::pg_schema(pool.clone(), tenant.clone(), column)
            }
            (_, Some(TenantMigrator::PgDatabase(dbs))) => {
                let pool = dbs.pool_for(tenant).await.map_err(|e| cannot(&e))?;
                TenantData::pg_database(pool, tenant.clone(), column)
            }
            (MainPool::Sqlite(pool), None) => {
                TenantData::sqlite_shared(pool.clone(), tenant.clone(), column)
            }
            (_, Some(TenantMigrator::SqliteFiles(files))) => {
                let pool = files.pool_for(tenant).await.map_err(|e| cannot(&e))?;
                TenantData::sqlite_database(pool, tenant.clone(), column)
            }
            (MainPool::Sqlite(_), Some(TenantMigrator::PgSchema(_))) => {
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
        self.db.sqlite_tx(tenant).await
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

pub use tenancy::open::redact;

/// Parses a CLI value: JSON if it parses, else a string.
pub fn json_or_string(value: &str) -> Value {
    serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()))
}

/// A tenant record as an audit before/after value.
pub fn audit_value(tenant: &tenancy::TenantInfo) -> Option<Value> {
    serde_json::to_value(tenant).ok()
}
