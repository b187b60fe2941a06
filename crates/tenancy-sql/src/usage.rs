//! Usage in the store (SPEC E4): [`UsageStore`] keeps each tenant's
//! metrics per hour in the main database (`tenancy_usage`, created by the
//! stores' `migrate`), and [`UsageFlusher`] adds a [`UsageMeter`]'s
//! counts to it.
//!
//! **Exactly once.** Every flush carries an id (this instance's random id
//! and a sequence number) written in the same transaction as its counts
//! (`tenancy_usage_flushes`). A flush whose commit was not confirmed is
//! tried again with the same id, and applies only if the first try did
//! not; counts taken later go in a new flush. So the store's sum is what
//! every instance counted, once. What an instance had counted but not
//! flushed when it was killed is lost: at most `usage.flush_secs` of its
//! own traffic (a graceful stop flushes).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tenancy_core::TenantId;
use tenancy_core::usage::{Metric, UsageDelta, UsageMeter, UsageRow, hour_start, month_start};

/// The usage tables, for `concat!` (the same on both databases but for the
/// whole-number type).
macro_rules! usage_tables {
    (big: $big:literal) => {
        concat!(
            "
CREATE TABLE IF NOT EXISTS tenancy_usage (
    tenant_id TEXT NOT NULL,
    hour ",
            $big,
            " NOT NULL,
    metric TEXT NOT NULL,
    value ",
            $big,
            " NOT NULL,
    PRIMARY KEY (tenant_id, hour, metric)
);
CREATE INDEX IF NOT EXISTS tenancy_usage_by_hour ON tenancy_usage (hour, metric);
CREATE TABLE IF NOT EXISTS tenancy_usage_flushes (id TEXT PRIMARY KEY, at ",
            $big,
            " NOT NULL);
"
        )
    };
}

#[cfg(feature = "postgres")]
pub(crate) const PG_SCHEMA: &str = usage_tables!(big: "BIGINT");
#[cfg(feature = "sqlite")]
pub(crate) const SQLITE_SCHEMA: &str = usage_tables!(big: "INTEGER");

/// Counts add up; a gauge keeps the hour's largest sample.
const UPSERT: &str = "INSERT INTO tenancy_usage (tenant_id, hour, metric, value) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, hour, metric) DO UPDATE SET value = \
    CASE WHEN $5 THEN (CASE WHEN tenancy_usage.value > excluded.value \
    THEN tenancy_usage.value ELSE excluded.value END) \
    ELSE tenancy_usage.value + excluded.value END";
const MARK_FLUSH: &str =
    "INSERT INTO tenancy_usage_flushes (id, at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";
const MONTH_TOTALS: &str = "SELECT tenant_id, CAST(sum(value) AS BIGINT) FROM tenancy_usage \
    WHERE hour >= $1 AND metric = 'requests' GROUP BY tenant_id";
const REPORT: &str = "SELECT tenant_id, hour, metric, value FROM tenancy_usage \
    WHERE (CAST($1 AS TEXT) IS NULL OR tenant_id = $1) AND hour >= $2 AND hour < $3 \
    ORDER BY tenant_id, hour, metric LIMIT $4";
/// Flush ids are kept a week: a retry comes within seconds.
const PRUNE_FLUSHES: &str = "DELETE FROM tenancy_usage_flushes WHERE at < $1";
const PURGE: &str = "DELETE FROM tenancy_usage WHERE tenant_id = $1";

/// The most rows one report returns.
pub const MAX_REPORT_ROWS: i64 = 100_000;

/// Where usage is kept: the main database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct UsageStore {
    backend: MainDb,
}

use crate::main_db::{MainDb, on_pool};

impl UsageStore {
    /// Usage in the PostgreSQL store's database (migrated by
    /// `PgStore::migrate`).
    #[cfg(feature = "postgres")]
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        Self {
            backend: MainDb::Postgres(pool),
        }
    }

    /// Usage in the SQLite store's database (migrated by
    /// `SqliteStore::migrate`).
    #[cfg(feature = "sqlite")]
    pub fn sqlite(pool: sqlx::SqlitePool) -> Self {
        Self {
            backend: MainDb::Sqlite(pool),
        }
    }

    /// Adds `deltas`, counted in the hour starting at `hour` (Unix
    /// seconds), under flush `id`, in one transaction. A flush id already
    /// applied changes nothing (returns false): a retry of a flush whose
    /// commit was not confirmed is never counted twice.
    pub async fn record(
        &self,
        id: &str,
        hour: i64,
        deltas: &[UsageDelta],
    ) -> Result<bool, sqlx::Error> {
        let now = Utc::now().timestamp();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let fresh = sqlx::query(MARK_FLUSH)
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if fresh {
                for delta in deltas {
                    sqlx::query(UPSERT)
                        .bind(delta.tenant_id.as_str())
                        .bind(hour)
                        .bind(delta.metric.as_str())
                        .bind(i64::try_from(delta.value).unwrap_or(i64::MAX))
                        .bind(delta.metric.is_gauge())
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(fresh)
        })
    }

    /// Every tenant's requests this month (from the month of `now`).
    pub async fn month_totals(
        &self,
        now: DateTime<Utc>,
    ) -> Result<HashMap<TenantId, u64>, sqlx::Error> {
        let from = month_start(now).timestamp();
        let rows: Vec<(String, Option<i64>)> = on_pool!(self, pool => {
            sqlx::query_as(MONTH_TOTALS).bind(from).fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(id, n)| {
                Some((
                    TenantId::new(&id).ok()?,
                    u64::try_from(n.unwrap_or(0)).unwrap_or(0),
                ))
            })
            .collect())
    }

    /// The stored rows of `tenant` (every tenant when `None`) with hours in
    /// `[from, to)`, at most [`MAX_REPORT_ROWS`].
    pub async fn report(
        &self,
        tenant: Option<&TenantId>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageRow>, sqlx::Error> {
        let rows: Vec<(String, i64, String, i64)> = on_pool!(self, pool => {
            sqlx::query_as(REPORT)
                .bind(tenant.map(TenantId::as_str))
                .bind(from.timestamp())
                .bind(to.timestamp())
                .bind(MAX_REPORT_ROWS)
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(tenant_id, hour, metric, value)| {
                Some(UsageRow {
                    tenant_id: TenantId::new(&tenant_id).ok()?,
                    hour: Utc.timestamp_opt(hour, 0).single()?,
                    metric,
                    value,
                })
            })
            .collect())
    }

    /// Forgets flush ids older than a week.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let before = Utc::now().timestamp() - 7 * 24 * 3600;
        on_pool!(self, pool => {
            Ok(sqlx::query(PRUNE_FLUSHES).bind(before).execute(pool).await?.rows_affected())
        })
    }

    /// Deletes every usage row of `tenant` (a purge).
    pub async fn purge_tenant(&self, tenant: &TenantId) -> Result<u64, sqlx::Error> {
        on_pool!(self, pool => {
            Ok(sqlx::query(PURGE).bind(tenant.as_str()).execute(pool).await?.rows_affected())
        })
    }
}

