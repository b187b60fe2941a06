//! [`PgStore`]: tenants and config overrides in PostgreSQL.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::types::Json;
use tenancy_core::{StoreError, TenantId, TenantInfo};

use super::shared::{Dialect, sql_store};
use super::{domain_columns, map_err, pending_id, store_tables, tenant_columns};
use crate::notify::{notify_config_sql, notify_domain_sql, notify_tenant_sql};

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
        Self::migrated(pool).await
    }
}

sql_store!(PgStore, sqlx::Postgres);

/// A statement that runs `$write` (a write of `tenancy_domains` that ends
/// in `RETURNING `), announces every row it wrote, and returns those rows.
macro_rules! announced_domains {
    ($write:literal) => {
        concat!(
            "WITH t AS (",
            $write,
            domain_columns!(),
            "), n AS (SELECT ",
            notify_domain_sql!("t.domain", "t.tenant_id"),
            " FROM t) SELECT ",
            domain_columns!(),
            " FROM t, n"
        )
    };
}

// Every write below is ONE statement, sent once in autocommit: its implicit
// transaction holds both the change and its `pg_notify`, so the change and
// its announcement commit together (or neither does) in one round trip. The
// write is a data-modifying CTE `t`; the announcement is the CTE `n`, which
// reads `t`. Postgres runs a non-modifying CTE only as far as the outer
// query reads it, so the outer query joins `n` (one row per row of `t`):
// no row written, no notification.
impl Dialect for PgStore {
    // The store's own schema, idempotent, under an advisory lock (the
    // first statement) so concurrent starts don't race.
    const JOBS: &'static str = crate::jobs::PG_SCHEMA;
    const USAGE: &'static str = crate::usage::PG_SCHEMA;
    // Altered only when the column is missing: `ADD COLUMN IF NOT EXISTS`
    // would take the table's exclusive lock at every start, stalling (or
    // deadlocking with) the instances already serving from it.
    const ADDED_COLUMNS: &'static [&'static str] = &[
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute \
         WHERE attrelid = 'tenancy_tenants'::regclass AND attname = 'trial_ends_at' \
         AND NOT attisdropped) THEN \
         ALTER TABLE tenancy_tenants ADD COLUMN trial_ends_at TIMESTAMPTZ; END IF; END $$",
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute \
         WHERE attrelid = 'tenancy_job_queues'::regclass AND attname = 'max_running' \
         AND NOT attisdropped) THEN \
         ALTER TABLE tenancy_job_queues ADD COLUMN max_running INT; END IF; END $$",
    ];
    const MIGRATION: &'static str = concat!(
        "SELECT pg_advisory_xact_lock(7261636);",
        store_tables!(json: "JSONB", time: "TIMESTAMPTZ", serial: "BIGSERIAL PRIMARY KEY")
    );
    const BEGIN: &'static str = "BEGIN";

    const CREATE: &'static str = concat!(
        "WITH t AS (INSERT INTO tenancy_tenants (",
        tenant_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id, slug), \
         n AS (SELECT ",
        notify_tenant_sql!("t.id", "t.slug", "NULL"),
        " FROM t) SELECT t.id FROM t, n"
    );

    // The row is locked first so the previous slug announced is the one
    // this update replaced.
    const UPDATE: &'static str = concat!(
        "WITH t AS (UPDATE tenancy_tenants AS cur SET slug = COALESCE($2, cur.slug), \
         name = COALESCE($3, cur.name), plan = CASE WHEN $4 THEN $5 ELSE cur.plan END, \
         metadata = COALESCE($6, cur.metadata), updated_at = $7, \
         trial_ends_at = CASE WHEN $8 THEN $9 ELSE cur.trial_ends_at END \
         FROM (SELECT slug FROM tenancy_tenants WHERE id = $1 FOR UPDATE) AS prev \
         WHERE cur.id = $1 \
         RETURNING cur.id, cur.slug, cur.name, cur.status, cur.status_reason, cur.plan, \
         cur.metadata, cur.created_at, cur.updated_at, cur.trial_ends_at, \
         prev.slug AS previous_slug), \
         n AS (SELECT ",
        notify_tenant_sql!("t.id", "t.slug", "NULLIF(t.previous_slug, t.slug)"),
        " FROM t) SELECT ",
        tenant_columns!(),
        " FROM t, n"
    );

    const SET_STATUS: &'static str = concat!(
        "WITH t AS (UPDATE tenancy_tenants SET status = $2, status_reason = $3, updated_at = $4 \
         WHERE id = $1 AND status IN ($5, $6, $7, $8) RETURNING ",
        tenant_columns!(),
        "), n AS (SELECT ",
        notify_tenant_sql!("t.id", "t.slug", "NULL"),
        " FROM t) SELECT ",
        tenant_columns!(),
        " FROM t, n"
    );

    const DELETE: &'static str = concat!(
        "WITH t AS (DELETE FROM tenancy_tenants WHERE id = $1 RETURNING id, slug), \
         n AS (SELECT ",
        notify_tenant_sql!("t.id", "t.slug", "NULL"),
        " FROM t) SELECT t.slug FROM t, n"
    );

    const SET_CONFIG: &'static str = concat!(
        "WITH t AS (INSERT INTO tenancy_config (tenant_id, key, value) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id, key) DO UPDATE SET value = EXCLUDED.value RETURNING tenant_id), \
         n AS (SELECT ",
        notify_config_sql!("t.tenant_id"),
        " FROM t) SELECT t.tenant_id FROM t, n"
    );

    const DELETE_CONFIG: &'static str = concat!(
        "WITH t AS (DELETE FROM tenancy_config WHERE tenant_id = $1 AND key = $2 RETURNING tenant_id), \
         n AS (SELECT ",
        notify_config_sql!("t.tenant_id"),
        " FROM t) SELECT t.tenant_id FROM t, n"
    );

    const DEMOTE_PRIMARY: Option<&'static str> = None;

    // When the domain is primary ($3), the tenant's other domains stop
    // being primary. (Both writes see the same snapshot: the demotion never
    // meets the new row.)
    const ADD_DOMAIN: &'static str = concat!(
        "WITH demoted AS (UPDATE tenancy_domains SET is_primary = false \
         WHERE $3 AND tenant_id = $2 AND is_primary), \
         t AS (INSERT INTO tenancy_domains (",
        domain_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING domain, tenant_id), \
         n AS (SELECT ",
        notify_domain_sql!("t.domain", "t.tenant_id"),
        " FROM t) SELECT t.domain FROM t, n"
    );

    const VERIFY_DOMAIN: &'static str = announced_domains!(
        "UPDATE tenancy_domains SET status = 'verified', verified_at = COALESCE(verified_at, $2) \
         WHERE domain = $1 RETURNING "
    );

    const VERIFY_SKIPS_VERIFIED: bool = false;

    const REMOVE_DOMAIN: &'static str =
        announced_domains!("DELETE FROM tenancy_domains WHERE domain = $1 RETURNING ");

    /// One statement, as the other writes: the member is locked with `SKIP
    /// LOCKED`, so concurrent claims take different members.
    async fn claim(&self, t: &TenantInfo) -> Result<Option<(TenantId, Option<i64>)>, StoreError> {
        const CLAIM: &str = concat!(
            "WITH c AS (DELETE FROM tenancy_pending WHERE id = (SELECT id FROM tenancy_pending \
             WHERE ready ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, version), \
             t AS (INSERT INTO tenancy_tenants (",
            tenant_columns!(),
            ") SELECT c.id, $1, $2, 'provisioning', NULL, $3, $4, $5, $5, NULL FROM c RETURNING id, slug), \
             n AS (SELECT ",
            notify_tenant_sql!("t.id", "t.slug", "NULL"),
            " FROM t) SELECT t.id, c.version FROM t, n, c"
        );
        let row: Option<(String, Option<i64>)> = sqlx::query_as(CLAIM)
            .bind(t.slug.as_str())
            .bind(&t.name)
            .bind(&t.plan)
            .bind(Json(&t.metadata))
            .bind(t.created_at)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, Some(t.slug.as_str()), None))?;
        row.map(|(id, version)| Ok((pending_id(&id)?, version)))
            .transpose()
    }
}
