//! What a store was set up with: its isolation strategy and database
//! servers, recorded in the store (table `tenancy_deployment`) so that a
//! process configured differently refuses to run against it instead of
//! writing tenant data where no one will look for it.
//!
//! The first process to open a store records its configuration. Later
//! processes must match it while the store holds tenants; an empty store
//! takes the configuration of whoever opens it next. Tenants placed on a
//! database server must find that server configured.
//!
//! ```no_run
//! # async fn run(pool: sqlx::PgPool) -> Result<(), tenancy_sql::deployment::DeploymentError> {
//! use tenancy_sql::deployment::Deployment;
//! Deployment::new("database").servers(["default", "eu-2"]).check_pg(&pool).await?;
//! # Ok(()) }
//! ```

/// A process's isolation configuration, checked against what the store
/// recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    strategy: String,
    servers: Vec<String>,
}

/// The store was set up differently from this process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeploymentError {
    /// The store's tenants were made under another isolation strategy.
    #[error(
        "this store's tenants were created with isolation strategy `{recorded}`, but this process is \
         configured with `{configured}`: set lifecycle.isolation_strategy \
         (TENANCY__LIFECYCLE__ISOLATION_STRATEGY) to `{recorded}`, or move the tenants to a store \
         of the other strategy with `tenancy tenants export` and `tenancy tenants import`"
    )]
    StrategyMismatch {
        /// What the store recorded.
        recorded: String,
        /// What this process is configured with.
        configured: String,
    },
    /// Tenants are placed on database servers this process does not know.
    #[error(
        "tenants of this store are placed on database server(s) {missing}, which this process does \
         not configure (lifecycle.database_servers: {configured}): add them back"
    )]
    ServersMissing {
        /// The placed servers that are not configured, comma-separated.
        missing: String,
        /// The configured servers, comma-separated.
        configured: String,
    },
    /// The store could not be read or written.
    #[error("cannot check the store's recorded isolation strategy: {0}")]
    Sql(#[from] sqlx::Error),
}

const KEY_STRATEGY: &str = "isolation_strategy";
// Servers are placed on PostgreSQL only.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
const KEY_SERVERS: &str = "database_servers";

impl Deployment {
    /// A process using isolation strategy `strategy` (`row_level`,
    /// `schema`, `database`).
    pub fn new(strategy: impl Into<String>) -> Self {
        Self {
            strategy: strategy.into(),
            servers: Vec::new(),
        }
    }

    /// The database servers this process places tenants on (the
    /// `database` strategy).
    pub fn servers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, servers: I) -> Self {
        self.servers = servers.into_iter().map(Into::into).collect();
        self
    }

    /// The recorded strategy to keep or write, or why this process may not
    /// run: `recorded` is what the store holds, `tenants` how many it has.
    fn judge(&self, recorded: Option<&str>, tenants: i64) -> Result<bool, DeploymentError> {
        match recorded {
            Some(recorded) if recorded == self.strategy => Ok(false),
            Some(recorded) if tenants > 0 => Err(DeploymentError::StrategyMismatch {
                recorded: recorded.to_owned(),
                configured: self.strategy.clone(),
            }),
            // Nothing recorded (a store made before the record existed:
            // trust on first use), or an empty store: record this one.
            _ => Ok(true),
        }
    }

    /// Placed servers that are not configured.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    fn missing(&self, placed: Vec<String>) -> Result<(), DeploymentError> {
        let missing: Vec<String> = placed
            .into_iter()
            .filter(|s| !self.servers.contains(s))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(DeploymentError::ServersMissing {
            missing: missing.join(", "),
            configured: if self.servers.is_empty() {
                "none".to_owned()
            } else {
                self.servers.join(", ")
            },
        })
    }
}

/// Creates the record's table if missing, then reads the recorded strategy
/// and how many tenants the store holds, in the caller's transaction. The
/// SQL is the same on both databases (sqlx's SQLite driver reads `$n` as
/// `?n`).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
async fn read_record<DB>(conn: &mut DB::Connection) -> Result<(Option<String>, i64), sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'r> (String,): sqlx::FromRow<'r, DB::Row>,
    for<'r> (i64,): sqlx::FromRow<'r, DB::Row>,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS tenancy_deployment (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    let recorded: Option<String> =
        sqlx::query_scalar("SELECT value FROM tenancy_deployment WHERE key = $1")
            .bind(KEY_STRATEGY)
            .fetch_optional(&mut *conn)
            .await?;
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenancy_tenants")
        .fetch_one(&mut *conn)
        .await?;
    Ok((recorded, tenants))
}

