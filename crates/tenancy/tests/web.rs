//! The web layer end to end through axum: every 401/403 case, JWT,
//! memberships, hostile input, context and tracing (M1–M5, R5, C1).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use axum::routing::get;
use axum::{Json, Router};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tenancy::config::Secret;
use tenancy::*;
use tower::ServiceExt;

use common::{create, domain, new_tenant};

const SECRET: &str = "test-secret-of-at-least-16-bytes";

struct Fixture {
    tenancy: Tenancy,
    acme: TenantInfo,
    globex: TenantInfo,
    initech: TenantInfo,
}

async fn fixture(config: TenancyConfig) -> Fixture {
    let tenancy = Tenancy::builder()
        .config(config)
        .store(MemoryStore::new())
        .build()
        .unwrap();
    let lc = tenancy.lifecycle();
    let acme = lc.create(new_tenant("acme", "Acme")).await.unwrap();
    let globex = lc.create(new_tenant("globex", "Globex")).await.unwrap();
    let initech = lc.create(new_tenant("initech", "Initech")).await.unwrap();
    Fixture {
        tenancy,
        acme,
        globex,
        initech,
    }
}

/// Tokens verified when sent, optional (`auth.required: false`): these
/// tests mix requests with and without one.
fn jwt_config() -> TenancyConfig {
    let mut c = TenancyConfig::default();
    c.auth.jwt_secret = Some(Secret::new(SECRET));
    c.auth.required = Some(false);
    c
}

async fn nested_current() -> Option<String> {
    tokio::task::yield_now().await;
    tenancy::current().map(|id| id.to_string())
}

fn app(f: &Fixture, guard_hits: Arc<AtomicUsize>) -> Router {
    let guarded = Router::new()
        .route(
            "/data",
            get(move || {
                let hits = guard_hits.clone();
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    "secret data"
                }
            }),
        )
        .layer(RequireTenantLayer::new());
    Router::new()
        .route(
            "/whoami",
            get(|t: Tenant| async move { Json(json!({"slug": t.slug, "id": t.id})) }),
        )
        .route(
            "/tenants/{t}/whoami",
            get(|t: Tenant| async move { t.slug.to_string() }),
        )
        .route(
            "/me",
            get(|who: tenancy::Principal| async move {
                Json(json!({"sub": who.subject, "role": who.role}))
            }),
        )
        .route(
            "/maybe",
            get(|t: Option<Tenant>| async move {
                t.map_or("anonymous".to_string(), |t| t.slug.to_string())
            }),
        )
        .route(
            "/context",
            get(|_t: Tenant| async move {
                let nested = nested_current().await;
                let spawned = tenancy::spawn(nested_current()).await.unwrap();
                let plain = tokio::spawn(nested_current()).await.unwrap();
                Json(json!({"nested": nested, "spawned": spawned, "plain": plain}))
            }),
        )
        .nest("/guarded", guarded)
        .layer(f.tenancy.layer())
}

struct Sent {
    status: StatusCode,
    content_type: Option<String>,
    body: Value,
}

async fn send<S>(app: &S, req: Request<Body>) -> Sent
where
    S: tower::Service<
            Request<Body>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone,
{
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Sent {
        status,
        content_type,
        body,
    }
}

fn get_with(path: &str, headers: &[(&str, &[u8])]) -> Request<Body> {
    let mut req = Request::get(path).body(Body::empty()).unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v).unwrap(),
        );
    }
    req
}

fn assert_problem(sent: &Sent, status: StatusCode, code: &str) {
    assert_eq!(sent.status, status, "{:?}", sent.body);
    assert_eq!(
        sent.content_type.as_deref(),
        Some("application/problem+json")
    );
    assert_eq!(sent.body["code"], json!(code), "{:?}", sent.body);
    assert_eq!(sent.body["status"], json!(status.as_u16()));
    assert!(
        sent.body["title"].is_string()
            && sent.body["detail"].is_string()
            && sent.body["type"].is_string()
    );
}

