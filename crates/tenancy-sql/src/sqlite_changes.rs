//! Instant cache invalidation across processes on SQLite: what
//! PostgreSQL's `NOTIFY` does for [`PgStore`](crate::PgStore), a change log
//! does for [`SqliteStore`](crate::SqliteStore).
//!
//! Triggers on the store's tenant, config and domain tables append each
//! change to `tenancy_changes` in the writer's own transaction, whichever
//! process or tool wrote it (another `tenancy serve`, the `tenancy` CLI, a
//! script): a change that rolls back announces nothing. The payloads are
//! those of PostgreSQL's `NOTIFY` (see [`ChangeTargets`]).
//!
//! A [`SqliteChangeListener`] in every process reads the log every 250 ms
//! (one indexed query; nothing on the request path) and drops the matching
//! entries from its validators, config caches and domain resolvers, so a
//! suspension, a slug change or a removed domain is refused everywhere
//! within a second. When it cannot know what it missed (the log was pruned
//! past what it read, or reading failed), it clears its caches entirely:
//! the next lookups go to the store, which is always right. Entries older
//! than 10 minutes are pruned.
//!
//! ```
//! use tenancy::Tenancy;
//! use tenancy::sql::{ChangeTargets, SqliteChangeListener, SqliteStore};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::connect("sqlite::memory:").await?;
//! let tenancy = Tenancy::builder().store(store.clone()).build()?;
//! let targets = ChangeTargets::new()
//!     .validator(tenancy.validator().clone())
//!     .config_cache(tenancy.config_store().clone());
//! let listener = SqliteChangeListener::spawn(store.pool().clone(), targets);
//! // … serve; dropping `listener` (or `listener.shutdown().await`) stops it.
//! listener.shutdown().await;
//! # Ok(()) }
//! ```

use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::changes::{ChangeTargets, parse};

/// How often the log is read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long entries are kept.
const KEEP_SECS: i64 = 600;
/// How often old entries are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Entries read at once.
const BATCH: i64 = 1000;

/// Reads the store's change log and invalidates the caches it was given;
/// stops when dropped or shut down.
#[derive(Debug)]
pub struct SqliteChangeListener {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SqliteChangeListener {
    /// Starts reading the change log of the store on `pool` (the pool of a
    /// migrated [`SqliteStore`](crate::SqliteStore)). Changes already in the
    /// log are not replayed: the caches start empty or were filled from the
    /// store after them.
    pub fn spawn(pool: SqlitePool, targets: ChangeTargets) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(pool, targets, stopped));
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops reading and waits for the task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SqliteChangeListener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn last_seq(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM tenancy_changes")
        .fetch_one(pool)
        .await
}

async fn run(pool: SqlitePool, targets: ChangeTargets, mut stopped: oneshot::Receiver<()>) {
    // Where reading starts; `None` until the log could be read once.
    let mut last: Option<i64> = None;
    let mut failing = false;
    let mut pruned = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tick.tick() => {}
        }
        let read =
            match last {
                None => last_seq(&pool).await.map(|seq| {
                    last = Some(seq);
                    Vec::new()
                }),
                Some(after) => sqlx::query_as::<_, (i64, String)>(
                    "SELECT seq, payload FROM tenancy_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .bind(after)
                .bind(BATCH)
                .fetch_all(&pool)
                .await,
            };
        let rows = match read {
            Ok(rows) => rows,
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot read the tenancy change log; caches cleared until it answers");
                    failing = true;
                }
                targets.clear();
                continue;
            }
        };
        if failing {
            // What changed meanwhile is unknown.
            targets.clear();
            failing = false;
        }
        // Numbers are consecutive (AUTOINCREMENT; a rolled-back write takes
        // none): a gap means entries were pruned before this process read
        // them (it stalled for minutes).
        if let (Some(after), Some((first, _))) = (last, rows.first())
            && *first > after + 1
        {
            tracing::warn!(
                after,
                first,
                "the change log was pruned past what this process read; caches cleared"
            );
            targets.clear();
        }
        for (seq, payload) in &rows {
            match parse(payload) {
                Some((kind, id, references)) => targets.apply(kind, &id, &references).await,
                None => {
                    tracing::warn!(seq, "unreadable change in the log; caches cleared");
                    targets.clear();
                }
            }
            last = Some(*seq);
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = tokio::time::Instant::now();
            if let Err(error) = sqlx::query(
                "DELETE FROM tenancy_changes WHERE at < CAST(strftime('%s', 'now') AS INTEGER) - ?1",
            )
            .bind(KEEP_SECS)
            .execute(&pool)
            .await
            {
                tracing::debug!(%error, "pruning the change log failed; another process will");
            }
        }
    }
}
