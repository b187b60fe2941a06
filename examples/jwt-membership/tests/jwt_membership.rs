//! Runs the JWT membership example: members get in, others are 403, bad
//! tokens are 401, and no token is 401.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use example_support::reqwest::{Response, StatusCode};
use example_support::{Running, client};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

const SECRET: &str = "a-test-secret-of-32-bytes-length";

/// A token signed here, as another issuer (or an attacker) would.
fn sign(secret: &str, claims: &Value) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn problem(res: Response, status: StatusCode) -> Value {
    assert_eq!(res.status(), status);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    res.json().await.unwrap()
}

#[tokio::test]
async fn users_reach_only_the_tenants_their_token_lists() {
    let app = Running::start(
        env!("CARGO_BIN_EXE_example-jwt-membership"),
        &[("JWT_SECRET", SECRET)],
    );
    let http = client();
    let token = |body: Value| {
        let req = http.post(app.url("/dev/token")).json(&body);
        async move {
            let res: Value = req.send().await.unwrap().json().await.unwrap();
            res["token"].as_str().unwrap().to_owned()
        }
    };
    let ann = token(json!({"sub": "ann", "tenants": ["acme", "globex"]})).await;
    let bob = token(json!({"sub": "bob", "tenants": ["initech"], "tenant_id": "initech"})).await;
    let whoami = |token: Option<&str>, tenant: Option<&str>| {
        let mut req = http.get(app.url("/whoami"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(t) = tenant {
            req = req.header("x-tenant-id", t);
        }
        req.send()
    };

    // A member switches between their tenants with the header.
    for tenant in ["acme", "globex"] {
        let res = whoami(Some(&ann), Some(tenant)).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.json::<Value>().await.unwrap()["tenant"], tenant);
    }
    // A tenant the token does not list: 403, though initech is active.
    let res = whoami(Some(&ann), Some("initech")).await.unwrap();
    assert_eq!(
        problem(res, StatusCode::FORBIDDEN).await["code"],
        "not_a_member"
    );

    // The tenant_id claim names the default tenant; the header may pick
    // another only among the memberships (never silently overruled).
    let res = whoami(Some(&bob), None).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["tenant"], "initech");
    let res = whoami(Some(&bob), Some("acme")).await.unwrap();
    assert_eq!(
        problem(res, StatusCode::FORBIDDEN).await["code"],
        "not_a_member"
    );
    // A claim naming a tenant outside the memberships is refused too.
    let sneaky = sign(
        SECRET,
        &json!({"sub": "bob", "tenants": ["initech"], "tenant_id": "acme", "exp": now() + 600}),
    );
    let res = whoami(Some(&sneaky), None).await.unwrap();
    assert_eq!(
        problem(res, StatusCode::FORBIDDEN).await["code"],
        "not_a_member"
    );

    // Tampered, expired, foreign-key and malformed tokens: 401, never
    // ignored, even with a header naming one of the user's tenants.
    let tampered = {
        // One character of the signature changed (not the last one, whose
        // low bits are padding).
        let mut chars: Vec<char> = ann.chars().collect();
        let i = chars.len() - 10;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let expired = sign(
        SECRET,
        &json!({"sub": "ann", "tenants": ["acme"], "exp": now() - 600}),
    );
    let forged = sign(
        "another-secret-of-32-bytes-long!",
        &json!({"sub": "eve", "tenants": ["acme"], "exp": now() + 600}),
    );
    for bad in [&tampered, &expired, &forged, "not-a-jwt"] {
        let res = whoami(Some(bad), Some("acme")).await.unwrap();
        let body = problem(res, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body["code"], "invalid_token", "{bad}: {body}");
    }
    let res = whoami(Some(&expired), Some("acme")).await.unwrap();
    let body = problem(res, StatusCode::UNAUTHORIZED).await;
    assert!(
        body["detail"].as_str().unwrap().contains("Expired"),
        "{body}"
    );

    // A valid token naming no tenant, and no header: 401 naming both ways.
    let res = whoami(Some(&ann), None).await.unwrap();
    let body = problem(res, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["code"], "tenant_required");
    assert_eq!(
        body["detail"],
        "no tenant identified: send a bearer token with a `tenant_id` claim or the X-Tenant-Id header"
    );

    // No token: 401, with or without a header naming a tenant.
    for tenant in [None, Some("acme")] {
        let res = whoami(None, tenant).await.unwrap();
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        let body = problem(res, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body["code"], "sign_in_required", "{tenant:?}");
    }
}
