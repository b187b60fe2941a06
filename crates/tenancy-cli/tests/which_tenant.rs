//! Issue 26, findings 1–4, against `tenancy serve` on SQLite and
//! PostgreSQL: one answer to "which tenant?" when a request names several
//! (the table in the README). Requests are written on a raw socket so that
//! repeated headers and absolute-form targets reach the server as sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{ADMIN_TOKEN, Cli, PgTestDb, Server, id_of, serve, titles};
use serde_json::{Value, json};

const SECRET: &str = "which-tenant-test-secret-0123456789";

/// One HTTP/1.1 request as written; the status and the JSON body.
fn send(server: &Server, head: &str, body: Option<&Value>) -> (u16, Value) {
    let addr = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!("{head}\r\nConnection: close\r\n");
    if !body.is_empty() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

fn token(claims: Value) -> String {
    let mut claims = claims;
    claims["exp"] = json!(chrono_now() + 300);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn chrono_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The status and, when served, the titles of the tenant's notes; else
/// the problem's code.
fn notes(server: &Server, head: &str) -> (u16, Value) {
    let (status, body) = send(server, head, None);
    if status == 200 {
        (status, json!(titles(&body)))
    } else {
        (status, body["code"].clone())
    }
}

async fn scenario(cli: &mut Cli) {
    cli.env.extend([
        ("TENANCY__AUTH__JWT_SECRET".into(), SECRET.into()),
        // Tokens optional: the rule is shown with and without one.
        ("TENANCY__AUTH__REQUIRED".into(), "false".into()),
        ("TENANCY__RESOLUTION__BASE_DOMAIN".into(), "app.test".into()),
    ]);
    let ta = id_of(&cli.create("ta", "A"));
    let tb = id_of(&cli.create("tb", "B"));
    cli.create("tc", "C");
    cli.ok(&["tenants", "suspend", "tc"]);
    let server = serve(cli);
    for (slug, title) in [("ta", "a's note"), ("tb", "b's note")] {
        let (status, body) = send(
            &server,
            &format!("POST /api/notes HTTP/1.1\r\nHost: x\r\nX-Tenant-Id: {slug}"),
            Some(&json!({"title": title})),
        );
        assert_eq!(status, 201, "{body}");
    }
    let a = json!(["a's note"]);
    let b = json!(["b's note"]);
    let code = |c: &str| json!(c);

    // Finding 3: without a token, sources that disagree are a conflict.
    for head in [
        "GET /tenants/tb/api/notes HTTP/1.1\r\nHost: x\r\nX-Tenant-Id: ta".to_owned(),
        "GET /tenants/ta/api/notes HTTP/1.1\r\nHost: tb.app.test".to_owned(),
        "GET /api/notes HTTP/1.1\r\nHost: ta.app.test\r\nX-Tenant-Id: tb".to_owned(),
    ] {
        assert_eq!(
            notes(&server, &head),
            (403, code("tenant_conflict")),
            "{head}"
        );
    }
    // ...and sources that agree (a slug and an id of one tenant) serve it.
    let agree =
        format!("GET /tenants/tb/api/notes HTTP/1.1\r\nHost: tb.app.test\r\nX-Tenant-Id: {tb}");
    assert_eq!(notes(&server, &agree), (200, b.clone()));
    // `/resolve` applies the same rule to the forwarded request.
    let resolve = "GET /resolve HTTP/1.1\r\nHost: x\r\nX-Original-URI: /tenants/tb/api/notes\r\nX-Tenant-Id: ta";
    assert_eq!(
        send(&server, resolve, None).1["code"],
        code("tenant_conflict")
    );
    let resolve = "GET /resolve HTTP/1.1\r\nHost: x\r\nX-Original-URI: /tenants/tb/x\r\nX-Forwarded-Host: ta.app.test";
    assert_eq!(send(&server, resolve, None).0, 403);

    // Finding 4: repeated headers that name the tenant are 400; the
    // authority of an absolute-form target is the host.
    for head in [
        "GET /api/notes HTTP/1.1\r\nHost: ta.app.test\r\nHost: tb.app.test",
        "GET /api/notes HTTP/1.1\r\nHost: x\r\nX-Tenant-Id: ta\r\nX-Tenant-Id: tb",
        "GET /resolve HTTP/1.1\r\nHost: x\r\nX-Forwarded-Host: ta.app.test\r\nX-Forwarded-Host: tb.app.test",
        "GET /resolve HTTP/1.1\r\nHost: x\r\nX-Original-URI: /tenants/ta/\r\nX-Original-URI: /tenants/tb/",
    ] {
        assert_eq!(
            notes(&server, head),
            (400, code("ambiguous_request")),
            "{head}"
        );
    }
    let absolute = "GET http://tb.app.test/api/notes HTTP/1.1\r\nHost: ta.app.test";
    assert_eq!(notes(&server, absolute), (200, b.clone()));

    // Finding 1: the claim is the token's tenant, not a trump card.
    let only_ta = format!(
        "Authorization: Bearer {}",
        token(json!({"sub": "u", "tenant_id": "ta"}))
    );
    for head in [
        format!("GET /api/notes HTTP/1.1\r\nHost: tb.app.test\r\n{only_ta}"),
        format!("GET /api/notes HTTP/1.1\r\nHost: x\r\nX-Tenant-Id: tb\r\n{only_ta}"),
        format!("GET /tenants/tb/api/notes HTTP/1.1\r\nHost: x\r\n{only_ta}"),
    ] {
        assert_eq!(notes(&server, &head), (403, code("not_a_member")), "{head}");
    }
    assert_eq!(
        notes(
            &server,
            &format!("GET /api/notes HTTP/1.1\r\nHost: x\r\n{only_ta}")
        ),
        (200, a.clone())
    );
    // Among memberships, the header picks.
    let both = format!(
        "Authorization: Bearer {}",
        token(json!({"sub": "u", "tenant_id": "tb", "tenants": ["ta", tb]}))
    );
    assert_eq!(
        notes(
            &server,
            &format!("GET /api/notes HTTP/1.1\r\nHost: x\r\nX-Tenant-Id: ta\r\n{both}")
        ),
        (200, a.clone())
    );
    assert_eq!(
        notes(
            &server,
            &format!("GET /api/notes HTTP/1.1\r\nHost: x\r\n{both}")
        ),
        (200, b.clone())
    );

    // Finding 2: a non-member learns nothing of other tenants.
    for other in ["tb", "tc", "no-such-tenant", &ta] {
        let (status, problem) = notes(
            &server,
            &format!(
                "GET /api/notes HTTP/1.1\r\nHost: x\r\nX-Tenant-Id: {other}\r\nAuthorization: Bearer {}",
                token(json!({"sub": "u", "tenants": ["td"]}))
            ),
        );
        assert_eq!((status, problem), (403, code("not_a_member")), "{other}");
    }
    let member_of_tc = token(json!({"sub": "u", "tenants": ["tc"]}));
    assert_eq!(
        notes(
            &server,
            &format!(
                "GET /api/notes HTTP/1.1\r\nHost: x\r\nX-Tenant-Id: tc\r\nAuthorization: Bearer {member_of_tc}"
            )
        ),
        (403, code("tenant_not_active"))
    );
    // The admin API is not a tenant route: a token there means nothing.
    let (status, _) = send(
        &server,
        &format!("GET /admin/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}"),
        None,
    );
    assert_eq!(status, 200);

    // SPEC K2: ta brings its own identity provider, set by the CLI (another
    // process): the running server refuses our own tokens for ta within a
    // second, and keeps serving tb with them.
    let own = r#"{"issuer": "https://ta.okta.test/oauth2/default", "audiences": ["api://ta"]}"#;
    let with_token = |slug: &str| {
        format!(
            "GET /api/notes HTTP/1.1\r\nHost: x\r\nX-Tenant-Id: {slug}\r\nAuthorization: Bearer {}",
            token(json!({"sub": "u", "tenants": ["ta", "tb"]}))
        )
    };
    assert_eq!(notes(&server, &with_token("ta")), (200, a.clone()));
    cli.ok(&["config", "set", "ta", "auth.issuer", own]);
    let within_a_second = |expected: (u16, Value), head: String| {
        let started = std::time::Instant::now();
        loop {
            let got = notes(&server, &head);
            if got == expected {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{head}: still {got:?} a second after the change"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    within_a_second((403, code("issuer_not_allowed")), with_token("ta"));
    assert_eq!(notes(&server, &with_token("tb")), (200, b.clone()));
    let anonymous = "GET /api/notes HTTP/1.1\r\nHost: x\r\nX-Tenant-Id: ta".to_owned();
    assert_eq!(notes(&server, &anonymous), (401, code("token_required")));
    // Values that cannot name a provider are refused, by the CLI and the
    // admin API (422), and change nothing.
    let refused = cli.run(&["config", "set", "tb", "auth.issuer", "42"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("auth.issuer"),
        "{refused:?}"
    );
    let (status, problem) = send(
        &server,
        &format!(
            "PUT /admin/tenants/tb/config/auth.issuer HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {ADMIN_TOKEN}"
        ),
        Some(
            &json!({"issuer": "https://tb.okta.test", "audiences": ["a"], "algorithms": ["none"]}),
        ),
    );
    assert_eq!(
        (status, &problem["code"]),
        (422, &json!("invalid_input")),
        "{problem}"
    );
    assert_eq!(notes(&server, &with_token("tb")), (200, b.clone()));
    // Removed: our own tokens enter ta again, within a second.
    cli.ok(&["config", "unset", "ta", "auth.issuer"]);
    within_a_second((200, a.clone()), with_token("ta"));
}

#[tokio::test]
async fn one_answer_to_which_tenant_on_sqlite() {
    scenario(&mut Cli::sqlite()).await;
}

#[tokio::test]
async fn one_answer_to_which_tenant_on_postgres() {
    let db = PgTestDb::new().await;
    scenario(&mut Cli::with_url(&db.url)).await;
}
