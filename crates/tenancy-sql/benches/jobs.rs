//! Job throughput and enqueue cost on PostgreSQL, measured, not asserted
//! (run by `scripts/bench-jobs.sh`, which puts a bare `SKIP LOCKED` loop
//! beside it in the same run):
//!
//! - `throughput WORKERS`: JOBS trivial jobs spread over 16 tenants, run
//!   by WORKERS worker loops; jobs per second.
//! - `enqueue`: a row-level scoped transaction inserting one row, with and
//!   without an `enqueue_in` of a job; microseconds per transaction.
//!
//! Environment: `TENANCY_BENCH_DB` (a database URL, required: the script
//! creates and drops it), `JOBS` (default 20000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tenancy::jobs::{Job, JobContext, JobOptions, JobQueue, JobState, Worker};
use tenancy::{LifecycleService, NewTenant, PgRowLevel, PgStore, TenantDb};
use tenancy_core::config::JobsConfig;

#[derive(Serialize, Deserialize)]
struct Trivial {
    n: u64,
}
impl Job for Trivial {
    const KIND: &'static str = "trivial";
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Ok(url) = std::env::var("TENANCY_BENCH_DB") else {
        eprintln!("jobs bench: run scripts/bench-jobs.sh (it sets TENANCY_BENCH_DB)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(12)
            .connect(&url)
            .await
            .unwrap();
        let store = PgStore::new(pool.clone());
        store.migrate().await.unwrap();
        match args.first().map(String::as_str) {
            Some("throughput") => {
                let workers: usize = args.get(1).and_then(|w| w.parse().ok()).unwrap_or(1);
                throughput(&pool, store, workers).await;
            }
            Some("enqueue") => enqueue_cost(&pool, store).await,
            _ => eprintln!("jobs bench: throughput WORKERS | enqueue"),
        }
    });
}

async fn tenants(store: &PgStore, n: usize) -> Vec<tenancy::TenantId> {
    let lifecycle = LifecycleService::new(Arc::new(store.clone()));
    let mut ids = Vec::new();
    for i in 0..n {
        let slug = format!("t{i}");
        let id = match lifecycle
            .create(NewTenant::new(&slug, &slug).unwrap())
            .await
        {
            Ok(t) => t.id,
            Err(_) => {
                use tenancy::TenantStore;
                store.find(&slug).await.unwrap().unwrap().id
            }
        };
        ids.push(id);
    }
    ids
}

async fn throughput(pool: &sqlx::PgPool, store: PgStore, workers: usize) {
    let jobs: i64 = std::env::var("JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(20_000);
    let ids = tenants(&store, 16).await;
    sqlx::query("DELETE FROM tenancy_jobs")
        .execute(pool)
        .await
        .unwrap();
    let names: Vec<String> = ids.iter().map(|t| t.to_string()).collect();
    sqlx::query(
        "INSERT INTO tenancy_jobs (tenant_id, kind, payload, max_attempts, run_at, created_at) \
         SELECT ($1::text[])[1 + g % 16], 'trivial', jsonb_build_object('n', g), 5, 0, 0 \
         FROM generate_series(1, $2) g",
    )
    .bind(&names)
    .bind(jobs)
    .execute(pool)
    .await
    .unwrap();
    let queue = JobQueue::postgres(pool.clone());
    queue.sweep().await.unwrap();
    let config = JobsConfig {
        max_concurrency_per_tenant: 8,
        poll_ms: 5,
        ..JobsConfig::default()
    };
    let worker = Worker::new(queue.clone(), Arc::new(store), &config)
        .register(|_ctx: JobContext, _job: Trivial| async { Ok::<(), String>(()) });
    let started = Instant::now();
    let running = worker.spawn(workers);
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tenancy_jobs WHERE state IN ('queued', 'running')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if left == 0 {
            break;
        }
    }
    let took = started.elapsed();
    running.shutdown().await;
    let done = queue.stats().await.unwrap().in_state(JobState::Done);
    println!(
        "jobs throughput, {workers} workers: {:.0} jobs/s ({done} jobs in {:.2} s)",
        done as f64 / took.as_secs_f64(),
        took.as_secs_f64()
    );
}

async fn enqueue_cost(pool: &sqlx::PgPool, store: PgStore) {
    let rounds: u32 = 2_000;
    let id = tenants(&store, 1).await.remove(0);
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_notes (tenant_id TEXT NOT NULL, id BIGSERIAL, body TEXT, \
         PRIMARY KEY (tenant_id, id))",
    )
    .execute(pool)
    .await
    .unwrap();
    PgRowLevel::new(pool.clone())
        .register_table("bench_notes", "tenant_id")
        .await
        .unwrap();
    let db = TenantDb::new(PgRowLevel::new(pool.clone()));
    let mut figures = Vec::new();
    for with_job in [false, true, false, true] {
        let started = Instant::now();
        for n in 0..rounds {
            let mut tx = db.begin_for(&id).await.unwrap();
            sqlx::query("INSERT INTO bench_notes (body) VALUES ('x')")
                .execute(&mut *tx)
                .await
                .unwrap();
            if with_job {
                JobQueue::enqueue_in(
                    &mut tx,
                    &id,
                    &Trivial { n: u64::from(n) },
                    JobOptions::default(),
                )
                .await
                .unwrap();
            }
            tx.commit().await.unwrap();
        }
        figures.push((
            with_job,
            started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds),
        ));
    }
    for (with_job, us) in figures {
        println!(
            "scoped transaction (insert one row{}): {us:.0} us",
            if with_job { " + enqueue_in" } else { "" }
        );
    }
}
