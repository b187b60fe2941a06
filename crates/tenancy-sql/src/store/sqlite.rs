//! [`SqliteStore`]: tenants and config overrides in an embedded SQLite file.

use async_trait::async_trait;
use chrono::Utc;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::types::Json;
use tenancy_core::store::validate_config_key;
use tenancy_core::{
    ConfigMap, ConfigStore, ListQuery, NewTenant, StoreError, TenantId, TenantInfo, TenantPage,
    TenantStatus, TenantStore, TenantUpdate,
};

use super::{TenantRow, allowed_sources, map_err, unavailable};

/// The store's own schema, applied by [`SqliteStore::migrate`]. Idempotent.
const MIGRATION: &str = r#"
CREATE TABLE IF NOT EXISTS tenancy_tenants (
    id            TEXT PRIMARY KEY,
    slug          TEXT NOT NULL,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'inactive', 'suspended', 'provisioning')),
    status_reason TEXT,
    plan          TEXT,
    metadata      TEXT NOT NULL DEFAULT '{}',
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    CONSTRAINT tenancy_tenants_slug_key UNIQUE (slug)
);
CREATE INDEX IF NOT EXISTS tenancy_tenants_created ON tenancy_tenants (created_at, id);
CREATE TABLE IF NOT EXISTS tenancy_config (
    tenant_id TEXT NOT NULL REFERENCES tenancy_tenants (id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE TABLE IF NOT EXISTS tenancy_domains (
    domain      TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenancy_tenants (id) ON DELETE CASCADE,
    is_primary  BOOLEAN NOT NULL DEFAULT 0,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'verified')),
    token       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    verified_at TEXT
);
CREATE INDEX IF NOT EXISTS tenancy_domains_tenant ON tenancy_domains (tenant_id);
-- No foreign key: a deleted tenant's entries stay.
CREATE TABLE IF NOT EXISTS tenancy_audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    tenant_id TEXT,
    before    TEXT,
    after     TEXT
);
CREATE INDEX IF NOT EXISTS tenancy_audit_tenant ON tenancy_audit (tenant_id, id);
-- Impersonation grants, keyed by the hash of their token; used once.
CREATE TABLE IF NOT EXISTS tenancy_impersonations (
    key        TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    user_name  TEXT NOT NULL,
    issued_by  TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT
);
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
-- Pending pool members: provisioned ids waiting for a signup.
CREATE TABLE IF NOT EXISTS tenancy_pending (
    id         TEXT PRIMARY KEY,
    ready      INTEGER NOT NULL DEFAULT 0,
    version    BIGINT,
    created_at TEXT NOT NULL
);
"#;

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
        let store = Self::new(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// Uses an existing pool (call [`SqliteStore::migrate`] once).
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Creates the store's tables if missing.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        sqlx::raw_sql(MIGRATION)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn fetch(&self, sql: &'static str, key: &str) -> Result<Option<TenantInfo>, StoreError> {
        sqlx::query_as::<_, TenantRow>(sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(TenantInfo::try_from)
            .transpose()
    }
}

#[async_trait]
impl TenantStore for SqliteStore {
    async fn get(&self, id: &TenantId) -> Result<Option<TenantInfo>, StoreError> {
        self.fetch(
            "SELECT id, slug, name, status, status_reason, plan, metadata, created_at, updated_at FROM tenancy_tenants WHERE id = ?1",
            id.as_str(),
        )
        .await
    }

    async fn get_by_slug(&self, slug: &str) -> Result<Option<TenantInfo>, StoreError> {
        self.fetch(
            "SELECT id, slug, name, status, status_reason, plan, metadata, created_at, updated_at FROM tenancy_tenants WHERE slug = ?1",
            slug,
        )
        .await
    }

