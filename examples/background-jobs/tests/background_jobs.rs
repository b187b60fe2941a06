//! Runs the background-jobs example: spawned work keeps its request's
//! tenant, and the periodic job visits every active tenant, in its scope,
//! and not the suspended one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use example_support::{Running, client};
use serde_json::Value;

#[tokio::test]
async fn jobs_carry_their_tenant() {
    let mut app = Running::start(
        env!("CARGO_BIN_EXE_example-background-jobs"),
        &[("JOB_INTERVAL_MS", "100")],
    );
    app.wait_for_line(
        "outside a tenant scope: current() is None",
        Duration::from_secs(10),
    );
    app.wait_for_line("periodic run 2 done (2 tenants)", Duration::from_secs(20));
    let http = client();

    let mut started = Vec::new();
    for (tenant, n) in [("acme", 2), ("globex", 1)] {
        for _ in 0..n {
            let res = http
                .post(app.url("/reports"))
                .header("x-tenant-id", tenant)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 202);
            let body: Value = res.json().await.unwrap();
            started.push((tenant, body["report"].as_u64().unwrap()));
        }
    }
    let res = http
        .post(app.url("/reports"))
        .header("x-tenant-id", "initech")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "a suspended tenant starts no job");
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "tenant_not_active"
    );

    // The reports are made after the 202: wait until they are all there.
    let reports = |tenant: &'static str| {
        let req = http.get(app.url("/reports")).header("x-tenant-id", tenant);
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    for (tenant, n) in [("acme", 2), ("globex", 1)] {
        let body = loop {
            let body = reports(tenant).await;
            if body["reports"].as_array().unwrap().len() >= n || Instant::now() > deadline {
                break body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let id = body["tenant"].as_str().unwrap();
        let list = body["reports"].as_array().unwrap();
        let mine: Vec<u64> = started
            .iter()
            .filter(|(t, _)| *t == tenant)
            .map(|(_, n)| *n)
            .collect();
        let seen: Vec<u64> = list.iter().map(|r| r["report"].as_u64().unwrap()).collect();
        assert_eq!(seen, mine, "{tenant} sees exactly its own reports: {body}");
        for report in list {
            assert_eq!(report["requested_for"], id, "{body}");
            assert_eq!(
                report["ran_as"], id,
                "the spawned task ran as the request's tenant: {body}"
            );
        }
        // The periodic job ran for this tenant, inside its scope.
        let nightly = body["nightly"].as_array().unwrap();
        assert_eq!(nightly.len(), 1, "{tenant}: {body}");
        assert_eq!(nightly[0]["ran_as"], id, "{body}");
        assert!(nightly[0]["run"].as_u64().unwrap() >= 2, "{body}");
    }

    // Every run visited both active tenants and never the suspended one.
    let out = app.output().join("\n");
    for run in [1, 2] {
        for slug in ["acme", "globex"] {
            assert!(
                out.contains(&format!("nightly run {run}: {slug} (current tenant ")),
                "{out}"
            );
        }
    }
    assert!(!out.contains("initech"), "{out}");
}