fn token(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn exp_in(secs: i64) -> i64 {
    chrono::Utc::now().timestamp() + secs
}

fn bearer(t: &str) -> Vec<u8> {
    format!("Bearer {t}").into_bytes()
}

#[tokio::test]
async fn resolves_by_slug_id_and_path() {
    let f = fixture(TenancyConfig::default()).await;
    let app = app(&f, Default::default());
    let by_slug = send(&app, get_with("/whoami", &[("x-tenant-id", b"acme")])).await;
    assert_eq!(by_slug.status, StatusCode::OK);
    assert_eq!(by_slug.body["id"], json!(f.acme.id));
    let by_id = send(
        &app,
        get_with(
            "/whoami",
            &[("x-tenant-id", f.globex.id.as_str().as_bytes())],
        ),
    )
    .await;
    assert_eq!(by_id.body["slug"], json!("globex"));
    let by_path = send(&app, get_with("/tenants/acme/whoami", &[])).await;
    assert_eq!(
        (by_path.status, by_path.body),
        (StatusCode::OK, json!("acme"))
    );
}

#[tokio::test]
async fn the_layer_around_a_whole_router_serves_as_router_layer_does() {
    // `TenantLayer::layer(router)` (what `scripts/profile-layer.sh` calls
    // `wrapped`): resolution, refusal, path resolution and the task-local
    // tenant as under `Router::layer`.
    let f = fixture(TenancyConfig::default()).await;
    let routes =
        Router::new()
            .route(
                "/whoami",
                get(|t: Tenant| async move {
                    Json(json!({"slug": t.slug, "current": tenancy::current()}))
                }),
            )
            .route(
                "/tenants/{t}/whoami",
                get(|t: Tenant| async move { Json(json!({"slug": t.slug})) }),
            );
    let wrapped = tower::Layer::layer(&f.tenancy.layer(), routes);
    let by_header = send(&wrapped, get_with("/whoami", &[("x-tenant-id", b"acme")])).await;
    assert_eq!(by_header.status, StatusCode::OK);
    assert_eq!(
        by_header.body,
        json!({"slug": "acme", "current": f.acme.id})
    );
    let by_path = send(&wrapped, get_with("/tenants/globex/whoami", &[])).await;
    assert_eq!(by_path.body, json!({"slug": "globex"}));
    let none = send(&wrapped, get_with("/whoami", &[])).await;
    assert_problem(&none, StatusCode::UNAUTHORIZED, "tenant_required");
    f.tenancy
        .lifecycle()
        .suspend(&f.acme.id, None)
        .await
        .unwrap();
    let suspended = send(&wrapped, get_with("/whoami", &[("x-tenant-id", b"acme")])).await;
    assert_problem(&suspended, StatusCode::FORBIDDEN, "tenant_not_active");
}

#[tokio::test]
async fn a_wrapped_router_serves_over_tcp_as_the_readme_shows() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture(TenancyConfig::default()).await;
    let tenancy = f.tenancy.clone();
    let router = Router::new().route(
        "/whoami",
        get(|t: Tenant| async move { t.slug.to_string() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service(tower::Layer::layer(
                &tenancy.layer(),
                router,
            )),
        )
        .await
    });
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /whoami HTTP/1.1\r\nhost: x\r\nx-tenant-id: acme\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    server.abort();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("acme"), "{response}");
}

#[tokio::test]
async fn no_tenant_is_401_problem() {
    let f = fixture(TenancyConfig::default()).await;
    let sent = send(&app(&f, Default::default()), get_with("/whoami", &[])).await;
    assert_problem(&sent, StatusCode::UNAUTHORIZED, "tenant_required");
}

