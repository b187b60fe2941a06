//! [`JobQueue`]: the durable queue, in the main database (PostgreSQL or
//! SQLite), every job tagged with its tenant.
//!
//! Fairness: each tenant with queued jobs has a row in
//! `tenancy_job_queues` with its `turn`; a claim takes the tenant whose
//! turn is oldest among the active ones with a ready job and fewer than
//! the per-tenant limit running, takes that tenant's oldest ready job, and
//! gives the tenant the newest turn. On PostgreSQL the tenant's row is
//! locked (`FOR UPDATE SKIP LOCKED`) for that one statement, so workers on
//! many machines share the queue and the limit holds; on SQLite the claim
//! is one `BEGIN IMMEDIATE` transaction.

use serde_json::Value;
use sqlx::types::Json;
use tenancy_core::TenantId;
use tenancy_core::jobs::{JobFilter, JobOptions, JobRecord, JobState, JobStats, now_ms};

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobsError {
    /// The database failed.
    #[error("job queue: {0}")]
    Sql(#[from] sqlx::Error),
    /// No job has this id.
    #[error("no job {0}: see `tenancy jobs list`")]
    NotFound(i64),
    /// The job is not in a state the operation applies to.
    #[error("job {id} is {state}: {what}")]
    WrongState {
        /// The job.
        id: i64,
        /// Its state.
        state: JobState,
        /// What may be done instead.
        what: &'static str,
    },
    /// The payload does not serialize, or a stored one does not decode.
    #[error("job payload: {0}")]
    Payload(String),
    /// The transaction given to [`JobQueue::enqueue_in`] is not on the
    /// queue's database (database-per-tenant isolation).
    #[error(
        "this transaction is not on the main database, where the queue is (database-per-tenant \
         isolation): enqueue after it commits with JobQueue::enqueue ({0})"
    )]
    NotInThisDatabase(String),
}

/// The durable job queue. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct JobQueue {
    pub(super) backend: MainDb,
}

use crate::main_db::{MainDb, on_pool};

const COLUMNS: &str = "id, tenant_id, kind, payload, state, attempts, max_attempts, run_at, \
    last_error, result, idempotency_key, created_at, started_at, finished_at";

