//! The library's front door: the 401 detail built from the
//! configured resolvers, lifecycle by id or slug, the `Setting` and
//! `TenantDb` extractors with every refusal, rate limits from the builder,
//! `DbError` as problem+json.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::extract::FromRef;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Router, response::Response};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tenancy::sqlx::{self, Sqlite};
use tenancy::*;
use tower::ServiceExt;

use common::{create, new_tenant};

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

fn get_with(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::get(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Body::empty()).unwrap()
}

async fn tenancy_with(config: TenancyConfig) -> Tenancy {
    let tenancy = Tenancy::builder()
        .config(config)
        .store(MemoryStore::new())
        .build()
        .unwrap();
    for slug in ["acme", "globex"] {
        tenancy
            .lifecycle()
            .create(NewTenant::new(slug, slug).unwrap())
            .await
            .unwrap();
    }
    tenancy
}

fn whoami(tenancy: &Tenancy) -> Router {
    Router::new()
        .route(
            "/whoami",
            get(|t: Tenant| async move { t.slug.to_string() }),
        )
        .layer(tenancy.layer())
}

fn resolvers(names: &[&str]) -> TenancyConfig {
    let mut config = TenancyConfig::default();
    config.resolution.resolvers = names.iter().map(|n| n.to_string()).collect();
    config
}

#[tokio::test]
async fn the_401_detail_names_only_the_configured_resolvers() {
    let cases: Vec<(TenancyConfig, &str)> = vec![
        (
            {
                let mut c = resolvers(&["header"]);
                c.resolution.header_name = "x-org".into();
                c
            },
            "no tenant identified: send the X-Org header",
        ),
        (
            {
                let mut c = resolvers(&["subdomain", "path"]);
                c.resolution.base_domain = Some("app.example".into());
                c
            },
            "no tenant identified: send a subdomain of app.example or a /tenants/{tenant}/… path",
        ),
        (
            {
                let mut c = resolvers(&["jwt_claim", "header", "domain"]);
                c.auth.jwt_secret = Some(tenancy::config::Secret::new(
                    "a-secret-of-at-least-16-bytes",
                ));
                // Tokens optional, so that a request without one is asked
                // for a tenant (with auth.required it is asked for a token).
                c.auth.required = Some(false);
                c
            },
            "no tenant identified: send a bearer token with a `tenant_id` claim, the X-Tenant-Id header or a verified domain of the tenant",
        ),
        // Without a key no token is verified here: tokens are not offered.
        (
            resolvers(&["jwt_claim", "header"]),
            "no tenant identified: send the X-Tenant-Id header",
        ),
        // `subdomain` without a base domain is off, so it is not offered.
        (
            resolvers(&["subdomain", "header"]),
            "no tenant identified: send the X-Tenant-Id header",
        ),
        (resolvers(&[]), "no tenant identified"),
    ];
    for (config, expected) in cases {
        let tenancy = tenancy_with(config).await;
        let (status, body) = send(&whoami(&tenancy), get_with("/whoami", &[])).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["code"], "tenant_required");
        assert_eq!(body["detail"], expected);
    }
}

#[tokio::test]
async fn lifecycle_takes_an_id_or_a_slug() {
    let tenancy = tenancy_with(TenancyConfig::default()).await;
    let lc = tenancy.lifecycle();
    let app = whoami(&tenancy);
    let acme = tenancy.store().find("acme").await.unwrap().unwrap();

    let suspended = lc.suspend("acme", Some("unpaid")).await.unwrap();
    assert_eq!(suspended.status, TenantStatus::Suspended);
    assert_eq!(suspended.status_reason.as_deref(), Some("unpaid"));
    let (status, body) = send(&app, get_with("/whoami", &[("x-tenant-id", "acme")])).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("tenant_not_active"))
    );

    lc.activate(&acme.id).await.unwrap();
    assert_eq!(
        send(&app, get_with("/whoami", &[("x-tenant-id", "acme")]))
            .await
            .0,
        StatusCode::OK
    );

    let pro = lc
        .update("acme", TenantUpdate::default().plan("pro"))
        .await
        .unwrap();
    assert_eq!(pro.plan.as_deref(), Some("pro"));
    assert_eq!(
        lc.deactivate(acme.id.as_str()).await.unwrap().status,
        TenantStatus::Inactive
    );
    lc.delete("acme").await.unwrap();
    assert!(tenancy.store().find("acme").await.unwrap().is_none());

    // Unknown or hostile references are refused, and nothing else changes.
    for reference in ["nope", "", "../globex", "globex\n"] {
        assert!(matches!(
            lc.suspend(reference, None).await,
            Err(LifecycleError::Store(StoreError::NotFound(_)))
        ));
    }
    assert_eq!(
        tenancy
            .store()
            .find("globex")
            .await
            .unwrap()
            .unwrap()
            .status,
        TenantStatus::Active
    );
}

