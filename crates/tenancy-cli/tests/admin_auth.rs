//! Every admin route (and /metrics) refuses a missing or wrong admin token
//! with the same 401, whether the tenant or domain it names exists or not:
//! the refusal reveals nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN_TOKEN, Cli, Sending, create_tenant, serve};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn admin_routes_refuse_without_the_token_and_reveal_nothing() {
    let cli = Cli::sqlite();
    let server = serve(&cli);
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let res = create_tenant(&c, &server.base, json!({"slug": "acme", "name": "Acme"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    c.post(format!("{}/admin/tenants/acme/domains", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"domain": "acme.example", "verified": true}))
        .sent()
        .await;

    let routes = |t: &str, d: &str| {
        vec![
            (Method::GET, "/admin/tenants".to_owned()),
            (Method::POST, "/admin/tenants".to_owned()),
            (Method::GET, format!("/admin/tenants/{t}")),
            (Method::PATCH, format!("/admin/tenants/{t}")),
            (Method::DELETE, format!("/admin/tenants/{t}")),
            (Method::POST, format!("/admin/tenants/{t}/suspend")),
            (Method::POST, format!("/admin/tenants/{t}/activate")),
            (Method::POST, format!("/admin/tenants/{t}/deactivate")),
            (Method::GET, format!("/admin/tenants/{t}/config")),
            (Method::GET, format!("/admin/tenants/{t}/config/theme")),
            (Method::PUT, format!("/admin/tenants/{t}/config/theme")),
            (Method::GET, format!("/admin/tenants/{t}/domains")),
            (Method::POST, format!("/admin/tenants/{t}/domains")),
            (Method::POST, format!("/admin/tenants/{t}/impersonate")),
            (Method::POST, format!("/admin/domains/{d}/verify")),
            (Method::DELETE, format!("/admin/domains/{d}")),
            (Method::GET, format!("/admin/audit?tenant={t}")),
            (Method::GET, "/metrics".to_owned()),
        ]
    };
    let mut bodies = Vec::new();
    for (t, d) in [("acme", "acme.example"), ("nope", "nope.example")] {
        for (method, path) in routes(t, d) {
            for auth in [
                None,
                Some("Bearer wrong-token-0123456789"),
                Some("Basic YWRtaW4="),
            ] {
                let mut req = c
                    .request(method.clone(), format!("{}{path}", server.base))
                    .json(&json!({"name": "x"}));
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                let res = req.sent().await;
                assert_eq!(
                    res.status(),
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} {auth:?}"
                );
                assert_eq!(res.headers()["www-authenticate"], "Bearer");
                let mut body: Value = res.json().await.unwrap();
                assert_eq!(body["code"], "admin_token_required", "{method} {path}");
                // Each names its own request; the rest is the same.
                assert!(body["request_id"].is_string(), "{body}");
                body.as_object_mut().unwrap().remove("request_id");
                bodies.push(body);
            }
        }
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "every refusal is the same"
    );
    // Nothing changed.
    let res = c
        .get(format!("{}/admin/tenants/acme", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .sent()
        .await;
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "active");
}