#[tokio::test]
async fn unknown_inactive_suspended_are_403_and_reactivation_serves_again() {
    let f = fixture(TenancyConfig::default()).await;
    let app = app(&f, Default::default());
    let unknown = send(&app, get_with("/whoami", &[("x-tenant-id", b"hooli")])).await;
    assert_problem(&unknown, StatusCode::FORBIDDEN, "unknown_tenant");

    // Warm the cache, then suspend: the very next request is refused.
    assert_eq!(
        send(&app, get_with("/whoami", &[("x-tenant-id", b"initech")]))
            .await
            .status,
        StatusCode::OK
    );
    f.tenancy
        .lifecycle()
        .suspend(&f.initech.id, Some("unpaid"))
        .await
        .unwrap();
    let suspended = send(&app, get_with("/whoami", &[("x-tenant-id", b"initech")])).await;
    assert_problem(&suspended, StatusCode::FORBIDDEN, "tenant_not_active");
    assert!(
        suspended.body["detail"]
            .as_str()
            .unwrap()
            .contains("suspended")
    );

    f.tenancy
        .lifecycle()
        .deactivate(&f.initech.id)
        .await
        .unwrap();
    let inactive = send(&app, get_with("/whoami", &[("x-tenant-id", b"initech")])).await;
    assert_problem(&inactive, StatusCode::FORBIDDEN, "tenant_not_active");

    f.tenancy.lifecycle().activate(&f.initech.id).await.unwrap();
    assert_eq!(
        send(&app, get_with("/whoami", &[("x-tenant-id", b"initech")]))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn optional_extractor_is_none_only_when_nothing_was_named() {
    let f = fixture(TenancyConfig::default()).await;
    let app = app(&f, Default::default());
    assert_eq!(
        send(&app, get_with("/maybe", &[])).await.body,
        json!("anonymous")
    );
    assert_eq!(
        send(&app, get_with("/maybe", &[("x-tenant-id", b"acme")]))
            .await
            .body,
        json!("acme")
    );
    f.tenancy
        .lifecycle()
        .suspend(&f.acme.id, None)
        .await
        .unwrap();
    let refused = send(&app, get_with("/maybe", &[("x-tenant-id", b"acme")])).await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "tenant_not_active");
}

#[tokio::test]
async fn guard_protects_a_whole_router() {
    let f = fixture(TenancyConfig::default()).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let app = app(&f, hits.clone());
    assert_problem(
        &send(&app, get_with("/guarded/data", &[])).await,
        StatusCode::UNAUTHORIZED,
        "tenant_required",
    );
    assert_problem(
        &send(
            &app,
            get_with("/guarded/data", &[("x-tenant-id", b"hooli")]),
        )
        .await,
        StatusCode::FORBIDDEN,
        "unknown_tenant",
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "refused requests never reach the handler"
    );
    let ok = send(&app, get_with("/guarded/data", &[("x-tenant-id", b"acme")])).await;
    assert_eq!(
        (ok.status, hits.load(Ordering::SeqCst)),
        (StatusCode::OK, 1)
    );
}

#[tokio::test]
async fn hostile_inputs_get_4xx_never_5xx() {
    let f = fixture(TenancyConfig::default()).await;
    let app = app(&f, Default::default());
    let long = vec![b'a'; 8192];
    let headers: Vec<&[u8]> = vec![
        &long,
        b"../../etc/passwd",
        b"acme\tx",
        b"ac\xff\xfeme",
        b"x'; DROP TABLE tenants;--",
        b"acme%00",
        b"ACME ",
    ];
    for value in headers {
        let sent = send(&app, get_with("/whoami", &[("x-tenant-id", value)])).await;
        assert!(
            sent.status.is_client_error(),
            "{:?} -> {}",
            String::from_utf8_lossy(value),
            sent.status
        );
        assert_eq!(
            sent.content_type.as_deref(),
            Some("application/problem+json")
        );
    }
    for path in [
        "/tenants/..%2F..%2Fetc/whoami",
        "/tenants/%01acme/whoami",
        "/tenants/a%20b/whoami",
    ] {
        let sent = send(&app, get_with(path, &[])).await;
        assert_eq!(sent.status, StatusCode::FORBIDDEN, "{path}");
    }
    let mut weird_host = get_with("/whoami", &[]);
    weird_host
        .headers_mut()
        .insert("host", HeaderValue::from_bytes(b"\xff.app.com").unwrap());
    assert!(send(&app, weird_host).await.status.is_client_error());
}

/// Issue 26, findings 1–4: one rule for several tenant names in a request
/// (the table in the `resolve` module docs and the README).
fn subdomain_jwt_config() -> TenancyConfig {
    let mut c = jwt_config();
    c.resolution.resolvers = vec![
        "jwt_claim".into(),
        "header".into(),
        "subdomain".into(),
        "path".into(),
    ];
    c.resolution.base_domain = Some("app.test".into());
    c
}

fn with_host(mut req: Request<Body>, host: &str) -> Request<Body> {
    req.headers_mut()
        .insert("host", HeaderValue::from_str(host).unwrap());
    req
}

#[tokio::test]
async fn a_token_claim_is_a_default_that_the_request_may_change_among_memberships() {
    let f = fixture(subdomain_jwt_config()).await;
    let app = app(&f, Default::default());
    let acme_only = token(
        json!({"sub": "u1", "tenant_id": "acme", "exp": exp_in(300)}),
        SECRET,
    );
    let auth = bearer(&acme_only);
    let sent = send(&app, get_with("/whoami", &[("authorization", &auth)])).await;
    assert_eq!(sent.body["slug"], json!("acme"));
    // A claim without a membership list grants its own tenant only: the
    // header, the subdomain or the path naming another is refused.
    let by_header = get_with(
        "/whoami",
        &[("authorization", &auth), ("x-tenant-id", b"globex")],
    );
    assert_problem(
        &send(&app, by_header).await,
        StatusCode::FORBIDDEN,
        "not_a_member",
    );
    let by_host = with_host(
        get_with("/whoami", &[("authorization", &auth)]),
        "globex.app.test",
    );
    assert_problem(
        &send(&app, by_host).await,
        StatusCode::FORBIDDEN,
        "not_a_member",
    );
    let by_path = get_with("/tenants/globex/whoami", &[("authorization", &auth)]);
    assert_problem(
        &send(&app, by_path).await,
        StatusCode::FORBIDDEN,
        "not_a_member",
    );
    // The same tenant named by its id and its slug is one tenant.
    let same = with_host(
        get_with(
            "/whoami",
            &[
                ("authorization", &auth),
                ("x-tenant-id", f.acme.id.as_str().as_bytes()),
            ],
        ),
        "acme.app.test",
    );
    assert_eq!(send(&app, same).await.body["slug"], json!("acme"));

    // With memberships, the header (the client's explicit choice) picks.
    let both = token(
        json!({"sub": "u1", "tenant_id": "globex", "tenants": ["acme", "globex"], "exp": exp_in(300)}),
        SECRET,
    );
    let auth = bearer(&both);
    let pick = get_with(
        "/whoami",
        &[("authorization", &auth), ("x-tenant-id", b"acme")],
    );
    assert_eq!(send(&app, pick).await.body["slug"], json!("acme"));
    let default = get_with("/whoami", &[("authorization", &auth)]);
    assert_eq!(send(&app, default).await.body["slug"], json!("globex"));
    let on_host = with_host(
        get_with("/whoami", &[("authorization", &auth)]),
        "acme.app.test",
    );
    assert_eq!(send(&app, on_host).await.body["slug"], json!("acme"));
    // Two explicit choices that disagree, both memberships: a conflict.
    let two = with_host(
        get_with(
            "/whoami",
            &[("authorization", &auth), ("x-tenant-id", b"globex")],
        ),
        "acme.app.test",
    );
    assert_problem(
        &send(&app, two).await,
        StatusCode::FORBIDDEN,
        "tenant_conflict",
    );
    // A membership of the wrong tenant: the claim's tenant must be one too.
    let odd = token(
        json!({"sub": "u1", "tenant_id": "initech", "tenants": ["acme"], "exp": exp_in(300)}),
        SECRET,
    );
    let refused = get_with(
        "/whoami",
        &[("authorization", &bearer(&odd)), ("x-tenant-id", b"acme")],
    );
    assert_problem(
        &send(&app, refused).await,
        StatusCode::FORBIDDEN,
        "not_a_member",
    );
}

#[tokio::test]
async fn a_non_member_learns_nothing_about_other_tenants() {
    let f = fixture(subdomain_jwt_config()).await;
    f.tenancy
        .lifecycle()
        .suspend(&f.initech.id, Some("unpaid"))
        .await
        .unwrap();
    let app = app(&f, Default::default());
    let member_of_acme = token(
        json!({"sub": "u1", "tenants": ["acme"], "exp": exp_in(300)}),
        SECRET,
    );
    let auth = bearer(&member_of_acme);
    // Unknown, suspended, malformed, active: one answer, not_a_member.
    for other in [&b"nobody-here"[..], b"initech", b"globex", b"NOT a tenant"] {
        let req = get_with(
            "/whoami",
            &[("authorization", &auth), ("x-tenant-id", other)],
        );
        assert_problem(
            &send(&app, req).await,
            StatusCode::FORBIDDEN,
            "not_a_member",
        );
    }
    // A member is told its tenant's state.
    let member_of_initech = token(
        json!({"sub": "u1", "tenants": ["initech"], "exp": exp_in(300)}),
        SECRET,
    );
    let req = get_with(
        "/whoami",
        &[
            ("authorization", &bearer(&member_of_initech)),
            ("x-tenant-id", b"initech"),
        ],
    );
    assert_problem(
        &send(&app, req).await,
        StatusCode::FORBIDDEN,
        "tenant_not_active",
    );
}

#[tokio::test]
async fn without_a_token_sources_that_disagree_are_a_conflict() {
    let f = fixture(subdomain_jwt_config()).await;
    let app = app(&f, Default::default());
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a [u8])],
        Option<&'a str>,
        Result<&'a str, &'a str>,
    );
    let cases: [Case; 7] = [
        (
            "/tenants/globex/whoami",
            &[("x-tenant-id", b"acme")],
            None,
            Err("tenant_conflict"),
        ),
        (
            "/tenants/acme/whoami",
            &[],
            Some("globex.app.test"),
            Err("tenant_conflict"),
        ),
        (
            "/whoami",
            &[("x-tenant-id", b"globex")],
            Some("acme.app.test"),
            Err("tenant_conflict"),
        ),
        // An unknown name beside a real one is a conflict too.
        (
            "/whoami",
            &[("x-tenant-id", b"nobody")],
            Some("acme.app.test"),
            Err("tenant_conflict"),
        ),
        (
            "/tenants/acme/whoami",
            &[("x-tenant-id", b"acme")],
            Some("acme.app.test"),
            Ok("acme"),
        ),
        ("/whoami", &[], Some("www.app.test"), Err("tenant_required")),
        (
            "/whoami",
            &[("x-tenant-id", b"globex")],
            Some("www.app.test"),
            Ok("globex"),
        ),
    ];
    for (path, headers, host, want) in cases {
        let mut req = get_with(path, headers);
        if let Some(host) = host {
            req = with_host(req, host);
        }
        let sent = send(&app, req).await;
        match want {
            Ok(slug) => assert_eq!(
                (
                    sent.status,
                    sent.body
                        .get("slug")
                        .cloned()
                        .unwrap_or_else(|| sent.body.clone())
                ),
                (StatusCode::OK, json!(slug)),
                "{path} {host:?}"
            ),
            Err("tenant_required") => {
                assert_problem(&sent, StatusCode::UNAUTHORIZED, "tenant_required")
            }
            Err(code) => assert_problem(&sent, StatusCode::FORBIDDEN, code),
        }
    }
    // The id in the header and the slug in the path: one tenant.
    let req = get_with(
        "/tenants/globex/whoami",
        &[("x-tenant-id", f.globex.id.as_str().as_bytes())],
    );
    let sent = send(&app, req).await;
    assert_eq!((sent.status, sent.body), (StatusCode::OK, json!("globex")));
}