    async fn list(&self, query: ListQuery) -> Result<TenantPage, StoreError> {
        // A status filter decides on its own; the search is a LIKE on the
        // lower-cased slug and name, or the exact id.
        let all = query.include_inactive || query.status.is_some();
        let status = query.status.map(|s| s.as_str());
        let pattern = query.like_pattern();
        let total: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tenancy_tenants WHERE (?1 OR status = 'active') AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR lower(slug) LIKE ?3 ESCAPE '\\' OR lower(name) LIKE ?3 ESCAPE '\\' OR id = ?4)",
        )
        .bind(all)
        .bind(status)
        .bind(&pattern)
        .bind(&query.search)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        let rows = sqlx::query_as::<_, TenantRow>(
            "SELECT id, slug, name, status, status_reason, plan, metadata, created_at, updated_at FROM tenancy_tenants \
             WHERE (?1 OR status = 'active') AND (?4 IS NULL OR status = ?4) AND (?5 IS NULL OR lower(slug) LIKE ?5 ESCAPE '\\' OR lower(name) LIKE ?5 ESCAPE '\\' OR id = ?6) ORDER BY created_at, id LIMIT ?2 OFFSET ?3",
        )
        .bind(all)
        .bind(i64::try_from(query.limit.min(ListQuery::MAX_LIMIT)).unwrap_or(i64::MAX))
        .bind(i64::try_from(query.offset).unwrap_or(i64::MAX))
        .bind(status)
        .bind(&pattern)
        .bind(&query.search)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(TenantPage {
            items: rows
                .into_iter()
                .map(TenantInfo::try_from)
                .collect::<Result<_, _>>()?,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    async fn create(&self, tenant: NewTenant) -> Result<TenantInfo, StoreError> {
        let t = tenant.into_info(Utc::now());
        insert_tenant(&self.pool, &t).await?;
        Ok(t)
    }

    async fn update(&self, id: &TenantId, update: TenantUpdate) -> Result<TenantInfo, StoreError> {
        // IMMEDIATE takes the write lock now: the read-modify-write is atomic.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        let row = sqlx::query_as::<_, TenantRow>(
            "SELECT id, slug, name, status, status_reason, plan, metadata, created_at, updated_at FROM tenancy_tenants WHERE id = ?1",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let mut t = TenantInfo::try_from(row)?;
        update.apply_to(&mut t, Utc::now());
        sqlx::query("UPDATE tenancy_tenants SET slug = ?2, name = ?3, plan = ?4, metadata = ?5, updated_at = ?6 WHERE id = ?1")
            .bind(id.as_str())
            .bind(t.slug.as_str())
            .bind(&t.name)
            .bind(&t.plan)
            .bind(Json(&t.metadata))
            .bind(t.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, Some(t.slug.as_str()), Some(id.as_str())))?;
        tx.commit().await.map_err(unavailable)?;
        Ok(t)
    }

    async fn set_status(
        &self,
        id: &TenantId,
        status: TenantStatus,
        reason: Option<&str>,
    ) -> Result<TenantInfo, StoreError> {
        let [a, b, c, d] = allowed_sources(status);
        let row = sqlx::query_as::<_, TenantRow>(
            "UPDATE tenancy_tenants SET status = ?2, status_reason = ?3, updated_at = ?4 \
             WHERE id = ?1 AND status IN (?5, ?6, ?7, ?8) RETURNING id, slug, name, status, status_reason, plan, metadata, created_at, updated_at",
        )
        .bind(id.as_str())
        .bind(status.as_str())
        .bind(reason)
        .bind(Utc::now())
        .bind(a)
        .bind(b)
        .bind(c)
        .bind(d)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        match row {
            Some(row) => TenantInfo::try_from(row),
            None => match self.get(id).await? {
                None => Err(StoreError::NotFound(id.to_string())),
                Some(current) => Err(StoreError::InvalidTransition {
                    id: id.to_string(),
                    from: current.status,
                    to: status,
                }),
            },
        }
    }

    async fn delete(&self, id: &TenantId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM tenancy_tenants WHERE id = ?1")
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() > 0)
    }

    async fn check(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

#[async_trait]
impl ConfigStore for SqliteStore {
    async fn get_config(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let value: Option<Json<serde_json::Value>> = sqlx::query_scalar(
            "SELECT value FROM tenancy_config WHERE tenant_id = ?1 AND key = ?2",
        )
        .bind(tenant.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(value.map(|v| v.0))
    }

    async fn all_config(&self, tenant: &TenantId) -> Result<ConfigMap, StoreError> {
        let rows: Vec<(String, Json<serde_json::Value>)> =
            sqlx::query_as("SELECT key, value FROM tenancy_config WHERE tenant_id = ?1")
                .bind(tenant.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(rows.into_iter().map(|(k, v)| (k, v.0)).collect())
    }

    async fn set_config(
        &self,
        tenant: &TenantId,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StoreError> {
        validate_config_key(key)?;
        let result = sqlx::query(
            "INSERT INTO tenancy_config (tenant_id, key, value) VALUES (?1, ?2, ?3) \
             ON CONFLICT (tenant_id, key) DO UPDATE SET value = excluded.value",
        )
        .bind(tenant.as_str())
        .bind(key)
        .bind(Json(&value))
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_database_error()
                    .is_some_and(|d| d.is_foreign_key_violation()) =>
            {
                Err(StoreError::NotFound(tenant.to_string()))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn delete_config(&self, tenant: &TenantId, key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM tenancy_config WHERE tenant_id = ?1 AND key = ?2")
            .bind(tenant.as_str())
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl tenancy_core::DomainStore for SqliteStore {
    async fn add_domain(
        &self,
        domain: tenancy_core::TenantDomain,
    ) -> Result<tenancy_core::TenantDomain, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        if domain.primary {
            sqlx::query("UPDATE tenancy_domains SET is_primary = 0 WHERE tenant_id = ?1")
                .bind(domain.tenant_id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        sqlx::query(
            "INSERT INTO tenancy_domains (domain, tenant_id, is_primary, status, token, created_at, verified_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(domain.domain.as_str())
        .bind(domain.tenant_id.as_str())
        .bind(domain.primary)
        .bind(domain.status.as_str())
        .bind(&domain.token)
        .bind(domain.created_at)
        .bind(domain.verified_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| super::domain_insert_error(e, &domain))?;
        tx.commit().await.map_err(unavailable)?;
        Ok(domain)
    }

    async fn get_domain(
        &self,
        domain: &str,
    ) -> Result<Option<tenancy_core::TenantDomain>, StoreError> {
        sqlx::query_as::<_, super::DomainRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM tenancy_domains WHERE domain = ?1",
            super::DOMAIN_COLUMNS
        )))
        .bind(domain)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?
        .map(TryInto::try_into)
        .transpose()
    }

    async fn list_domains(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<tenancy_core::TenantDomain>, StoreError> {
        sqlx::query_as::<_, super::DomainRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM tenancy_domains WHERE tenant_id = ?1 ORDER BY is_primary DESC, domain",
            super::DOMAIN_COLUMNS
        )))
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?
        .into_iter()
        .map(TryInto::try_into)
        .collect()
    }

    async fn verify_domain(
        &self,
        domain: &str,
    ) -> Result<Option<tenancy_core::TenantDomain>, StoreError> {
        sqlx::query(
            "UPDATE tenancy_domains SET status = 'verified', verified_at = ?2 \
             WHERE domain = ?1 AND status <> 'verified'",
        )
        .bind(domain)
        .bind(Utc::now())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        self.get_domain(domain).await
    }

    async fn remove_domain(
        &self,
        domain: &str,
    ) -> Result<Option<tenancy_core::TenantDomain>, StoreError> {
        let found = self.get_domain(domain).await?;
        sqlx::query("DELETE FROM tenancy_domains WHERE domain = ?1")
            .bind(domain)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(found)
    }
}

#[async_trait]
impl tenancy_core::AuditStore for SqliteStore {
    async fn record(
        &self,
        entry: tenancy_core::NewAuditEntry,
    ) -> Result<tenancy_core::AuditEntry, StoreError> {
        let sql = format!(
            "INSERT INTO tenancy_audit (at, actor, action, tenant_id, before, after) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING {}",
            super::AUDIT_COLUMNS
        );
        sqlx::query_as::<_, super::AuditRow>(sqlx::AssertSqlSafe(sql))
            .bind(chrono::Utc::now())
            .bind(entry.actor)
            .bind(entry.action)
            .bind(entry.tenant_id.map(|t| t.to_string()))
            .bind(entry.before.map(sqlx::types::Json))
            .bind(entry.after.map(sqlx::types::Json))
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?
            .try_into()
    }

    async fn audit(
        &self,
        query: tenancy_core::AuditQuery,
    ) -> Result<Vec<tenancy_core::AuditEntry>, StoreError> {
        let sql = format!(
            "SELECT {} FROM tenancy_audit \
             WHERE (?1 IS NULL OR tenant_id = ?1) AND (?2 IS NULL OR id < ?2) \
             ORDER BY id DESC LIMIT ?3",
            super::AUDIT_COLUMNS
        );
        sqlx::query_as::<_, super::AuditRow>(sqlx::AssertSqlSafe(sql))
            .bind(query.tenant_id.as_ref().map(|t| t.to_string()))
            .bind(query.before)
            .bind(i64::from(query.effective_limit()))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(TryInto::try_into)
            .collect()
    }
}

#[async_trait]
impl tenancy_core::impersonation::ImpersonationStore for SqliteStore {
    async fn issue(
        &self,
        grant: tenancy_core::impersonation::ImpersonationGrant,
    ) -> Result<(), StoreError> {
        // Expired grants are of no use to anyone: drop them as we go.
        sqlx::query("DELETE FROM tenancy_impersonations WHERE expires_at < ?1")
            .bind(chrono::Utc::now())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO tenancy_impersonations (key, tenant_id, user_name, issued_by, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(grant.key)
        .bind(grant.tenant_id.to_string())
        .bind(grant.user)
        .bind(grant.issued_by)
        .bind(grant.expires_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn redeem(
        &self,
        key: &str,
    ) -> Result<Option<tenancy_core::impersonation::ImpersonationGrant>, StoreError> {
        // One statement: checks and marks it used, so a token is accepted
        // once however many instances see it at the same moment.
        let row: Option<(String, String, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "UPDATE tenancy_impersonations SET used_at = ?2 \
             WHERE key = ?1 AND used_at IS NULL AND expires_at > ?2 \
             RETURNING tenant_id, user_name, issued_by, expires_at",
        )
        .bind(key)
        .bind(chrono::Utc::now())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.map(|(tenant_id, user, issued_by, expires_at)| {
            Ok(tenancy_core::impersonation::ImpersonationGrant {
                key: key.to_owned(),
                tenant_id: tenant_id
                    .parse()
                    .map_err(|_| StoreError::Unavailable("corrupt impersonation row".into()))?,
                user,
                issued_by,
                expires_at,
            })
        })
        .transpose()
    }
}

#[async_trait]
impl tenancy_core::PendingStore for SqliteStore {
    async fn add_pending(&self, id: &TenantId) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO tenancy_pending (id, ready, created_at) VALUES (?1, 0, ?2)")
            .bind(id.as_str())
            .bind(Utc::now())
            .execute(&self.pool)
            .await
            .map_err(|e| map_err(e, None, Some(id.as_str())))?;
        Ok(())
    }

    async fn mark_pending_ready(
        &self,
        id: &TenantId,
        version: Option<i64>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE tenancy_pending SET ready = 1, version = ?2 WHERE id = ?1")
            .bind(id.as_str())
            .bind(version)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_pending(&self) -> Result<Vec<tenancy_core::PendingTenant>, StoreError> {
        let rows: Vec<(String, bool, Option<i64>, chrono::DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, ready, version, created_at FROM tenancy_pending ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        super::pending_members(rows)
    }

    async fn claim_pending(
        &self,
        tenant: NewTenant,
    ) -> Result<Option<tenancy_core::Claimed>, StoreError> {
        // IMMEDIATE takes the write lock now: no other claim sees the member.
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
        let id = TenantId::new(&id)
            .map_err(|_| StoreError::Unavailable(format!("corrupt pending id {id}")))?;
        let t = tenant.id(id).into_info(Utc::now());
        insert_tenant(&mut *tx, &t).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(tenancy_core::Claimed { tenant: t, version }))
    }

    async fn remove_pending(&self, id: &TenantId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM tenancy_pending WHERE id = ?1")
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }
}

/// Inserts the record `t` (a new tenant, or a claimed pool member).
async fn insert_tenant<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    t: &TenantInfo,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tenancy_tenants (id, slug, name, status, status_reason, plan, metadata, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .bind(t.id.as_str())
    .bind(t.slug.as_str())
    .bind(&t.name)
    .bind(t.status.as_str())
    .bind(&t.status_reason)
    .bind(&t.plan)
    .bind(Json(&t.metadata))
    .bind(t.created_at)
    .bind(t.updated_at)
    .execute(executor)
    .await
    .map_err(|e| map_err(e, Some(t.slug.as_str()), Some(t.id.as_str())))?;
    Ok(())
}
