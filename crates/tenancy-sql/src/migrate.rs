//! The application's per-tenant migrations: a directory of versioned SQL
//! files (`0001_create_notes.sql`, `0002_…`), applied in version order to
//! each tenant schema or database. Each tenant records the versions it has
//! in `_tenancy_migrations`, so re-runs apply only what is missing.

use std::path::Path;
use std::sync::Arc;

use crate::DbError;

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The number before the first `_`.
    pub version: i64,
    /// The rest of the file name, without `.sql`.
    pub name: String,
    /// The SQL (may hold several statements).
    pub sql: String,
}

/// An ordered set of migrations. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Migrations {
    items: Arc<[Migration]>,
}

impl Migrations {
    /// No migrations.
    pub fn none() -> Self {
        Self::default()
    }

    /// Migrations given in code.
    pub fn new(mut items: Vec<Migration>) -> Result<Self, DbError> {
        items.sort_by_key(|m| m.version);
        if let Some(pair) = items.windows(2).find(|w| w[0].version == w[1].version) {
            return Err(DbError::Migration(format!(
                "two migrations have version {}: {} and {}",
                pair[0].version, pair[0].name, pair[1].name
            )));
        }
        Ok(Self {
            items: items.into(),
        })
    }

    /// Reads every `*.sql` file of `dir`, named `<version>_<name>.sql`.
    pub fn from_dir(dir: &Path) -> Result<Self, DbError> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            DbError::Migration(format!(
                "cannot read migrations directory {}: {e}",
                dir.display()
            ))
        })?;
        let mut items = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| DbError::Migration(e.to_string()))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("sql") {
                continue;
            }
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let (version, name) = stem.split_once('_').unwrap_or((stem, ""));
            let version: i64 = version.parse().map_err(|_| {
                DbError::Migration(format!(
                    "migration file {} must be named <version>_<name>.sql (e.g. 0001_create_notes.sql)",
                    path.display()
                ))
            })?;
            let sql = std::fs::read_to_string(&path)
                .map_err(|e| DbError::Migration(format!("cannot read {}: {e}", path.display())))?;
            items.push(Migration {
                version,
                name: name.to_owned(),
                sql,
            });
        }
        Self::new(items)
    }

    /// The migrations in version order.
    pub fn iter(&self) -> impl Iterator<Item = &Migration> {
        self.items.iter()
    }

    /// The latest version, or 0.
    pub fn latest(&self) -> i64 {
        self.items.last().map_or(0, |m| m.version)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Applies the missing migrations to the SQLite database of `pool`
    /// (shared tables under row level), in one transaction.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tenancy::DbError> {
    /// use tenancy::{Migration, Migrations};
    /// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
    /// let migrations = Migrations::new(vec![Migration {
    ///     version: 1,
    ///     name: "projects".into(),
    ///     sql: "CREATE TABLE projects (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL)".into(),
    /// }])?;
    /// assert_eq!(migrations.apply_sqlite(&pool).await?.to, 1);
    /// assert_eq!(migrations.apply_sqlite(&pool).await?.count, 0);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "sqlite")]
    pub async fn apply_sqlite(&self, pool: &sqlx::SqlitePool) -> Result<Applied, DbError> {
        let mut tx = pool.begin().await?;
        let applied = apply::<sqlx::Sqlite>(&mut tx, self).await?;
        tx.commit().await?;
        Ok(applied)
    }
}

/// The bookkeeping table, created in each tenant schema/database.
pub(crate) const BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS _tenancy_migrations (\
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)";

static DURATIONS: std::sync::LazyLock<tenancy_core::metrics::DurationHistogram> =
    std::sync::LazyLock::new(Default::default);

/// How long applying migrations to one tenant took in this process, for
/// every run that applied at least one (at provisioning, or `migrate`).
pub fn durations() -> &'static tenancy_core::metrics::DurationHistogram {
    &DURATIONS
}

/// What applying migrations to one tenant did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Version before.
    pub from: i64,
    /// Version after.
    pub to: i64,
    /// Migrations applied now.
    pub count: usize,
}

/// Applies the missing migrations inside the caller's transaction (so a
/// failure leaves the tenant at its previous version), on PostgreSQL or
/// SQLite. On PostgreSQL the connection's `search_path` must already point
/// at the tenant schema; on SQLite the connection is the tenant's database.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) async fn apply<DB>(
    conn: &mut DB::Connection,
    migrations: &Migrations,
) -> Result<Applied, DbError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'r> (i64,): sqlx::FromRow<'r, DB::Row>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let started = std::time::Instant::now();
    sqlx::raw_sql(BOOKKEEPING).execute(&mut *conn).await?;
    let from: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _tenancy_migrations")
        .fetch_one(&mut *conn)
        .await?;
    let mut applied = Applied {
        from,
        to: from,
        count: 0,
    };
    for m in migrations.iter().filter(|m| m.version > from) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(m.sql.clone()))
            .execute(&mut *conn)
            .await
            .map_err(|e| DbError::Migration(format!("{:04}_{}: {e}", m.version, m.name)))?;
        // `$n` placeholders: sqlx's SQLite driver reads them as `?n`.
        sqlx::query(
            "INSERT INTO _tenancy_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name.as_str())
        .bind(chrono::Utc::now().to_rfc3339().as_str())
        .execute(&mut *conn)
        .await?;
        applied.to = m.version;
        applied.count += 1;
    }
    if applied.count > 0 {
        DURATIONS.observe(started.elapsed());
    }
    Ok(applied)
}
