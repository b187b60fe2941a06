//! Background jobs that keep their tenant (SPEC J1–J5): a durable queue in
//! the main database (PostgreSQL or SQLite) and workers that run each job
//! in its tenant's scope.
//!
//! - Enqueue with [`JobQueue::enqueue`], or inside a transaction on the
//!   queue's database with [`JobQueue::enqueue_in`] (row level, schema on
//!   PostgreSQL): the job commits or rolls back with the data.
//! - A [`Worker`] runs each job on a fresh task with `tenancy::current()`
//!   set to its tenant, so `TenantDb::begin` scopes to it under every
//!   strategy; nothing of the previous job is there.
//! - Tenants are served in turn; `jobs.max_concurrency_per_tenant` bounds
//!   one tenant's running jobs across every worker.
//! - At least once: a job whose worker died runs again after its lease
//!   (`jobs.lease_s`); failures are retried with exponential backoff up to
//!   their attempts, then `dead` with the last error.
//! - A suspended or inactive tenant's jobs wait; a deleted tenant's are
//!   dropped (counted), a purge removes them.

mod queue;
mod worker;

pub use queue::{Claimed, JobQueue, JobsError, Swept};
pub use tenancy_core::jobs::{
    Job, JobFilter, JobOptions, JobRecord, JobState, JobStats, UnknownJobState,
};
pub use worker::{JobContext, RunningWorkers, Worker, WorkerMetrics};

#[cfg(feature = "postgres")]
pub(crate) use queue::PG_SCHEMA;
#[cfg(feature = "sqlite")]
pub(crate) use queue::SQLITE_SCHEMA;

use tenancy_core::TenantId;

/// Attempts of a job enqueued without `JobOptions::max_attempts`, unless
/// the queue was given `jobs.max_attempts`.
const DEFAULT_ATTEMPTS: u32 = 5;

/// A transaction a job can be enqueued in.
pub trait JobTransaction: Send {
    #[doc(hidden)]
    fn enqueue_raw<'a>(
        &'a mut self,
        tenant: &'a TenantId,
        kind: &'a str,
        payload: &'a serde_json::Value,
        options: &'a JobOptions,
        attempts: u32,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<i64, JobsError>> + Send + 'a>>;
}

/// [`JobTransaction`] for a transaction of one database, enqueuing with
/// that database's `JobQueue::enqueue_in_*`.
macro_rules! job_transaction {
    ($db:ty, $enqueue:ident) => {
        impl JobTransaction for sqlx::Transaction<'_, $db> {
            fn enqueue_raw<'a>(
                &'a mut self,
                tenant: &'a TenantId,
                kind: &'a str,
                payload: &'a serde_json::Value,
                options: &'a JobOptions,
                attempts: u32,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<i64, JobsError>> + Send + 'a>,
            > {
                Box::pin(JobQueue::$enqueue(
                    self, tenant, kind, payload, options, attempts,
                ))
            }
        }
    };
}
#[cfg(feature = "postgres")]
job_transaction!(sqlx::Postgres, enqueue_in_pg);
#[cfg(feature = "sqlite")]
job_transaction!(sqlx::Sqlite, enqueue_in_sqlite);

impl JobQueue {
    /// Enqueues `job` for `tenant` (outside any transaction of yours); its
    /// id.
    pub async fn enqueue<J: Job>(
        &self,
        tenant: &TenantId,
        job: &J,
        options: JobOptions,
    ) -> Result<i64, JobsError> {
        let payload = serde_json::to_value(job).map_err(|e| JobsError::Payload(e.to_string()))?;
        self.enqueue_raw(tenant, J::KIND, &payload, &options, DEFAULT_ATTEMPTS)
            .await
    }

    /// Enqueues `job` for `tenant` inside `tx`: it exists once `tx`
    /// commits, never if it rolls back (an outbox with no second system).
    /// `tx` must be on the queue's database: a scoped transaction under
    /// row level (PostgreSQL, SQLite) or schema isolation, or your own;
    /// under database-per-tenant isolation it is
    /// [`JobsError::NotInThisDatabase`].
    pub async fn enqueue_in<J: Job, T: JobTransaction>(
        tx: &mut T,
        tenant: &TenantId,
        job: &J,
        options: JobOptions,
    ) -> Result<i64, JobsError> {
        let payload = serde_json::to_value(job).map_err(|e| JobsError::Payload(e.to_string()))?;
        tx.enqueue_raw(tenant, J::KIND, &payload, &options, DEFAULT_ATTEMPTS)
            .await
    }
}
