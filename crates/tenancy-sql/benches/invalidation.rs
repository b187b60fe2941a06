//! Cross-process invalidation delay: process A suspends or
//! activates a tenant through its own `PgStore`; how long until process B's
//! validator (its own pool, cache and `PgChangeListener`) answers with the
//! new status?
//!
//! `cargo bench -p tenancy-sql --bench invalidation` (PostgreSQL at
//! `TENANCY_TEST_PG`, default `postgres://postgres@127.0.0.1:5432/postgres`;
//! `INVALIDATION_ROUNDS` round trips, default 200).
//!
//! The clock starts when A's change has committed (the store call returned)
//! and stops when B's `validate` first returns the new answer; B polls its
//! validator in a loop that yields to the scheduler between tries, so the
//! delay includes B's one store lookup after the invalidation.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use tenancy_core::{
    LifecycleService, NewTenant, Rejection, TenantRef, TenantStatus, TenantStore, Validator,
};
use tenancy_sql::{ChangeTargets, PgChangeListener};

const WARMUP: usize = 10;
const GIVE_UP: Duration = Duration::from_secs(5);

/// Spins on `validator` until `done` holds for its answer; the time taken.
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
        assert!(
            start.elapsed() < GIVE_UP,
            "the change was not seen within {GIVE_UP:?}"
        );
        tokio::task::yield_now().await;
    }
}

fn summary(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i.min(samples.len() - 1)]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<16} n={:<4} median {:>7.3} ms   p90 {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms",
        samples.len(),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(at(1.0)),
    );
}

fn main() {
    let rounds = common::rounds("INVALIDATION_ROUNDS", 200);
    let runtime = common::bench_runtime();
    runtime.block_on(async {
        let db = common::PgTestDb::new().await;
        // Process A: makes the changes.
        let a_store = common::pg_store(&db.url).await;
        let a = LifecycleService::new(Arc::new(a_store.clone()));
        // Process B: serves requests from its cache, kept fresh by its listener.
        let b_store: Arc<dyn TenantStore> = Arc::new(common::pg_store(&db.url).await);
        let b = Validator::new(b_store, &Default::default());
        let options = db.url.parse::<PgConnectOptions>().unwrap();
        let listener = PgChangeListener::spawn(options, ChangeTargets::new().validator(b.clone()));
        tokio::time::timeout(GIVE_UP, listener.listening())
            .await
            .expect("the listener connects");

        let acme = a
            .create(NewTenant::new("acme", "Acme").unwrap())
            .await
            .unwrap();
        let acme_ref = TenantRef::new("acme");
        until(&b, &acme_ref, Result::is_ok).await;

        let mut suspend_seen = Vec::with_capacity(rounds);
        let mut activate_seen = Vec::with_capacity(rounds);
        let mut writes = Vec::with_capacity(2 * rounds);
        for round in 0..WARMUP + rounds {
            // B has the active tenant cached.
            assert!(b.validate(&acme_ref).await.is_ok());
            let write = Instant::now();
            a.suspend(&acme.id, None).await.unwrap();
            let written = write.elapsed();
            let suspended = until(&b, &acme_ref, |r| {
                *r == Err(Rejection::NotActive(TenantStatus::Suspended))
            })
            .await;

            let write = Instant::now();
            a.activate(&acme.id).await.unwrap();
            let written_again = write.elapsed();
            let activated = until(&b, &acme_ref, Result::is_ok).await;
            if round >= WARMUP {
                suspend_seen.push(suspended);
                activate_seen.push(activated);
                writes.push(written);
                writes.push(written_again);
            }
        }

        let status = listener.status();
        println!(
            "cross-process invalidation: PgStore NOTIFY -> PgChangeListener -> Validator, \
             {rounds} suspend/activate round trips (+{WARMUP} warm-up)"
        );
        println!("delay from A's commit until B's validator gives the new answer:");
        let mut all: Vec<Duration> = suspend_seen.iter().chain(&activate_seen).copied().collect();
        summary("suspension", &mut suspend_seen);
        summary("activation", &mut activate_seen);
        summary("both", &mut all);
        println!("for comparison, A's status change itself (store write + NOTIFY, commit):");
        summary("write", &mut writes);
        println!(
            "listener: {} notifications, {} connection(s)",
            status.notifications, status.connections
        );
        listener.shutdown().await;
    });
}
