//! Soak (not in the default suite; run by `scripts/soak.sh`): 100 tenants
//! under mixed reads and writes through two `tenancy serve` instances on
//! PostgreSQL for minutes, while a tenant is suspended and activated again
//! every few hundred milliseconds. Reports the requests served to a tenant
//! after its suspension was acknowledged (goal: 0 on the instance that
//! made it, 0 beyond the invalidation delay on the other), answers by
//! status, and each server's RSS at the start and the end.
//!
//! `SOAK_SECONDS` (default 120) sets the length.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, Cli, PgTestDb, Sending, create_tenant, serve};
use serde_json::json;

const TENANTS: usize = 100;

/// A small deterministic generator (no dependency for one test).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One request: tenant, instance, when it was sent and answered, status.
struct Sample {
    tenant: usize,
    instance: usize,
    sent: Instant,
    done: Instant,
    status: u16,
}

/// A suspension: acknowledged at `acked`, lifted by a call sent at `lifted`.
struct Window {
    tenant: usize,
    acked: Instant,
    lifted: Instant,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: run scripts/soak.sh"]
async fn soak() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let db = PgTestDb::new().await;
    let mut cli = Cli::with_url(&db.url);
    cli.env
        .push(("TENANCY__RATE_LIMIT__DEFAULT_RPS".into(), "1000000".into()));
    cli.env.push(("TENANCY_LOG".into(), "error".into()));
    let servers = [serve(&cli), serve(&cli)];
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let http = reqwest::Client::new();
    for i in 0..TENANTS {
        let res = create_tenant(
            &http,
            &bases[0],
            json!({"slug": format!("soak-{i}"), "name": "S"}),
        )
        .await;
        assert_eq!(res.status(), 201);
    }
    let rss_start: Vec<u64> = servers.iter().map(|s| rss_kib(s.child.id())).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let mut load = Vec::new();
    for worker in 0..8u64 {
        let (bases, stop, samples, http) =
            (bases.clone(), stop.clone(), samples.clone(), http.clone());
        load.push(tokio::spawn(async move {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (worker + 1));
            while !stop.load(Ordering::Relaxed) {
                let tenant = rng.below(TENANTS);
                let instance = rng.below(bases.len());
                let slug = format!("soak-{tenant}");
                let req = if rng.below(4) == 0 {
                    http.post(format!("{}/api/notes", bases[instance]))
                        .json(&json!({"title": format!("{slug}-{}", rng.next())}))
                } else {
                    http.get(format!("{}/api/notes?limit=5", bases[instance]))
                };
                let sent = Instant::now();
                let status = match req.header("x-tenant-id", &slug).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                samples.lock().unwrap().push(Sample {
                    tenant,
                    instance,
                    sent,
                    done: Instant::now(),
                    status,
                });
            }
        }));
    }
    // Suspend one tenant, activate it again; every ~300 ms.
    let windows = Arc::new(Mutex::new(Vec::<Window>::new()));
    let toggler = {
        let (base, stop, windows, http) = (
            bases[0].clone(),
            stop.clone(),
            windows.clone(),
            http.clone(),
        );
        tokio::spawn(async move {
            let mut rng = XorShift(42);
            while !stop.load(Ordering::Relaxed) {
                let tenant = rng.below(TENANTS);
                let res = http
                    .post(format!("{base}/admin/tenants/soak-{tenant}/suspend"))
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&json!({"reason": "soak"}))
                    .sent()
                    .await;
                assert_eq!(res.status(), 200);
                let acked = Instant::now();
                tokio::time::sleep(Duration::from_millis(300)).await;
                let lifted = Instant::now();
                let res = http
                    .post(format!("{base}/admin/tenants/soak-{tenant}/activate"))
                    .bearer_auth(ADMIN_TOKEN)
                    .sent()
                    .await;
                assert_eq!(res.status(), 200);
                windows.lock().unwrap().push(Window {
                    tenant,
                    acked,
                    lifted,
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    toggler.await.unwrap();
    let rss_end: Vec<u64> = servers.iter().map(|s| rss_kib(s.child.id())).collect();

    let samples = samples.lock().unwrap();
    let windows = windows.lock().unwrap();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for s in samples.iter() {
        *by_status.entry(s.status).or_default() += 1;
    }
    // Served (2xx) although sent after the suspension was acknowledged and
    // answered before the activation was sent.
    let delay = Duration::from_millis(50);
    let (mut same, mut other_within, mut other_beyond) = (0, 0, 0);
    for w in windows.iter() {
        for s in samples.iter().filter(|s| {
            s.tenant == w.tenant
                && s.sent >= w.acked
                && s.done < w.lifted
                && (200..300).contains(&s.status)
        }) {
            if s.instance == 0 {
                same += 1;
            } else if s.sent < w.acked + delay {
                other_within += 1;
            } else {
                other_beyond += 1;
            }
        }
    }
    let total = samples.len();
    println!(
        "soak: {seconds} s, {TENANTS} tenants, {total} requests ({:.0}/s), {} suspensions; answers by status {by_status:?}",
        total as f64 / seconds as f64,
        windows.len()
    );
    println!(
        "served after an acknowledged suspension: {same} on the instance that made it, \
         {other_within} on the other within {} ms (invalidation delay), {other_beyond} beyond it",
        delay.as_millis()
    );
    println!("RSS (KiB) start {rss_start:?}, end {rss_end:?}");
    assert_eq!(same, 0);
    assert_eq!(other_beyond, 0);
    assert_eq!(
        by_status.get(&0).copied().unwrap_or(0),
        0,
        "transport errors"
    );
}