/// Flushes one meter into one store. [`UsageFlusher::spawn`] runs it every
/// interval; [`UsageFlusher::flush`] runs one flush (tests, shutdown).
#[derive(Clone)]
pub struct UsageFlusher {
    meter: UsageMeter,
    store: UsageStore,
    instance: Arc<str>,
    state: Arc<tokio::sync::Mutex<FlushState>>,
}

#[derive(Default)]
struct FlushState {
    seq: u64,
    /// Flushes written but not confirmed: tried again, same id, in order.
    unconfirmed: Vec<(String, i64, Vec<UsageDelta>)>,
}

/// The most unconfirmed flushes kept while the store is down; older ones
/// are dropped (and logged) past it.
const MAX_UNCONFIRMED: usize = 1000;

impl UsageFlusher {
    /// A flusher of `meter` into `store`.
    pub fn new(meter: UsageMeter, store: UsageStore) -> Self {
        Self {
            meter,
            store,
            instance: uuid::Uuid::new_v4().simple().to_string().into(),
            state: Arc::default(),
        }
    }

    /// Writes what the meter counted since the last flush (and any flush
    /// not yet confirmed), then reads the month's request totals back into
    /// the meter for the monthly quota. Returns the rows written.
    pub async fn flush(&self) -> Result<usize, sqlx::Error> {
        let mut state = self.state.lock().await;
        let taken = self.meter.take();
        let now = Utc::now();
        if !taken.is_empty() {
            state.seq += 1;
            let id = format!("{}-{}", self.instance, state.seq);
            state.unconfirmed.push((id, hour_start(now), taken));
        }
        if state.unconfirmed.len() > MAX_UNCONFIRMED {
            let dropped = state.unconfirmed.len() - MAX_UNCONFIRMED;
            state.unconfirmed.drain(..dropped);
            tracing::error!(
                dropped,
                "usage flushes dropped: the store was unavailable for too long"
            );
        }
        let mut written = 0;
        while let Some((id, hour, deltas)) = state.unconfirmed.first() {
            self.store.record(id, *hour, deltas).await?;
            written += deltas.len();
            state.unconfirmed.remove(0);
        }
        let totals = self.store.month_totals(now).await?;
        self.meter.set_month_totals(&totals);
        if state.seq % 360 == 1 {
            self.store.prune().await?;
        }
        Ok(written)
    }

    /// Flushes every `every` (and at each hour's start, so counts fall in
    /// their hour) until the handle is stopped or dropped; a graceful
    /// [`RunningFlusher::stop`] flushes once more.
    pub fn spawn(self, every: Duration) -> RunningFlusher {
        let stop = Arc::new(tokio::sync::Notify::new());
        let flusher = self.clone();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                let to_hour = {
                    let now = Utc::now();
                    let next = hour_start(now) + 3600;
                    Duration::from_millis(
                        u64::try_from(next * 1000 - now.timestamp_millis()).unwrap_or(0),
                    )
                };
                tokio::select! {
                    () = tokio::time::sleep(every.min(to_hour)) => {}
                    () = stopped.notified() => break,
                }
                if let Err(e) = flusher.flush().await {
                    tracing::warn!(error = %e, "usage flush failed: it is kept and tried again");
                }
            }
            if let Err(e) = flusher.flush().await {
                tracing::error!(error = %e, "the last usage flush failed: these counts are lost");
            }
        });
        RunningFlusher {
            stop,
            task: Some(task),
        }
    }
}

/// A flusher started by [`UsageFlusher::spawn`]; dropping it stops the
/// flushing without a last flush.
pub struct RunningFlusher {
    stop: Arc<tokio::sync::Notify>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningFlusher {
    /// Stops, after one last flush.
    pub async fn stop(mut self) {
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningFlusher {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Metrics by name, for reports: every known metric, in order.
pub fn metric_names() -> impl Iterator<Item = &'static str> {
    Metric::ALL.into_iter().map(Metric::as_str)
}
