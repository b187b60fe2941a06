//! Runs the subdomain SaaS example: sign-up on the bare domain, notes per
//! tenant in a file per tenant, and the host as the only way to name a
//! tenant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use example_support::reqwest::{Response, StatusCode};
use example_support::{Running, client};
use serde_json::{Value, json};

async fn problem(res: Response, status: StatusCode) -> Value {
    assert_eq!(res.status(), status);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    res.json().await.unwrap()
}

fn on(slug: &str) -> String {
    format!("{slug}.app.localhost")
}

fn start(data: &std::path::Path) -> Running {
    Running::start(
        env!("CARGO_BIN_EXE_example-subdomain-saas"),
        &[
            ("DATA_DIR", data.to_str().unwrap()),
            ("BASE_DOMAIN", "app.localhost"),
        ],
    )
}

#[tokio::test]
async fn each_subdomain_sees_only_its_own_notes() {
    let data = tempfile::tempdir().unwrap();
    let app = start(data.path());
    let http = client();
    let signup = |host: &str, slug: &str| {
        http.post(app.url("/signup"))
            .header("host", host)
            .json(&json!({ "slug": slug, "name": slug }))
            .send()
    };

    // Sign-up on the bare domain makes the tenant and its own file.
    for slug in ["acme", "globex"] {
        let res = signup("app.localhost", slug).await.unwrap();
        assert_eq!(res.status(), 201);
        let tenant: Value = res.json().await.unwrap();
        assert_eq!(tenant["status"], "active");
        let file = data
            .path()
            .join("tenants")
            .join(format!("tenant_{}.db", tenant["id"].as_str().unwrap()));
        assert!(file.exists(), "{} was not made", file.display());
    }
    let res = signup("app.localhost", "acme").await.unwrap();
    assert_eq!(
        problem(res, StatusCode::CONFLICT).await["code"],
        "slug_taken"
    );
    let res = signup("app.localhost", "../etc").await.unwrap();
    let body = problem(res, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["code"], "invalid_slug");
    let res = signup(&on("acme"), "initech").await.unwrap();
    assert_eq!(
        problem(res, StatusCode::NOT_FOUND).await["code"],
        "not_found",
        "no sign-up on a tenant's subdomain"
    );

    for body in ["one", "two"] {
        let res = http
            .post(app.url("/notes"))
            .header("host", on("acme"))
            .json(&json!({ "body": body }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        assert_eq!(res.json::<Value>().await.unwrap()["tenant"], "acme");
    }
    let notes = |host: String, header: Option<&'static str>| {
        let mut req = http.get(app.url("/notes")).header("host", host);
        if let Some(h) = header {
            req = req.header("x-tenant-id", h);
        }
        req.send()
    };
    let res = notes(on("acme"), None).await.unwrap();
    assert_eq!(res.status(), 200);
    let acme: Value = res.json().await.unwrap();
    assert_eq!(
        acme,
        json!([{ "id": 1, "body": "one" }, { "id": 2, "body": "two" }])
    );
    // Host names are case-insensitive.
    let res = notes(on("GLOBEX"), None).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!([]),
        "globex sees none of acme's notes"
    );

    // The header resolver is not enabled: a header cannot switch tenants.
    let res = notes(on("globex"), Some("acme")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!([]));
    let res = http
        .post(app.url("/notes"))
        .header("host", on("globex"))
        .header("x-tenant-id", "acme")
        .json(&json!({ "body": "from globex" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["tenant"], "globex");
    let acme_again: Value = notes(on("acme"), None).await.unwrap().json().await.unwrap();
    assert_eq!(acme_again, acme, "acme's notes are unchanged");

    // An unknown subdomain is refused before any handler runs.
    let res = notes(on("initech"), None).await.unwrap();
    assert_eq!(
        problem(res, StatusCode::FORBIDDEN).await["code"],
        "unknown_tenant"
    );

    // The bare domain has no tenant, header or not: the tenant routes are 401.
    let res = notes("app.localhost".into(), Some("acme")).await.unwrap();
    let body = problem(res, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["code"], "tenant_required");
    assert_eq!(
        body["detail"],
        "no tenant identified: send a subdomain of app.localhost"
    );

    // The tenants and their files outlive the process.
    drop(app);
    let app = start(data.path());
    let res = http
        .get(app.url("/notes"))
        .header("host", on("acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), acme);
}
