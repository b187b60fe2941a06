//! [`PgStore`]: tenants and config overrides in PostgreSQL.

use async_trait::async_trait;
use chrono::Utc;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::types::Json;
use tenancy_core::store::validate_config_key;
use tenancy_core::{
    ConfigMap, ConfigStore, ListQuery, NewTenant, StoreError, TenantId, TenantInfo, TenantPage,
    TenantStatus, TenantStore, TenantUpdate,
};

use super::{TenantRow, allowed_sources, domain_columns, map_err, unavailable};
use crate::notify::{notify_config_sql, notify_domain_sql, notify_tenant_sql};

/// The store's own schema, applied by [`PgStore::migrate`] under an
/// advisory lock so concurrent starts don't race. Idempotent.
const MIGRATION: &str = r#"
CREATE TABLE IF NOT EXISTS tenancy_tenants (
    id            TEXT PRIMARY KEY,
    slug          TEXT NOT NULL,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'inactive', 'suspended', 'provisioning')),
    status_reason TEXT,
    plan          TEXT,
    metadata      JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT tenancy_tenants_slug_key UNIQUE (slug)
);
CREATE INDEX IF NOT EXISTS tenancy_tenants_created ON tenancy_tenants (created_at, id);
CREATE TABLE IF NOT EXISTS tenancy_config (
    tenant_id TEXT NOT NULL REFERENCES tenancy_tenants (id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    value     JSONB NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE TABLE IF NOT EXISTS tenancy_domains (
    domain      TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenancy_tenants (id) ON DELETE CASCADE,
    is_primary  BOOLEAN NOT NULL DEFAULT false,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'verified')),
    token       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    verified_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS tenancy_domains_tenant ON tenancy_domains (tenant_id);
-- No foreign key: a deleted tenant's entries stay.
CREATE TABLE IF NOT EXISTS tenancy_audit (
    id        BIGSERIAL PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    tenant_id TEXT,
    before    JSONB,
    after     JSONB
);
CREATE INDEX IF NOT EXISTS tenancy_audit_tenant ON tenancy_audit (tenant_id, id);
-- Impersonation grants, keyed by the hash of their token; used once.
CREATE TABLE IF NOT EXISTS tenancy_impersonations (
    key        TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    user_name  TEXT NOT NULL,
    issued_by  TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ
);
-- Pending pool members: provisioned ids waiting for a signup.
CREATE TABLE IF NOT EXISTS tenancy_pending (
    id         TEXT PRIMARY KEY,
    ready      BOOLEAN NOT NULL DEFAULT false,
    version    BIGINT,
    created_at TIMESTAMPTZ NOT NULL
);
"#;

/// The columns of [`TenantRow`], in order, as a literal for `concat!`.
macro_rules! tenant_columns {
    () => {
        "id, slug, name, status, status_reason, plan, metadata, created_at, updated_at"
    };
}

// Every write below is ONE statement, sent once in autocommit: its implicit
// transaction holds both the change and its `pg_notify`, so the change and
// its announcement commit together (or neither does) in one round trip. The
// write is a data-modifying CTE `t`; the announcement is the CTE `n`, which
// reads `t`. Postgres runs a non-modifying CTE only as far as the outer
// query reads it, so the outer query joins `n` (one row per row of `t`):
// no row written, no notification.

/// Inserts a tenant ($1..$9 are its columns in `tenant_columns!` order).
const CREATE_SQL: &str = concat!(
    "WITH t AS (INSERT INTO tenancy_tenants (",
    tenant_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id, slug), \
     n AS (SELECT ",
    notify_tenant_sql!("t.id", "t.slug", "NULL"),
    " FROM t) SELECT t.id FROM t, n"
);

/// Applies a `TenantUpdate` to tenant $1: slug $2, name $3 and metadata $6
/// when not NULL, plan $5 when $4, `updated_at` $7. The row is locked first
/// so the previous slug announced is the one this update replaced.
const UPDATE_SQL: &str = concat!(
    "WITH t AS (UPDATE tenancy_tenants AS cur SET slug = COALESCE($2, cur.slug), \
     name = COALESCE($3, cur.name), plan = CASE WHEN $4 THEN $5 ELSE cur.plan END, \
     metadata = COALESCE($6, cur.metadata), updated_at = $7 \
     FROM (SELECT slug FROM tenancy_tenants WHERE id = $1 FOR UPDATE) AS prev \
     WHERE cur.id = $1 \
     RETURNING cur.id, cur.slug, cur.name, cur.status, cur.status_reason, cur.plan, \
     cur.metadata, cur.created_at, cur.updated_at, prev.slug AS previous_slug), \
     n AS (SELECT ",
    notify_tenant_sql!("t.id", "t.slug", "NULLIF(t.previous_slug, t.slug)"),
    " FROM t) SELECT ",
    tenant_columns!(),
    " FROM t, n"
);

/// Moves tenant $1 to status $2 (reason $3, at $4) if its status is one of
/// $5..$8.
const SET_STATUS_SQL: &str = concat!(
    "WITH t AS (UPDATE tenancy_tenants SET status = $2, status_reason = $3, updated_at = $4 \
     WHERE id = $1 AND status IN ($5, $6, $7, $8) RETURNING ",
    tenant_columns!(),
    "), n AS (SELECT ",
    notify_tenant_sql!("t.id", "t.slug", "NULL"),
    " FROM t) SELECT ",
    tenant_columns!(),
    " FROM t, n"
);

/// Claims the oldest ready pending member no other transaction holds and
/// inserts the tenant under its id: slug $1, name $2, plan $3, metadata
/// $4, created and updated at $5. No row when no member is free; a taken
/// slug fails the statement and the member stays.
const CLAIM_PENDING_SQL: &str = concat!(
    "WITH c AS (DELETE FROM tenancy_pending WHERE id = (SELECT id FROM tenancy_pending \
     WHERE ready ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, version), \
     t AS (INSERT INTO tenancy_tenants (",
    tenant_columns!(),
    ") SELECT c.id, $1, $2, 'provisioning', NULL, $3, $4, $5, $5 FROM c RETURNING id, slug), \
     n AS (SELECT ",
    notify_tenant_sql!("t.id", "t.slug", "NULL"),
    " FROM t) SELECT t.id, c.version FROM t, n, c"
);

/// Deletes tenant $1 (its config and domains go with it).
const DELETE_SQL: &str = concat!(
    "WITH t AS (DELETE FROM tenancy_tenants WHERE id = $1 RETURNING id, slug), \
     n AS (SELECT ",
    notify_tenant_sql!("t.id", "t.slug", "NULL"),
    " FROM t) SELECT t.slug FROM t, n"
);

/// Sets config key $2 of tenant $1 to $3.
const SET_CONFIG_SQL: &str = concat!(
    "WITH t AS (INSERT INTO tenancy_config (tenant_id, key, value) VALUES ($1, $2, $3) \
     ON CONFLICT (tenant_id, key) DO UPDATE SET value = EXCLUDED.value RETURNING tenant_id), \
     n AS (SELECT ",
    notify_config_sql!("t.tenant_id"),
    " FROM t) SELECT t.tenant_id FROM t, n"
);

/// Deletes config key $2 of tenant $1.
const DELETE_CONFIG_SQL: &str = concat!(
    "WITH t AS (DELETE FROM tenancy_config WHERE tenant_id = $1 AND key = $2 RETURNING tenant_id), \
     n AS (SELECT ",
    notify_config_sql!("t.tenant_id"),
    " FROM t) SELECT t.tenant_id FROM t, n"
);

/// Inserts a domain ($1..$7 are its columns in `domain_columns!` order);
/// when it is primary ($3), the tenant's other domains stop being primary.
/// (Both writes see the same snapshot: the demotion never meets the new row.)
const ADD_DOMAIN_SQL: &str = concat!(
    "WITH demoted AS (UPDATE tenancy_domains SET is_primary = false \
     WHERE $3 AND tenant_id = $2 AND is_primary), \
     t AS (INSERT INTO tenancy_domains (",
    domain_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING domain, tenant_id), \
     n AS (SELECT ",
    notify_domain_sql!("t.domain", "t.tenant_id"),
    " FROM t) SELECT t.domain FROM t, n"
);

/// Marks domain $1 verified (keeping the first verification time).
const VERIFY_DOMAIN_SQL: &str = concat!(
    "WITH t AS (UPDATE tenancy_domains SET status = 'verified', verified_at = COALESCE(verified_at, now()) \
     WHERE domain = $1 RETURNING ",
    domain_columns!(),
    "), n AS (SELECT ",
    notify_domain_sql!("t.domain", "t.tenant_id"),
    " FROM t) SELECT ",
    domain_columns!(),
    " FROM t, n"
);

/// Removes domain $1.
const REMOVE_DOMAIN_SQL: &str = concat!(
    "WITH t AS (DELETE FROM tenancy_domains WHERE domain = $1 RETURNING ",
    domain_columns!(),
    "), n AS (SELECT ",
    notify_domain_sql!("t.domain", "t.tenant_id"),
    " FROM t) SELECT ",
    domain_columns!(),
    " FROM t, n"
);

/// Tenants and config overrides in PostgreSQL.
///
/// Every change is announced with `NOTIFY tenancy_changes` in the same
/// transaction, so [`PgChangeListener`](crate::PgChangeListener)s in other
/// processes drop their cached copies at once. Each write (tenant
/// create, update, status change and delete; config set and delete; domain
/// add, verify and remove) is a single statement whose implicit transaction
/// holds the change and its `NOTIFY`: one round trip to the server (once the
/// connection has prepared it). A refused status change takes a second one,
/// to say why.
///
/// ```
/// use tenancy::{NewTenant, PgStore, Tenancy};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # // A throwaway database on the local server.
/// # let name = format!("doc_{}", uuid::Uuid::new_v4().simple());
/// # let admin = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/postgres").await?;
/// # sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await?;
/// # let url = format!("postgres://postgres@127.0.0.1/{name}");
/// let store = PgStore::connect(&url).await?; // creates its tables if missing
/// let tenancy = Tenancy::builder().store(store.clone()).build()?;
/// tenancy.lifecycle().create(NewTenant::new("acme", "Acme")?).await?;
/// # store.pool().close().await;
/// # sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&admin).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects and applies the store's migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        let store = Self::new(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// Uses an existing pool (call [`PgStore::migrate`] once).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the store's tables if missing.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // One migrator at a time across processes.
        sqlx::query("SELECT pg_advisory_xact_lock(7261636)")
            .execute(&mut *tx)
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

    /// The error for a status change that matched no row.
    async fn refused_transition(
        &self,
        id: &TenantId,
        status: TenantStatus,
    ) -> Result<TenantInfo, StoreError> {
        match self.get(id).await? {
            None => Err(StoreError::NotFound(id.to_string())),
            Some(current) => Err(StoreError::InvalidTransition {
                id: id.to_string(),
                from: current.status,
                to: status,
            }),
        }
    }
}

