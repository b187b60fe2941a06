//! Database-per-tenant isolation on SQLite: one file per tenant.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Sqlite, Transaction};
use tenancy_core::config::DeprovisionPolicy;
use tenancy_core::{IsolationError, IsolationStrategy, TenantId, TenantInfo};

use super::db_error;
use crate::db::{DbError, ScopedBegin};
use crate::ident::{archive_name, tenant_object_name};
use crate::migrate::{Applied, Migrations, apply};

/// One SQLite file per tenant, `<dir>/tenant_<id>.db`, with a bounded cache
/// of open pools.
#[derive(Clone)]
pub struct SqliteDatabaseIsolation {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    migrations: Migrations,
    pools: quick_cache::sync::Cache<TenantId, SqlitePool>,
}

impl SqliteDatabaseIsolation {
    /// Tenant files in `dir` (created if missing), migrated with
    /// `migrations`; at most 64 pools open.
    pub fn new(dir: impl Into<PathBuf>, migrations: Migrations) -> Self {
        Self::with_max_pools(dir, migrations, 64)
    }

    /// As [`SqliteDatabaseIsolation::new`] with at most `max_pools` open.
    pub fn with_max_pools(
        dir: impl Into<PathBuf>,
        migrations: Migrations,
        max_pools: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                dir: dir.into(),
                migrations,
                pools: quick_cache::sync::Cache::new(max_pools.max(1)),
            }),
        }
    }

    /// The file of one tenant.
    pub fn path_of(&self, tenant: &TenantId) -> Result<PathBuf, DbError> {
        Ok(self
            .inner
            .dir
            .join(format!("{}.db", tenant_object_name(tenant)?)))
    }

    /// The directory of the tenant files.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The pool of one tenant's file (opened lazily, cached); an error when
    /// the tenant has no file yet.
    pub async fn pool_for(&self, tenant: &TenantId) -> Result<SqlitePool, DbError> {
        self.pool(tenant, false).await
    }

    /// Open tenant pools right now.
    pub fn open_pools(&self) -> usize {
        self.inner.pools.len()
    }

    async fn pool(&self, tenant: &TenantId, create: bool) -> Result<SqlitePool, DbError> {
        let path = self.path_of(tenant)?;
        if create && !path.exists() {
            // A pool still open on a file deleted by hand would write to
            // the deleted file: drop it, and create the file owner-only.
            self.forget_pool(tenant).await;
            let mut dir = std::fs::DirBuilder::new();
            dir.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
            dir.create(&self.inner.dir)
                .and_then(|()| create_sqlite_file(&path))
                .map_err(|e| {
                    DbError::Sql(sqlx::Error::Configuration(
                        format!("cannot create {}: {e}", path.display()).into(),
                    ))
                })?;
        }
        if !create && !path.exists() {
            return Err(DbError::MissingStorage(format!(
                "tenant database {} does not exist: provision the tenant first",
                path.display()
            )));
        }
        self.inner
            .pools
            .get_or_insert_async(tenant, async {
                std::fs::create_dir_all(&self.inner.dir).map_err(|e| {
                    DbError::Sql(sqlx::Error::Configuration(
                        format!("cannot create {}: {e}", self.inner.dir.display()).into(),
                    ))
                })?;
                let options = SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5));
                Ok::<_, DbError>(
                    SqlitePoolOptions::new()
                        .max_connections(4)
                        // A tenant's connection cannot open another file.
                        .after_connect(|conn, _| Box::pin(super::sqlite_guard::forbid_attach(conn)))
                        .connect_lazy_with(options),
                )
            })
            .await
    }

    async fn forget_pool(&self, tenant: &TenantId) {
        if let Some((_, pool)) = self.inner.pools.remove(tenant) {
            pool.close().await;
        }
    }

    /// Applies missing migrations to one tenant's file, all or nothing.
    pub async fn migrate_tenant(&self, tenant: &TenantId) -> Result<Applied, DbError> {
        let pool = self.pool(tenant, true).await?;
        let mut tx = pool.begin().await?;
        let applied = apply::<sqlx::Sqlite>(&mut tx, &self.inner.migrations).await?;
        tx.commit().await?;
        Ok(applied)
    }

    fn remove_files(path: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }
}

#[async_trait]
impl ScopedBegin<Sqlite> for SqliteDatabaseIsolation {
    async fn begin_for(&self, tenant: &TenantId) -> Result<Transaction<'static, Sqlite>, DbError> {
        Ok(self.pool(tenant, false).await?.begin().await?)
    }
}

#[async_trait]
impl IsolationStrategy for SqliteDatabaseIsolation {
    fn name(&self) -> &str {
        "database"
    }

    fn migration_version(&self) -> Option<i64> {
        Some(self.inner.migrations.latest())
    }

    async fn provision(&self, tenant: &TenantInfo) -> Result<(), IsolationError> {
        let path = self
            .path_of(&tenant.id)
            .map_err(|e| db_error("database", "name", e))?;
        let existed = path.exists();
        if let Err(e) = self.migrate_tenant(&tenant.id).await {
            if !existed {
                self.forget_pool(&tenant.id).await;
                Self::remove_files(&path);
            }
            return Err(db_error("database", "create file and migrate", e));
        }
        Ok(())
    }

    async fn deprovision(
        &self,
        tenant: &TenantInfo,
        policy: DeprovisionPolicy,
    ) -> Result<(), IsolationError> {
        let path = self
            .path_of(&tenant.id)
            .map_err(|e| db_error("database", "name", e))?;
        match policy {
            DeprovisionPolicy::Keep => Ok(()),
            DeprovisionPolicy::Drop => {
                self.forget_pool(&tenant.id).await;
                Self::remove_files(&path);
                Ok(())
            }
            DeprovisionPolicy::Archive => {
                self.forget_pool(&tenant.id).await;
                if !path.exists() {
                    return Ok(());
                }
                let name = archive_name(&tenant.id, chrono::Utc::now().timestamp())
                    .map_err(|e| db_error("database", "archive name", e))?;
                std::fs::rename(&path, self.inner.dir.join(format!("{name}.db")))
                    .map_err(|e| IsolationError::new("database", "archive file", e))?;
                Self::remove_files(&path);
                Ok(())
            }
        }
    }

    async fn check(&self) -> Result<(), IsolationError> {
        std::fs::create_dir_all(&self.inner.dir).map_err(|e| {
            IsolationError::new(
                "database",
                "health check",
                format!("{}: {e}", self.inner.dir.display()),
            )
        })
    }
}

/// Creates the SQLite file `path` readable and writable by its owner
/// only, when it does not exist yet (its directory must exist); an existing
/// file is left as it is. SQLite gives its `-wal` and `-shm` files the mode
/// of the database file, so they are private too. (`tenancy doctor`
/// reports tenant files others can read as `sqlite_file_mode`.)
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let path = dir.path().join("tenant_acme.db");
/// tenancy::sql::isolation::create_sqlite_file(&path)?;
/// # #[cfg(unix)] {
/// use std::os::unix::fs::PermissionsExt;
/// assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
/// # }
/// # Ok::<_, std::io::Error>(())
/// ```
pub fn create_sqlite_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}
