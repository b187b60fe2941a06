//! [`SqliteStore`]: tenants and config overrides in an embedded SQLite file.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tenancy_core::{StoreError, TenantId, TenantInfo};

use super::shared::{Dialect, sql_store};
use super::{domain_columns, map_err, pending_id, store_tables, tenant_columns, unavailable};

/// Tenants and config overrides in SQLite: the embedded
/// default. The file is created if missing; WAL journal.
///
/// ```
/// use tenancy::{NewTenant, SqliteStore, Tenancy};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = SqliteStore::connect("sqlite::memory:").await?; // or sqlite://tenancy.db
/// let tenancy = Tenancy::builder().store(store).build()?;
/// tenancy.lifecycle().create(NewTenant::new("acme", "Acme")?).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Connects and applies the store's migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid SQLite URL {url}: {e}")))?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = if memory {
            options
        } else {
            options.journal_mode(SqliteJournalMode::Wal)
        };
        // An in-memory database lives as long as its one connection.
        let pool_options = if memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(8)
        };
        let pool = pool_options.connect_with(options).await.map_err(|e| {
            StoreError::Unavailable(format!("cannot open SQLite database {url}: {e}"))
        })?;
        Self::migrated(pool).await
    }
}

sql_store!(SqliteStore, sqlx::Sqlite);

// The writes are plain statements: the schema's triggers record each change
// in `tenancy_changes`, in the writer's transaction.
impl Dialect for SqliteStore {
    // The store's own schema: the tables, and the triggers that record
    // every change. Idempotent.
    const JOBS: &'static str = crate::jobs::SQLITE_SCHEMA;
    const USAGE: &'static str = crate::usage::SQLITE_SCHEMA;
    const ADDED_COLUMNS: &'static [&'static str] = &[
        "ALTER TABLE tenancy_tenants ADD COLUMN trial_ends_at TEXT",
        "ALTER TABLE tenancy_job_queues ADD COLUMN max_running INTEGER",
    ];
    const MIGRATION: &'static str = concat!(
        store_tables!(json: "TEXT", time: "TEXT", serial: "INTEGER PRIMARY KEY AUTOINCREMENT"),
        r#"
-- Every tenant, config and domain change, written by triggers in the
-- writer's own transaction (whatever process or tool made it), read by
-- each process's SqliteChangeListener: the payloads PostgreSQL's NOTIFY
-- carries.
CREATE TABLE IF NOT EXISTS tenancy_changes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER)),
    payload TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS tenancy_tenants_inserted AFTER INSERT ON tenancy_tenants BEGIN
    INSERT INTO tenancy_changes (payload) VALUES (json_object('id', NEW.id, 'kind', 'tenant', 'previous_slug', NULL, 'slug', NEW.slug));
END;
CREATE TRIGGER IF NOT EXISTS tenancy_tenants_updated AFTER UPDATE ON tenancy_tenants BEGIN
    INSERT INTO tenancy_changes (payload) VALUES (json_object('id', NEW.id, 'kind', 'tenant',
        'previous_slug', CASE WHEN OLD.slug IS NOT NEW.slug THEN OLD.slug END, 'slug', NEW.slug));
END;
CREATE TRIGGER IF NOT EXISTS tenancy_tenants_deleted AFTER DELETE ON tenancy_tenants BEGIN
    INSERT INTO tenancy_changes (payload) VALUES (json_object('id', OLD.id, 'kind', 'tenant', 'previous_slug', NULL, 'slug', OLD.slug));
END;
CREATE TRIGGER IF NOT EXISTS tenancy_config_inserted AFTER INSERT ON tenancy_config BEGIN
    INSERT INTO tenancy_changes (payload) VALUES (json_object('id', NEW.tenant_id, 'kind', 'config', 'previous_slug', NULL, 'slug', NULL));
END;
CREATE TRIGGER IF NOT EXISTS tenancy_config_updated AFTER UPDATE ON tenancy_config BEGIN
    INSERT INTO tenancy_changes (payload) VALUES (json_object('id', NEW.tenant_id, 'kind', 'config', 'previous_slug', NULL, 'slug', NULL));
END;
CREATE TRIGGER IF NOT EXISTS tenancy_config_deleted AFTER DELETE ON tenancy_config BEGIN
    INSERT INTO tenancy_changes (payload) VALUES (json_object('id', OLD.tenant_id, 'kind', 'config', 'previous_slug', NULL, 'slug', NULL));