/// The queue's tables, for `concat!`: the same on both databases but for
/// the types of JSON values, whole numbers and the auto-numbered key (and
/// PostgreSQL's turn sequence, in `extra`). Each statement is idempotent.
macro_rules! job_tables {
    (json: $json:literal, int: $int:literal, big: $big:literal, serial: $serial:literal, extra: $extra:literal) => {
        concat!(
            "
CREATE TABLE IF NOT EXISTS tenancy_jobs (
    id ", $serial, ",
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload ", $json, " NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    attempts ", $int, " NOT NULL DEFAULT 0,
    max_attempts ", $int, " NOT NULL,
    run_at ", $big, " NOT NULL,
    lease_until ", $big, ",
    claim TEXT,
    last_error TEXT,
    result ", $json, ",
    idempotency_key TEXT,
    created_at ", $big, " NOT NULL,
    started_at ", $big, ",
    finished_at ", $big, "
);
CREATE INDEX IF NOT EXISTS tenancy_jobs_ready ON tenancy_jobs (tenant_id, run_at, id) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS tenancy_jobs_running ON tenancy_jobs (tenant_id, lease_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS tenancy_jobs_by_tenant ON tenancy_jobs (tenant_id, id);
CREATE UNIQUE INDEX IF NOT EXISTS tenancy_jobs_idempotency ON tenancy_jobs (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS tenancy_job_queues (tenant_id TEXT PRIMARY KEY, turn ", $big, " NOT NULL DEFAULT 0, max_running ", $int, ");
CREATE INDEX IF NOT EXISTS tenancy_job_queues_turn ON tenancy_job_queues (turn);
",
            $extra
        )
    };
}

#[cfg(feature = "postgres")]
pub(crate) const PG_SCHEMA: &str = job_tables!(
    json: "JSONB", int: "INT", big: "BIGINT", serial: "BIGSERIAL PRIMARY KEY",
    extra: "CREATE SEQUENCE IF NOT EXISTS tenancy_job_turns;\n"
);

#[cfg(feature = "sqlite")]
pub(crate) const SQLITE_SCHEMA: &str = job_tables!(
    json: "TEXT", int: "INTEGER", big: "INTEGER", serial: "INTEGER PRIMARY KEY AUTOINCREMENT",
    extra: ""
);

#[cfg(feature = "sqlite")]
const ENQUEUE: &str = "INSERT INTO tenancy_jobs \
    (tenant_id, kind, payload, state, attempts, max_attempts, run_at, idempotency_key, created_at) \
    VALUES ($1, $2, $3, 'queued', 0, $4, $5, $6, $7) \
    ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
    RETURNING id";
#[cfg(feature = "sqlite")]
const EXISTING: &str = "SELECT id FROM tenancy_jobs WHERE tenant_id = $1 AND idempotency_key = $2";
const QUEUE_ROW: &str =
    "INSERT INTO tenancy_job_queues (tenant_id, turn) VALUES ($1, 0) ON CONFLICT DO NOTHING";

/// The tenant whose turn it is: active, a job ready, under its limit.
const PICK_TENANT: &str = "SELECT q.tenant_id FROM tenancy_job_queues q \
    JOIN tenancy_tenants t ON t.id = q.tenant_id AND t.status = 'active' \
    WHERE EXISTS (SELECT 1 FROM tenancy_jobs j WHERE j.tenant_id = q.tenant_id \
                  AND j.state = 'queued' AND j.run_at <= $1) \
      AND (SELECT count(*) FROM tenancy_jobs r WHERE r.tenant_id = q.tenant_id \
           AND r.state = 'running') < COALESCE(q.max_running, $2) \
    ORDER BY q.turn LIMIT 1";

/// Sets tenant `$1`'s own limit of running jobs (`$2`; NULL: the default).
const SET_LIMIT: &str = "INSERT INTO tenancy_job_queues (tenant_id, turn, max_running) \
    VALUES ($1, 0, $2) ON CONFLICT (tenant_id) DO UPDATE SET max_running = excluded.max_running";

/// A job that was claimed: what runs it needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The job, as it was claimed (state `running`, attempts counted).
    pub job: JobRecord,
    /// This run's claim: completing or renewing needs it.
    pub claim: String,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    tenant_id: String,
    kind: String,
    payload: Json<Value>,
    state: String,
    attempts: i32,
    max_attempts: i32,
    run_at: i64,
    last_error: Option<String>,
    result: Option<Json<Value>>,
    idempotency_key: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

impl TryFrom<Row> for JobRecord {
    type Error = JobsError;
    fn try_from(row: Row) -> Result<Self, JobsError> {
        Ok(JobRecord {
            id: row.id,
            tenant_id: TenantId::new(&row.tenant_id)
                .map_err(|e| JobsError::Payload(format!("job {}: {e}", row.id)))?,
            kind: row.kind,
            payload: row.payload.0,
            state: row
                .state
                .parse()
                .map_err(|e| JobsError::Payload(format!("job {}: {e}", row.id)))?,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            max_attempts: u32::try_from(row.max_attempts).unwrap_or(1),
            run_at_ms: row.run_at,
            last_error: row.last_error,
            result: row.result.map(|r| r.0),
            idempotency_key: row.idempotency_key,
            created_at_ms: row.created_at,
            started_at_ms: row.started_at,
            finished_at_ms: row.finished_at,
        })
    }
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Running jobs whose lease lapsed, queued again (or dead).
    pub reclaimed: u64,
    /// Queued jobs of deleted tenants, dropped.
    pub dropped: u64,
}

impl JobQueue {
    /// The queue in a PostgreSQL database (the tenant store's).
    #[cfg(feature = "postgres")]
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        Self {
            backend: MainDb::Postgres(pool),
        }
    }

    /// The queue in a SQLite database (the tenant store's).
    #[cfg(feature = "sqlite")]
    pub fn sqlite(pool: sqlx::SqlitePool) -> Self {
        Self {
            backend: MainDb::Sqlite(pool),
        }
    }

    /// Creates the queue's tables when missing (`tenancy migrate` does).
    pub async fn install(&self) -> Result<(), JobsError> {
        match &self.backend {
            #[cfg(feature = "postgres")]
            MainDb::Postgres(pool) => {
                // One installer at a time (concurrent CREATE … IF NOT EXISTS
                // can collide in the catalogs).
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(7461636)")
                    .execute(&mut *tx)
                    .await?;
                sqlx::raw_sql(PG_SCHEMA).execute(&mut *tx).await?;
                tx.commit().await?;
            }
            #[cfg(feature = "sqlite")]
            MainDb::Sqlite(pool) => {
                sqlx::raw_sql(SQLITE_SCHEMA).execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Sets `tenant`'s own limit of jobs running at once, across every
    /// worker (its plan's `jobs_concurrency`); `None` goes back to the
    /// workers' default (`jobs.max_concurrency_per_tenant`). Claims read
    /// it from the queue's table, so every worker follows it at once.
    pub async fn set_tenant_limit(
        &self,
        tenant: &TenantId,
        limit: Option<u32>,
    ) -> Result<(), JobsError> {
        let limit = limit.map(i64::from);
        on_pool!(self, pool => {
            sqlx::query(SET_LIMIT)
                .bind(tenant.as_str())
                .bind(limit)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Clears every tenant's own limit (before they are set again from the
    /// plans).
    pub async fn clear_tenant_limits(&self) -> Result<(), JobsError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE tenancy_job_queues SET max_running = NULL WHERE max_running IS NOT NULL")
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Enqueues a job of `kind` for `tenant`, outside any transaction of
    /// yours; its id (the first job's, when `options` has an idempotency
    /// key already used by this tenant).
    pub async fn enqueue_raw(
        &self,
        tenant: &TenantId,
        kind: &str,
        payload: &Value,
        options: &JobOptions,
        default_attempts: u32,
    ) -> Result<i64, JobsError> {
        match &self.backend {
            #[cfg(feature = "postgres")]
            MainDb::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let id =
                    insert_pg(&mut tx, tenant, kind, payload, options, default_attempts).await?;
                tx.commit().await?;
                Ok(id)
            }
            #[cfg(feature = "sqlite")]
            MainDb::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let id = insert_sqlite(&mut tx, tenant, kind, payload, options, default_attempts)
                    .await?;
                tx.commit().await?;
                Ok(id)
            }
        }
    }

    /// Enqueues inside `tx`, a transaction on the queue's database (a
    /// scoped transaction under row level or schema isolation, or one of
    /// your own): the job exists if and only if `tx` commits.
    #[cfg(feature = "postgres")]
    pub async fn enqueue_in_pg(
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        tenant: &TenantId,
        kind: &str,
        payload: &Value,
        options: &JobOptions,
        default_attempts: u32,
    ) -> Result<i64, JobsError> {
        // A scoped transaction runs as the request role or the tenant's
        // role, which may not touch the queue: the pool's own role writes
        // the job, then the scope's role is taken back.
        // Read first, then switched (a target list is evaluated in order).
        let (role, path, _, _): (String, String, String, String) = sqlx::query_as(
            "SELECT current_user::text, current_setting('search_path'), \
             set_config('role', 'none', true), set_config('search_path', \
             (SELECT reset_val FROM pg_settings WHERE name = 'search_path'), true)",
        )
        .fetch_one(&mut **tx)
        .await?;
        let inserted = insert_pg(tx, tenant, kind, payload, options, default_attempts).await;
        sqlx::query("SELECT set_config('role', $1, true), set_config('search_path', $2, true)")
            .bind(&role)
            .bind(&path)
            .execute(&mut **tx)
            .await?;
        inserted.map_err(not_here)
    }

    /// [`JobQueue::enqueue_in_pg`] for SQLite: `tx` must be on the main
    /// database (row level).
    #[cfg(feature = "sqlite")]
    pub async fn enqueue_in_sqlite(
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        tenant: &TenantId,
        kind: &str,
        payload: &Value,
        options: &JobOptions,
        default_attempts: u32,
    ) -> Result<i64, JobsError> {
        insert_sqlite(tx, tenant, kind, payload, options, default_attempts)
            .await
            .map_err(not_here)
    }

    /// Claims the next job, fairly across tenants: see the module docs.
    /// `None` when no tenant has a job it may run now.
    pub async fn claim(
        &self,
        worker: &str,
        max_per_tenant: u32,
        lease_ms: i64,
    ) -> Result<Option<Claimed>, JobsError> {
        let now = now_ms();
        let claim = format!("{worker}:{}", next_claim());
        let limit = i64::from(max_per_tenant);
        let row: Option<Row> = match &self.backend {
            #[cfg(feature = "postgres")]
            MainDb::Postgres(pool) => {
                // Two statements: the tenant's queue row is locked first, so
                // the second one's snapshot (READ COMMITTED: taken when it
                // starts) sees every claim committed before the lock was
                // ours, and the per-tenant limit is checked against them.
                // One statement would count running jobs in a snapshot
                // older than the lock.
                let mut row = None;
                for _ in 0..3 {
                    let mut tx = pool.begin().await?;
                    let pick = format!("{PICK_TENANT} FOR UPDATE OF q SKIP LOCKED");
                    let tenant: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(pick))
                        .bind(now)
                        .bind(limit)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some(tenant) = tenant else {
                        tx.commit().await?;
                        break;
                    };
                    let sql = format!(
                        "WITH j AS (SELECT id FROM tenancy_jobs WHERE tenant_id = $2 \
                               AND state = 'queued' AND run_at <= $1 \
                               AND (SELECT count(*) FROM tenancy_jobs r WHERE r.tenant_id = $2 \
                                    AND r.state = 'running') < COALESCE((SELECT max_running \
                                    FROM tenancy_job_queues WHERE tenant_id = $2), $5) \
                               ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED), \
                         turn AS (UPDATE tenancy_job_queues SET turn = nextval('tenancy_job_turns') \
                                  WHERE tenant_id = $2) \
                         UPDATE tenancy_jobs SET state = 'running', attempts = attempts + 1, \
                           lease_until = $1 + $3, claim = $4, started_at = $1 \
                         WHERE id = (SELECT id FROM j) RETURNING {COLUMNS}"
                    );
                    row = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .bind(now)
                        .bind(&tenant)
                        .bind(lease_ms)
                        .bind(&claim)
                        .bind(limit)
                        .fetch_optional(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    if row.is_some() {
                        break;
                    }
                    // The tenant reached its limit meanwhile: another one.
                }
                row
            }
            #[cfg(feature = "sqlite")]
            MainDb::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let tenant: Option<String> = sqlx::query_scalar(PICK_TENANT)
                    .bind(now)
                    .bind(limit)
                    .fetch_optional(&mut *tx)
                    .await?;
                let row = match tenant {
                    None => None,
                    Some(tenant) => {
                        sqlx::query(
                            "UPDATE tenancy_job_queues SET turn = \
                             (SELECT coalesce(max(turn), 0) + 1 FROM tenancy_job_queues) \
                             WHERE tenant_id = $1",
                        )
                        .bind(&tenant)
                        .execute(&mut *tx)
                        .await?;
                        let sql = format!(
                            "UPDATE tenancy_jobs SET state = 'running', attempts = attempts + 1, \
                               lease_until = $1 + $3, claim = $4, started_at = $1 \
                             WHERE id = (SELECT id FROM tenancy_jobs WHERE tenant_id = $2 \
                               AND state = 'queued' AND run_at <= $1 ORDER BY run_at, id LIMIT 1) \
                             RETURNING {COLUMNS}"
                        );
                        sqlx::query_as(sqlx::AssertSqlSafe(sql))
                            .bind(now)
                            .bind(&tenant)
                            .bind(lease_ms)
                            .bind(&claim)
                            .fetch_optional(&mut *tx)
                            .await?
                    }
                };
                tx.commit().await?;
                row
            }
        };
        row.map(|row| {
            Ok(Claimed {
                job: row.try_into()?,
                claim,
            })
        })
        .transpose()
    }

    /// Renews the lease of a running job; `false` when the claim is no
    /// longer its (cancelled, or its lease lapsed and another worker has
    /// it): stop running it.
    pub async fn renew(&self, claimed: &Claimed, lease_ms: i64) -> Result<bool, JobsError> {
        let done = on_pool!(self, pool => sqlx::query(
            "UPDATE tenancy_jobs SET lease_until = $1 WHERE id = $2 AND claim = $3 AND state = 'running'",
        )
        .bind(now_ms() + lease_ms)
        .bind(claimed.job.id)
        .bind(&claimed.claim)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    /// Records the success of a claimed run; `false` when the claim was
    /// no longer its (nothing is recorded: another run owns the job).
    pub async fn complete(
        &self,
        claimed: &Claimed,
        result: Option<&Value>,
    ) -> Result<bool, JobsError> {
        let done = on_pool!(self, pool => sqlx::query(
            "UPDATE tenancy_jobs SET state = 'done', result = $1, finished_at = $2, \
             lease_until = NULL, claim = NULL, last_error = NULL \
             WHERE id = $3 AND claim = $4 AND state = 'running'",
        )
        .bind(result.map(Json))
        .bind(now_ms())
        .bind(claimed.job.id)
        .bind(&claimed.claim)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    /// Records the failure of a claimed run: queued again at `retry_at_ms`
    /// while attempts remain, else `dead`. `false` when the claim was no
    /// longer its.
    pub async fn fail(
        &self,
        claimed: &Claimed,
        error: &str,
        retry_at_ms: i64,
    ) -> Result<bool, JobsError> {
        let error: String = error.chars().take(4000).collect();
        let done = on_pool!(self, pool => sqlx::query(
            "UPDATE tenancy_jobs SET \
               state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END, \
               finished_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE NULL END, \
               run_at = $2, last_error = $3, lease_until = NULL, claim = NULL \
             WHERE id = $4 AND claim = $5 AND state = 'running'",
        )
        .bind(now_ms())
        .bind(retry_at_ms)
        .bind(&error)
        .bind(claimed.job.id)
        .bind(&claimed.claim)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    /// Queues running jobs whose lease lapsed again (their worker died),
    /// or makes them `dead` when that was their last attempt; drops the
    /// queued jobs of deleted tenants; forgets tenants without queued
    /// work and (re)registers those with some.
    pub async fn sweep(&self) -> Result<Swept, JobsError> {
        let now = now_ms();
        let reclaimed = on_pool!(self, pool => sqlx::query(
            "UPDATE tenancy_jobs SET \
               state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END, \
               finished_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE NULL END, \
               last_error = 'its worker stopped before it finished (lease expired)', \
               run_at = $1, lease_until = NULL, claim = NULL \
             WHERE state = 'running' AND lease_until < $1",
        )
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected());
        let dropped = on_pool!(self, pool => sqlx::query(
            "UPDATE tenancy_jobs SET state = 'dropped', finished_at = $1 \
             WHERE state = 'queued' AND tenant_id IN \
               (SELECT q.tenant_id FROM tenancy_job_queues q \
                WHERE NOT EXISTS (SELECT 1 FROM tenancy_tenants t WHERE t.id = q.tenant_id))",
        )
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected());
        on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM tenancy_job_queues WHERE (max_running IS NULL OR NOT EXISTS \
                 (SELECT 1 FROM tenancy_tenants t WHERE t.id = tenancy_job_queues.tenant_id)) \
                 AND NOT EXISTS (SELECT 1 FROM tenancy_jobs j \
                 WHERE j.tenant_id = tenancy_job_queues.tenant_id AND j.state IN ('queued', 'running'))",
            )
            .execute(pool)
            .await?;
            // Tenants with queued jobs, found by skipping through the
            // index (one probe per tenant, not one per job).
            sqlx::query(
                "WITH RECURSIVE t(tenant_id) AS ( \
                   SELECT min(tenant_id) FROM tenancy_jobs WHERE state = 'queued' \
                   UNION ALL \
                   SELECT (SELECT min(tenant_id) FROM tenancy_jobs WHERE state = 'queued' \
                           AND tenant_id > t.tenant_id) FROM t WHERE t.tenant_id IS NOT NULL) \
                 INSERT INTO tenancy_job_queues (tenant_id, turn) \
                 SELECT tenant_id, 0 FROM t WHERE tenant_id IS NOT NULL ON CONFLICT DO NOTHING",
            )
            .execute(pool)
            .await?;
        });
        if dropped > 0 {
            tracing::info!(dropped, "queued jobs of deleted tenants dropped");
        }
        if reclaimed > 0 {
            tracing::warn!(reclaimed, "jobs whose worker stopped are queued again");
        }
        Ok(Swept { reclaimed, dropped })
    }

    /// Removes every job of `tenant` (a purge); how many.
    pub async fn purge_tenant(&self, tenant: &TenantId) -> Result<u64, JobsError> {
        on_pool!(self, pool => {
            let removed = sqlx::query("DELETE FROM tenancy_jobs WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .execute(pool)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM tenancy_job_queues WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .execute(pool)
                .await?;
            Ok(removed)
        })
    }

    /// One job.
    pub async fn get(&self, id: i64) -> Result<JobRecord, JobsError> {
        let sql = format!("SELECT {COLUMNS} FROM tenancy_jobs WHERE id = $1");
        let row: Option<Row> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await?);
        row.ok_or(JobsError::NotFound(id))?.try_into()
    }

    /// Jobs matching `filter`, newest first.
    pub async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, JobsError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM tenancy_jobs \
             WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR state = $2) \
             ORDER BY id DESC LIMIT $3"
        );
        let rows: Vec<Row> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(filter.tenant.as_ref().map(|t| t.as_str().to_owned()))
            .bind(filter.state.map(JobState::as_str))
            .bind(i64::from(filter.limit()))
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(JobRecord::try_from).collect()
    }

    /// Jobs by kind and state.
    pub async fn stats(&self) -> Result<JobStats, JobsError> {
        let rows: Vec<(String, String, i64)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT kind, state, count(*) FROM tenancy_jobs GROUP BY kind, state ORDER BY kind, state",
        )
        .fetch_all(pool)
        .await?);
        let mut counts = Vec::with_capacity(rows.len());
        for (kind, state, n) in rows {
            let state = state
                .parse()
                .map_err(|e| JobsError::Payload(format!("{e}")))?;
            counts.push((kind, state, u64::try_from(n).unwrap_or(0)));
        }
        Ok(JobStats { counts })
    }

    /// The `limit` tenants with the most queued jobs, and how many each.
    pub async fn queued_by_tenant(&self, limit: u32) -> Result<Vec<(TenantId, u64)>, JobsError> {
        let rows: Vec<(String, i64)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT tenant_id, count(*) AS n FROM tenancy_jobs WHERE state = 'queued' \
             GROUP BY tenant_id ORDER BY n DESC, tenant_id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?);
        rows.into_iter()
            .map(|(id, n)| {
                TenantId::new(&id)
                    .map(|id| (id, u64::try_from(n).unwrap_or(0)))
                    .map_err(|e| JobsError::Payload(e.to_string()))
            })
            .collect()
    }

    /// Queues a `dead` or `cancelled` job again, with its attempts reset.
    pub async fn retry(&self, id: i64) -> Result<JobRecord, JobsError> {
        let job = self.get(id).await?;
        if !matches!(job.state, JobState::Dead | JobState::Cancelled) {
            return Err(JobsError::WrongState {
                id,
                state: job.state,
                what: "only a dead or cancelled job is retried",
            });
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE tenancy_jobs SET state = 'queued', attempts = 0, run_at = $1, \
                 finished_at = NULL WHERE id = $2 AND state IN ('dead', 'cancelled')",
            )
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(QUEUE_ROW).bind(job.tenant_id.as_str()).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        self.wake_workers().await;
        self.get(id).await
    }

    /// Cancels a queued or running job (a running one stops at its
    /// worker's next lease renewal, and nothing it returns is recorded).
    pub async fn cancel(&self, id: i64) -> Result<JobRecord, JobsError> {
        let changed = on_pool!(self, pool => sqlx::query(
            "UPDATE tenancy_jobs SET state = 'cancelled', finished_at = $1, claim = NULL, \
             lease_until = NULL WHERE id = $2 AND state IN ('queued', 'running')",
        )
        .bind(now_ms())
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected());
        let job = self.get(id).await?;
        if changed == 0 {
            return Err(JobsError::WrongState {
                id,
                state: job.state,
                what: "only a queued or running job is cancelled",
            });
        }
        Ok(job)
    }

    /// Wakes PostgreSQL workers everywhere (nothing on SQLite: its
    /// workers poll).
    async fn wake_workers(&self) {
        #[cfg(feature = "postgres")]
        if let MainDb::Postgres(pool) = &self.backend
            && let Err(e) = sqlx::query("SELECT pg_notify('tenancy_jobs', '')")
                .execute(pool)
                .await
        {
            tracing::debug!(error = %e, "cannot wake the job workers");
        }
    }

    /// The queued jobs of `tenant` waiting for it to be active again.
    pub async fn queued_for(&self, tenant: &TenantId) -> Result<u64, JobsError> {
        let n: i64 = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT count(*) FROM tenancy_jobs WHERE tenant_id = $1 AND state = 'queued'",
        )
        .bind(tenant.as_str())
        .fetch_one(pool)
        .await?);
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// The enqueue on SQLite (no data-changing `WITH` there): the job, then
/// its tenant's queue row, on `conn` (inside the caller's transaction),
/// or the first job's id when the idempotency key is taken.
#[cfg(feature = "sqlite")]
async fn insert_sqlite(
    conn: &mut sqlx::SqliteConnection,
    tenant: &TenantId,
    kind: &str,
    payload: &Value,
    options: &JobOptions,
    default_attempts: u32,
) -> Result<i64, JobsError> {
    let now = now_ms();
    let attempts = i64::from(options.max_attempts.unwrap_or(default_attempts).max(1));
    let id: Option<i64> = sqlx::query_scalar(ENQUEUE)
        .bind(tenant.as_str())
        .bind(kind)
        .bind(Json(payload))
        .bind(attempts)
        .bind(options.run_at_ms.unwrap_or(now))
        .bind(options.idempotency_key.as_deref())
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(id) = id else {
        return sqlx::query_scalar(EXISTING)
            .bind(tenant.as_str())
            .bind(options.idempotency_key.as_deref())
            .fetch_one(&mut *conn)
            .await
            .map_err(JobsError::from);
    };
    sqlx::query(QUEUE_ROW)
        .bind(tenant.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

/// The enqueue on PostgreSQL, in one statement: the job, its tenant's
/// queue row, the workers' wake-up (sent at commit), and the first job's
/// id when the idempotency key is taken.
#[cfg(feature = "postgres")]
async fn insert_pg(
    conn: &mut sqlx::PgConnection,
    tenant: &TenantId,
    kind: &str,
    payload: &Value,
    options: &JobOptions,
    default_attempts: u32,
) -> Result<i64, JobsError> {
    const ONE_STATEMENT: &str = "WITH job AS ( \
          INSERT INTO tenancy_jobs \
            (tenant_id, kind, payload, state, attempts, max_attempts, run_at, idempotency_key, created_at) \
          VALUES ($1, $2, $3, 'queued', 0, $4, $5, $6, $7) \
          ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
          RETURNING id), \
        queued AS (INSERT INTO tenancy_job_queues (tenant_id, turn) SELECT $1, 0 FROM job \
                   ON CONFLICT DO NOTHING) \
        SELECT ids.id FROM (SELECT id FROM job \
                            UNION ALL SELECT id FROM tenancy_jobs \
                            WHERE tenant_id = $1 AND idempotency_key = $6) ids \
        CROSS JOIN (SELECT pg_notify('tenancy_jobs', '')) wake LIMIT 1";
    let now = now_ms();
    let attempts = i64::from(options.max_attempts.unwrap_or(default_attempts).max(1));
    Ok(sqlx::query_scalar(ONE_STATEMENT)
        .bind(tenant.as_str())
        .bind(kind)
        .bind(Json(payload))
        .bind(attempts)
        .bind(options.run_at_ms.unwrap_or(now))
        .bind(options.idempotency_key.as_deref())
        .bind(now)
        .fetch_one(conn)
        .await?)
}

/// An enqueue in a transaction on another database (a tenant's own)
/// finds no queue table there.
fn not_here(error: JobsError) -> JobsError {
    match error {
        JobsError::Sql(sqlx::Error::Database(db))
            if db.message().contains("tenancy_jobs") || db.message().contains("no such table") =>
        {
            JobsError::NotInThisDatabase(db.message().to_owned())
        }
        other => other,
    }
}

/// A claim number, unique in this process.
fn next_claim() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
