//! `GET /metrics` end to end: requests by outcome, latency,
//! per-tenant series bounded by `server.metrics_tenants`, validator and
//! provisioning figures; admin token required.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN_TOKEN, Cli, Sending, create_tenant, serve};
use reqwest::StatusCode;
use serde_json::json;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The value of the sample line that starts with `prefix`.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no sample {prefix} in:\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_outcomes_latency_and_a_bounded_set_of_tenants() {
    let mut cli = Cli::sqlite();
    cli.env
        .push(("TENANCY__SERVER__METRICS_TENANTS".into(), "2".into()));
    let server = serve(&cli);
    let base = &server.base;
    let c = client();
    for slug in ["acme", "globex", "initech", "umbrella"] {
        let res = create_tenant(&c, base, json!({"slug": slug, "name": slug})).await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    c.post(format!("{base}/admin/tenants/umbrella/suspend"))
        .bearer_auth(ADMIN_TOKEN)
        .sent()
        .await;

    let get = |tenant: Option<&str>| {
        let mut req = c.get(format!("{base}/api/notes"));
        if let Some(t) = tenant {
            req = req.header("x-tenant-id", t);
        }
        req.send()
    };
    for (tenant, times, status) in [
        (Some("acme"), 3, StatusCode::OK),
        (Some("globex"), 1, StatusCode::OK),
        (Some("initech"), 2, StatusCode::OK),
        (None, 1, StatusCode::UNAUTHORIZED),
        (Some("nope"), 1, StatusCode::FORBIDDEN),
        (Some("umbrella"), 1, StatusCode::FORBIDDEN),
        (Some("../x"), 1, StatusCode::FORBIDDEN),
    ] {
        for _ in 0..times {
            assert_eq!(get(tenant).await.unwrap().status(), status, "{tenant:?}");
        }
    }

    // Admin token required, and nothing about tenants leaks without it.
    let res = c.get(format!("{base}/metrics")).sent().await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(!res.text().await.unwrap().contains("acme"));

    let res = c
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .sent()
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let requests = |status: &str, code: &str| {
        sample(
            &text,
            &format!("tenancy_requests_total{{status=\"{status}\",code=\"{code}\"}}"),
        )
    };
    assert_eq!(requests("200", "resolved"), 6.0);
    assert_eq!(requests("401", "tenant_required"), 1.0);
    assert_eq!(requests("403", "unknown_tenant"), 1.0);
    assert_eq!(requests("403", "tenant_not_active"), 1.0);
    assert_eq!(requests("403", "malformed_tenant"), 1.0);
    assert_eq!(requests("429", "rate_limited"), 0.0);
    // One request in eight (per thread) is timed.
    let timed = sample(&text, "tenancy_request_duration_seconds_count");
    assert!((1.0..=10.0).contains(&timed), "{timed}");
    assert_eq!(
        sample(
            &text,
            "tenancy_request_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        timed
    );

    // Two tenants have series; every other tenant is counted as _other.
    let ids: Vec<String> = futures_ids(&c, base).await;
    let tenant_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("tenancy_tenant_requests_total{"))
        .collect();
    assert_eq!(tenant_lines.len(), 3, "{tenant_lines:?}");
    assert_eq!(
        sample(
            &text,
            &format!("tenancy_tenant_requests_total{{tenant_id=\"{}\"}}", ids[0])
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("tenancy_tenant_requests_total{{tenant_id=\"{}\"}}", ids[1])
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "tenancy_tenant_requests_total{tenant_id=\"_other\"}"),
        2.0
    );

    assert!(sample(&text, "tenancy_validator_cache_hits_total") >= 3.0);
    assert!(sample(&text, "tenancy_store_lookups_total") >= 1.0);
    assert!(sample(&text, "tenancy_cache_invalidations_total") >= 1.0);
    assert_eq!(
        sample(&text, "tenancy_provisioning_duration_seconds_count"),
        4.0
    );
    assert!(text.contains("tenancy_migration_duration_seconds_count"));
}

/// The ids of acme and globex, in that order.
async fn futures_ids(c: &reqwest::Client, base: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for slug in ["acme", "globex"] {
        let t: serde_json::Value = c
            .get(format!("{base}/admin/tenants/{slug}"))
            .bearer_auth(ADMIN_TOKEN)
            .json_body()
            .await;
        ids.push(t["id"].as_str().unwrap().to_owned());
    }
    ids
}
