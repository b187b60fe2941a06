//! `tenancy serve` runs its tenant export as a background job (SPEC J6):
//! `POST /admin/tenants/{id}/export` is 202 with a job whose result is the
//! archive; a job queued by a server that stopped is finished by the next
//! one; the operators' view through the admin API and `tenancy jobs`; on
//! SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, Cli, PgTestDb, Sending, admin_call, serve};
use serde_json::{Value, json};

async fn wait_done(http: &reqwest::Client, base: &str, id: i64) -> Value {
    let started = Instant::now();
    loop {
        let (status, job) = admin_call(http, format!("{base}/admin/jobs/{id}"), "GET", None).await;
        assert_eq!(status, 200, "{job}");
        if job["state"] == "done" {
            return job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "job {id} not done: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `sql` on the deployment's main database (SQLite file or PostgreSQL).
async fn rewrite_result(cli: &Cli, sql: &str) {
    let url = cli
        .env
        .iter()
        .find(|(k, _)| k == "DATABASE_URL")
        .map(|(_, v)| v.clone());
    match url {
        Some(url) => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        None => {
            let url = format!("sqlite://{}", cli.path("tenancy.db").display());
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }
}

async fn scenario(cli: &mut Cli) {
    cli.env.extend([
        ("TENANCY__JOBS__POLL_MS".into(), "100".into()),
        ("TENANCY__JOBS__WORKERS".into(), "0".into()),
    ]);
    cli.create("acme", "Acme");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    // A server without workers takes the export and stops before running it.
    let idle = serve(cli);
    let res = http
        .post(format!("{}/api/notes", idle.base))
        .header("x-tenant-id", "acme")
        .json(&json!({"title": "kept in the archive"}))
        .sent()
        .await;
    assert_eq!(res.status(), 201);
    let (status, accepted) = admin_call(
        &http,
        format!("{}/admin/tenants/acme/export", idle.base),
        "POST",
        None,
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["job"].as_i64().unwrap();
    assert_eq!(accepted["result_url"], format!("/admin/jobs/{id}/result"));
    // Asked again while it waits: the same job.
    let (_, again) = admin_call(
        &http,
        format!("{}/admin/tenants/acme/export", idle.base),
        "POST",
        None,
    )
    .await;
    assert_eq!(again["job"], id);
    let (status, early) = admin_call(
        &http,
        format!("{}/admin/jobs/{id}/result", idle.base),
        "GET",
        None,
    )
    .await;
    assert_eq!((status, &early["code"]), (409, &json!("job_not_done")));
    drop(idle);

    // The next server (with workers) finishes it.
    cli.env.retain(|(k, _)| k != "TENANCY__JOBS__WORKERS");
    let server = serve(cli);
    let base = server.base.clone();
    let job = wait_done(&http, &base, id).await;
    assert!(job["result"]["bytes"].as_u64().unwrap() > 0, "{job}");
    let res = http
        .get(format!("{base}/admin/jobs/{id}/result"))
        .bearer_auth(ADMIN_TOKEN)
        .sent()
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    let archive = res.bytes().await.unwrap();
    assert_eq!(
        archive.len() as u64,
        job["result"]["bytes"].as_u64().unwrap()
    );
    // The archive is a real one: `tenancy tenants import` takes it, with
    // its note, into another deployment.
    let elsewhere = Cli::sqlite();
    let file = elsewhere.path("downloaded.tenancy");
    std::fs::write(&file, &archive).unwrap();
    let imported = elsewhere.json(&["--json", "tenants", "import", file.to_str().unwrap()]);
    assert_eq!(imported["slug"], "acme", "{imported}");
    let rows = elsewhere.ok(&["export", "notes", "--tenant-id", "acme"]);
    assert!(rows.contains("kept in the archive"), "{rows}");
    // The archive leaves the tenant's jobs out.
    let moved = elsewhere.json(&["--json", "jobs", "list"]);
    assert_eq!(moved["items"], json!([]), "{moved}");

    // A result rewritten (by hand, in the database) to name a file outside
    // the exports directory serves nothing.
    let secret = cli.path("tenancy.yaml.secret");
    std::fs::write(&secret, "not for download").unwrap();
    let rewritten = json!({"path": secret.to_str().unwrap(), "bytes": 16, "tables": 0}).to_string();
    let sql = format!("UPDATE tenancy_jobs SET result = '{rewritten}' WHERE id = {id}");
    cli.ok(&["--json", "jobs", "show", &id.to_string()]);
    rewrite_result(cli, &sql).await;
    let (status, problem) =
        admin_call(&http, format!("{base}/admin/jobs/{id}/result"), "GET", None).await;
    assert_eq!(
        (status, &problem["code"]),
        (410, &json!("result_gone")),
        "{problem}"
    );

    // The operators' view.
    let (status, list) = admin_call(
        &http,
        format!("{base}/admin/jobs?tenant=acme&state=done"),
        "GET",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"][0]["id"], id);
    assert_eq!(list["items"][0]["kind"], "tenancy.export");
    for bad in ["state=finished", "limit=0", "tenant=acme&nope=1"] {
        let (status, problem) =
            admin_call(&http, format!("{base}/admin/jobs?{bad}"), "GET", None).await;
        assert_eq!(status, 422, "{bad}: {problem}");
    }
    let (status, _) = admin_call(
        &http,
        format!("{base}/admin/jobs?tenant=ghost"),
        "GET",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, problem) =
        admin_call(&http, format!("{base}/admin/jobs/{id}/retry"), "POST", None).await;
    assert_eq!(
        (status, &problem["code"]),
        (409, &json!("invalid_transition"))
    );
    let (status, problem) = admin_call(
        &http,
        format!("{base}/admin/jobs/987654/cancel"),
        "POST",
        None,
    )
    .await;
    assert_eq!((status, &problem["code"]), (404, &json!("job_not_found")));
    let unauthenticated = http.get(format!("{base}/admin/jobs")).sent().await;
    assert_eq!(unauthenticated.status(), 401);

    let metrics = http
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .text_body()
        .await;
    for line in [
        "tenancy_jobs{kind=\"tenancy.export\",state=\"done\"} 1",
        "tenancy_job_runs_succeeded_total 1",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }

    let listed = cli.json(&["--json", "jobs", "list", "--tenant", "acme"]);
    assert_eq!(listed["items"][0]["state"], "done");
    let shown = cli.json(&["--json", "jobs", "show", &id.to_string()]);
    assert_eq!(shown["kind"], "tenancy.export");
    let stats = cli.ok(&["jobs", "stats"]);
    assert!(
        stats.contains("tenancy.export") && stats.contains("done"),
        "{stats}"
    );
    let refused = cli.fail(&["jobs", "cancel", &id.to_string()]);
    assert!(
        refused.contains("only a queued or running job"),
        "{refused}"
    );
    let audit = cli.ok(&["audit", "--tenant", "acme"]);
    assert!(audit.contains("tenant.export"), "{audit}");
    drop(server);
}

#[tokio::test]
async fn exports_run_as_jobs_on_sqlite() {
    scenario(&mut Cli::sqlite()).await;
}

#[tokio::test]
async fn exports_run_as_jobs_on_postgres() {
    let db = PgTestDb::new().await;
    scenario(&mut Cli::with_url(&db.url)).await;
}