END;
CREATE TRIGGER IF NOT EXISTS tenancy_domains_inserted AFTER INSERT ON tenancy_domains BEGIN
    INSERT INTO tenancy_changes (payload) VALUES (json_object('domain', NEW.domain, 'id', NEW.tenant_id, 'kind', 'domain', 'previous_slug', NULL, 'slug', NULL));
END;
CREATE TRIGGER IF NOT EXISTS tenancy_domains_updated AFTER UPDATE ON tenancy_domains BEGIN
    INSERT INTO tenancy_changes (payload) VALUES (json_object('domain', OLD.domain, 'id', OLD.tenant_id, 'kind', 'domain', 'previous_slug', NULL, 'slug', NULL));
    INSERT INTO tenancy_changes (payload) SELECT json_object('domain', NEW.domain, 'id', NEW.tenant_id, 'kind', 'domain', 'previous_slug', NULL, 'slug', NULL)
        WHERE NEW.domain IS NOT OLD.domain;
END;
CREATE TRIGGER IF NOT EXISTS tenancy_domains_deleted AFTER DELETE ON tenancy_domains BEGIN
    INSERT INTO tenancy_changes (payload) VALUES (json_object('domain', OLD.domain, 'id', OLD.tenant_id, 'kind', 'domain', 'previous_slug', NULL, 'slug', NULL));
END;
"#
    );

    // IMMEDIATE takes the write lock at once: one migrator at a time.
    const BEGIN: &'static str = "BEGIN IMMEDIATE";

    const CREATE: &'static str = concat!(
        "INSERT INTO tenancy_tenants (",
        tenant_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    );

    const UPDATE: &'static str = concat!(
        "UPDATE tenancy_tenants SET slug = COALESCE($2, slug), name = COALESCE($3, name), \
         plan = CASE WHEN $4 THEN $5 ELSE plan END, metadata = COALESCE($6, metadata), \
         updated_at = $7, trial_ends_at = CASE WHEN $8 THEN $9 ELSE trial_ends_at END \
         WHERE id = $1 RETURNING ",
        tenant_columns!()
    );

    const SET_STATUS: &'static str = concat!(
        "UPDATE tenancy_tenants SET status = $2, status_reason = $3, updated_at = $4 \
         WHERE id = $1 AND status IN ($5, $6, $7, $8) RETURNING ",
        tenant_columns!()
    );

    const DELETE: &'static str = "DELETE FROM tenancy_tenants WHERE id = $1 RETURNING slug";

    const SET_CONFIG: &'static str = "INSERT INTO tenancy_config (tenant_id, key, value) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id, key) DO UPDATE SET value = excluded.value";

    const DELETE_CONFIG: &'static str =
        "DELETE FROM tenancy_config WHERE tenant_id = $1 AND key = $2 RETURNING tenant_id";

    const DEMOTE_PRIMARY: Option<&'static str> =
        Some("UPDATE tenancy_domains SET is_primary = 0 WHERE tenant_id = $1");

    const ADD_DOMAIN: &'static str = concat!(
        "INSERT INTO tenancy_domains (",
        domain_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
    );

    const VERIFY_DOMAIN: &'static str = concat!(
        "UPDATE tenancy_domains SET status = 'verified', verified_at = COALESCE(verified_at, $2) \
         WHERE domain = $1 AND status <> 'verified' RETURNING ",
        domain_columns!()
    );

    // A verified domain is left as it is: no change recorded.
    const VERIFY_SKIPS_VERIFIED: bool = true;

    const REMOVE_DOMAIN: &'static str = concat!(
        "DELETE FROM tenancy_domains WHERE domain = $1 RETURNING ",
        domain_columns!()
    );

    /// In one `IMMEDIATE` transaction, which takes the write lock at once:
    /// no other claim sees the member.
    async fn claim(&self, t: &TenantInfo) -> Result<Option<(TenantId, Option<i64>)>, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        let row: Option<(String, Option<i64>)> = sqlx::query_as(
            "DELETE FROM tenancy_pending WHERE id = (SELECT id FROM tenancy_pending WHERE ready \
             ORDER BY created_at, id LIMIT 1) RETURNING id, version",
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some((id, version)) = row else {
            return Ok(None);
        };
        let id = pending_id(&id)?;
        Self::bind_tenant(sqlx::query(Self::CREATE), id.as_str(), t)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, Some(t.slug.as_str()), Some(id.as_str())))?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some((id, version)))
    }
}
