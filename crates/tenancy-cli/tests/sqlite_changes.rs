//! `tenancy serve` and the `tenancy` CLI on one SQLite file (issue 26,
//! finding 6): a suspension, a slug swap and a domain removal made by the
//! CLI reach the running server within a second, under a stream of
//! requests, through the store's change log (no PostgreSQL `NOTIFY` here).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cli, Sending, serve};
use serde_json::Value;
use tokio::sync::Mutex;

/// Every answer of a stream of requests: when, the status, and the tenant
/// id `/resolve` named.
struct Stream {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(Instant, u16, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

fn stream(url: String, header: Option<(&'static str, String)>) -> Stream {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s, w) = (stop.clone(), seen.clone());
    let task = tokio::spawn(async move {
        let c = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        while !s.load(Ordering::Relaxed) {
            let mut req = c.get(&url);
            if let Some((name, value)) = &header {
                req = req.header(*name, value);
            }
            let res = req.sent().await;
            let status = res.status().as_u16();
            // `/resolve` names the resolved tenant in a header.
            let id = res
                .headers()
                .get("x-tenant-id")
                .and_then(|v| v.to_str().ok())
                .map_or(Value::Null, Value::from);
            w.lock().await.push((Instant::now(), status, id));
        }
    });
    Stream { stop, seen, task }
}

impl Stream {
    async fn finish(self) -> Vec<(Instant, u16, Value)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        std::mem::take(&mut *self.seen.lock().await)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_changes_reach_a_running_server_within_a_second() {
    let mut cli = Cli::sqlite();
    // The stream is not what is measured: no rate limit gets in its way.
    cli.env
        .push(("TENANCY__RATE_LIMIT__DEFAULT_RPS".into(), "1000000".into()));
    let server = serve(&cli);
    let base = server.base.clone();
    for slug in ["sus", "sw1", "sw2", "dom"] {
        cli.ok(&["tenants", "create", "--slug", slug, "--name", slug]);
    }
    cli.ok(&["domains", "add", "dom", "portal.dom.test", "--verified"]);
    let id_of = |slug: &str| -> String {
        cli.json(&["--json", "tenants", "show", slug])["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (sw1, sw2) = (id_of("sw1"), id_of("sw2"));

    // A suspension under a stream of requests.
    let s = stream(
        format!("{base}/resolve"),
        Some(("x-tenant-id", "sus".into())),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::spawn_blocking({
        let dir = cli.dir.path().to_owned();
        move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenancy"))
                .current_dir(dir)
                .args(["tenants", "suspend", "sus", "--reason", "test"])
                .env_remove("DATABASE_URL")
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
    })
    .await
    .unwrap();
    let acknowledged = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = s.finish().await;
    assert!(
        seen.iter().any(|(_, status, _)| *status == 200),
        "served before"
    );
    let late: Vec<_> = seen
        .iter()
        .filter(|(at, status, _)| *at > acknowledged + Duration::from_secs(1) && *status == 200)
        .collect();
    assert!(
        late.is_empty(),
        "{} answers 200 more than a second after the suspension was acknowledged",
        late.len()
    );
    assert!(
        seen.iter()
            .any(|(at, status, _)| *at > acknowledged + Duration::from_secs(1) && *status == 403),
        "refused after the bound"
    );

    // A slug swap: `sw1` names the tenant now called sw1, never the old one.
    let s = stream(
        format!("{base}/resolve"),
        Some(("x-tenant-id", "sw1".into())),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    cli.ok(&["tenants", "update", "sw1", "--slug", "tmp-swap"]);
    cli.ok(&["tenants", "update", "sw2", "--slug", "sw1"]);
    cli.ok(&["tenants", "update", "tmp-swap", "--slug", "sw2"]);
    let acknowledged = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = s.finish().await;
    let wrong: Vec<_> = seen
        .iter()
        .filter(|(at, status, id)| {
            *at > acknowledged + Duration::from_secs(1) && (*status != 200 || *id != sw2.as_str())
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "`sw1` answered for another tenant (or not at all) after the rename plus a second: {:?}",
        wrong.first()
    );
    assert!(
        seen.iter().any(|(_, _, id)| *id == sw1.as_str()),
        "sw1 itself before the swap"
    );
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let res = c
        .get(format!("{base}/resolve"))
        .header("x-tenant-id", "sw1")
        .sent()
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-tenant-id"].to_str().unwrap(),
        sw2,
        "`sw1` now names the tenant that was sw2"
    );
    let res = c
        .get(format!("{base}/resolve"))
        .header("x-tenant-id", "sw2")
        .sent()
        .await;
    assert_eq!(res.headers()["x-tenant-id"].to_str().unwrap(), sw1);

    // A removed domain stops resolving and gets no certificate.
    let ask = format!("{base}/tls/ask?domain=portal.dom.test");
    assert_eq!(c.get(&ask).sent().await.status(), 200);
    let by_host = c
        .get(format!("{base}/resolve"))
        .header("x-forwarded-host", "portal.dom.test")
        .sent()
        .await;
    assert_eq!(by_host.status(), 200);
    cli.ok(&["domains", "remove", "portal.dom.test"]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(c.get(&ask).sent().await.status(), 404);
    let by_host = c
        .get(format!("{base}/resolve"))
        .header("x-forwarded-host", "portal.dom.test")
        .sent()
        .await;
    assert_eq!(by_host.status(), 401, "the removed domain names no tenant");
    drop(server);
}
