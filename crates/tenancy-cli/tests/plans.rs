//! Plans through the binary (SPEC E3, E4): row quotas on CRUD creates
//! (exactly N admitted under parallel creates), the monthly request quota,
//! usage metered by `tenancy serve` and reported by `tenancy usage` and
//! the admin API, summed once across two servers, one of them killed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cli, PgTestDb, Sending, admin_call, serve};
use serde_json::{Value, json};

const PLANS: &str = "tenancy:
  plans:
    free:
      features: []
      limits: {rows.notes: 7, requests_per_month: 1000000, jobs_concurrency: 1}
    tiny:
      limits: {requests_per_month: 5}
";

fn with_plans(cli: &Cli) {
    std::fs::write(cli.path("tenancy.yaml"), PLANS).unwrap();
}

async fn create_note(
    http: &reqwest::Client,
    base: &str,
    tenant: &str,
    title: &str,
) -> (u16, Value) {
    let res = http
        .post(format!("{base}/api/notes"))
        .header("x-tenant-id", tenant)
        .json(&json!({ "title": title }))
        .sent()
        .await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn quotas(cli: Cli) {
    with_plans(&cli);
    cli.ok(&[
        "tenants", "create", "--slug", "acme", "--name", "Acme", "--plan", "free",
    ]);
    cli.ok(&[
        "tenants", "create", "--slug", "other", "--name", "Other", "--plan", "free",
    ]);
    cli.ok(&[
        "tenants", "create", "--slug", "small", "--name", "Small", "--plan", "tiny",
    ]);
    let server = serve(&cli);
    let base = server.base.clone();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    // 40 creates at once against a quota of 7: exactly 7 are written.
    let creates = (0..40).map(|i| {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move { create_note(&http, &base, "acme", &format!("n{i}")).await })
    });
    let mut created = 0;
    for answer in futures_join(creates).await {
        let (status, body) = answer;
        match status {
            201 => created += 1,
            403 => {
                assert_eq!(body["code"], "quota_exceeded", "{body}");
                assert_eq!(body["limit"], 7, "{body}");
                assert_eq!(body["limit_name"], "rows.notes", "{body}");
                assert!(body["used"].as_u64().unwrap() >= 7, "{body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 7, "a quota of 7 admits exactly 7");
    let listed = http
        .get(format!("{base}/api/notes"))
        .header("x-tenant-id", "acme")
        .json_body()
        .await;
    assert_eq!(
        listed["total"], 7,
        "nothing of a refused create is left: {listed}"
    );
    // Another tenant's quota is its own.
    assert_eq!(create_note(&http, &base, "other", "mine").await.0, 201);

    // A delete frees a place; an override raises the limit at once.
    let first = listed["items"][0]["id"].as_i64().unwrap();
    let res = http
        .delete(format!("{base}/api/notes/{first}"))
        .header("x-tenant-id", "acme")
        .sent()
        .await;
    assert_eq!(res.status(), 204);
    assert_eq!(create_note(&http, &base, "acme", "again").await.0, 201);
    let (status, body) = create_note(&http, &base, "acme", "one too many").await;
    assert_eq!((status, body["used"].as_u64()), (403, Some(7)), "{body}");
    cli.ok(&["config", "set", "acme", "limits.rows.notes", "8"]);
    let started = Instant::now();
    loop {
        let (status, _) = create_note(&http, &base, "acme", "raised").await;
        if status == 201 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the override was not seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Bad overrides are refused before they are written.
    let refused = cli.fail(&["config", "set", "acme", "limits.rows.notes", "\"many\""]);
    assert!(refused.contains("whole number"), "{refused}");
    cli.fail(&["config", "set", "acme", "limits.rows.notes", "--", "-1"]);
    cli.fail(&["config", "set", "acme", "limits.seats_galore", "3"]);
    let (status, problem) = admin_call(
        &http,
        format!("{base}/admin/tenants/acme/config/limits.requests_per_month"),
        "PUT",
        Some(json!("lots")),
    )
    .await;
    assert_eq!(status, 422, "{problem}");

    // The monthly request quota: 5 requests, then 403 with limit and used.
    for i in 0..5 {
        let res = http
            .get(format!("{base}/api/notes"))
            .header("x-tenant-id", "small")
            .sent()
            .await;
        assert_eq!(res.status(), 200, "request {i}");
    }
    let body = http
        .get(format!("{base}/api/notes"))
        .header("x-tenant-id", "small")
        .json_body()
        .await;
    assert_eq!(body["code"], "quota_exceeded", "{body}");
    assert_eq!(
        (body["limit"].as_u64(), body["used"].as_u64()),
        (Some(5), Some(5))
    );
    // Raised by an override: admitted at once.
    cli.ok(&["config", "set", "small", "limits.requests_per_month", "6"]);
    let started = Instant::now();
    loop {
        let res = http
            .get(format!("{base}/api/notes"))
            .header("x-tenant-id", "small")
            .sent()
            .await;
        if res.status() == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The plan's jobs_concurrency is in the queue, where claims read it;
    // an override replaces it at once.
    assert_eq!(job_limit(&cli, "acme").await, Some(1));
    cli.ok(&["config", "set", "acme", "limits.jobs_concurrency", "4"]);
    assert_eq!(job_limit(&cli, "acme").await, Some(4));
    cli.ok(&["config", "unset", "acme", "limits.jobs_concurrency"]);
    assert_eq!(job_limit(&cli, "acme").await, Some(1));
    assert_eq!(job_limit(&cli, "small").await, None, "tiny sets none");

    // What was used, through the admin API (this server flushes first).
    let (status, report) = admin_call(
        &http,
        format!("{base}/admin/tenants/acme/usage"),
        "GET",
        None,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    let acme_id = cli.json(&["--json", "tenants", "show", "acme"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let totals = &report["totals"][&acme_id];
    assert_eq!(totals["rows_created"], 9, "{report}");
    assert!(totals["requests_4xx"].as_i64().unwrap() >= 33, "{report}");
    assert_eq!(report["rows"][0]["tenant_id"], acme_id.as_str());
    for bad in [
        "from=2026-12-02&to=2026-12-01",
        "from=yesterday",
        "to=2026-13-01",
        "nope=1",
    ] {
        let (status, problem) = admin_call(
            &http,
            format!("{base}/admin/tenants/acme/usage?{bad}"),
            "GET",
            None,
        )
        .await;
        assert_eq!(
            (status, &problem["code"]),
            (422, &json!("invalid_query")),
            "{bad}: {problem}"
        );
    }
    let (status, _) = admin_call(
        &http,
        format!("{base}/admin/tenants/ghost/usage"),
        "GET",
        None,
    )
    .await;
    assert_eq!(status, 404);

    // The CLI reads the same store.
    let csv = cli.ok(&["usage", "--csv", "--tenant", "acme"]);
    assert!(csv.starts_with("tenant_id,hour,metric,value\n"), "{csv}");
    assert!(csv.contains(",rows_created,9\n"), "{csv}");
    let json = cli.json(&["--json", "usage", "--tenant", "small"]);
    assert_eq!(json["totals"].as_object().unwrap().len(), 1, "{json}");
    let refused = cli.fail(&["usage", "--from", "2026-12-02", "--to", "2026-12-01"]);
    assert!(refused.contains("not before"), "{refused}");
    drop(server);
}

/// `tenant`'s own limit of running jobs in the queue's table.
async fn job_limit(cli: &Cli, tenant: &str) -> Option<i64> {
    let id = cli.json(&["--json", "tenants", "show", tenant])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    const SQL: &str =
        "SELECT CAST(max_running AS BIGINT) FROM tenancy_job_queues WHERE tenant_id = $1";
    match cli.env.iter().find(|(k, _)| k == "DATABASE_URL") {
        Some((_, url)) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let n: Option<Option<i64>> = sqlx::query_scalar(SQL)
                .bind(&id)
                .fetch_optional(&pool)
                .await
                .unwrap();
            pool.close().await;
            n.flatten()
        }
        None => {
            let url = format!("sqlite://{}", cli.path("tenancy.db").display());
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            let n: Option<Option<i64>> = sqlx::query_scalar(SQL)
                .bind(&id)
                .fetch_optional(&pool)
                .await
                .unwrap();
            pool.close().await;
            n.flatten()
        }
    }
}

/// Awaits every task.
async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test]
async fn quotas_and_usage_on_sqlite() {
    quotas(Cli::sqlite()).await;
}

#[tokio::test]
async fn quotas_and_usage_on_postgres() {
    let db = PgTestDb::new().await;
    quotas(Cli::with_url(&db.url)).await;
}

#[tokio::test]
async fn row_quotas_hold_per_schema() {
    let db = PgTestDb::new().await;
    row_quota_in_own_storage(Cli::with_url(&db.url).strategy("schema")).await;
}

#[tokio::test]
async fn row_quotas_hold_per_sqlite_file() {
    row_quota_in_own_storage(Cli::sqlite().strategy("database")).await;
}

/// 20 parallel creates against a quota of 7 in a tenant's own schema or
/// file: exactly 7 are written.
async fn row_quota_in_own_storage(cli: Cli) {
    with_plans(&cli);
    cli.ok(&[
        "tenants", "create", "--slug", "acme", "--name", "Acme", "--plan", "free",
    ]);
    let server = serve(&cli);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let creates = (0..20).map(|i| {
        let (http, base) = (http.clone(), server.base.clone());
        tokio::spawn(async move { create_note(&http, &base, "acme", &format!("n{i}")).await.0 })
    });
    let statuses = futures_join(creates).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        7,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 403),
        "{statuses:?}"
    );
}

/// The `requests` total of `tenant` in the store, read by the CLI.
fn stored_requests(cli: &Cli, tenant: &str) -> i64 {
    let report = cli.json(&["--json", "usage", "--tenant", tenant]);
    report["totals"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .map(|t| t["requests"].as_i64().unwrap_or(0))
        .unwrap_or(0)
}

async fn hit(http: &reqwest::Client, base: &str, n: usize) {
    for _ in 0..n {
        let res = http
            .get(format!("{base}/api/notes"))
            .header("x-tenant-id", "acme")
            .sent()
            .await;
        assert_eq!(res.status(), 200);
    }
}

/// Two servers on one PostgreSQL: their counts are summed once; one killed
/// with SIGKILL loses only what it had not flushed.
#[tokio::test]
async fn two_servers_meter_once_and_a_killed_one_loses_only_its_unflushed_counts() {
    let db = PgTestDb::new().await;
    let mut cli = Cli::with_url(&db.url);
    cli.ok(&["tenants", "create", "--slug", "acme", "--name", "Acme"]);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // A flushes every second; B only when asked (a report) or stopped.
    cli.env
        .push(("TENANCY__USAGE__FLUSH_SECS".into(), "1".into()));
    let a = serve(&cli);
    cli.env.retain(|(k, _)| k != "TENANCY__USAGE__FLUSH_SECS");
    cli.env
        .push(("TENANCY__USAGE__FLUSH_SECS".into(), "3600".into()));
    let mut b = serve(&cli);

    hit(&http, &a.base, 10).await;
    hit(&http, &b.base, 7).await;
    // B flushes before it reports.
    let (status, _) = admin_call(
        &http,
        format!("{}/admin/tenants/acme/usage", b.base),
        "GET",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let wait_for = |expected: i64| {
        let started = Instant::now();
        loop {
            let stored = stored_requests(&cli, "acme");
            if stored == expected {
                return;
            }
            assert!(stored < expected, "counted twice: {stored} > {expected}");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "stored {stored}, expected {expected}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for(17);

    // B counts 5 more and is killed before it flushes them: they are lost,
    // and nothing else is.
    hit(&http, &b.base, 5).await;
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    hit(&http, &a.base, 3).await;
    wait_for(20);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        stored_requests(&cli, "acme"),
        20,
        "A's flushes add nothing twice"
    );

    // A stopped gracefully (SIGTERM) flushes what it counted last.
    let c = serve(&cli);
    hit(&http, &c.base, 2).await;
    let mut c = c;
    let status = Command::new("kill")
        .args(["-TERM", &c.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    c.child.wait().unwrap();
    wait_for(22);
    drop(a);
}

/// A trial ending `secs` from now, as `--trial-ends-at` takes it.
fn trial_in(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339()
}

async fn status_of(http: &reqwest::Client, base: &str, tenant: &str) -> (u16, Value) {
    let res = http
        .get(format!("{base}/api/notes"))
        .header("x-tenant-id", tenant)
        .sent()
        .await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Waits until `check` holds (at most `secs` seconds).
async fn eventually(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(secs), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn trials(mut cli: Cli, servers: usize) {
    with_plans(&cli);
    cli.env
        .push(("TENANCY__JOBS__POLL_MS".into(), "100".into()));
    let end = trial_in(3);
    cli.ok(&[
        "tenants",
        "create",
        "--slug",
        "trier",
        "--name",
        "Trier",
        "--trial-ends-at",
        &end,
    ]);
    let shown = cli.json(&["--json", "tenants", "show", "trier"]);
    assert!(shown["trial_ends_at"].is_string(), "{shown}");
    let bad = cli.fail(&[
        "tenants",
        "create",
        "--slug",
        "bad",
        "--name",
        "B",
        "--trial-ends-at",
        "soon",
    ]);
    assert!(bad.contains("RFC 3339"), "{bad}");
    let running: Vec<_> = (0..servers).map(|_| serve(&cli)).collect();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for server in &running {
        assert_eq!(status_of(&http, &server.base, "trier").await.0, 200);
    }
    // From the moment the trial ends, every server refuses the tenant.
    let end_at = chrono::DateTime::parse_from_rfc3339(&end).unwrap();
    let wait = (end_at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    for server in &running {
        let (status, body) = status_of(&http, &server.base, "trier").await;
        assert_eq!(status, 403, "{body}");
        assert!(
            body["code"] == "trial_expired" || body["code"] == "tenant_not_active",
            "{body}"
        );
    }
    // The lifecycle suspends it (once, whichever server's worker runs it),
    // with the reason, an event and an audit entry.
    eventually(10, "the trial's end was not recorded", async || {
        let t = cli.json(&["--json", "tenants", "show", "trier"]);
        t["status"] == "suspended"
    })
    .await;
    let t = cli.json(&["--json", "tenants", "show", "trier"]);
    assert_eq!(t["status_reason"], "trial_expired", "{t}");
    let audit = cli.ok(&["audit", "--tenant", "trier"]);
    assert_eq!(audit.matches("tenant.trial_ended").count(), 1, "{audit}");
    let (status, body) = status_of(&http, &running[0].base, "trier").await;
    assert_eq!((status, &body["code"]), (403, &json!("tenant_not_active")));
    // Activated after choosing a plan: the ended trial is cleared, served.
    cli.ok(&["tenants", "update", "trier", "--plan", "free"]);
    cli.ok(&["tenants", "activate", "trier"]);
    let t = cli.json(&["--json", "tenants", "show", "trier"]);
    assert!(t.get("trial_ends_at").is_none(), "{t}");
    eventually(3, "the activated tenant is served", async || {
        status_of(&http, &running[0].base, "trier").await.0 == 200
    })
    .await;
    drop(running);
}

#[tokio::test]
async fn a_trial_ends_at_once_on_sqlite() {
    trials(Cli::sqlite(), 1).await;
}

#[tokio::test]
async fn a_trial_ends_at_once_on_every_server_on_postgres() {
    let db = PgTestDb::new().await;
    trials(Cli::with_url(&db.url), 2).await;
}

#[tokio::test]
async fn a_trial_can_fall_back_to_a_plan() {
    let cli = Cli::sqlite();
    std::fs::write(
        cli.path("tenancy.yaml"),
        "tenancy:
  plans:
    pro:
      features: [exports]
    starter:
      limits: {rows.notes: 1}
  lifecycle:
    trial_fallback_plan: starter
  jobs:
    poll_ms: 100
",
    )
    .unwrap();
    let end = trial_in(2);
    cli.ok(&[
        "tenants",
        "create",
        "--slug",
        "trier",
        "--name",
        "T",
        "--plan",
        "pro",
        "--trial-ends-at",
        &end,
    ]);
    let server = serve(&cli);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    assert_eq!(create_note(&http, &server.base, "trier", "a").await.0, 201);
    assert_eq!(create_note(&http, &server.base, "trier", "b").await.0, 201);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Served, on the fallback plan's limits at once.
    let (status, body) = create_note(&http, &server.base, "trier", "c").await;
    assert_eq!(
        (status, &body["code"]),
        (403, &json!("quota_exceeded")),
        "{body}"
    );
    assert_eq!(status_of(&http, &server.base, "trier").await.0, 200);
    eventually(
        10,
        "the tenant was not moved to the fallback plan",
        async || cli.json(&["--json", "tenants", "show", "trier"])["plan"] == "starter",
    )
    .await;
    let t = cli.json(&["--json", "tenants", "show", "trier"]);
    assert_eq!(t["status"], "active");
    assert!(t.get("trial_ends_at").is_none(), "{t}");
    assert!(
        cli.ok(&["audit", "--tenant", "trier"])
            .contains("tenant.trial_ended")
    );
    // A fallback plan that does not exist is refused at start.
    std::fs::write(
        cli.path("tenancy.yaml"),
        "tenancy:\n  lifecycle:\n    trial_fallback_plan: ghost\n",
    )
    .unwrap();
    let err = cli.fail(&["tenants", "list"]);
    assert!(err.contains("lifecycle.trial_fallback_plan"), "{err}");
}

/// Storage is sampled (`usage.storage_sample_secs`) under each strategy
/// and reported as `storage_bytes`, the hour's largest sample.
async fn storage_sampled(cli: Cli) -> String {
    let mut cli = cli;
    cli.env
        .push(("TENANCY__USAGE__STORAGE_SAMPLE_SECS".into(), "1".into()));
    let acme = cli.create("acme", "Acme");
    let server = serve(&cli);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for i in 0..3 {
        let (status, body) = create_note(
            &http,
            &server.base,
            "acme",
            &format!("a note of some length {i}"),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let id = acme["id"].as_str().unwrap().to_owned();
    let mut bytes = 0;
    eventually(15, "no storage sample was reported", async || {
        let (status, report) = admin_call(
            &http,
            format!("{}/admin/tenants/acme/usage", server.base),
            "GET",
            None,
        )
        .await;
        assert_eq!(status, 200, "{report}");
        bytes = report["totals"][&id]["storage_bytes"].as_i64().unwrap_or(0);
        bytes > 0
    })
    .await;
    // Row level counts the rows' text (three titles of 24 characters and
    // their other columns); the other strategies whole tables or files.
    assert!(bytes >= 72, "{bytes}");
    id
}

#[tokio::test]
async fn storage_is_sampled_on_sqlite_row_level_and_files() {
    storage_sampled(Cli::sqlite()).await;
    storage_sampled(Cli::sqlite().strategy("database")).await;
}

#[tokio::test]
async fn storage_is_sampled_on_postgres_row_level_schema_and_database() {
    let db = PgTestDb::new().await;
    storage_sampled(Cli::with_url(&db.url)).await;
    let db = PgTestDb::new().await;
    storage_sampled(Cli::with_url(&db.url).strategy("schema")).await;
    let db = PgTestDb::new().await;
    let id = storage_sampled(Cli::with_url(&db.url).strategy("database")).await;
    // The tenant's database (and its role) go with the test's.
    db.track_tenant(&id);
}