#[async_trait]
impl TenantStore for PgStore {
    async fn get(&self, id: &TenantId) -> Result<Option<TenantInfo>, StoreError> {
        self.fetch(
            "SELECT id, slug, name, status, status_reason, plan, metadata, created_at, updated_at FROM tenancy_tenants WHERE id = $1",
            id.as_str(),
        )
        .await
    }

    async fn get_by_slug(&self, slug: &str) -> Result<Option<TenantInfo>, StoreError> {
        self.fetch(
            "SELECT id, slug, name, status, status_reason, plan, metadata, created_at, updated_at FROM tenancy_tenants WHERE slug = $1",
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
            "SELECT count(*) FROM tenancy_tenants WHERE ($1 OR status = 'active') AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR lower(slug) LIKE $3 ESCAPE '\\' OR lower(name) LIKE $3 ESCAPE '\\' OR id = $4)",
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
             WHERE ($1 OR status = 'active') AND ($4::text IS NULL OR status = $4) AND ($5::text IS NULL OR lower(slug) LIKE $5 ESCAPE '\\' OR lower(name) LIKE $5 ESCAPE '\\' OR id = $6) ORDER BY created_at, id LIMIT $2 OFFSET $3",
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
        sqlx::query(CREATE_SQL)
            .bind(t.id.as_str())
            .bind(t.slug.as_str())
            .bind(&t.name)
            .bind(t.status.as_str())
            .bind(&t.status_reason)
            .bind(&t.plan)
            .bind(Json(&t.metadata))
            .bind(t.created_at)
            .bind(t.updated_at)
            .execute(&self.pool)
            .await
            .map_err(|e| map_err(e, Some(t.slug.as_str()), Some(t.id.as_str())))?;
        Ok(t)
    }

    async fn update(&self, id: &TenantId, update: TenantUpdate) -> Result<TenantInfo, StoreError> {
        // `TenantUpdate::apply_to`, in SQL: only the given fields change.
        let slug = update.slug.as_ref().map(|s| s.as_str());
        sqlx::query_as::<_, TenantRow>(UPDATE_SQL)
            .bind(id.as_str())
            .bind(slug)
            .bind(&update.name)
            .bind(update.plan.is_some())
            .bind(update.plan.as_ref().and_then(Option::as_deref))
            .bind(update.metadata.as_ref().map(Json))
            .bind(Utc::now())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, slug, Some(id.as_str())))?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?
            .try_into()
    }

    async fn set_status(
        &self,
        id: &TenantId,
        status: TenantStatus,
        reason: Option<&str>,
    ) -> Result<TenantInfo, StoreError> {
        let [a, b, c, d] = allowed_sources(status);
        let row = sqlx::query_as::<_, TenantRow>(SET_STATUS_SQL)
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
            Some(row) => row.try_into(),
            // Nothing changed (nor was announced): say why.
            None => self.refused_transition(id, status).await,
        }
    }

    async fn delete(&self, id: &TenantId) -> Result<bool, StoreError> {
        let slug: Option<String> = sqlx::query_scalar(DELETE_SQL)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(slug.is_some())
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
impl ConfigStore for PgStore {
    async fn get_config(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let value: Option<Json<serde_json::Value>> = sqlx::query_scalar(
            "SELECT value FROM tenancy_config WHERE tenant_id = $1 AND key = $2",
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
            sqlx::query_as("SELECT key, value FROM tenancy_config WHERE tenant_id = $1")
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
        match sqlx::query(SET_CONFIG_SQL)
            .bind(tenant.as_str())
            .bind(key)
            .bind(Json(&value))
            .execute(&self.pool)
            .await
        {
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
        let deleted: Option<String> = sqlx::query_scalar(DELETE_CONFIG_SQL)
            .bind(tenant.as_str())
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(deleted.is_some())
    }
}

/// Domain changes are announced in their transaction, as tenant changes
/// are (one statement, one round trip), so every process's `domain`
/// resolver forgets them at once.
#[async_trait]
impl tenancy_core::DomainStore for PgStore {
    async fn add_domain(
        &self,
        domain: tenancy_core::TenantDomain,
    ) -> Result<tenancy_core::TenantDomain, StoreError> {
        sqlx::query(ADD_DOMAIN_SQL)
            .bind(domain.domain.as_str())
            .bind(domain.tenant_id.as_str())
            .bind(domain.primary)
            .bind(domain.status.as_str())
            .bind(&domain.token)
            .bind(domain.created_at)
            .bind(domain.verified_at)
            .execute(&self.pool)
            .await
            .map_err(|e| super::domain_insert_error(e, &domain))?;
        Ok(domain)
    }

    async fn get_domain(
        &self,
        domain: &str,
    ) -> Result<Option<tenancy_core::TenantDomain>, StoreError> {
        sqlx::query_as::<_, super::DomainRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM tenancy_domains WHERE domain = $1",
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
            "SELECT {} FROM tenancy_domains WHERE tenant_id = $1 ORDER BY is_primary DESC, domain",
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
        sqlx::query_as::<_, super::DomainRow>(VERIFY_DOMAIN_SQL)
            .bind(domain)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(TryInto::try_into)
            .transpose()
    }

    async fn remove_domain(
        &self,
        domain: &str,
    ) -> Result<Option<tenancy_core::TenantDomain>, StoreError> {
        sqlx::query_as::<_, super::DomainRow>(REMOVE_DOMAIN_SQL)
            .bind(domain)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(TryInto::try_into)
            .transpose()
    }
}

#[async_trait]
impl tenancy_core::AuditStore for PgStore {
    async fn record(
        &self,
        entry: tenancy_core::NewAuditEntry,
    ) -> Result<tenancy_core::AuditEntry, StoreError> {
        let sql = format!(
            "INSERT INTO tenancy_audit (at, actor, action, tenant_id, before, after) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {}",
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
             WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::bigint IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3",
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
impl tenancy_core::impersonation::ImpersonationStore for PgStore {
    async fn issue(
        &self,
        grant: tenancy_core::impersonation::ImpersonationGrant,
    ) -> Result<(), StoreError> {
        // Expired grants are of no use to anyone: drop them as we go.
        sqlx::query("DELETE FROM tenancy_impersonations WHERE expires_at < $1")
            .bind(chrono::Utc::now())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO tenancy_impersonations (key, tenant_id, user_name, issued_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
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
            "UPDATE tenancy_impersonations SET used_at = $2 \
             WHERE key = $1 AND used_at IS NULL AND expires_at > $2 \
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
impl tenancy_core::PendingStore for PgStore {
    async fn add_pending(&self, id: &TenantId) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO tenancy_pending (id, ready, created_at) VALUES ($1, false, $2)")
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
        let done =
            sqlx::query("UPDATE tenancy_pending SET ready = true, version = $2 WHERE id = $1")
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
        // The record as it will be stored; its id is the member's.
        let mut t = tenant.into_info(Utc::now());
        let row: Option<(String, Option<i64>)> = sqlx::query_as(CLAIM_PENDING_SQL)
            .bind(t.slug.as_str())
            .bind(&t.name)
            .bind(&t.plan)
            .bind(Json(&t.metadata))
            .bind(t.created_at)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, Some(t.slug.as_str()), None))?;
        let Some((id, version)) = row else {
            return Ok(None);
        };
        t.id = TenantId::new(&id)
            .map_err(|_| StoreError::Unavailable(format!("corrupt pending id {id}")))?;
        Ok(Some(tenancy_core::Claimed { tenant: t, version }))
    }

    async fn remove_pending(&self, id: &TenantId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM tenancy_pending WHERE id = $1")
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }
}
