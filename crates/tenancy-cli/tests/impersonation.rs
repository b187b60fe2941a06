//! Impersonation end to end: a short-lived, single-use token for
//! one user of one active tenant; a replay is 401 on every instance; every
//! bad input is refused; issuing and using it are audited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod in_process;

use axum::http::{Method, StatusCode};
use common::PgTestDb;
use in_process::{ADMIN_TOKEN, InProcess};
use serde_json::{Value, json};

async fn call(
    base: &InProcess,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, Value) {
    let res = base.request(method, path, headers, body.as_ref()).await;
    let body = if res.body.is_string() {
        Value::Null
    } else {
        res.body
    };
    (res.status, body)
}

fn admin() -> (&'static str, String) {
    ("authorization", format!("Bearer {ADMIN_TOKEN}"))
}

async fn impersonate(base: &InProcess, tenant: &str, body: Value) -> (StatusCode, Value) {
    let (k, v) = admin();
    call(
        base,
        Method::POST,
        &format!("/admin/tenants/{tenant}/impersonate"),
        &[(k, &v), ("x-actor", "support-ann")],
        Some(body),
    )
    .await
}

async fn setup(base: &InProcess) {
    let (k, v) = admin();
    for slug in ["acme", "globex", "initech"] {
        let (status, _) = call(
            base,
            Method::POST,
            "/admin/tenants",
            &[(k, &v)],
            Some(json!({"slug": slug, "name": slug})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, _) = call(
            base,
            Method::POST,
            "/api/notes",
            &[("x-tenant-id", slug)],
            Some(json!({"title": format!("{slug} note")})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    call(
        base,
        Method::POST,
        "/admin/tenants/initech/suspend",
        &[(k, &v)],
        None,
    )
    .await;
}

async fn titles(base: &InProcess, token: &str, extra: &[(&str, &str)]) -> (StatusCode, Value) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    call(base, Method::GET, "/api/notes", &headers, None).await
}

#[tokio::test]
async fn impersonation_tokens_are_short_lived_single_use_and_audited() {
    let server = InProcess::sqlite().await;
    let base = &server;
    setup(base).await;

    let (status, grant) = impersonate(base, "acme", json!({"user": "u-42", "ttl_s": 120})).await;
    assert_eq!(status, StatusCode::CREATED, "{grant}");
    let token = grant["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("imp_") && token.len() > 60);
    assert_eq!(grant["ttl_s"], 120);
    assert_eq!(grant["user"], "u-42");

    // The token resolves acme, whatever else the request names.
    let (status, body) = titles(base, &token, &[("x-tenant-id", "globex")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["title"], "acme note");

    // Single use.
    let (status, body) = titles(base, &token, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "invalid_impersonation_token");

    // Forged and expired tokens.
    let (status, _) = titles(base, "imp_0000000000000000000000000000000000", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, short) = impersonate(base, "acme", json!({"user": "u-42", "ttl_s": 1})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, _) = titles(base, short["token"].as_str().unwrap(), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "expired");

    // A tenant suspended after the grant is refused at use.
    let (_, later) = impersonate(base, "globex", json!({"user": "u-1"})).await;
    let (k, v) = admin();
    call(
        base,
        Method::POST,
        "/admin/tenants/globex/suspend",
        &[(k, &v)],
        None,
    )
    .await;
    let (status, body) = titles(base, later["token"].as_str().unwrap(), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "tenant_not_active");

    // Bad input.
    for (tenant, body, status, code) in [
        (
            "initech",
            json!({"user": "u"}),
            StatusCode::CONFLICT,
            "tenant_not_active",
        ),
        (
            "nope",
            json!({"user": "u"}),
            StatusCode::NOT_FOUND,
            "tenant_not_found",
        ),
        (
            "acme",
            json!({"user": "u", "ttl_s": 301}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_ttl",
        ),
        (
            "acme",
            json!({"user": "u", "ttl_s": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_ttl",
        ),
        (
            "acme",
            json!({"user": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_user",
        ),
        (
            "acme",
            json!({"user": "a\nb"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_user",
        ),
        (
            "acme",
            json!({"ttl_s": 10}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "acme",
            json!({"user": "u", "role": "root"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ] {
        let (got, problem) = impersonate(base, tenant, body.clone()).await;
        assert_eq!(
            (got, problem["code"].as_str()),
            (status, Some(code)),
            "{tenant} {body}"
        );
    }
    // Without the admin token: 401 whether the tenant exists or not.
    for tenant in ["acme", "nope"] {
        let (status, body) = call(
            base,
            Method::POST,
            &format!("/admin/tenants/{tenant}/impersonate"),
            &[],
            Some(json!({"user": "u"})),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["code"], "admin_token_required");
    }

    // Audited: who issued it, for whom, and its use.
    let (_, log) = call(
        base,
        Method::GET,
        "/admin/audit?tenant=acme",
        &[(k, &v)],
        None,
    )
    .await;
    let items = log["items"].as_array().unwrap();
    let used = items
        .iter()
        .find(|e| e["action"] == "impersonation.use")
        .expect("use audited");
    assert_eq!(used["actor"], "impersonation:u-42");
    assert_eq!(used["after"]["impersonated_by"], "admin:support-ann");
    let issued = items
        .iter()
        .find(|e| e["action"] == "tenant.impersonate")
        .expect("issue audited");
    assert_eq!(issued["actor"], "admin:support-ann");
    assert_eq!(issued["after"]["user"], "u-42");
    assert!(
        !log.to_string().contains(&token),
        "the token itself is never logged"
    );
}

#[tokio::test]
async fn a_token_used_on_one_instance_is_refused_on_another() {
    let db = PgTestDb::new().await;
    let a = InProcess::over(&db.url, tempfile::tempdir().unwrap()).await;
    let b = InProcess::over(&db.url, tempfile::tempdir().unwrap()).await;
    setup(&a).await;
    let (_, grant) = impersonate(&a, "acme", json!({"user": "u-7"})).await;
    let token = grant["token"].as_str().unwrap().to_owned();
    // Both at once: exactly one is accepted.
    let (first, second) = tokio::join!(titles(&a, &token, &[]), titles(&b, &token, &[]));
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::UNAUTHORIZED]);
}