#[tokio::test]
async fn repeated_naming_headers_are_400_and_the_target_authority_is_the_host() {
    let f = fixture(subdomain_jwt_config()).await;
    let app = app(&f, Default::default());
    for name in ["x-tenant-id", "host"] {
        let mut req = get_with("/whoami", &[]);
        req.headers_mut()
            .append(name, HeaderValue::from_static("acme.app.test"));
        req.headers_mut()
            .append(name, HeaderValue::from_static("globex.app.test"));
        let sent = send(&app, req).await;
        assert_problem(&sent, StatusCode::BAD_REQUEST, "ambiguous_request");
        assert!(
            sent.body["detail"]
                .as_str()
                .unwrap()
                .contains("more than one")
        );
    }
    // Any other repeated header is fine.
    let mut req = get_with("/whoami", &[("x-tenant-id", b"acme")]);
    req.headers_mut()
        .append("accept", HeaderValue::from_static("a/b"));
    req.headers_mut()
        .append("accept", HeaderValue::from_static("c/d"));
    assert_eq!(send(&app, req).await.body["slug"], json!("acme"));
    // `GET http://globex.app.test/whoami` with `Host: acme.app.test`.
    let absolute = with_host(
        Request::get("http://globex.app.test/whoami")
            .body(Body::empty())
            .unwrap(),
        "acme.app.test",
    );
    assert_eq!(send(&app, absolute).await.body["slug"], json!("globex"));
}

