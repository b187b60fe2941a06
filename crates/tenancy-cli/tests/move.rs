//! `tenancy tenants move` between two real PostgreSQL servers (the
//! machine's cluster and one this test starts in a temporary directory),
//! under concurrent requests from two tenants through two `tenancy serve`
//! instances: the moved tenant sees only 503s (with Retry-After) or its
//! correct rows, the other tenant only 2xx, every acknowledged write is on
//! the new server, and a failed move leaves the tenant where it was.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Cli, Cluster, PgTestDb, Sending, id_of, serve};
use serde_json::{Value, json};
use sqlx::Connection;

fn yaml(servers: &[(&str, &str)]) -> String {
    let mut y = String::from(
        "tenancy:\n  lifecycle:\n    isolation_strategy: database\n    deprovision_policy: drop\n    database_servers:\n",
    );
    for (name, url) in servers {
        y.push_str(&format!("      - {{ name: {name}, url: \"{url}\" }}\n"));
    }
    y
}

/// What one tenant's load saw.
#[derive(Debug, Default)]
struct Seen {
    ok: usize,
    unavailable: usize,
    wrong: Vec<String>,
    written: Vec<String>,
}

async fn load(bases: Vec<String>, tenant: &'static str, stop: Arc<AtomicBool>) -> Seen {
    let http = reqwest::Client::new();
    let mut seen = Seen::default();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let base = &bases[i % bases.len()];
        let write = i % 2 == 0;
        let title = format!("{tenant}-load-{i}");
        let req = if write {
            http.post(format!("{base}/api/notes"))
                .json(&json!({"title": title}))
        } else {
            http.get(format!("{base}/api/notes?limit=1000"))
        };
        let res = req
            .header("x-tenant-id", tenant)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await;
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                seen.wrong.push(format!("transport error: {e}"));
                continue;
            }
        };
        let status = res.status().as_u16();
        let retry_after = res.headers().contains_key("retry-after");
        let problem = res
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
        let body: Value = res.json().await.unwrap_or(Value::Null);
        match status {
            200 | 201 => {
                seen.ok += 1;
                if write {
                    seen.written.push(title);
                } else {
                    let items = body["items"].as_array().cloned().unwrap_or_default();
                    if items
                        .iter()
                        .any(|n| !n["title"].as_str().unwrap_or("").starts_with(tenant))
                    {
                        seen.wrong.push(format!("another tenant's row: {body}"));
                    }
                    if (items.len() as u64) < 100 {
                        seen.wrong
                            .push(format!("rows missing: {} items", items.len()));
                    }
                }
            }
            503 if retry_after && problem => seen.unavailable += 1,
            _ => seen.wrong.push(format!("{status}: {body}")),
        }
    }
    seen
}

