//! Runs the quick-start example as a user would and checks what its
//! documentation promises.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use example_support::{Running, client};
use serde_json::Value;

#[tokio::test]
async fn the_documented_requests_answer_as_documented() {
    let app = Running::start(env!("CARGO_BIN_EXE_example-quickstart"), &[]);
    let http = client();
    let get = |path: &str, tenant: Option<&str>| {
        let mut req = http.get(app.url(path));
        if let Some(t) = tenant {
            req = req.header("x-tenant-id", t);
        }
        req.send()
    };

    let res = get("/whoami", Some("acme")).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["plan"], "pro");
    assert!(body["current"].is_string(), "the task-local tenant is set");

    let res = get("/tenants/globex/whoami", None).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["tenant"], "globex");

    let res = get("/whoami", None).await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "tenant_required");
    assert_eq!(problem["status"], 401);
    // The detail names the ways the enabled resolvers accept, among them
    // the two this example documents.
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("no tenant identified: send "),
        "{problem}"
    );
    for way in ["the X-Tenant-Id header", "a /tenants/{tenant}/… path"] {
        assert!(detail.contains(way), "{way:?} missing: {problem}");
    }

    let res = get("/whoami", Some("initech")).await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "tenant_not_active"
    );
    let res = get("/tenants/initech/whoami", None).await.unwrap();
    assert_eq!(res.status(), 403, "suspended whichever way it is named");

    let res = get("/whoami", Some("nope")).await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "unknown_tenant");
}