#[tokio::test]
async fn header_spoofing_against_memberships_is_refused() {
    let f = fixture(jwt_config()).await;
    let app = app(&f, Default::default());
    let member_of_acme = token(
        json!({"sub": "u1", "tenants": ["acme"], "exp": exp_in(300)}),
        SECRET,
    );
    let spoof = send(
        &app,
        get_with(
            "/whoami",
            &[
                ("authorization", &bearer(&member_of_acme)),
                ("x-tenant-id", b"globex"),
            ],
        ),
    )
    .await;
    assert_problem(&spoof, StatusCode::FORBIDDEN, "not_a_member");
    let by_path = send(
        &app,
        get_with(
            "/tenants/globex/whoami",
            &[("authorization", &bearer(&member_of_acme))],
        ),
    )
    .await;
    assert_problem(&by_path, StatusCode::FORBIDDEN, "not_a_member");
    let own = send(
        &app,
        get_with(
            "/whoami",
            &[
                ("authorization", &bearer(&member_of_acme)),
                ("x-tenant-id", b"acme"),
            ],
        ),
    )
    .await;
    assert_eq!(own.status, StatusCode::OK);
    // Memberships may name ids as well as slugs.
    let by_id = token(
        json!({"sub": "u1", "tenants": [f.globex.id], "exp": exp_in(300)}),
        SECRET,
    );
    let ok = send(
        &app,
        get_with(
            "/whoami",
            &[
                ("authorization", &bearer(&by_id)),
                ("x-tenant-id", b"globex"),
            ],
        ),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    // A membership claim of the wrong shape refuses the token: it is
    // never read as "no memberships" (nor falls through to the header).
    for odd in [
        json!({"acme": true}),
        json!([1, 2]),
        json!(7),
        json!([{"role": "admin"}]),
    ] {
        let odd = token(
            json!({"sub": "u1", "tenants": odd, "exp": exp_in(300)}),
            SECRET,
        );
        let refused = send(
            &app,
            get_with(
                "/whoami",
                &[("authorization", &bearer(&odd)), ("x-tenant-id", b"acme")],
            ),
        )
        .await;
        assert_problem(&refused, StatusCode::UNAUTHORIZED, "invalid_token");
    }
}

/// K3: memberships as `{tenant, role}` objects or nested claims (Clerk's
/// `o.id` beside `o.rol`), and the `Principal` extractor with the role in
/// the request's tenant.
#[tokio::test]
async fn memberships_with_roles_and_nested_claims_give_the_principal() {
    let f = fixture(jwt_config()).await;
    let router = app(&f, Default::default());
    let objects = token(
        json!({"sub": "u1", "exp": exp_in(300),
               "tenants": [{"tenant": "acme", "role": "admin"}, {"tenant": f.globex.id, "role": "viewer"}]}),
        SECRET,
    );
    for (tenant, role) in [("acme", "admin"), ("globex", "viewer")] {
        let me = send(
            &router,
            get_with(
                "/me",
                &[
                    ("authorization", &bearer(&objects)),
                    ("x-tenant-id", tenant.as_bytes()),
                ],
            ),
        )
        .await;
        assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
        assert_eq!(me.body, json!({"sub": "u1", "role": role}));
    }
    // A list of slugs: a member, without a role.
    let plain = token(
        json!({"sub": "u2", "tenants": ["acme"], "exp": exp_in(300)}),
        SECRET,
    );
    let me = send(
        &router,
        get_with(
            "/me",
            &[("authorization", &bearer(&plain)), ("x-tenant-id", b"acme")],
        ),
    )
    .await;
    assert_eq!(me.body, json!({"sub": "u2", "role": null}));
    // No token: the principal is required.
    let anonymous = send(&router, get_with("/me", &[("x-tenant-id", b"acme")])).await;
    assert_problem(&anonymous, StatusCode::UNAUTHORIZED, "token_required");

    // Clerk: the active organisation at `o.id`, its role at `o.rol`.
    let mut config = jwt_config();
    config.resolution.membership_claim_path = Some("o.id".into());
    let f = fixture(config).await;
    let router = app(&f, Default::default());
    let clerk = token(
        json!({"sub": "user_2x", "exp": exp_in(300), "o": {"id": "acme", "rol": "org:admin"}}),
        SECRET,
    );
    let me = send(
        &router,
        get_with(
            "/me",
            &[("authorization", &bearer(&clerk)), ("x-tenant-id", b"acme")],
        ),
    )
    .await;
    assert_eq!(me.body, json!({"sub": "user_2x", "role": "org:admin"}));
    let other = send(
        &router,
        get_with(
            "/me",
            &[
                ("authorization", &bearer(&clerk)),
                ("x-tenant-id", b"globex"),
            ],
        ),
    )
    .await;
    assert_problem(&other, StatusCode::FORBIDDEN, "not_a_member");
    let wrong_type = token(
        json!({"sub": "user_2x", "exp": exp_in(300), "o": {"id": 42}}),
        SECRET,
    );
    let refused = send(
        &router,
        get_with(
            "/me",
            &[
                ("authorization", &bearer(&wrong_type)),
                ("x-tenant-id", b"acme"),
            ],
        ),
    )
    .await;
    assert_problem(&refused, StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn forged_expired_and_malformed_tokens_are_refused() {
    let f = fixture(jwt_config()).await;
    let app = app(&f, Default::default());
    let forged = token(
        json!({"tenant_id": "acme", "exp": exp_in(300)}),
        "another-secret-of-16-bytes",
    );
    let expired = token(json!({"tenant_id": "acme", "exp": exp_in(-120)}), SECRET);
    let no_exp = token(json!({"tenant_id": "acme"}), SECRET);
    let valid = token(json!({"tenant_id": "acme", "exp": exp_in(300)}), SECRET);
    let mut parts: Vec<&str> = valid.split('.').collect();
    let unsigned_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
    parts[0] = unsigned_header;
    let alg_none = format!("{}.{}.", parts[0], parts[1]);
    for bad in [
        forged,
        expired,
        no_exp,
        alg_none,
        "garbage".to_string(),
        "a.b.c".to_string(),
    ] {
        let sent = send(
            &app,
            get_with(
                "/whoami",
                &[("authorization", &bearer(&bad)), ("x-tenant-id", b"acme")],
            ),
        )
        .await;
        assert_problem(&sent, StatusCode::UNAUTHORIZED, "invalid_token");
    }
    let basic = send(
        &app,
        get_with(
            "/whoami",
            &[
                ("authorization", b"Basic dXNlcjpwYXNz"),
                ("x-tenant-id", b"acme"),
            ],
        ),
    )
    .await;
    assert_problem(&basic, StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn rs256_tokens_verify_and_hs256_confusion_is_refused() {
    let mut config = TenancyConfig::default();
    config.auth.jwt_public_key_pem = Some(include_str!("fixtures/test_rsa_public.pem").to_string());
    let f = fixture(config).await;
    let app = app(&f, Default::default());
    let key = EncodingKey::from_rsa_pem(include_bytes!("fixtures/test_rsa_private.pem")).unwrap();
    let claims = json!({"tenant_id": "globex", "exp": exp_in(300)});
    let rs = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap();
    let ok = send(
        &app,
        get_with("/whoami", &[("authorization", &bearer(&rs))]),
    )
    .await;
    assert_eq!(ok.body["slug"], json!("globex"));
    // HS256 signed with the public key text (algorithm confusion) is refused.
    let confused = token(claims, include_str!("fixtures/test_rsa_public.pem"));
    let sent = send(
        &app,
        get_with("/whoami", &[("authorization", &bearer(&confused))]),
    )
    .await;
    assert_problem(&sent, StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn upstream_verified_claims_are_used_without_a_verifier() {
    let f = fixture(TenancyConfig::default()).await;
    let app = app(&f, Default::default());
    let mut req = get_with("/whoami", &[("x-tenant-id", b"globex")]);
    let claims = json!({"tenants": ["acme"]}).as_object().unwrap().clone();
    req.extensions_mut().insert(VerifiedClaims::new(claims));
    assert_problem(
        &send(&app, req).await,
        StatusCode::FORBIDDEN,
        "not_a_member",
    );
    // Without a verifier, a raw bearer token is ignored, never trusted.
    let unverified = token(
        json!({"tenant_id": "acme", "exp": exp_in(300)}),
        "whatever-secret-16b",
    );
    let sent = send(
        &app,
        get_with("/whoami", &[("authorization", &bearer(&unverified))]),
    )
    .await;
    assert_problem(&sent, StatusCode::UNAUTHORIZED, "tenant_required");
}

#[tokio::test]
async fn context_is_visible_nested_and_carried_only_by_the_helper() {
    let f = fixture(TenancyConfig::default()).await;
    let app = app(&f, Default::default());
    let sent = send(&app, get_with("/context", &[("x-tenant-id", b"acme")])).await;
    assert_eq!(sent.body["nested"], json!(f.acme.id));
    assert_eq!(sent.body["spawned"], json!(f.acme.id));
    assert_eq!(
        sent.body["plain"],
        Value::Null,
        "tokio::spawn must not inherit the tenant"
    );
    assert_eq!(tenancy::current(), None, "nothing leaks out of the request");
}

/// A store that is down.
struct DownStore;

type Down<T> = Result<T, StoreError>;

fn refused<T>() -> Down<T> {
    Err(StoreError::Unavailable("connection refused".into()))
}

#[async_trait]
impl TenantStore for DownStore {
    async fn get(&self, _: &TenantId) -> Down<Option<TenantInfo>> {
        refused()
    }
    async fn get_by_slug(&self, _: &str) -> Down<Option<TenantInfo>> {
        refused()
    }
    async fn list(&self, _: ListQuery) -> Down<TenantPage> {
        refused()
    }
    async fn create(&self, _: NewTenant) -> Down<TenantInfo> {
        refused()
    }
    async fn update(&self, _: &TenantId, _: TenantUpdate) -> Down<TenantInfo> {
        refused()
    }
    async fn set_status(&self, _: &TenantId, _: TenantStatus, _: Option<&str>) -> Down<TenantInfo> {
        refused()
    }
    async fn delete(&self, _: &TenantId) -> Down<bool> {
        refused()
    }
}

#[tokio::test]
async fn store_down_is_503_with_retry_after() {
    let tenancy = Tenancy::builder()
        .stores(Arc::new(DownStore), Arc::new(MemoryStore::new()))
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/whoami",
            get(|t: Tenant| async move { t.slug.to_string() }),
        )
        .layer(tenancy.layer());
    let res = app
        .oneshot(get_with("/whoami", &[("x-tenant-id", b"acme")]))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers().get("retry-after").unwrap(), "1");
}

#[tokio::test]
async fn extractor_without_layer_is_a_clear_500() {
    let app = Router::new().route(
        "/whoami",
        get(|t: Tenant| async move { t.slug.to_string() }),
    );
    let sent = send(&app, get_with("/whoami", &[("x-tenant-id", b"acme")])).await;
    assert_problem(
        &sent,
        StatusCode::INTERNAL_SERVER_ERROR,
        "tenancy_not_configured",
    );
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn tenant_id_is_on_the_request_span() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let f = fixture(TenancyConfig::default()).await;
    let app = Router::new()
        .route(
            "/log",
            get(|_t: Tenant| async {
                tracing::info!("handler ran");
            }),
        )
        .layer(f.tenancy.layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    app.oneshot(get_with("/log", &[("x-tenant-id", b"acme")]))
        .await
        .unwrap();
    let logged = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains(&format!("tenant_id={}", f.acme.id)) && logged.contains("handler ran"),
        "{logged}"
    );
}

#[test]
fn builder_refuses_bad_auth_config_and_missing_store() {
    assert!(matches!(
        Tenancy::builder().build(),
        Err(BuildError::MissingStore)
    ));
    let mut short = TenancyConfig::default();
    short.auth.jwt_secret = Some(Secret::new("short"));
    let err = Tenancy::builder()
        .config(short)
        .store(MemoryStore::new())
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("auth.jwt_secret"), "{err}");
    let mut bad_pem = TenancyConfig::default();
    bad_pem.auth.jwt_public_key_pem = Some("not a key".into());
    let err = Tenancy::builder()
        .config(bad_pem)
        .store(MemoryStore::new())
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("auth.jwt_public_key_pem"), "{err}");
    let mut strategy = TenancyConfig::default();
    strategy.lifecycle.isolation_strategy = "sharded".into();
    let err = Tenancy::builder()
        .config(strategy)
        .store(MemoryStore::new())
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("lifecycle.isolation_strategy"),
        "{err}"
    );
}

/// Issue 26, finding 3, with a verified custom domain: on acme's domain a
/// header naming another tenant is a conflict, not a silent switch; the
/// same tenant named by its domain and its slug is served.
#[tokio::test]
async fn a_verified_domain_and_a_header_that_disagree_are_a_conflict() {
    let store = MemoryStore::new();
    let mut config = TenancyConfig::default();
    config.resolution.resolvers = vec!["header".into(), "domain".into()];
    let tenancy = Tenancy::builder()
        .config(config)
        .store(store.clone())
        .build()
        .unwrap();
    let acme = create(&tenancy, "acme", "Acme").await;
    create(&tenancy, "umbrella", "Umbrella").await;
    store
        .add_domain(domain("portal.acme.com", &acme.id, true, true))
        .await
        .unwrap();
    let app = Router::new()
        .route(
            "/whoami",
            get(|t: Tenant| async move { t.slug.to_string() }),
        )
        .layer(tenancy.layer());
    let on_domain = |header: Option<&'static [u8]>| {
        let headers: Vec<(&str, &[u8])> = header.map(|h| ("x-tenant-id", h)).into_iter().collect();
        with_host(get_with("/whoami", &headers), "portal.acme.com")
    };
    let sent = send(&app, on_domain(None)).await;
    assert_eq!((sent.status, sent.body), (StatusCode::OK, json!("acme")));
    let sent = send(&app, on_domain(Some(b"acme"))).await;
    assert_eq!((sent.status, sent.body), (StatusCode::OK, json!("acme")));
    let sent = send(&app, on_domain(Some(b"umbrella"))).await;
    assert_problem(&sent, StatusCode::FORBIDDEN, "tenant_conflict");
    // Elsewhere the header alone names umbrella.
    let sent = send(&app, get_with("/whoami", &[("x-tenant-id", b"umbrella")])).await;
    assert_eq!(
        (sent.status, sent.body),
        (StatusCode::OK, json!("umbrella"))
    );
}

/// K5: with a secret configured, `auth.required` defaults to true: a
/// request without a token is 401 `token_required` whatever names the
/// tenant; with a valid token it is served; `required: false` lets it
/// through.
#[tokio::test]
async fn a_configured_secret_requires_a_token_by_default() {
    let mut config = TenancyConfig::default();
    config.auth.jwt_secret = Some(Secret::new(SECRET));
    assert!(config.auth.requires_token());
    let f = fixture(config).await;
    let router = app(&f, Default::default());
    for head in [
        get_with("/whoami", &[("x-tenant-id", b"acme")]),
        get_with("/tenants/acme/whoami", &[]),
        get_with("/whoami", &[]),
    ] {
        let refused = send(&router, head).await;
        assert_problem(&refused, StatusCode::UNAUTHORIZED, "token_required");
    }
    let member = token(
        json!({"sub": "u1", "tenants": ["acme"], "exp": exp_in(300)}),
        SECRET,
    );
    let served = send(
        &router,
        get_with(
            "/whoami",
            &[
                ("authorization", &bearer(&member)),
                ("x-tenant-id", b"acme"),
            ],
        ),
    )
    .await;
    assert_eq!(served.status, StatusCode::OK, "{:?}", served.body);
    let optional = fixture(jwt_config()).await;
    let router = app(&optional, Default::default());
    let anonymous = send(&router, get_with("/whoami", &[("x-tenant-id", b"acme")])).await;
    assert_eq!(anonymous.status, StatusCode::OK);
}

// ------------------------------------------------------------- plans (E1, E2)

fn plans_config() -> TenancyConfig {
    let mut config = TenancyConfig::default();
    config.plans.insert(
        "pro".into(),
        tenancy::config::PlanConfig {
            features: vec!["sso".into(), "exports".into()],
            limits: [
                ("requests_per_month".to_owned(), 100_000),
                ("rows.notes".to_owned(), 500),
            ]
            .into(),
        },
    );
    config.plans.insert(
        "free".into(),
        tenancy::config::PlanConfig {
            features: vec!["exports".into()],
            limits: [("requests_per_month".to_owned(), 1_000)].into(),
        },
    );
    config
}

#[tokio::test]
async fn features_follow_the_plan_and_its_overrides_at_once() {
    let f = fixture(plans_config()).await;
    let lc = f.tenancy.lifecycle();
    lc.update(&f.acme.id, TenantUpdate::default().plan("pro"))
        .await
        .unwrap();
    lc.update(&f.globex.id, TenantUpdate::default().plan("free"))
        .await
        .unwrap();
    let app = Router::new()
        .route("/sso", get(|| async { "sso" }))
        .layer(f.tenancy.require_feature("sso").unwrap())
        .route(
            "/entitlements",
            get(|e: Entitlements| async move {
                Json(json!({
                    "plan": e.plan(),
                    "sso": e.has("sso"),
                    "monthly": e.limit("requests_per_month"),
                    "storage": e.limit("storage_mb"),
                }))
            }),
        )
        .layer(f.tenancy.layer())
        .with_state(f.tenancy.clone());
    let ask = |path: &str, tenant: &str| get_with(path, &[("x-tenant-id", tenant.as_bytes())]);

    assert_eq!(send(&app, ask("/sso", "acme")).await.status, StatusCode::OK);
    let refused = send(&app, ask("/sso", "globex")).await;
    assert_problem(&refused, StatusCode::FORBIDDEN, "feature_not_in_plan");
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("`sso`") && detail.contains("`free`"),
        "{detail}"
    );
    // No plan at all: no feature.
    assert_problem(
        &send(&app, ask("/sso", "initech")).await,
        StatusCode::FORBIDDEN,
        "feature_not_in_plan",
    );
    // No tenant: refused as the Tenant extractor would.
    assert_eq!(
        send(&app, get_with("/sso", &[])).await.status,
        StatusCode::UNAUTHORIZED
    );

    let e = send(&app, ask("/entitlements", "acme")).await.body;
    assert_eq!(
        e,
        json!({"plan": "pro", "sso": true, "monthly": 100000, "storage": null})
    );

    // Overrides, at once: globex gets sso, acme loses it and gets a limit.
    let overrides = f.tenancy.overrides();
    overrides
        .set(&f.globex.id, "features.sso", json!(true))
        .await
        .unwrap();
    overrides
        .set(&f.acme.id, "features.sso", json!(false))
        .await
        .unwrap();
    overrides
        .set(&f.acme.id, "limits.requests_per_month", json!(10))
        .await
        .unwrap();
    assert_eq!(
        send(&app, ask("/sso", "globex")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, ask("/sso", "acme")).await.status,
        StatusCode::FORBIDDEN
    );
    let e = send(&app, ask("/entitlements", "acme")).await.body;
    assert_eq!(e["monthly"], 10);
    // A plan change, at once.
    overrides.delete(&f.acme.id, "features.sso").await.unwrap();
    lc.update(&f.acme.id, TenantUpdate::default().plan("free"))
        .await
        .unwrap();
    assert_eq!(
        send(&app, ask("/sso", "acme")).await.status,
        StatusCode::FORBIDDEN
    );

    // Bad overrides are refused before they are written.
    for (key, value) in [
        ("features.sso", json!("yes")),
        ("features.teleport", json!(true)),
        ("limits.requests_per_month", json!(-1)),
        ("limits.requests_per_month", json!("lots")),
        ("limits.warp_speed", json!(1)),
    ] {
        let err = overrides
            .set(&f.globex.id, key, value.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidConfigValue { .. }),
            "{key} = {value}: {err}"
        );
    }
    // And unknown names in code or config fail at start.
    assert!(f.tenancy.require_feature("teleport").is_err());
    let mut bad = plans_config();
    bad.plans
        .get_mut("free")
        .unwrap()
        .limits
        .insert("seats_galore".into(), 3);
    let err = Tenancy::builder()
        .config(bad)
        .store(MemoryStore::new())
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("plans.free.limits.seats_galore"),
        "{err}"
    );
}

