//! `tenancy tenants pool status|fill|prune`, `tenancy migrate` over pool
//! members, and `tenancy serve` refilling the pool in the background while
//! `POST /admin/tenants` claims from it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Cli, PgTestDb, Sending, create_tenant, id_of, serve};
use serde_json::{Value, json};

fn with_pool(cli: Cli, strategy: &str, size: &str) -> Cli {
    let mut cli = cli.strategy(strategy);
    let migrations = cli.path("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(
        migrations.join("0001_items.sql"),
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);",
    )
    .unwrap();
    cli.env.push((
        "TENANCY__LIFECYCLE__MIGRATIONS_DIR".into(),
        migrations.display().to_string(),
    ));
    cli.env
        .push(("TENANCY__LIFECYCLE__PENDING_POOL".into(), size.into()));
    cli
}

fn member_ids(status: &Value) -> HashSet<String> {
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn pool_commands_and_migrate_on_sqlite_files() {
    let cli = with_pool(Cli::sqlite(), "database", "3");
    let status = cli.json(&["tenants", "pool", "status", "--json"]);
    assert_eq!(
        (status["ready"].clone(), status["target"].clone()),
        (json!(0), json!(3))
    );

    let status = cli.json(&["tenants", "pool", "fill", "--json"]);
    assert_eq!(status["ready"], 3);
    let members = member_ids(&status);
    for id in &members {
        assert!(
            cli.path(&format!("tenancy.db.tenants/tenant_{id}.db"))
                .exists()
        );
    }
    // Members are not tenants.
    assert_eq!(
        cli.json(&["tenants", "list", "--all", "--json"])["total"],
        0
    );

    // A new migration: `migrate` brings the members up too.
    std::fs::write(
        cli.path("migrations/0002_tags.sql"),
        "CREATE TABLE tags (id INTEGER PRIMARY KEY);",
    )
    .unwrap();
    let summary = cli.json(&["migrate", "--json"]);
    let migrated: HashSet<String> = summary["migrated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(migrated, members, "{summary}");
    assert_eq!(
        cli.json(&["migrate", "--json"])["current"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // Members record the version, so a claim skips the migration check.
    let status = cli.json(&["tenants", "pool", "status", "--json"]);
    for m in status["members"].as_array().unwrap() {
        assert_eq!(m["version"], 2, "{status}");
    }

    // Signup claims a member.
    let acme = cli.create("acme", "Acme");
    assert_eq!(acme["status"], "active");
    assert!(members.contains(&id_of(&acme)));
    let status = cli.json(&["tenants", "pool", "status", "--json"]);
    assert_eq!(status["ready"], 2);
    assert!(!member_ids(&status).contains(&id_of(&acme)));

    // Prune --all removes the rest with their files; the tenant stays.
    let left = member_ids(&status);
    let out = cli.ok(&["tenants", "pool", "prune", "--all"]);
    assert!(out.contains("removed 2 member(s)"), "{out}");
    for id in &left {
        assert!(
            !cli.path(&format!("tenancy.db.tenants/tenant_{id}.db"))
                .exists()
        );
    }
    assert!(
        cli.path(&format!("tenancy.db.tenants/tenant_{}.db", id_of(&acme)))
            .exists()
    );
    assert_eq!(
        cli.json(&["tenants", "pool", "status", "--json"])["ready"],
        0
    );
}

#[test]
fn a_pool_the_setup_cannot_honour_is_refused() {
    // row_level has nothing to provision.
    let cli = with_pool(Cli::sqlite(), "row_level", "5");
    let err = cli.fail(&["tenants", "pool", "status"]);
    assert!(err.contains("lifecycle.pending_pool"), "{err}");
    // No pool configured: the command says how to get one.
    let cli = Cli::sqlite().strategy("database");
    let err = cli.fail(&["tenants", "pool", "fill"]);
    assert!(err.contains("TENANCY__LIFECYCLE__PENDING_POOL"), "{err}");
    // Not a number.
    let cli = with_pool(Cli::sqlite(), "database", "many");
    let err = cli.fail(&["tenants", "pool", "status"]);
    assert!(err.contains("pending_pool"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refills_the_pool_and_signup_claims_on_postgres_schemas() {
    let db = PgTestDb::new().await;
    let cli = with_pool(Cli::with_url(&db.url), "schema", "4");
    let server = serve(&cli);
    let http = reqwest::Client::new();
    let ready = || async { cli.json(&["tenants", "pool", "status", "--json"]) };
    let wait_full = || async {
        for _ in 0..200 {
            let status = ready().await;
            if status["ready"] == 4 {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the pool was not refilled: {}", ready().await);
    };
    let members = member_ids(&wait_full().await);
    let mut claimed = HashSet::new();
    for i in 0..4 {
        let res = create_tenant(
            &http,
            &server.base,
            json!({"slug": format!("shop-{i}"), "name": "Shop"}),
        )
        .await;
        assert_eq!(res.status(), 201);
        let tenant: Value = res.json().await.unwrap();
        assert_eq!(tenant["status"], "active");
        claimed.insert(id_of(&tenant));
        // The tenant is served at once, its schema migrated.
        let res = http
            .get(format!("{}/resolve", server.base))
            .header("X-Tenant-Id", format!("shop-{i}"))
            .sent()
            .await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        let items: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(format!("\"tenant_{}\".items", id_of(&tenant)))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(items.is_some(), "the claimed schema has the migrated table");
    }
    assert_eq!(claimed.len(), 4);
    assert!(
        claimed.iter().filter(|id| members.contains(*id)).count() >= 1,
        "signups claimed from the pool"
    );
    // Refilled in the background after the claims.
    let refilled = member_ids(&wait_full().await);
    assert!(refilled.is_disjoint(&claimed));
}
