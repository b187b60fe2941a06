//! What SQLite change detection costs (issue 26): two processes (two pools)
//! on one SQLite file; process B keeps its validator fresh with a
//! `SqliteChangeListener`, which reads the store's change log (filled by
//! triggers in the writer's transaction) every 250 ms.
//!
//! `cargo bench -p tenancy-sql --bench sqlite_changes`
//! (`SQLITE_CHANGES_ROUNDS` suspend/activate round trips, default 40).
//!
//! It prints, measured in the same run:
//! - the delay from A's commit until B's validator gives the new answer;
//! - the cost of one poll when nothing changed (the listener's whole
//!   steady cost: 4 polls a second), and its share of one core;
//! - a status change's write with the log's triggers against the same
//!   write without them (the triggers dropped on a copy of the file);
//! - the per-request cost: B's validator on a cache hit with the listener
//!   running against without it (the request path never reads the log).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tenancy_core::{
    LifecycleService, NewTenant, Rejection, TenantRef, TenantStatus, TenantStore, Validator,
};
use tenancy_sql::{ChangeTargets, SqliteChangeListener};

const GIVE_UP: Duration = Duration::from_secs(5);

fn summary(name: &str, samples: &mut [Duration]) -> Duration {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<28} n={:<5} median {:>9.3} ms   p90 {:>9.3} ms   max {:>9.3} ms",
        samples.len(),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(1.0)),
    );
    at(0.5)
}

async fn until(
    validator: &Validator,
    reference: &TenantRef,
    done: impl Fn(&Result<Arc<tenancy_core::TenantInfo>, Rejection>) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if done(&validator.validate(reference).await) {
            return start.elapsed();
        }
        assert!(start.elapsed() < GIVE_UP, "not seen within {GIVE_UP:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Status-change writes (suspend + activate), each timed.
async fn writes(
    lifecycle: &LifecycleService,
    id: &tenancy_core::TenantId,
    n: usize,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let t = Instant::now();
        lifecycle.suspend(id, None).await.unwrap();
        out.push(t.elapsed());
        let t = Instant::now();
        lifecycle.activate(id).await.unwrap();
        out.push(t.elapsed());
    }
    out
}

/// Cache hits per second of `validator` for `reference`, over `for_`.
fn hits(validator: &Validator, reference: &str, for_: Duration) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < for_ {
        for _ in 0..1000 {
            assert!(validator.validate_cached(reference).unwrap().is_ok());
        }
        n += 1000;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rounds = common::rounds("SQLITE_CHANGES_ROUNDS", 40);
    let runtime = common::bench_runtime();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenancy.db");
        let a_store = common::sqlite_store(&path).await;
        let a = LifecycleService::new(Arc::new(a_store.clone()));
        let b_store = common::sqlite_store(&path).await;
        let b_dyn: Arc<dyn TenantStore> = Arc::new(b_store.clone());
        let b = Validator::new(b_dyn, &Default::default());
        let acme = a.create(NewTenant::new("acme", "Acme").unwrap()).await.unwrap();
        let acme_ref = TenantRef::new("acme");

        // The per-request cost: cache hits without, then with, the listener.
        assert!(b.validate(&acme_ref).await.is_ok());
        let without = hits(&b, "acme", Duration::from_secs(2));
        let listener = SqliteChangeListener::spawn(
            b_store.pool().clone(),
            ChangeTargets::new().validator(b.clone()),
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        let with = hits(&b, "acme", Duration::from_secs(2));

        let mut suspend_seen = Vec::new();
        let mut activate_seen = Vec::new();
        for _ in 0..rounds {
            assert!(b.validate(&acme_ref).await.is_ok());
            a.suspend(&acme.id, None).await.unwrap();
            suspend_seen.push(
                until(&b, &acme_ref, |r| {
                    *r == Err(Rejection::NotActive(TenantStatus::Suspended))
                })
                .await,
            );
            a.activate(&acme.id).await.unwrap();
            activate_seen.push(until(&b, &acme_ref, Result::is_ok).await);
        }
        listener.shutdown().await;

        // One idle poll: the query the listener runs 4 times a second.
        let pool = b_store.pool().clone();
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM tenancy_changes")
            .fetch_one(&pool)
            .await
            .unwrap();
        let mut polls = Vec::new();
        for _ in 0..2000 {
            let t = Instant::now();
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT seq, payload FROM tenancy_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .bind(last)
            .bind(1000_i64)
            .fetch_all(&pool)
            .await
            .unwrap();
            assert!(rows.is_empty());
            polls.push(t.elapsed());
        }

        // Writes with the triggers, then on a copy of the file without them.
        let with_triggers = writes(&a, &acme.id, 200).await;
        let bare_path = dir.path().join("bare.db");
        // A consistent copy (the WAL included).
        sqlx::query("VACUUM INTO ?1")
            .bind(bare_path.display().to_string())
            .execute(b_store.pool())
            .await
            .unwrap();
        let bare_store = common::sqlite_store(&bare_path).await;
        let triggers: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'tenancy_%'",
        )
        .fetch_all(bare_store.pool())
        .await
        .unwrap();
        for name in &triggers {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TRIGGER \"{name}\"")))
                .execute(bare_store.pool())
                .await
                .unwrap();
        }
        let bare = LifecycleService::new(Arc::new(bare_store));
        let without_triggers = writes(&bare, &acme.id, 200).await;

        println!(
            "SQLite change detection: triggers log each change in the writer's transaction; \
             SqliteChangeListener reads the log every 250 ms ({rounds} suspend/activate round trips)"
        );
        println!("delay from A's commit until B's validator gives the new answer:");
        summary("suspension seen", &mut suspend_seen);
        summary("activation seen", &mut activate_seen);
        let poll = summary("idle poll (one query)", &mut polls);
        println!(
            "  steady cost: 4 polls/s = {:.4}% of one core",
            poll.as_secs_f64() * 4.0 * 100.0
        );
        let w = summary("status write, with triggers", &mut with_triggers.clone());
        let wo = summary("status write, no triggers", &mut without_triggers.clone());
        println!(
            "  write ratio with/without the {} triggers: {:.3}",
            triggers.len(),
            w.as_secs_f64() / wo.as_secs_f64()
        );
        println!(
            "request path (validator cache hit): {:.1} M/s without the listener, {:.1} M/s with it, ratio {:.3}",
            without / 1e6,
            with / 1e6,
            with / without
        );
    });
}