#[derive(Deserialize)]
struct MaxNotes(u32);
impl TenantSetting for MaxNotes {
    const KEY: &'static str = "notes.max";
}

#[derive(Deserialize)]
struct Theme(#[allow(dead_code)] String);
impl TenantSetting for Theme {
    const KEY: &'static str = "ui.theme";
}

#[tokio::test]
async fn setting_extractor_reads_the_tenants_value_and_refuses_clearly() {
    let mut config = TenancyConfig::default();
    config
        .overrides
        .defaults
        .insert("notes.max".into(), json!(10));
    let tenancy = tenancy_with(config).await;
    let acme = tenancy.store().find("acme").await.unwrap().unwrap();
    let globex = tenancy.store().find("globex").await.unwrap().unwrap();
    tenancy
        .overrides()
        .set(&acme.id, "notes.max", json!(500))
        .await
        .unwrap();
    tenancy
        .overrides()
        .set(&globex.id, "ui.theme", json!(42))
        .await
        .unwrap();

    let app = Router::new()
        .route(
            "/max",
            get(|Setting(MaxNotes(max)): Setting<MaxNotes>| async move { max.to_string() }),
        )
        .route("/theme", get(|_: Setting<Theme>| async { "has a theme" }))
        .route(
            "/theme-or-default",
            get(|theme: Option<Setting<Theme>>| async move {
                if theme.is_some() { "custom" } else { "default" }
            }),
        )
        .layer(tenancy.layer())
        .with_state(tenancy.clone());

    let acme_h = [("x-tenant-id", "acme")];
    let globex_h = [("x-tenant-id", "globex")];
    assert_eq!(send(&app, get_with("/max", &acme_h)).await.1, 500);
    assert_eq!(send(&app, get_with("/max", &globex_h)).await.1, 10);

    let (status, body) = send(&app, get_with("/theme", &acme_h)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["code"], "setting_missing");
    assert!(body["detail"].as_str().unwrap().contains("ui.theme"));

    let (status, body) = send(&app, get_with("/theme", &globex_h)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["code"], "setting_invalid");

    assert_eq!(
        send(&app, get_with("/theme-or-default", &acme_h)).await.1,
        "default"
    );

    // No tenant, or one that may not be served: the tenant's refusal.
    let (status, body) = send(&app, get_with("/max", &[])).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("tenant_required"))
    );
    tenancy.lifecycle().suspend("acme", None).await.unwrap();
    let (status, body) = send(&app, get_with("/max", &acme_h)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("tenant_not_active"))
    );
}

#[derive(Clone, FromRef)]
struct AppState {
    tenancy: Tenancy,
    db: TenantDb<Sqlite>,
}

async fn count_notes(db: TenantDb<Sqlite>) -> Result<String, DbError> {
    let mut tx = db.begin().await?;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM notes")
        .fetch_one(&mut *tx)
        .await?;
    Ok(n.to_string())
}

#[tokio::test]
async fn tenant_db_extractor_is_bound_to_the_requests_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = Migrations::new(vec![Migration {
        version: 1,
        name: "notes".into(),
        sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)".into(),
    }])
    .unwrap();
    let files = SqliteDatabaseIsolation::new(dir.path(), migrations);
    let tenancy = Tenancy::builder()
        .store(MemoryStore::new())
        .isolation(files.clone())
        .build()
        .unwrap();
    let acme = create(&tenancy, "acme", "Acme").await;
    create(&tenancy, "globex", "Globex").await;
    let db = TenantDb::new(files);
    let mut tx = db.begin_for(&acme.id).await.unwrap();
    for body in ["a", "b"] {
        sqlx::query("INSERT INTO notes (body) VALUES (?)")
            .bind(body)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let app = Router::new()
        .route("/count", get(count_notes))
        // Outside the task-local scope: the handle is still the request's.
        .route(
            "/count-in-task",
            get(|db: TenantDb<Sqlite>| async move {
                assert!(db.tenant().is_some());
                tokio::spawn(async move { count_notes(db).await.into_response() })
                    .await
                    .unwrap()
            }),
        )
        .layer(tenancy.layer())
        .with_state(AppState {
            tenancy: tenancy.clone(),
            db,
        });
    for path in ["/count", "/count-in-task"] {
        assert_eq!(
            send(&app, get_with(path, &[("x-tenant-id", "acme")]))
                .await
                .1,
            2
        );
        assert_eq!(
            send(&app, get_with(path, &[("x-tenant-id", "globex")]))
                .await
                .1,
            0
        );
        let (status, body) = send(&app, get_with(path, &[])).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("tenant_required"))
        );
        let (status, body) = send(&app, get_with(path, &[("x-tenant-id", "nope")])).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("unknown_tenant"))
        );
    }
}

