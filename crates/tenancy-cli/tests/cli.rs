//! The operator commands (`tenants`, `config`, `export`) driven through the
//! real binary, on SQLite (the default URL, in a temporary working
//! directory) and on PostgreSQL (a fresh database per test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Cli, PgTestDb, assert_tenant_fields, id_of, strs};
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// Every tenants subcommand, with --json parsed and checked.
fn tenants_scenario(cli: &Cli) {
    let acme = cli.json(&[
        "tenants", "create", "--slug", "acme", "--name", "Acme", "--plan", "pro", "--json",
    ]);
    assert_tenant_fields(&acme);
    assert_eq!(acme["slug"], "acme");
    assert_eq!(acme["name"], "Acme");
    assert_eq!(acme["status"], "active");
    assert_eq!(acme["plan"], "pro");
    assert_eq!(acme["metadata"], json!({}));
    let id = id_of(&acme);
    let beta = cli.create("beta", "Beta");
    assert_eq!(beta["plan"], Value::Null);

    // Refusals: duplicate slug, invalid slugs, unknown tenants.
    let err = cli.fail(&["tenants", "create", "--slug", "acme", "--name", "Again"]);
    assert!(
        err.contains("\"acme\"") && err.contains("already used"),
        "{err}"
    );
    for bad in ["Bad Slug", "x';drop"] {
        let err = cli.fail(&["tenants", "create", "--slug", bad, "--name", "X"]);
        assert!(err.contains("invalid slug"), "{bad}: {err}");
    }
    let err = cli.fail(&["tenants", "show", "nobody"]);
    assert!(
        err.contains("nobody") && err.contains("tenants list"),
        "{err}"
    );
    let err = cli.fail(&["tenants", "suspend", "x';drop table tenants;--"]);
    assert!(err.contains("no tenant"), "{err}");

    // list, show by slug and by id.
    let list = cli.json(&["tenants", "list", "--json"]);
    assert_eq!(list["total"], 2);
    let slugs = strs(&list["items"], "slug");
    assert_eq!(slugs, ["acme", "beta"]);
    assert_eq!(cli.json(&["tenants", "show", "acme", "--json"])["id"], id);
    assert_eq!(
        cli.json(&["tenants", "show", &id, "--json"])["slug"],
        "acme"
    );
    let table = cli.ok(&["tenants", "list"]);
    assert!(table.contains("acme") && table.contains("SLUG"), "{table}");

    // update
    let updated = cli.json(&[
        "tenants",
        "update",
        "acme",
        "--name",
        "Acme Corp",
        "--plan",
        "enterprise",
        "--json",
    ]);
    assert_eq!(updated["name"], "Acme Corp");
    assert_eq!(updated["plan"], "enterprise");
    assert_eq!(updated["id"], id);
    let err = cli.fail(&["tenants", "update", "acme"]);
    assert!(err.contains("nothing to update"), "{err}");

    // active → suspended → inactive → active
    let t = cli.json(&["tenants", "suspend", "acme", "--reason", "unpaid", "--json"]);
    assert_eq!(t["status"], "suspended");
    assert_eq!(t["status_reason"], "unpaid");
    let active = cli.json(&["tenants", "list", "--json"]);
    assert_eq!(
        active["total"], 1,
        "list shows active tenants only: {active}"
    );
    assert_eq!(
        cli.json(&["tenants", "list", "--all", "--json"])["total"],
        2
    );
    let t = cli.json(&["tenants", "deactivate", &id, "--json"]);
    assert_eq!(t["status"], "inactive");
    let t = cli.json(&["tenants", "activate", "acme", "--json"]);
    assert_eq!(t["status"], "active");
    assert_eq!(
        cli.json(&["tenants", "show", "acme", "--json"])["status"],
        "active"
    );

    // delete, then show fails
    let deleted = cli.json(&["tenants", "delete", "beta", "--json"]);
    assert_eq!(deleted["slug"], "beta");
    let err = cli.fail(&["tenants", "show", "beta"]);
    assert!(err.contains("beta"), "{err}");
    let err = cli.fail(&["tenants", "delete", "beta"]);
    assert!(err.contains("beta"), "{err}");
    assert_eq!(
        cli.json(&["tenants", "list", "--all", "--json"])["total"],
        1
    );
}

