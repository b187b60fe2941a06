//! The audit log end to end: every admin action through the API
//! and the CLI is recorded with actor, time, tenant, before and after;
//! `GET /admin/audit` and `tenancy audit` read it, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod in_process;

use axum::http::{Method, StatusCode};
use common::{Cli, PgTestDb, id_of};
use in_process::InProcess;
use serde_json::{Value, json};

async fn admin(
    server: &InProcess,
    method: Method,
    path: &str,
    actor: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let res = match actor {
        None => {
            server
                .admin(method, &format!("/admin{path}"), body.as_ref())
                .await
        }
        Some(actor) => {
            server
                .admin_as(actor, method, &format!("/admin{path}"), body.as_ref())
                .await
        }
    };
    let body = if res.body.is_string() {
        Value::Null
    } else {
        res.body
    };
    (res.status, body)
}

/// `url`: the database `cli` runs on.
async fn audit_end_to_end(cli: Cli, url: String) {
    let server = InProcess::over(&url, tempfile::tempdir().unwrap()).await;
    let base = &server;
    use Method as M;

    let (status, acme) = admin(
        base,
        M::POST,
        "/tenants",
        Some("alice"),
        Some(json!({"slug": "acme", "name": "Acme", "plan": "free"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{acme}");
    let acme_id = id_of(&acme);
    let (status, _) = admin(
        base,
        M::POST,
        "/tenants/acme/suspend",
        Some("bob@example.com"),
        Some(json!({"reason": "unpaid"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    admin(base, M::POST, "/tenants/acme/activate", None, None).await;
    admin(
        base,
        M::PATCH,
        "/tenants/acme",
        Some("alice"),
        Some(json!({"plan": "pro"})),
    )
    .await;
    admin(
        base,
        M::PUT,
        "/tenants/acme/config/notes.max",
        Some("alice"),
        Some(json!(10)),
    )
    .await;
    admin(
        base,
        M::PUT,
        "/tenants/acme/config/notes.max",
        Some("alice"),
        Some(json!(20)),
    )
    .await;
    admin(
        base,
        M::POST,
        "/tenants/acme/domains",
        Some("alice"),
        Some(json!({"domain": "acme.example", "verified": true})),
    )
    .await;
    let (_, globex) = admin(
        base,
        M::POST,
        "/tenants",
        None,
        Some(json!({"slug": "globex", "name": "Globex"})),
    )
    .await;

    // A hostile actor name is refused before anything happens.
    let (status, body) = admin(
        base,
        M::POST,
        "/tenants/acme/suspend",
        Some("<script>"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "invalid_actor");

    let (status, log) = admin(base, M::GET, "/audit?tenant=acme", None, None).await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let items = log["items"].as_array().unwrap();
    // The refusal is recorded too, the hostile name kept as data only.
    let (refused, items) = items.split_first().unwrap();
    assert_eq!(refused["action"], "admin.refused", "{refused}");
    assert_eq!(refused["actor"], "admin", "{refused}");
    assert_eq!(refused["after"]["claimed_actor"], "<script>");
    assert_eq!(refused["after"]["code"], "invalid_actor");
    let actions: Vec<&str> = items
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "domain.add",
            "config.set",
            "config.set",
            "tenant.update",
            "tenant.activate",
            "tenant.suspend",
            "tenant.create"
        ],
        "newest first, only acme's"
    );
    assert!(items.iter().all(|e| e["tenant_id"] == acme_id.as_str()));
    let suspend = &items[5];
    assert_eq!(suspend["actor"], "admin:bob@example.com");
    assert_eq!(suspend["before"]["status"], "active");
    assert_eq!(suspend["after"]["status"], "suspended");
    assert_eq!(suspend["after"]["status_reason"], "unpaid");
    assert!(suspend["at"].as_str().unwrap().starts_with("20"));
    assert_eq!(items[4]["actor"], "admin", "no X-Actor: the admin token");
    assert_eq!(items[3]["before"]["plan"], "free");
    assert_eq!(items[3]["after"]["plan"], "pro");
    assert_eq!(items[2]["before"], Value::Null, "no override before");
    assert_eq!(items[1]["before"]["value"], 10);
    assert_eq!(items[1]["after"]["value"], 20);
    assert_eq!(items[6]["before"], Value::Null);
    assert_eq!(items[6]["after"]["slug"], "acme");

    // Paging.
    let (_, page) = admin(base, M::GET, "/audit?tenant=acme&limit=2", None, None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next_before"].as_i64().unwrap();
    let (_, rest) = admin(
        base,
        M::GET,
        &format!("/audit?tenant=acme&before={next}&limit=100"),
        None,
        None,
    )
    .await;
    // Acme's 7 actions and the refused one.
    assert_eq!(rest["items"].as_array().unwrap().len(), 6);
    let (_, everything) = admin(base, M::GET, "/audit", None, None).await;
    assert_eq!(everything["items"].as_array().unwrap().len(), 9);

    // Bad input.
    for bad in ["/audit?limit=x", "/audit?nope=1", "/audit?tenant="] {
        let (status, _) = admin(base, M::GET, bad, None, None).await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::NOT_FOUND,
            "{bad}: {status}"
        );
    }

    // Without the token: 401, whether the tenant exists or not.
    for tenant in ["acme", "nope"] {
        let res = server
            .call(M::GET, &format!("/admin/audit?tenant={tenant}"), None, None)
            .await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        assert_eq!(res.body["code"], "admin_token_required");
    }

    // The CLI records its own actions and reads the same log.
    cli.ok(&["config", "set", "globex", "theme", "dark"]);
    cli.ok(&["tenants", "suspend", "globex", "--reason", "fraud"]);
    cli.ok(&["tenants", "delete", "globex"]);
    let globex_id = id_of(&globex);
    let log = cli.json(&["--json", "audit", "--tenant", &globex_id]);
    let items = log["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.delete",
            "tenant.suspend",
            "config.set",
            "tenant.create"
        ],
        "a deleted tenant's entries stay, found by its id"
    );
    assert!(items[0]["actor"].as_str().unwrap().starts_with("cli"));
    assert_eq!(items[0]["after"], Value::Null);
    let text = cli.ok(&["audit", "--limit", "3"]);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("tenant.delete"), "{text}");
    let err = cli.fail(&["audit", "--tenant", ""]);
    assert!(err.contains("no tenant"), "{err}");
    drop(server);
}

#[tokio::test]
async fn audit_log_on_sqlite() {
    let cli = Cli::sqlite();
    let url = format!("sqlite://{}", cli.path("tenancy.db").display());
    audit_end_to_end(cli, url).await;
}

#[tokio::test]
async fn audit_log_on_postgres() {
    let db = PgTestDb::new().await;
    audit_end_to_end(Cli::with_url(&db.url), db.url.clone()).await;
}