/// Records `value` under `key`, in the caller's transaction.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
async fn write_record<DB>(
    conn: &mut DB::Connection,
    key: &str,
    value: &str,
) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    sqlx::query(
        "INSERT INTO tenancy_deployment (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(feature = "postgres")]
impl Deployment {
    /// Checks (and on first use records) this configuration in the
    /// PostgreSQL store at `pool`. Run it after `PgStore::migrate`.
    pub async fn check_pg(&self, pool: &sqlx::PgPool) -> Result<(), DeploymentError> {
        let mut tx = pool.begin().await?;
        // One process at a time decides what is recorded.
        sqlx::query("SELECT pg_advisory_xact_lock(7261637)")
            .execute(&mut *tx)
            .await?;
        let (recorded, tenants) = read_record::<sqlx::Postgres>(&mut tx).await?;
        let mut writes = Vec::new();
        if self.judge(recorded.as_deref(), tenants)? {
            writes.push((KEY_STRATEGY, self.strategy.clone()));
        }
        if self.strategy == "database" {
            let placed: Vec<String> = if sqlx::query_scalar::<_, bool>(
                "SELECT to_regclass('tenancy_placements') IS NOT NULL",
            )
            .fetch_one(&mut *tx)
            .await?
            {
                sqlx::query_scalar("SELECT DISTINCT server FROM tenancy_placements ORDER BY server")
                    .fetch_all(&mut *tx)
                    .await?
            } else {
                Vec::new()
            };
            self.missing(placed)?;
            writes.push((KEY_SERVERS, self.servers.join(",")));
        }
        for (key, value) in writes {
            write_record::<sqlx::Postgres>(&mut tx, key, &value).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The key of the deployment's tenant role secret (database strategy on
/// PostgreSQL): 64 hex digits from the server's strong random source, made
/// on first use. Every tenant role's password is derived from it (see
/// [`PgDatabaseIsolation`](crate::PgDatabaseIsolation)), so no password is
/// stored anywhere. Only roles that can read `tenancy_deployment` (the
/// store's own role) can read it: tenant roles are never granted it.
#[cfg(feature = "postgres")]
const KEY_TENANT_ROLE_SECRET: &str = "tenant_role_secret";

/// The deployment's tenant role secret recorded in the store at `pool`,
/// made and recorded on first use (under the same advisory lock as
/// [`Deployment::check_pg`], so concurrent first uses agree on one).
#[cfg(feature = "postgres")]
pub(crate) async fn tenant_role_secret(pool: &sqlx::PgPool) -> Result<String, sqlx::Error> {
    if let Some(secret) = recorded_tenant_role_secret(pool).await? {
        return Ok(secret);
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(7261637)")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS tenancy_deployment (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    // gen_random_uuid() draws from the server's strong random source: two
    // of them hashed give 64 hex digits (244 random bits).
    sqlx::query(
        "INSERT INTO tenancy_deployment (key, value) \
         VALUES ($1, encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')), 'hex')) \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(KEY_TENANT_ROLE_SECRET)
    .execute(&mut *tx)
    .await?;
    let secret: String = sqlx::query_scalar("SELECT value FROM tenancy_deployment WHERE key = $1")
        .bind(KEY_TENANT_ROLE_SECRET)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(secret)
}

/// The deployment's tenant role secret if the store at `pool` has one;
/// reads only (the doctor changes nothing).
#[cfg(feature = "postgres")]
pub(crate) async fn recorded_tenant_role_secret(
    pool: &sqlx::PgPool,
) -> Result<Option<String>, sqlx::Error> {
    let table: bool = sqlx::query_scalar("SELECT to_regclass('tenancy_deployment') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !table {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT value FROM tenancy_deployment WHERE key = $1")
        .bind(KEY_TENANT_ROLE_SECRET)
        .fetch_optional(pool)
        .await
}

#[cfg(feature = "sqlite")]
impl Deployment {
    /// Checks (and on first use records) this configuration in the SQLite
    /// store at `pool`. Run it after `SqliteStore::migrate`.
    pub async fn check_sqlite(&self, pool: &sqlx::SqlitePool) -> Result<(), DeploymentError> {
        // `BEGIN IMMEDIATE`: one process at a time decides what is recorded.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let (recorded, tenants) = read_record::<sqlx::Sqlite>(&mut tx).await?;
        if self.judge(recorded.as_deref(), tenants)? {
            write_record::<sqlx::Sqlite>(&mut tx, KEY_STRATEGY, &self.strategy).await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_with_tenants_keeps_its_strategy() {
        let db = Deployment::new("row_level");
        assert!(!db.judge(Some("row_level"), 5).unwrap());
        assert!(db.judge(None, 5).unwrap(), "first use records");
        assert!(
            db.judge(Some("database"), 0).unwrap(),
            "an empty store follows"
        );
        let err = db.judge(Some("database"), 1).unwrap_err().to_string();
        assert!(
            err.contains("`database`") && err.contains("`row_level`"),
            "{err}"
        );
    }

    #[test]
    fn placed_servers_must_be_configured() {
        let db = Deployment::new("database").servers(["default", "eu"]);
        db.missing(vec!["eu".into()]).unwrap();
        let err = db
            .missing(vec!["eu".into(), "us".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("us") && err.contains("default, eu"), "{err}");
    }
}