/// `requests_per_minute` (SPEC E1) is the plan's rate limit, as a
/// per-second rate rounded up; a tenant's override of it applies at once.
#[tokio::test]
async fn requests_per_minute_is_the_plans_rate_limit() {
    let mut config = plans_config();
    config.plans.insert(
        "metered".into(),
        tenancy::config::PlanConfig {
            features: vec![],
            limits: [("requests_per_minute".to_owned(), 120)].into(),
        },
    );
    let tenancy = Tenancy::builder()
        .config(config)
        .store(MemoryStore::new())
        .rate_limits()
        .build()
        .unwrap();
    let lc = tenancy.lifecycle();
    let acme = lc
        .create(new_tenant("acme", "Acme").plan("metered"))
        .await
        .unwrap();
    lc.create(new_tenant("globex", "Globex")).await.unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(tenancy.layer());
    let burst = async |tenant: &str| {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let res = send(&app, get_with("/", &[("x-tenant-id", tenant.as_bytes())])).await;
            statuses.push(res.status.as_u16());
        }
        statuses
    };
    // 120 a minute: 2 a second, bursts of 2.
    assert_eq!(burst("acme").await, [200, 200, 429]);
    // Another plan (none): the default 100 a second.
    assert_eq!(burst("globex").await, [200, 200, 200]);
    // An override of 60 a minute: 1 a second, at once.
    tenancy
        .overrides()
        .set(&acme.id, "limits.requests_per_minute", json!(60))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(burst("acme").await, [200, 429, 429]);
}