#[tokio::test]
async fn db_errors_answer_as_problems_without_leaking_details() {
    let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, secret_column TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t (id) VALUES (1)")
        .execute(&pool)
        .await
        .unwrap();
    let problem = |e: DbError| async move {
        let res: Response = e.into_response();
        let status = res.status();
        let body: Value =
            serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        (status, body)
    };
    let dup = sqlx::query("INSERT INTO t (id) VALUES (1)")
        .execute(&pool)
        .await
        .unwrap_err();
    let (status, body) = problem(DbError::Sql(dup)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("duplicate"))
    );

    let missing = sqlx::query("SELECT id FROM t WHERE id = 2")
        .fetch_one(&pool)
        .await
        .unwrap_err();
    let (status, _) = problem(DbError::Sql(missing)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let bad = sqlx::query("SELECT nope FROM t")
        .fetch_all(&pool)
        .await
        .unwrap_err();
    let (status, body) = problem(DbError::Sql(bad)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!body.to_string().contains("nope"), "{body}");

    pool.close().await;
    let closed = sqlx::query("SELECT 1").execute(&pool).await.unwrap_err();
    let (status, body) = problem(DbError::Sql(closed)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("database_unavailable")
        )
    );
}

#[tokio::test]
async fn rate_limits_come_from_config_through_the_builder() {
    let mut config = TenancyConfig::default();
    config.rate_limit.default_rps = 2;
    config.rate_limit.plans.insert("pro".into(), 5);
    let tenancy = Tenancy::builder()
        .config(config)
        .store(MemoryStore::new())
        .rate_limits()
        .build()
        .unwrap();
    let lc = tenancy.lifecycle();
    lc.create(new_tenant("acme", "Acme")).await.unwrap();
    let pro = lc
        .create(new_tenant("globex", "Globex").plan("pro"))
        .await
        .unwrap();
    // A per-tenant override beats the plan.
    let initech = lc.create(new_tenant("initech", "Initech")).await.unwrap();
    tenancy
        .overrides()
        .set(&initech.id, "rate_limit.rps", json!(3))
        .await
        .unwrap();
    let _ = pro;
    let app = whoami(&tenancy);
    for (tenant, limit) in [("acme", 2), ("globex", 5), ("initech", 3)] {
        for _ in 0..limit {
            let (status, _) = send(&app, get_with("/whoami", &[("x-tenant-id", tenant)])).await;
            assert_eq!(status, StatusCode::OK, "{tenant}");
        }
        let (status, body) = send(&app, get_with("/whoami", &[("x-tenant-id", tenant)])).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{tenant}");
        assert_eq!(body["code"], "rate_limited");
    }
    // Without `.rate_limits()` nothing is limited.
    let unlimited = tenancy_with(TenancyConfig::default()).await;
    let app = whoami(&unlimited);
    for _ in 0..300 {
        let (status, _) = send(&app, get_with("/whoami", &[("x-tenant-id", "acme")])).await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn handlers_read_the_claims_the_layer_verified() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let secret = "a-secret-of-at-least-16-bytes";
    let mut config = resolvers(&["jwt_claim", "header"]);
    config.auth.jwt_secret = Some(tenancy::config::Secret::new(secret));
    let tenancy = tenancy_with(config).await;
    let app = Router::new()
        .route(
            "/me",
            get(
                |t: Tenant, axum::Extension(claims): axum::Extension<VerifiedClaims>| async move {
                    format!(
                        "{} in {}",
                        claims.get("sub").and_then(Value::as_str).unwrap_or("?"),
                        t.slug
                    )
                },
            ),
        )
        .layer(tenancy.layer());
    let token = encode(
        &Header::default(),
        &json!({"sub": "ann", "tenants": ["acme"], "exp": 4_102_444_800u64}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let auth = format!("Bearer {token}");
    let (status, body) = send(
        &app,
        get_with("/me", &[("authorization", &auth), ("x-tenant-id", "acme")]),
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, Value::String("ann in acme".into()))
    );
}