/// config set/get/list, with defaults from tenancy.yaml in the cwd.
fn config_scenario(cli: &Cli) {
    std::fs::write(
        cli.path("tenancy.yaml"),
        "tenancy:\n  overrides:\n    defaults:\n      theme: light\n      max_users: 10\n",
    )
    .unwrap();
    cli.ok(&["tenants", "create", "--slug", "conf", "--name", "Conf"]);

    // Defaults apply until overridden.
    assert_eq!(
        cli.json(&["config", "get", "conf", "theme", "--json"]),
        "light"
    );
    assert_eq!(cli.ok(&["config", "get", "conf", "theme"]).trim(), "light");
    assert_eq!(
        cli.json(&["config", "list", "conf", "--json"]),
        json!({ "theme": "light", "max_users": 10 })
    );

    // A plain string, JSON values, and a quoted JSON string.
    cli.ok(&["config", "set", "conf", "theme", "dark"]);
    let set = cli.json(&[
        "config",
        "set",
        "conf",
        "limits",
        r#"{"rps":5,"burst":[1,2]}"#,
        "--json",
    ]);
    assert_eq!(set["value"], json!({"rps": 5, "burst": [1, 2]}));
    cli.ok(&["config", "set", "conf", "max_users", "25"]);
    cli.ok(&["config", "set", "conf", "label", r#""42""#]);

    assert_eq!(
        cli.json(&["config", "get", "conf", "theme", "--json"]),
        "dark"
    );
    assert_eq!(
        cli.json(&["config", "get", "conf", "limits", "--json"]),
        json!({"rps": 5, "burst": [1, 2]})
    );
    assert_eq!(
        cli.json(&["config", "get", "conf", "max_users", "--json"]),
        25
    );
    assert_eq!(
        cli.json(&["config", "get", "conf", "label", "--json"]),
        "42"
    );
    assert_eq!(
        cli.json(&["config", "list", "conf", "--json"]),
        json!({
            "theme": "dark",
            "max_users": 25,
            "limits": {"rps": 5, "burst": [1, 2]},
            "label": "42",
        })
    );
    let plain = cli.ok(&["config", "list", "conf"]);
    assert!(plain.contains("theme = \"dark\""), "{plain}");

    // Removing the override brings the default back.
    let unset = cli.json(&["config", "unset", "conf", "theme", "--json"]);
    assert_eq!(unset["removed"], true);
    assert_eq!(
        cli.json(&["config", "get", "conf", "theme", "--json"]),
        "light"
    );
    assert_eq!(
        cli.json(&["config", "unset", "conf", "theme", "--json"])["removed"],
        false
    );

    // Missing keys, bad keys and unknown tenants are errors.
    let err = cli.fail(&["config", "get", "conf", "missing"]);
    assert!(err.contains("missing"), "{err}");
    let err = cli.fail(&["config", "set", "conf", "bad key!", "1"]);
    assert!(err.contains("invalid config key"), "{err}");
    let err = cli.fail(&["config", "list", "ghost"]);
    assert!(err.contains("ghost"), "{err}");
    std::fs::remove_file(cli.path("tenancy.yaml")).unwrap();
}

/// Inserts a note for `tenant` into the shared `notes` table.
async fn insert_note(url: &str, tenant: &str, title: &str) {
    if url.starts_with("postgres") {
        let mut conn = PgConnection::connect(url).await.unwrap();
        sqlx::query("INSERT INTO notes (tenant_id, title, body) VALUES ($1, $2, 'b')")
            .bind(tenant)
            .bind(title)
            .execute(&mut conn)
            .await
            .unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query("INSERT INTO notes (tenant_id, title, body) VALUES (?1, ?2, 'b')")
            .bind(tenant)
            .bind(title)
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

fn titles(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["title"].as_str().unwrap().to_owned())
        .collect()
}

fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// export of the shared notes table: only the tenant's rows.
async fn export_scenario(cli: &Cli, url: &str) {
    let red = id_of(&cli.create("red", "Red"));
    let blue = id_of(&cli.create("blue", "Blue"));
    for i in 0..3 {
        insert_note(url, &red, &format!("red-{i}")).await;
    }
    insert_note(url, &blue, "blue-0").await;

    let rows = cli.json(&["export", "notes", "--tenant-id", "red"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(titles(rows), ["red-0", "red-1", "red-2"]);
    let mut keys: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["body", "created_at", "id", "title"]);

    let out = cli.ok(&[
        "export",
        "notes",
        "--tenant-id",
        &blue,
        "--format",
        "ndjson",
    ]);
    assert_eq!(titles(&ndjson(&out)), ["blue-0"]);

    let out = cli.ok(&[
        "export",
        "notes",
        "--tenant-id",
        "red",
        "--limit",
        "2",
        "--format",
        "ndjson",
    ]);
    assert_eq!(titles(&ndjson(&out)), ["red-0", "red-1"]);

    let summary = cli.json(&[
        "export",
        "notes",
        "--tenant-id",
        "red",
        "--output",
        "red.json",
        "--json",
    ]);
    assert_eq!(summary["rows"], 3);
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(cli.path("red.json")).unwrap()).unwrap();
    assert_eq!(
        titles(file.as_array().unwrap()),
        ["red-0", "red-1", "red-2"]
    );
    assert!(!cli.path("red.json.partial").exists());

    let err = cli.fail(&["export", "nosuch", "--tenant-id", "red"]);
    assert!(err.contains("table `nosuch` does not exist"), "{err}");
    let err = cli.fail(&[
        "export",
        "notes",
        "--tenant-id",
        "red",
        "--tenant-field",
        "owner",
    ]);
    assert!(
        err.contains("column `owner` does not exist in table `notes`"),
        "{err}"
    );
    let err = cli.fail(&["export", "notes;drop", "--tenant-id", "red"]);
    assert!(err.contains("notes;drop"), "{err}");
    let err = cli.fail(&["export", "notes", "--tenant-id", "ghost"]);
    assert!(err.contains("ghost"), "{err}");
    let err = cli.fail(&[
        "export",
        "notes",
        "--tenant-id",
        "red",
        "--output",
        "no/such/dir/x.json",
    ]);
    assert!(err.contains("cannot create"), "{err}");
}

#[tokio::test]
async fn sqlite_tenants_config_and_export() {
    let cli = Cli::sqlite();
    tenants_scenario(&cli);
    assert!(
        cli.path("tenancy.db").exists(),
        "the default URL creates tenancy.db"
    );
    config_scenario(&cli);
    let url = format!("sqlite://{}", cli.path("tenancy.db").display());
    export_scenario(&cli, &url).await;
}

#[tokio::test]
async fn sqlite_database_strategy_keeps_a_file_per_tenant() {
    let cli = Cli::sqlite().strategy("database");
    let t = cli.create("solo", "Solo");
    let id = id_of(&t);
    let file = cli.path(&format!("tenancy.db.tenants/tenant_{id}.db"));
    assert!(file.exists(), "no tenant database at {}", file.display());

    // The tenant's notes (with the tenant field) and a table without it,
    // which is exported whole: the file is the tenant's.
    let url = format!("sqlite://{}", file.display());
    insert_note(&url, &id, "mine").await;
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE settings (k TEXT PRIMARY KEY, v INTEGER); INSERT INTO settings VALUES ('a', 1), ('b', 2);")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    let rows = cli.json(&["export", "notes", "--tenant-id", "solo"]);
    assert_eq!(titles(rows.as_array().unwrap()), ["mine"]);
    let rows = cli.json(&["export", "settings", "--tenant-id", "solo"]);
    assert_eq!(rows, json!([{"k": "a", "v": 1}, {"k": "b", "v": 2}]));

    let t = cli.json(&["tenants", "suspend", "solo", "--json"]);
    assert_eq!(t["status"], "suspended");
    cli.ok(&["tenants", "delete", "solo"]);
    cli.fail(&["tenants", "show", "solo"]);
}

#[test]
fn sqlite_schema_strategy_is_a_clear_error() {
    let cli = Cli::sqlite().strategy("schema");
    let err = cli.fail(&["tenants", "list"]);
    assert!(
        err.contains("schema") && err.contains("PostgreSQL"),
        "{err}"
    );
    let err = Cli::sqlite().strategy("sharded").fail(&["tenants", "list"]);
    assert!(err.contains("sharded"), "{err}");
}

// --- PostgreSQL -----------------------------------------------------------

#[tokio::test]
async fn postgres_row_level_tenants_config_and_export() {
    let db = PgTestDb::new().await;
    let cli = Cli::with_url(&db.url);
    tenants_scenario(&cli);
    config_scenario(&cli);
    export_scenario(&cli, &db.url).await;
}

#[tokio::test]
async fn postgres_schema_strategy_exports_from_the_tenant_schema() {
    let db = PgTestDb::new().await;
    let cli = Cli::with_url(&db.url).strategy("schema");
    let t = cli.create("sch", "Schema");
    let id = id_of(&t);
    let other = id_of(&cli.create("other", "O"));

    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    for (tenant, title) in [(&id, "in-schema"), (&other, "other-schema")] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO \"tenant_{tenant}\".notes (tenant_id, title) VALUES ($1, $2)"
        )))
        .bind(tenant)
        .bind(title)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE \"tenant_{id}\".prefs (id INT PRIMARY KEY, v TEXT); \
         INSERT INTO \"tenant_{id}\".prefs VALUES (1, 'x'); \
         ALTER TABLE \"tenant_{id}\".prefs OWNER TO \"tenant_{id}\";"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);

    let rows = cli.json(&["export", "notes", "--tenant-id", "sch"]);
    assert_eq!(titles(rows.as_array().unwrap()), ["in-schema"]);
    let rows = cli.json(&["export", "prefs", "--tenant-id", "sch"]);
    assert_eq!(rows, json!([{"id": 1, "v": "x"}]));
    let err = cli.fail(&["export", "prefs", "--tenant-id", "other"]);
    assert!(err.contains("table `prefs` does not exist"), "{err}");

    let t = cli.json(&["tenants", "suspend", "sch", "--json"]);
    assert_eq!(t["status"], "suspended");
    cli.ok(&["config", "set", "sch", "theme", "dark"]);
    assert_eq!(
        cli.json(&["config", "get", "sch", "theme", "--json"]),
        "dark"
    );
    cli.ok(&["tenants", "delete", "sch"]);
    cli.fail(&["tenants", "show", "sch"]);
}

