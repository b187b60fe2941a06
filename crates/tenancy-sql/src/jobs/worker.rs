//! [`Worker`]: runs jobs, each in its tenant's scope, on a fresh task.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tenancy_core::config::JobsConfig;
use tenancy_core::jobs::{Job, JobRecord, backoff, now_ms};
use tenancy_core::{TenantInfo, TenantStore, context};
use tokio::sync::Notify;
use tracing::Instrument;

use super::queue::{Claimed, JobQueue, JobsError};

/// What a job's handler is told besides its payload.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's id.
    pub id: i64,
    /// Its tenant (also `tenancy::current()` while it runs, so `TenantDb`
    /// scopes to it under any strategy).
    pub tenant: Arc<TenantInfo>,
    /// This run: 1 for the first.
    pub attempt: u32,
}

type Outcome = Result<Option<Value>, String>;
type BoxFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;
type Handler = Arc<dyn Fn(JobContext, Value) -> BoxFuture + Send + Sync>;

/// Runs the jobs of the kinds registered on it.
///
/// ```no_run
/// # async fn run(queue: tenancy::jobs::JobQueue, store: std::sync::Arc<dyn tenancy::TenantStore>) {
/// use serde::{Deserialize, Serialize};
/// use tenancy::jobs::{Job, JobContext, Worker};
/// #[derive(Serialize, Deserialize)]
/// struct Welcome { user: String }
/// impl Job for Welcome { const KIND: &'static str = "welcome"; }
///
/// let worker = Worker::new(queue, store, &Default::default())
///     .register(|ctx: JobContext, job: Welcome| async move {
///         tracing::info!(tenant = %ctx.tenant.slug, user = %job.user, "welcome");
///         Ok::<(), std::io::Error>(())
///     });
/// let running = worker.spawn(2); // two at a time; `running.shutdown().await` stops them
/// # drop(running);
/// # }
/// ```
#[derive(Clone)]
pub struct Worker {
    queue: JobQueue,
    tenants: Arc<dyn TenantStore>,
    handlers: Arc<HashMap<&'static str, Handler>>,
    config: JobsConfig,
    name: Arc<str>,
    wake: Arc<Notify>,
    metrics: Arc<WorkerMetrics>,
    /// Tenants of recent jobs, kept a second: their status was checked by
    /// the claim itself; the record is only the job's context.
    recent: Arc<quick_cache::sync::Cache<tenancy_core::TenantId, (Arc<TenantInfo>, i64)>>,
    /// Where runs and their time are counted (`usage.*`).
    usage: Option<tenancy_core::usage::UsageMeter>,
}

/// How long a worker reuses a tenant's record (ms).
const TENANT_RECORD_MS: i64 = 1000;

/// What this process's workers did (for `/metrics`).
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Runs started.
    pub started: std::sync::atomic::AtomicU64,
    /// Runs that succeeded.
    pub succeeded: std::sync::atomic::AtomicU64,
    /// Runs that failed (retried or dead).
    pub failed: std::sync::atomic::AtomicU64,
    /// Sum of enqueue-to-start latencies, in milliseconds.
    pub latency_ms_sum: std::sync::atomic::AtomicU64,
}

impl Worker {
    /// A worker on `queue`, looking tenants up in `tenants`, with the
    /// lease, attempts, backoff and per-tenant limit of `config`.
    pub fn new(queue: JobQueue, tenants: Arc<dyn TenantStore>, config: &JobsConfig) -> Self {
        let name = format!(
            "{}-{}",
            std::process::id(),
            now_ms().rem_euclid(1_000_000_000)
        );
        Self {
            queue,
            tenants,
            handlers: Arc::default(),
            config: config.clone(),
            name: name.into(),
            wake: Arc::default(),
            metrics: Arc::default(),
            recent: Arc::new(quick_cache::sync::Cache::new(1024)),
            usage: None,
        }
    }

    /// Counts each run (and its time) of a tenant's job into `meter`
    /// (`jobs_run`, `job_ms`).
    pub fn usage(mut self, meter: tenancy_core::usage::UsageMeter) -> Self {
        self.usage = Some(meter);
        self
    }

