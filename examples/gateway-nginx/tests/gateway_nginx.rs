//! The upstream alone, as its binary runs: it reports the tenant in the
//! gateway's headers and refuses a request without one. The whole chain
//! (nginx, `tenancy serve`, this upstream) is tested in
//! `crates/tenancy-cli/tests/gateway_nginx.rs`, which has the `tenancy`
//! binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use example_support::{Running, client};
use serde_json::{Value, json};

#[tokio::test]
async fn reports_the_gateway_headers_and_refuses_requests_without_them() {
    let app = Running::start(env!("CARGO_BIN_EXE_example-gateway-nginx"), &[]);
    let http = client();

    let res = http
        .get(app.url("/whoami"))
        .header("x-tenant-id", "0b6c1c2e-1111-4222-8333-444455556666")
        .header("x-tenant-slug", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({
            "tenant_id": "0b6c1c2e-1111-4222-8333-444455556666",
            "tenant_slug": "acme",
            "tenant_plan": null,
        })
    );

    let res = http.get(app.url("/whoami")).send().await.unwrap();
    assert_eq!(res.status(), 401, "no X-Tenant-Id: not from the gateway");
    let res = http
        .get(app.url("/whoami"))
        .header("x-tenant-id", "")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "an empty X-Tenant-Id is none");
}