#[tokio::test]
async fn postgres_database_strategy_exports_every_type() {
    let db = PgTestDb::new().await;
    let mut cli = Cli::with_url(&db.url).strategy("database");
    cli.env.push((
        "TENANCY__LIFECYCLE__DEPROVISION_POLICY".into(),
        "drop".into(),
    ));
    let t = cli.create("own", "Own");
    let id = id_of(&t);
    db.track_tenant(&id);
    let base = db.url.rsplit_once('/').map(|(b, _)| b).unwrap().to_owned();
    let tenant_url = format!("{base}/tenant_{id}");
    insert_note(&tenant_url, &id, "own-note").await;
    let mut conn = PgConnection::connect(&tenant_url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE events (id BIGSERIAL PRIMARY KEY, at TIMESTAMPTZ NOT NULL DEFAULT now(), n INT); \
         INSERT INTO events (n) VALUES (7);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);

    let rows = cli.json(&["export", "notes", "--tenant-id", "own"]);
    assert_eq!(titles(rows.as_array().unwrap()), ["own-note"]);
    // A table without the tenant field is the tenant's whole; every type
    // comes out with its value (timestamptz as UTC ISO 8601), never null.
    let out = cli.run(&["export", "events", "--tenant-id", &id]);
    assert!(out.status.success());
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["id"], 1);
    assert_eq!(rows[0]["n"], 7);
    let at = rows[0]["at"].as_str().unwrap_or_else(|| panic!("{rows}"));
    assert!(at.ends_with("+00:00") && at.len() >= 25, "{at}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("warning"), "{stderr}");
    // P5: an option without effect under this strategy is an error.
    let err = cli.fail(&[
        "export",
        "events",
        "--tenant-id",
        &id,
        "--tenant-field",
        "tenant_id",
    ]);
    assert!(
        err.contains("--tenant-field") && err.contains("no effect") && err.contains("database"),
        "{err}"
    );

    assert_eq!(
        cli.json(&["tenants", "deactivate", "own", "--json"])["status"],
        "inactive"
    );
    assert_eq!(
        cli.json(&["tenants", "activate", "own", "--json"])["status"],
        "active"
    );
    cli.ok(&["tenants", "delete", "own"]);
    cli.fail(&["tenants", "show", "own"]);
}
