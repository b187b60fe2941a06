//! Whole-tenant archives and purges (P4) through the real binary:
//! export → import → export across strategies and databases gives the same
//! table data; a tampered archive, a version mismatch or a key conflict is
//! refused and leaves nothing behind; a purge removes everything and a scan
//! proves it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{Cli, PgTestDb, id_of, strs};
use serde_json::Value;
use sqlx::Connection;

/// The manifest of an archive.
fn manifest(path: &Path) -> Value {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("manifest.json") {
            return serde_json::from_reader(&mut entry).unwrap();
        }
    }
    panic!("no manifest in {}", path.display());
}

/// Every table's rows and checksum, by table name.
fn table_data(path: &Path) -> Vec<(String, u64, String)> {
    let m = manifest(path);
    let mut tables: Vec<(String, u64, String)> = m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["rows"].as_u64().unwrap(),
                t["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    tables.sort();
    tables
}

async fn sqlite_exec(cli: &Cli, file: &str, sql: &str) {
    let url = format!("sqlite://{}", cli.path(file).display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
}

fn tenants(cli: &Cli) -> Vec<String> {
    cli.json(&["tenants", "list", "--all", "--json"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn archives_round_trip_across_strategies_and_refuse_what_is_wrong() {
    // SQLite, row level: two tenants in the shared notes table.
    let lite = Cli::sqlite();
    let acme = id_of(&lite.json(&[
        "tenants", "create", "--slug", "acme", "--name", "Acme", "--plan", "pro", "--json",
    ]));
    let other = id_of(&lite.create("other", "O"));
    sqlite_exec(
        &lite,
        "tenancy.db",
        &format!(
            "INSERT INTO notes (tenant_id, title, body) VALUES \
               ('{acme}', 'ünïcode 😀', 'line\nbreak \"q\"'), ('{acme}', '', ''), ('{other}', 'theirs', 'x')"
        ),
    )
    .await;
    lite.ok(&["config", "set", "acme", "theme", "\"dark\""]);
    lite.ok(&["config", "set", "acme", "rate_limit.rps", "7"]);
    lite.ok(&[
        "domains",
        "add",
        "acme",
        "portal.acme.test",
        "--verified",
        "--primary",
    ]);
    lite.ok(&["tenants", "suspend", "acme", "--reason", "unpaid"]);
    let summary = lite.json(&[
        "tenants", "export", "acme", "--output", "acme.tar", "--json",
    ]);
    assert_eq!(summary["rows"], 2, "only acme's rows: {summary}");
    let archive = lite.path("acme.tar");
    let m = manifest(&archive);
    assert_eq!(m["format"], "tenancy-archive/1");
    assert_eq!(m["tenant"]["slug"], "acme");
    assert_eq!(m["tenant"]["status"], "suspended");
    assert_eq!(m["config"]["theme"], "dark");
    assert_eq!(m["migration_version"], 1);
    assert_eq!(m["source"]["database"], "sqlite");
    assert_eq!(m["domains"][0]["domain"], "portal.acme.test");
    assert!(!lite.path("acme.tar.partial").exists());

    // The same database: the shared keys are taken, refused with why.
    let err = lite.fail(&["tenants", "import", "acme.tar", "--slug", "acme-copy"]);
    assert!(
        err.contains("row_level") && err.contains("nothing was kept"),
        "{err}"
    );
    assert_eq!(tenants(&lite), ["acme", "other"], "nothing left behind");

    // A tampered archive: one byte of the table data changed.
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes.windows(4).position(|w| w == b"line").unwrap();
    bytes[at] = b'L';
    std::fs::write(lite.path("tampered.tar"), &bytes).unwrap();
    let err = lite.fail(&["tenants", "import", "tampered.tar", "--slug", "tam"]);
    assert!(err.contains("does not match its manifest"), "{err}");
    assert!(!err.contains("imported tenant"), "{err}");
    // Not an archive at all.
    std::fs::write(lite.path("junk.tar"), b"junk").unwrap();
    let err = lite.fail(&["tenants", "import", "junk.tar"]);
    assert!(err.contains("not a tenant archive"), "{err}");

    // Into PostgreSQL, schema per tenant.
    let db = PgTestDb::new().await;
    let pg = Cli::with_url(&db.url).strategy("schema");
    pg.ok(&["tenants", "list"]);
    // The operator vouches for the archive's domains (else they arrive
    // pending: tests/archive_hostile.rs).
    let restored = pg.json(&[
        "tenants",
        "import",
        &archive.to_string_lossy(),
        "--trust-domains",
        "--json",
    ]);
    assert_eq!(
        restored["id"],
        acme.as_str(),
        "the archived id is kept when free"
    );
    assert_eq!(restored["status"], "suspended");
    assert_eq!(restored["plan"], "pro");
    assert_eq!(
        pg.json(&["config", "get", "acme", "theme", "--json"]),
        "dark"
    );
    let domains = pg.json(&["domains", "list", "acme", "--json"]);
    assert_eq!(domains["items"][0]["domain"], "portal.acme.test");
    assert_eq!(domains["items"][0]["status"], "verified");
    assert_eq!(domains["items"][0]["primary"], true);
    pg.ok(&["tenants", "activate", "acme"]);
    let rows = pg.json(&["export", "notes", "--tenant-id", "acme"]);
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert_eq!(rows[0]["title"], "ünïcode 😀");
    pg.ok(&["tenants", "export", "acme", "--output", "pg.tar"]);
    assert_eq!(table_data(&archive), table_data(&pg.path("pg.tar")));

    // A second import of the same archive: slug taken, refused before
    // anything is made; with --slug it gets a new id and its own schema.
    let err = pg.fail(&["tenants", "import", &archive.to_string_lossy()]);
    assert!(err.contains("--slug"), "{err}");
    let twin = pg.json(&[
        "tenants",
        "import",
        &archive.to_string_lossy(),
        "--slug",
        "acme-twin",
        "--json",
    ]);
    assert_ne!(twin["id"], acme.as_str());
    let twin_domains = pg.json(&["domains", "list", "acme-twin", "--json"]);
    assert_eq!(
        twin_domains["items"],
        serde_json::json!([]),
        "a domain another tenant has is not imported"
    );

    // And back into a fresh SQLite deployment: the same table data again.
    let back = Cli::sqlite();
    back.ok(&["tenants", "list"]);
    back.ok(&["tenants", "import", &pg.path("pg.tar").to_string_lossy()]);
    back.ok(&["tenants", "export", "acme", "--output", "back.tar"]);
    assert_eq!(table_data(&archive), table_data(&back.path("back.tar")));

    // A deployment at another migration version refuses, leaving nothing.
    let v2 = PgTestDb::new().await;
    let migrations = back.path("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(
        migrations.join("0001_notes.sql"),
        "CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, tenant_id TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL DEFAULT '')",
    )
    .unwrap();
    std::fs::write(
        migrations.join("0002_tags.sql"),
        "CREATE TABLE tags (id INT PRIMARY KEY)",
    )
    .unwrap();
    let mut newer = Cli::with_url(&v2.url).strategy("schema");
    newer.env.push((
        "TENANCY__LIFECYCLE__MIGRATIONS_DIR".into(),
        migrations.to_string_lossy().into_owned(),
    ));
    let err = newer.fail(&["tenants", "import", &archive.to_string_lossy()]);
    assert!(
        err.contains("migration version 1") && err.contains("version 2"),
        "{err}"
    );
    assert!(tenants(&newer).is_empty());
    let mut conn = sqlx::PgConnection::connect(&v2.url).await.unwrap();
    let schemas: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(schemas, 0);
}

/// Foreign keys, several tables and own databases: PostgreSQL database per
/// tenant to SQLite file per tenant.
#[tokio::test]
async fn related_tables_move_between_database_strategies() {
    let db = PgTestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, files: &[(&str, &str)]| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (f, sql) in files {
            std::fs::write(d.join(f), sql).unwrap();
        }
        d.to_string_lossy().into_owned()
    };
    let pg_dir = write(
        "pg",
        &[
            (
                "0001_customers.sql",
                "CREATE TABLE customers (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, photo BYTEA)",
            ),
            (
                "0002_orders.sql",
                "CREATE TABLE orders (id BIGSERIAL PRIMARY KEY, customer_id BIGINT NOT NULL REFERENCES customers (id), total NUMERIC NOT NULL, placed DATE NOT NULL); \
               INSERT INTO customers (name) VALUES ('seeded by the migration')",
            ),
        ],
    );
    let lite_dir = write(
        "lite",
        &[
            (
                "0001_customers.sql",
                "CREATE TABLE customers (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, photo BLOB)",
            ),
            (
                "0002_orders.sql",
                "CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id INTEGER NOT NULL REFERENCES customers (id), total TEXT NOT NULL, placed TEXT NOT NULL); \
               INSERT INTO customers (name) VALUES ('seeded by the migration')",
            ),
        ],
    );
    let mut pg = Cli::with_url(&db.url).strategy("database");
    pg.env
        .push(("TENANCY__LIFECYCLE__MIGRATIONS_DIR".into(), pg_dir));
    pg.env.push((
        "TENANCY__LIFECYCLE__DEPROVISION_POLICY".into(),
        "drop".into(),
    ));
    let id = id_of(&pg.create("shop", "Shop"));
    db.track_tenant(&id);
    let base = db.url.rsplit_once('/').unwrap().0.to_owned();
    let mut conn = sqlx::PgConnection::connect(&format!("{base}/tenant_{id}"))
        .await
        .unwrap();
    sqlx::raw_sql(
        "INSERT INTO customers (name, photo) VALUES ('Ann', '\\x89504e47'), ('Bob', NULL); \
         INSERT INTO orders (customer_id, total, placed) VALUES (2, '19.99', '2024-01-31'), (3, '0.01', '2024-02-01')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);
    pg.ok(&["tenants", "export", "shop", "--output", "shop.tar"]);
    let m = manifest(&pg.path("shop.tar"));
    let order = strs(&m["tables"], "name");
    assert_eq!(order, ["customers", "orders"], "referenced tables first");
    assert_eq!(m["migration_version"], 2);

    let mut lite = Cli::sqlite().strategy("database");
    lite.env
        .push(("TENANCY__LIFECYCLE__MIGRATIONS_DIR".into(), lite_dir));
    lite.ok(&["tenants", "import", &pg.path("shop.tar").to_string_lossy()]);
    let customers = lite.json(&["export", "customers", "--tenant-id", "shop"]);
    assert_eq!(
        customers,
        serde_json::json!([
            {"id": 1, "name": "seeded by the migration", "photo": null},
            {"id": 2, "name": "Ann", "photo": "iVBORw=="},
            {"id": 3, "name": "Bob", "photo": null},
        ]),
        "the migration's seed replaced by the archive's rows, bytes intact"
    );
    let orders = lite.json(&[
        "export",
        "orders",
        "--tenant-id",
        "shop",
        "--format",
        "json",
    ]);
    assert_eq!(orders[0]["total"], "19.99");
    assert_eq!(orders[1]["placed"], "2024-02-01");
    // Purge the SQLite tenant: its file is gone and a scan says so.
    let out = lite.ok(&["tenants", "delete", "shop", "--purge", "--yes"]);
    assert!(out.contains("finds nothing left"), "{out}");
    let files: Vec<String> = std::fs::read_dir(lite.path("tenancy.db.tenants"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.is_empty(), "{files:?}");
}

#[tokio::test]
async fn purge_removes_every_trace_on_every_strategy() {
    // PostgreSQL row level, schema (with an archived schema from an earlier
    // deactivation) and database.
    for strategy in ["row_level", "schema", "database"] {
        let db = PgTestDb::new().await;
        let mut cli = Cli::with_url(&db.url).strategy(strategy);
        cli.env.push((
            "TENANCY__LIFECYCLE__DEPROVISION_POLICY".into(),
            "archive".into(),
        ));
        let gone = id_of(&cli.create("gone", "G"));
        let kept = id_of(&cli.create("kept", "K"));
        db.track_tenant(&gone);
        db.track_tenant(&kept);
        cli.ok(&["config", "set", "gone", "theme", "\"x\""]);
        let base = db.url.rsplit_once('/').unwrap().0.to_owned();
        for t in [&gone, &kept] {
            let (url, table) = match strategy {
                "row_level" => (db.url.clone(), "notes".to_owned()),
                "schema" => (db.url.clone(), format!("\"tenant_{t}\".notes")),
                _ => (format!("{base}/tenant_{t}"), "notes".to_owned()),
            };
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (tenant_id, title) VALUES ($1, 'n')"
            )))
            .bind(t)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        if strategy != "row_level" {
            // An archived copy from an earlier deactivation.
            cli.ok(&["tenants", "deactivate", "gone"]);
            cli.ok(&["tenants", "activate", "gone"]);
        }
        let err = cli.fail(&["tenants", "delete", "gone", "--purge"]);
        assert!(err.contains("--yes"), "{err}");
        let out = cli.ok(&["tenants", "delete", "gone", "--purge", "--yes"]);
        assert!(out.contains("finds nothing left"), "{strategy}: {out}");

        // Checked independently of the command's own scan.
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let like = format!("%{gone}%");
        let (schemas, roles, config, records): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname LIKE $1), \
                    (SELECT count(*) FROM pg_roles WHERE rolname LIKE $1), \
                    (SELECT count(*) FROM tenancy_config WHERE tenant_id LIKE $1), \
                    (SELECT count(*) FROM tenancy_tenants WHERE id LIKE $1)",
        )
        .bind(&like)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            (schemas, roles, config, records),
            (0, 0, 0, 0),
            "{strategy}"
        );
        let databases: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE $1")
                .bind(&like)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(databases, 0, "{strategy}");
        if strategy == "row_level" {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM notes WHERE tenant_id = $1")
                .bind(&gone)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert_eq!(left, 0);
        }
        // The other tenant is untouched.
        let rows = cli.json(&["export", "notes", "--tenant-id", "kept"]);
        assert_eq!(rows.as_array().unwrap().len(), 1, "{strategy}");
        cli.fail(&["tenants", "show", "gone"]);
        drop(conn);
    }

    // SQLite row level.
    let lite = Cli::sqlite();
    let gone = id_of(&lite.create("gone", "G"));
    let kept = id_of(&lite.create("kept", "K"));
    sqlite_exec(
        &lite,
        "tenancy.db",
        &format!("INSERT INTO notes (tenant_id, title) VALUES ('{gone}', 'a'), ('{gone}', 'b'), ('{kept}', 'c')"),
    )
    .await;
    lite.ok(&["config", "set", "gone", "k", "1"]);
    lite.ok(&["domains", "add", "gone", "gone.example.test", "--verified"]);
    let out = lite.ok(&["tenants", "delete", "gone", "--purge", "--yes"]);
    assert!(out.contains("finds nothing left"), "{out}");
    let url = format!("sqlite://{}", lite.path("tenancy.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let (notes, config, records, domains): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM notes WHERE tenant_id = ?1), \
                (SELECT count(*) FROM tenancy_config WHERE tenant_id = ?1), \
                (SELECT count(*) FROM tenancy_tenants WHERE id = ?1), \
                (SELECT count(*) FROM tenancy_domains WHERE tenant_id = ?1)",
    )
    .bind(&gone)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((notes, config, records, domains), (0, 0, 0, 0));
    assert_eq!(
        lite.json(&["export", "notes", "--tenant-id", "kept"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