    /// Runs jobs of kind `J` with `handler`. An `Err` is retried with
    /// backoff until the job's attempts are spent, then it is `dead` with
    /// the error's text.
    pub fn register<J, F, Fut, E>(self, handler: F) -> Self
    where
        J: Job,
        F: Fn(JobContext, J) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        self.register_with_result(move |ctx, job: J| {
            let run = handler(ctx, job);
            async move { run.await.map(|()| Value::Null) }
        })
    }

    /// [`Worker::register`] for handlers whose result is kept with the job
    /// (`JobRecord::result`, `GET /admin/jobs/{id}/result`).
    pub fn register_with_result<J, F, Fut, R, E>(mut self, handler: F) -> Self
    where
        J: Job,
        F: Fn(JobContext, J) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: serde::Serialize,
        E: std::fmt::Display,
    {
        let handler = Arc::new(handler);
        let erased: Handler = Arc::new(move |ctx, payload| {
            let handler = handler.clone();
            Box::pin(async move {
                let job: J = serde_json::from_value(payload)
                    .map_err(|e| format!("the payload is not a {}: {e}", J::KIND))?;
                let result = handler(ctx, job).await.map_err(|e| e.to_string())?;
                let value = serde_json::to_value(result).map_err(|e| e.to_string())?;
                Ok((!value.is_null()).then_some(value))
            })
        });
        Arc::make_mut(&mut self.handlers).insert(J::KIND, erased);
        self
    }

    /// The queue this worker takes jobs from.
    pub fn queue(&self) -> &JobQueue {
        &self.queue
    }

    /// What the workers of this handle did.
    pub fn metrics(&self) -> &Arc<WorkerMetrics> {
        &self.metrics
    }

    /// Wakes idle workers now (new jobs were enqueued in this process).
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Claims and runs one job, if one may run now: its id.
    pub async fn run_one(&self) -> Result<Option<i64>, JobsError> {
        let lease_ms = self.lease_ms();
        let Some(claimed) = self
            .queue
            .claim(&self.name, self.config.max_concurrency_per_tenant, lease_ms)
            .await?
        else {
            return Ok(None);
        };
        let id = claimed.job.id;
        self.run(claimed).await?;
        Ok(Some(id))
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.config.lease_s.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    async fn run(&self, claimed: Claimed) -> Result<(), JobsError> {
        use std::sync::atomic::Ordering::Relaxed;
        let job = &claimed.job;
        self.metrics.started.fetch_add(1, Relaxed);
        let waited = now_ms().saturating_sub(job.run_at_ms.max(job.created_at_ms));
        self.metrics
            .latency_ms_sum
            .fetch_add(u64::try_from(waited).unwrap_or(0), Relaxed);
        let began = std::time::Instant::now();
        let outcome = match self.start(job).await {
            Ok(task) => {
                let outcome = self.watch(&claimed, task).await?;
                if let Some(meter) = &self.usage {
                    meter.job_ran(&job.tenant_id, began.elapsed());
                }
                outcome
            }
            Err(refusal) => Err(refusal),
        };
        let recorded = match &outcome {
            Ok(result) => {
                self.metrics.succeeded.fetch_add(1, Relaxed);
                self.queue.complete(&claimed, result.as_ref()).await?
            }
            Err(error) => {
                self.metrics.failed.fetch_add(1, Relaxed);
                let delay = backoff(Duration::from_millis(self.config.backoff_ms), job.attempts);
                let retry_at =
                    now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                tracing::warn!(job = job.id, kind = %job.kind, tenant_id = %job.tenant_id,
                    attempt = job.attempts, %error, "job failed");
                self.queue.fail(&claimed, error, retry_at).await?
            }
        };
        if !recorded {
            tracing::warn!(
                job = job.id,
                "job's claim was lost (cancelled, or its lease lapsed): its outcome is not recorded"
            );
        }
        Ok(())
    }

    /// The job's run on a task of its own, in its tenant's scope.
    async fn start(&self, job: &JobRecord) -> Result<tokio::task::JoinHandle<Outcome>, String> {
        let Some(handler) = self.handlers.get(job.kind.as_str()).cloned() else {
            return Err(format!(
                "no handler for kind `{}` is registered on this worker: register it on every worker",
                job.kind
            ));
        };
        let now = now_ms();
        let tenant = match self.recent.get(&job.tenant_id) {
            Some((tenant, at)) if now - at < TENANT_RECORD_MS => tenant,
            _ => match self.tenants.get(&job.tenant_id).await {
                Ok(Some(tenant)) => {
                    let tenant = Arc::new(tenant);
                    self.recent
                        .insert(job.tenant_id.clone(), (tenant.clone(), now));
                    tenant
                }
                Ok(None) => return Err("its tenant no longer exists".into()),
                Err(e) => return Err(format!("tenant store unavailable: {e}")),
            },
        };
        let ctx = JobContext {
            id: job.id,
            tenant: tenant.clone(),
            attempt: job.attempts,
        };
        let span =
            tracing::info_span!("job", job = job.id, kind = %job.kind, tenant_id = %tenant.id);
        let run = handler(ctx, job.payload.clone());
        // A fresh task: nothing of the previous job (its tenant, its
        // task-locals) is there, and a panic stays in it.
        Ok(tokio::spawn(
            context::with_tenant_info(tenant, run).instrument(span),
        ))
    }

    /// Waits for the run, renewing its lease; stops it when the claim is
    /// lost. A panic is a failure.
    async fn watch(
        &self,
        claimed: &Claimed,
        mut task: tokio::task::JoinHandle<Outcome>,
    ) -> Result<Outcome, JobsError> {
        let lease_ms = self.lease_ms();
        let every = Duration::from_millis(u64::try_from(lease_ms / 3).unwrap_or(1000).max(100));
        let mut renew = tokio::time::interval(every);
        renew.tick().await;
        loop {
            tokio::select! {
                joined = &mut task => {
                    return Ok(match joined {
                        Ok(outcome) => outcome,
                        Err(e) if e.is_panic() => Err(format!("the job panicked: {}", panic_text(e))),
                        Err(e) => Err(format!("the job's task ended: {e}")),
                    });
                }
                _ = renew.tick() => {
                    match self.queue.renew(claimed, lease_ms).await {
                        Ok(true) => {}
                        Ok(false) => {
                            task.abort();
                            return Ok(Err("stopped: its claim was lost (cancelled, or its lease lapsed)".into()));
                        }
                        Err(e) => tracing::warn!(job = claimed.job.id, error = %e, "cannot renew the job's lease"),
                    }
                }
            }
        }
    }

    /// Starts `workers` loops, each running one job at a time, and a
    /// sweeper (lapsed leases, deleted tenants). On PostgreSQL a `LISTEN`
    /// wakes idle loops as soon as a job is enqueued anywhere.
    pub fn spawn(self, workers: usize) -> RunningWorkers {
        let stop = Arc::new(Notify::new());
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let worker = self.clone();
            let (stop, stopping) = (stop.clone(), stopping.clone());
            tasks.push(tokio::spawn(
                async move { worker.work(stop, stopping).await },
            ));
        }
        let sweeper = self.clone();
        let (stop2, stopping2) = (stop.clone(), stopping.clone());
        tasks.push(tokio::spawn(async move {
            sweeper.sweep_loop(stop2, stopping2).await
        }));
        #[cfg(feature = "postgres")]
        let listener = match &self.queue.backend {
            crate::main_db::MainDb::Postgres(pool) => {
                Some(tokio::spawn(listen(pool.clone(), self.wake.clone())))
            }
            #[cfg(feature = "sqlite")]
            crate::main_db::MainDb::Sqlite(_) => None,
        };
        #[cfg(not(feature = "postgres"))]
        let listener = None;
        RunningWorkers {
            stop,
            stopping,
            tasks,
            listener,
        }
    }

    async fn work(&self, stop: Arc<Notify>, stopping: Arc<std::sync::atomic::AtomicBool>) {
        let idle = Duration::from_millis(self.config.poll_ms);
        while !stopping.load(std::sync::atomic::Ordering::Acquire) {
            match self.run_one().await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "job worker"),
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = stop.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
    }

    async fn sweep_loop(&self, stop: Arc<Notify>, stopping: Arc<std::sync::atomic::AtomicBool>) {
        let every = Duration::from_millis(self.config.poll_ms.max(250));
        while !stopping.load(std::sync::atomic::Ordering::Acquire) {
            match self.queue.sweep().await {
                Ok(swept) if swept.reclaimed > 0 => self.wake(),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "job sweeper"),
            }
            tokio::select! {
                _ = stop.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// Wakes the workers whenever a job is enqueued (`NOTIFY tenancy_jobs`).
#[cfg(feature = "postgres")]
async fn listen(pool: sqlx::PgPool, wake: Arc<Notify>) {
    loop {
        match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(mut listener) => {
                if listener.listen("tenancy_jobs").await.is_ok() {
                    while listener.recv().await.is_ok() {
                        wake.notify_waiters();
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "job listener: reconnecting"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kinds: Vec<_> = self.handlers.keys().collect();
        kinds.sort();
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("kinds", &kinds)
            .finish_non_exhaustive()
    }
}

/// Workers started by [`Worker::spawn`].
#[derive(Debug)]
pub struct RunningWorkers {
    stop: Arc<Notify>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl RunningWorkers {
    /// Stops taking jobs and waits (at most 30 s) for the running ones to
    /// finish; a job still running then runs again elsewhere after its
    /// lease.
    pub async fn shutdown(mut self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        self.stop.notify_waiters();
        for task in std::mem::take(&mut self.tasks) {
            if tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .is_err()
            {
                tracing::warn!("a job worker did not stop within 30 s");
            }
        }
    }
}

impl Drop for RunningWorkers {
    fn drop(&mut self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        self.stop.notify_waiters();
        if let Some(listener) = self.listener.take() {
            listener.abort();
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}