#[tokio::test]
async fn a_tenant_moves_between_servers_under_load() {
    let home = PgTestDb::new().await;
    let second = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let mut cli = Cli::with_url(&home.url);
    std::fs::write(cli.path("tenancy.yaml"), yaml(&[("a", &home.url)])).unwrap();
    let moved = id_of(&cli.create("moved", "M"));
    let other = id_of(&cli.create("other", "O"));
    home.track_tenant(&moved);
    home.track_tenant(&other);
    let base = home.url.rsplit_once('/').unwrap().0.to_owned();
    for (id, slug) in [(&moved, "moved"), (&other, "other")] {
        let mut conn = sqlx::PgConnection::connect(&format!("{base}/tenant_{id}"))
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO notes (tenant_id, title, body) SELECT $1, $2 || '-' || g, repeat('x', 100) FROM generate_series(1, 100) g",
        )
        .bind(id)
        .bind(slug)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    // Now two servers.
    std::fs::write(
        cli.path("tenancy.yaml"),
        yaml(&[("a", &home.url), ("b", &second.url())]),
    )
    .unwrap();
    cli.env.retain(|(k, _)| k != "DATABASE_URL");
    cli.env.push(("DATABASE_URL".into(), home.url.clone()));

    // Refusals before anything changes.
    let err = cli.fail(&["tenants", "move", "moved", "--to-server", "nowhere"]);
    assert!(err.contains("nowhere") && err.contains("a, b"), "{err}");
    let err = cli.fail(&["tenants", "move", "moved", "--to-server", "a"]);
    assert!(err.contains("already on server `a`"), "{err}");

    // A move that fails half way (a table the target's migrations do not
    // create) rolls back: the tenant stays on `a` and writes resume.
    let mut conn = sqlx::PgConnection::connect(&format!("{base}/tenant_{moved}"))
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE extra (k INT PRIMARY KEY); INSERT INTO extra VALUES (1)")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = cli.fail(&["tenants", "move", "moved", "--to-server", "b"]);
    assert!(
        err.contains("stays on `a`") && err.contains("extra"),
        "{err}"
    );
    let mut b = sqlx::PgConnection::connect(&second.url()).await.unwrap();
    let leftovers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE 'tenant\\_%'")
            .fetch_one(&mut b)
            .await
            .unwrap();
    assert_eq!(leftovers, 0, "the partial copy is dropped");
    // (the pause ended every session of the source, this one too)
    let mut conn = sqlx::PgConnection::connect(&format!("{base}/tenant_{moved}"))
        .await
        .unwrap();
    sqlx::raw_sql("DROP TABLE extra")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);

    let one = serve(&cli);
    let two = serve(&cli);
    let bases = vec![one.base.clone(), two.base.clone()];
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{}/api/notes", one.base))
        .header("x-tenant-id", "moved")
        .json(&json!({"title": "moved-after-failed-move"}))
        .sent()
        .await;
    assert_eq!(res.status(), 201, "writes resumed after the failed move");

    let stop = Arc::new(AtomicBool::new(false));
    let moved_load = tokio::spawn(load(bases.clone(), "moved", stop.clone()));
    let other_load = tokio::spawn(load(bases.clone(), "other", stop.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let cli = Arc::new(cli);
    let mover = cli.clone();
    let report = tokio::task::spawn_blocking(move || {
        mover.json(&["tenants", "move", "moved", "--to-server", "b", "--json"])
    })
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let moved_seen = moved_load.await.unwrap();
    let other_seen = other_load.await.unwrap();
    eprintln!("move report: {report}");
    eprintln!(
        "moved tenant: {} ok, {} 503; other: {} ok, {} 503",
        moved_seen.ok, moved_seen.unavailable, other_seen.ok, other_seen.unavailable
    );
    assert_eq!(report["to"], "b");
    assert!(report["pause_ms"].as_f64().unwrap() > 0.0);
    assert!(moved_seen.wrong.is_empty(), "{:?}", moved_seen.wrong);
    assert!(other_seen.wrong.is_empty(), "{:?}", other_seen.wrong);
    assert_eq!(other_seen.unavailable, 0, "the other tenant never notices");
    assert!(moved_seen.ok > 0 && other_seen.ok > 0);

    // Placement switched, the data is on `b` only, with every acknowledged
    // write; both instances route there.
    let mut home_conn = sqlx::PgConnection::connect(&home.url).await.unwrap();
    let placed: String =
        sqlx::query_scalar("SELECT server FROM tenancy_placements WHERE tenant_id = $1")
            .bind(&moved)
            .fetch_one(&mut home_conn)
            .await
            .unwrap();
    assert_eq!(placed, "b");
    let on_a: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(format!("tenant_{moved}"))
        .fetch_one(&mut home_conn)
        .await
        .unwrap();
    assert_eq!(on_a, 0, "the source database is dropped");
    let b_url = second.url().rsplit_once('/').unwrap().0.to_owned();
    let mut moved_db = sqlx::PgConnection::connect(&format!("{b_url}/tenant_{moved}"))
        .await
        .unwrap();
    let titles: Vec<String> = sqlx::query_scalar("SELECT title FROM notes")
        .fetch_all(&mut moved_db)
        .await
        .unwrap();
    assert!(titles.len() >= 101);
    for title in moved_seen
        .written
        .iter()
        .chain(["moved-after-failed-move".to_owned()].iter())
    {
        assert!(titles.contains(title), "acknowledged write {title} is lost");
    }
    for base in &bases {
        let res: Value = http
            .get(format!("{base}/api/notes?limit=1000"))
            .header("x-tenant-id", "moved")
            .json_body()
            .await;
        assert_eq!(
            res["total"].as_u64().unwrap() as usize,
            titles.len(),
            "{base} routes to b"
        );
    }
    drop(moved_db);
    drop(b);
    drop(one);
    drop(two);
    // The tenant database on `b` goes with the cluster.
    drop(second);
}

/// Whether database `name` exists on the server at `url`.
async fn has_database(url: &str, name: &str) -> bool {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// The tenant's `tenancy.moving` flag, if set.
fn moving_flag(cli: &Cli, tenant: &str) -> Option<Value> {
    let list = cli.json(&["--json", "config", "list", tenant]);
    list.get("tenancy.moving").cloned()
}

#[tokio::test]
async fn an_interrupted_move_is_finished_or_rolled_back() {
    let home = PgTestDb::new().await;
    let second = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let mut cli = Cli::with_url(&home.url);
    std::fs::write(cli.path("tenancy.yaml"), yaml(&[("a", &home.url)])).unwrap();
    let id = id_of(&cli.create("stuck", "S"));
    home.track_tenant(&id);
    let db = format!("tenant_{id}");
    let base_a = home.url.rsplit_once('/').unwrap().0.to_owned();
    let base_b = second.url().rsplit_once('/').unwrap().0.to_owned();
    let mut conn = sqlx::PgConnection::connect(&format!("{base_a}/{db}"))
        .await
        .unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, title) VALUES ($1, 'kept')")
        .bind(&id)
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    std::fs::write(
        cli.path("tenancy.yaml"),
        yaml(&[("a", &home.url), ("b", &second.url())]),
    )
    .unwrap();
    cli.env.retain(|(k, _)| k != "DATABASE_URL");
    cli.env.push(("DATABASE_URL".into(), home.url.clone()));

    // Nothing to resume.
    let out = cli.ok(&["tenants", "move", "stuck", "--resume"]);
    assert!(out.contains("nothing to resume"), "{out}");

    // A crash in the middle of the copy: the flag is set, writes are paused
    // on `a`, a partial copy exists on `b`, the placement is still `a`.
    cli.ok(&[
        "config",
        "set",
        "stuck",
        "tenancy.moving",
        r#"{"from": "a", "to": "b", "since": "2026-01-01T00:00:00Z"}"#,
    ]);
    let mut a = sqlx::PgConnection::connect(&home.url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{db}\" SET default_transaction_read_only = on"
    )))
    .execute(&mut a)
    .await
    .unwrap();
    let mut b = sqlx::PgConnection::connect(&second.url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
        .execute(&mut b)
        .await
        .unwrap();
    let out = cli.ok(&["tenants", "move", "stuck", "--resume"]);
    assert!(out.contains("rolled back") && out.contains("`a`"), "{out}");
    assert!(
        !has_database(&second.url(), &db).await,
        "partial copy dropped"
    );
    assert_eq!(moving_flag(&cli, "stuck"), None, "pause cleared");
    let mut conn = sqlx::PgConnection::connect(&format!("{base_a}/{db}"))
        .await
        .unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, title) VALUES ($1, 'after rollback')")
        .bind(&id)
        .execute(&mut conn)
        .await
        .expect("writes resumed on a");
    drop(conn);

    // A move whose pause cannot be cleared (the config store refuses the
    // delete) says so and fails, instead of leaving the tenant at 503.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF OLD.key = 'tenancy.moving' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN OLD; END $$; \
         CREATE TRIGGER refuse_delete BEFORE DELETE ON tenancy_config FOR EACH ROW EXECUTE FUNCTION refuse_delete()",
    )
    .execute(&mut a)
    .await
    .unwrap();
    let err = cli.fail(&["tenants", "move", "stuck", "--to-server", "b"]);
    assert!(
        err.contains("paused") && err.contains("--resume") && err.contains("refused by the test"),
        "{err}"
    );
    assert!(moving_flag(&cli, "stuck").is_some());
    sqlx::raw_sql("DROP TRIGGER refuse_delete ON tenancy_config")
        .execute(&mut a)
        .await
        .unwrap();
    // The placement switched already: resume finishes the move.
    let out = cli.ok(&["tenants", "move", "stuck", "--resume"]);
    assert!(out.contains("finished") && out.contains("`b`"), "{out}");
    assert_eq!(moving_flag(&cli, "stuck"), None);
    assert!(!has_database(&home.url, &db).await, "source dropped");
    let mut conn = sqlx::PgConnection::connect(&format!("{base_b}/{db}"))
        .await
        .unwrap();
    let titles: Vec<String> = sqlx::query_scalar("SELECT title FROM notes ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(titles, ["kept", "after rollback"]);
    drop(conn);
    drop(a);
    drop(b);
    drop(second);
}
