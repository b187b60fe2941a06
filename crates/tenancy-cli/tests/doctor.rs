//! `tenancy doctor` as an operator runs it (exit codes 0, 1, 2 and
//! `--json`), `tenancy migrate` under row level, and `tenancy serve`'s
//! checks at start (SPEC G1, G3).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN_TOKEN, Cli, PgTestDb, serve};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection};

const SECRET: &str = "doctor-test-secret-0123456789abcdef";

/// `tenancy doctor --json`: the report and the exit code.
fn doctor(cli: &Cli) -> (Value, i32) {
    let out = cli.run(&["--json", "doctor"]);
    let code = out.status.code().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (report, code)
}

fn checks(report: &Value) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            for key in ["severity", "detail", "fix"] {
                assert!(f[key].is_string(), "{key}: {f}");
            }
            (
                f["check"].as_str().unwrap().to_owned(),
                f["object"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn chrono_like_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn pair(check: &str, object: &str) -> (String, String) {
    (check.to_owned(), object.to_owned())
}

#[tokio::test]
async fn sqlite_doctor_exit_codes_and_fixes() {
    let mut cli = Cli::sqlite();
    cli.env
        .push(("TENANCY__AUTH__JWT_SECRET".into(), SECRET.into()));
    cli.create("acme", "Acme");
    cli.ok(&["domains", "add", "acme", "shop.acme.test", "--verified"]);

    // Built by the toolkit: clean, exit 0.
    let (report, code) = doctor(&cli);
    assert_eq!((checks(&report), code), (vec![], 0), "{report}");
    assert_eq!(report["checked"]["domains"], 1);
    assert!(cli.ok(&["doctor"]).contains("0 finding(s)"));

    // Without authentication: open_tenant_routes, exit 1.
    let open = Cli {
        dir: tempfile::tempdir().unwrap(),
        env: Vec::new(),
    };
    let (report, code) = doctor(&open);
    assert_eq!(
        checks(&report),
        [pair("open_tenant_routes", "tenancy serve")]
    );
    assert_eq!(code, 1);

    // A domain whose tenant was deleted with SQLite's foreign keys off.
    let url = format!("sqlite://{}", cli.path("tenancy.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("PRAGMA foreign_keys = OFF; DELETE FROM tenancy_tenants WHERE slug = 'acme'")
        .execute(&mut db)
        .await
        .unwrap();
    let (report, code) = doctor(&cli);
    assert_eq!(checks(&report), [pair("domain_orphan", "shop.acme.test")]);
    assert_eq!(code, 1);
    let fix = report["findings"][0]["fix"].as_str().unwrap().to_owned();
    sqlx::raw_sql(AssertSqlSafe(fix))
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    assert_eq!(doctor(&cli).1, 0);

    // The main file (every tenant's rows) readable by others.
    use std::os::unix::fs::PermissionsExt;
    let main = cli.path("tenancy.db");
    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (report, code) = doctor(&cli);
    assert_eq!(
        checks(&report),
        [pair("sqlite_file_mode", "tenancy.db")],
        "{report}"
    );
    assert_eq!(
        (report["findings"][0]["severity"].as_str(), code),
        (Some("critical"), 1)
    );
    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(doctor(&cli).1, 0);
}

#[test]
fn a_doctor_that_cannot_check_exits_2() {
    let cli = Cli::with_url("postgres://postgres@127.0.0.1:1/nothing_here");
    let out = cli.run(&["--json", "doctor"]);
    assert_eq!(out.status.code(), Some(2));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["error"].as_str().unwrap().contains("127.0.0.1:1"),
        "{report}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not check"));
    let citus = Cli::sqlite().run(&["doctor", "--citus"]);
    assert_eq!(citus.status.code(), Some(2), "--citus needs PostgreSQL");
}

/// Row level on PostgreSQL through the binary, connected as the superuser
/// `postgres`: `tenancy migrate` applies the app's migrations to the shared
/// tables (a migration registers its table); the doctor is clean; the CRUD
/// routes' transactions run as the request role; and a defect made by
/// hand is printed at start, or refused with server.refuse_unsafe_start.
#[tokio::test]
async fn postgres_row_level_migrate_doctor_and_serve() {
    let db = PgTestDb::new().await;
    let mut cli = Cli::with_url(&db.url);
    cli.env
        .push(("TENANCY__AUTH__JWT_SECRET".into(), SECRET.into()));
    let migrations = cli.path("migrations");
    std::fs::create_dir(&migrations).unwrap();
    std::fs::write(
        migrations.join("0001_projects.sql"),
        "CREATE TABLE projects (tenant_id text NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY, \
         name text NOT NULL, PRIMARY KEY (tenant_id, id));\nSELECT tenancy_register_table('projects');\n",
    )
    .unwrap();
    let dir = migrations.to_str().unwrap();
    let out = cli.ok(&["migrate", "--dir", dir]);
    assert!(out.contains("shared tables: version 0 -> 1"), "{out}");
    let again = cli.json(&["--json", "migrate", "--dir", dir]);
    assert_eq!(again["shared"], json!({"from": 1, "to": 1, "applied": 0}));
    let (report, code) = doctor(&cli);
    assert_eq!((checks(&report), code), (vec![], 0), "{report}");
    assert_eq!(report["checked"]["tenant_tables"], 2, "notes and projects");

    // A note's body set by a trigger to the role the insert ran as.
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION note_role() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN NEW.body := current_user; RETURN NEW; END $$; \
         CREATE TRIGGER note_role BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION note_role()",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    cli.create("acme", "Acme");
    {
        let server = serve(&cli);
        // auth.required (the default with a secret): a token naming acme.
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": "u1", "tenants": ["acme"], "exp": chrono_like_now() + 300}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let created: Value = reqwest::Client::new()
            .post(format!("{}/api/notes", server.base))
            .header("x-tenant-id", "acme")
            .bearer_auth(token)
            .json(&json!({"title": "t"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(created["body"], "tenancy_request", "{created}");
    }

    sqlx::raw_sql("ALTER TABLE projects DISABLE ROW LEVEL SECURITY")
        .execute(&mut admin)
        .await
        .unwrap();
    let (report, code) = doctor(&cli);
    assert_eq!(
        (checks(&report), code),
        (vec![pair("rls_disabled", "projects")], 1)
    );
    let serve_args = [
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--admin-token",
        ADMIN_TOKEN,
    ];
    let mut refusing = Cli::with_url(&db.url);
    refusing
        .env
        .push(("TENANCY__SERVER__REFUSE_UNSAFE_START".into(), "true".into()));
    let out = refusing.run(&serve_args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("CRITICAL rls_disabled projects") && stderr.contains("refuse_unsafe_start"),
        "{stderr}"
    );
    admin.close().await.unwrap();
}

/// Schema and database strategies as the binary builds them are clean:
/// pending-pool members' schemas are no orphans, and each tenant database
/// is reachable by its own role only.
#[tokio::test]
async fn schema_and_database_strategies_built_by_the_binary_are_clean() {
    let db = PgTestDb::new().await;
    let mut cli = Cli::with_url(&db.url).strategy("schema");
    cli.env
        .push(("TENANCY__AUTH__JWT_SECRET".into(), SECRET.into()));
    cli.env
        .push(("TENANCY__LIFECYCLE__PENDING_POOL".into(), "2".into()));
    cli.ok(&["tenants", "pool", "fill"]);
    cli.create("acme", "Acme");
    let (report, code) = doctor(&cli);
    assert_eq!((checks(&report), code), (vec![], 0), "{report}");
    // acme claimed one member's schema; the other member waits in the pool.
    assert_eq!(report["checked"]["schemas"], 2, "{report}");
    assert_eq!(report["checked"]["tenants"], 2, "{report}");

    let other = PgTestDb::new().await;
    let mut cli = Cli::with_url(&other.url).strategy("database");
    cli.env
        .push(("TENANCY__AUTH__JWT_SECRET".into(), SECRET.into()));
    let acme = cli.create("acme", "Acme");
    other.track_tenant(&common::id_of(&acme));
    let (report, code) = doctor(&cli);
    assert_eq!((checks(&report), code), (vec![], 0), "{report}");
    assert_eq!(report["checked"]["tenant_roles"], 1, "{report}");
}
