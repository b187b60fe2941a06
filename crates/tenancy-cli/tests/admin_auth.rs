//! Every admin route (and /metrics) refuses a missing or wrong admin token
//! with the same 401, whether the tenant or domain it names exists or not:
//! the refusal reveals nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod in_process;

use axum::http::{Method, StatusCode};
use in_process::InProcess;
use serde_json::json;

#[tokio::test]
async fn admin_routes_refuse_without_the_token_and_reveal_nothing() {
    let server = InProcess::sqlite().await;
    let created = server
        .admin(
            Method::POST,
            "/admin/tenants",
            Some(&json!({"slug": "acme", "name": "Acme"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    server
        .admin(
            Method::POST,
            "/admin/tenants/acme/domains",
            Some(&json!({"domain": "acme.example", "verified": true})),
        )
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
                let res = server
                    .call(method.clone(), &path, auth, Some(&json!({"name": "x"})))
                    .await;
                assert_eq!(
                    res.status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} {auth:?}"
                );
                assert_eq!(res.headers["www-authenticate"], "Bearer");
                let mut body = res.body;
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
    let acme = server.admin(Method::GET, "/admin/tenants/acme", None).await;
    assert_eq!(acme.body["status"], "active");
}
