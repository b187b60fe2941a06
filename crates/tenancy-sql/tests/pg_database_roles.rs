//! Database per tenant on PostgreSQL: each tenant connects as a role of its
//! own that no other role shares (SPEC G3), tenants made before roles are
//! upgraded by migrating them, and the doctor's checks of the strategy
//! (SPEC G1): clean on what the toolkit made, each hand-made defect named
//! under its check, and each finding's fix clearing it.
//!
//! Roles are cluster-wide: every test names its tenants after its own test
//! database, looks only at findings about them (other tests run on the
//! same server at the same time), and drops what it made even when it
//! fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tenancy_core::config::DeprovisionPolicy;
use tenancy_core::doctor::{Check, Finding, Report, Severity};
use tenancy_core::{IsolationStrategy, NewTenant, TenantInfo, TenantStatus};
use tenancy_sql::doctor::check_databases;
use tenancy_sql::{DatabaseServer, Migration, Migrations, PgDatabaseIsolation, TenantDb};

fn notes_migrations() -> Migrations {
    Migrations::new(vec![Migration {
        version: 1,
        name: "notes".into(),
        sql: "CREATE TABLE notes (id SERIAL PRIMARY KEY, body TEXT NOT NULL)".into(),
    }])
    .unwrap()
}

/// An active tenant `id`.
fn tenant(id: &str) -> TenantInfo {
    let mut info = NewTenant::new(&format!("s-{}", id.to_lowercase()), id)
        .unwrap()
        .id(id.parse().unwrap())
        .into_info(chrono::Utc::now());
    info.status = TenantStatus::Active;
    info
}

/// Drops, on drop (so also when the test fails), every database and role
/// whose name ends with the test's suffix.
struct Cleanup {
    suffix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let suffix = self.suffix.clone();
        common::on_own_runtime(move || async move {
            let Ok(mut admin) = PgConnection::connect(&common::admin_url()).await else {
                return;
            };
            let like = format!("%{suffix}");
            let dbs: Vec<String> = sqlx::query_scalar(
                "SELECT datname::text FROM pg_database WHERE datname LIKE $1 AND datname <> current_database()",
            )
            .bind(&like)
            .fetch_all(&mut admin)
            .await
            .unwrap_or_default();
            for db in dbs {
                let _ = sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await;
            }
            let roles: Vec<String> =
                sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1")
                    .bind(&like)
                    .fetch_all(&mut admin)
                    .await
                    .unwrap_or_default();
            for role in roles {
                let _ = sqlx::query(AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{role}\"")))
                    .execute(&mut admin)
                    .await;
            }
        });
    }
}

/// A home database, its admin pool, the strategy on it and two
/// provisioned tenants.
struct Setup {
    // Dropped first: the tenants' databases and roles go before the home.
    _cleanup: Cleanup,
    _db: common::PgTestDb,
    admin: PgPool,
    dbs: PgDatabaseIsolation,
    suffix: String,
    a: TenantInfo,
    b: TenantInfo,
}

impl Setup {
    async fn new() -> Self {
        let db = common::PgTestDb::new().await;
        let suffix = db.name[14..26].to_owned();
        let cleanup = Cleanup {
            suffix: suffix.clone(),
        };
        let admin = db.pool(4).await;
        let dbs = PgDatabaseIsolation::new(admin.clone(), notes_migrations()).pool_limits(4, 2);
        let (a, b) = (tenant(&format!("a{suffix}")), tenant(&format!("b{suffix}")));
        dbs.provision(&a).await.unwrap();
        dbs.provision(&b).await.unwrap();
        Setup {
            _cleanup: cleanup,
            _db: db,
            admin,
            dbs,
            suffix,
            a,
            b,
        }
    }

    fn servers(&self) -> Vec<DatabaseServer> {
        vec![DatabaseServer::new("default", self.admin.clone(), 1)]
    }

    /// The doctor's findings about this test's objects, checking `tenants`.
    async fn doctor_of(&self, tenants: &[TenantInfo]) -> (Vec<Finding>, Report) {
        let mut report = Report::default();
        check_databases(&self.admin, &self.servers(), tenants, &mut report)
            .await
            .unwrap();
        let mine = report
            .findings
            .iter()
            .filter(|f| f.object.ends_with(&self.suffix))
            .cloned()
            .collect();
        (mine, report)
    }

    async fn doctor(&self) -> Vec<Finding> {
        self.doctor_of(&[self.a.clone(), self.b.clone()]).await.0
    }

    /// Runs a finding's fix: each SQL line through the admin pool.
    async fn run_fix(&self, finding: &Finding) {
        for line in finding.fix.lines().filter(|l| !l.starts_with("--")) {
            sqlx::raw_sql(AssertSqlSafe(line.to_owned()))
                .execute(&self.admin)
                .await
                .unwrap_or_else(|e| panic!("fix `{line}`: {e}"));
        }
    }

    async fn admin_sql(&self, sql: &str) {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&self.admin)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

fn name(t: &TenantInfo) -> String {
    format!("tenant_{}", t.id)
}

/// Connection options for database `db` as role `user` (trust auth here).
fn as_role(db: &str, user: &str) -> PgConnectOptions {
    PgConnectOptions::from_str(&common::url_for(db))
        .unwrap()
        .username(user)
}

fn code(e: &sqlx::Error) -> String {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_else(|| format!("not a database error: {e}"))
}

/// The one finding about `object`, asserting it is the only one.
fn only(findings: &[Finding], check: Check, object: &str) -> Finding {
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0].check, check, "{findings:#?}");
    assert_eq!(findings[0].object, object, "{findings:#?}");
    findings[0].clone()
}

#[tokio::test]
async fn each_tenant_connects_as_a_role_of_its_own() {
    let s = Setup::new().await;
    let (a, b) = (name(&s.a), name(&s.b));

    // The scoped transaction runs as tenant A's role, which is nothing more.
    let tdb = TenantDb::new(s.dbs.clone());
    let mut tx = tdb.begin_for(&s.a.id).await.unwrap();
    let (user, database, superuser, bypass, createdb, createrole, inherit): (
        String,
        String,
        bool,
        bool,
        bool,
        bool,
        bool,
    ) = sqlx::query_as(
        "SELECT current_user::text, current_database()::text, rolsuper, rolbypassrls, rolcreatedb, rolcreaterole, rolinherit \
         FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!((user.as_str(), database.as_str()), (a.as_str(), a.as_str()));
    assert!(!superuser && !bypass && !createdb && !createrole && !inherit);
    sqlx::query("INSERT INTO notes (body) VALUES ('a1')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Tenant B's role, and any ordinary role (PUBLIC), cannot connect to A's
    // database; A's role can.
    let err = PgConnection::connect_with(&as_role(&a, &b))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "42501", "{err}");
    assert!(err.to_string().contains("permission denied"), "{err}");
    let plain = format!("plain_{}", s.suffix);
    s.admin_sql(&format!("CREATE ROLE \"{plain}\" LOGIN")).await;
    let err = PgConnection::connect_with(&as_role(&a, &plain))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "42501", "{err}");
    PgConnection::connect_with(&as_role(&a, &a))
        .await
        .unwrap()
        .close()
        .await
        .unwrap();

    // Everything in A's database is A's: the migrations ran as A.
    let mut in_a = PgConnection::connect_with(&as_role(&a, "postgres"))
        .await
        .unwrap();
    let owners: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_userbyid(c.relowner)::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S') ORDER BY 1",
    )
    .fetch_all(&mut in_a)
    .await
    .unwrap();
    assert_eq!(owners.len(), 3, "{owners:?}");
    assert!(owners.iter().all(|(_, o)| *o == a), "{owners:?}");
    in_a.close().await.unwrap();
    let db_owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
    )
    .bind(&a)
    .fetch_one(&s.admin)
    .await
    .unwrap();
    assert_eq!(db_owner, a);

    // Clean by the doctor, which counted them.
    let (mine, report) = s.doctor_of(&[s.a.clone(), s.b.clone()]).await;
    assert!(mine.is_empty(), "{mine:#?}");
    assert!(report.checked["databases"] >= 2 && report.checked["tenant_roles"] >= 2);

    // Drop: the database and its role go.
    s.dbs
        .deprovision(&s.a, DeprovisionPolicy::Drop)
        .await
        .unwrap();
    let role_left: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&a)
            .fetch_one(&s.admin)
            .await
            .unwrap();
    assert!(!role_left);

    // Archive: the role stays (it owns the tables inside) but cannot log
    // in, nor connect to the archive if it could.
    s.dbs
        .deprovision(&s.b, DeprovisionPolicy::Archive)
        .await
        .unwrap();
    let (login, archive, owner, connects): (bool, String, String, bool) = sqlx::query_as(
        "SELECT r.rolcanlogin, d.datname::text, pg_get_userbyid(d.datdba)::text, has_database_privilege(r.oid, d.oid, 'CONNECT') \
         FROM pg_roles r, pg_database d WHERE r.rolname = $1 AND d.datname LIKE 'archived\\_%' AND d.datname LIKE $2",
    )
    .bind(&b)
    .bind(format!("%_{}", s.b.id))
    .fetch_one(&s.admin)
    .await
    .unwrap();
    assert!(!login && !connects, "{archive}");
    assert_eq!(owner, "postgres");
    let err = PgConnection::connect_with(&as_role(&archive, &b))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "28000", "{err}");
}

#[tokio::test]
async fn tenants_made_before_roles_are_upgraded_by_migrating() {
    let s = Setup::new().await;
    // A tenant as the toolkit made them before: its database and tables
    // owned by the admin, PUBLIC may connect, no login role (here a
    // left-over NOLOGIN role with too much, as another strategy may leave).
    let old = tenant(&format!("l{}", s.suffix));
    let db = name(&old);
    s.admin_sql(&format!("CREATE DATABASE \"{db}\"")).await;
    s.admin_sql(&format!("CREATE ROLE \"{db}\" NOLOGIN CREATEDB INHERIT"))
        .await;
    let mut conn = PgConnection::connect_with(&as_role(&db, "postgres"))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE _tenancy_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL); \
         INSERT INTO _tenancy_migrations VALUES (1, 'notes', now()::text); \
         CREATE TABLE notes (id SERIAL PRIMARY KEY, body TEXT NOT NULL); \
         INSERT INTO notes (body) VALUES ('old'); \
         CREATE SCHEMA extra; CREATE TABLE extra.tags (id INT GENERATED ALWAYS AS IDENTITY, tag TEXT); \
         CREATE VIEW note_bodies AS SELECT body FROM notes; \
         CREATE TYPE mood AS ENUM ('ok'); \
         CREATE FUNCTION note_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM notes'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let all = [s.a.clone(), s.b.clone(), old.clone()];
    let (before, _) = s.doctor_of(&all).await;
    let checks: Vec<_> = before
        .iter()
        .map(|f| (f.check, f.object.as_str()))
        .collect();
    assert_eq!(
        checks,
        [
            (Check::SchemaPrivilegeLeak, db.as_str()),
            (Check::RoleBypassesRls, db.as_str())
        ],
        "{before:#?}"
    );

    // `tenancy migrate`, concurrently from two processes.
    let process_two = PgDatabaseIsolation::new(s.admin.clone(), notes_migrations());
    let (one, two) = tokio::join!(
        s.dbs.migrate_tenant(&old.id),
        process_two.migrate_tenant(&old.id)
    );
    one.unwrap();
    two.unwrap();

    let tdb = TenantDb::new(s.dbs.clone());
    let mut tx = tdb.begin_for(&old.id).await.unwrap();
    sqlx::query("INSERT INTO notes (body) VALUES ('new')")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO extra.tags (tag) VALUES ('t')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let (count, bodies, user): (i64, i64, String) = sqlx::query_as(
        "SELECT note_count(), (SELECT count(*) FROM note_bodies), current_user::text",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!((count, bodies, user.as_str()), (2, 2, db.as_str()));
    tx.commit().await.unwrap();

    // The admin's objects elsewhere stay the admin's (no REASSIGN OWNED).
    let home_owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = current_database()",
    )
    .fetch_one(&s.admin)
    .await
    .unwrap();
    assert_eq!(home_owner, "postgres");
    let (after, _) = s.doctor_of(&all).await;
    assert!(after.is_empty(), "{after:#?}");

    // A table the admin makes by hand later is the tenant's to use at
    // once, and its own after the next migration.
    let mut conn = PgConnection::connect_with(&as_role(&db, "postgres"))
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE late (id BIGSERIAL PRIMARY KEY, n INT)")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut tx = tdb.begin_for(&old.id).await.unwrap();
    sqlx::query("INSERT INTO late (n) VALUES (1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    s.dbs.migrate_tenant(&old.id).await.unwrap();
    let owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE relname = 'late'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(owner, db);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn doctor_finds_a_missing_database_and_its_fix_recreates_it() {
    let s = Setup::new().await;
    assert!(s.doctor().await.is_empty());
    let a = name(&s.a);
    s.dbs.forget_all();
    s.admin_sql(&format!("DROP DATABASE \"{a}\" WITH (FORCE)"))
        .await;
    let findings = s.doctor().await;
    let found = only(&findings, Check::MissingStorage, &a);
    assert_eq!(
        found.severity,
        Check::MissingStorage.severity(),
        "{found:?}"
    );
    // The fix: the SQL, then `tenancy migrate` (its library call).
    s.run_fix(&found).await;
    assert!(found.fix.contains("tenancy migrate"), "{}", found.fix);
    s.dbs.migrate_tenant(&s.a.id).await.unwrap();
    assert!(s.doctor().await.is_empty());
    // An inactive tenant without a database was deprovisioned on purpose.
    let mut inactive = s.b.clone();
    inactive.status = TenantStatus::Inactive;
    s.dbs.forget_all();
    s.admin_sql(&format!("DROP DATABASE \"{}\" WITH (FORCE)", name(&s.b)))
        .await;
    let (findings, _) = s.doctor_of(&[s.a.clone(), inactive]).await;
    let found = only(&findings, Check::MissingStorage, &name(&s.b));
    assert_eq!(found.severity, Severity::Info);
}

#[tokio::test]
async fn doctor_finds_orphan_databases_and_archives() {
    let s = Setup::new().await;
    let unknown = format!("tenant_u{}", s.suffix);
    s.admin_sql(&format!("CREATE DATABASE \"{unknown}\"")).await;
    let findings = s.doctor().await;
    let found = only(&findings, Check::OrphanDatabase, &unknown);
    assert_eq!(found.severity, Severity::Warning);
    s.run_fix(&found).await;
    assert!(s.doctor().await.is_empty());

    // A deleted tenant's archive is only worth knowing; its fix drops the
    // archive and the role.
    s.dbs
        .deprovision(&s.b, DeprovisionPolicy::Archive)
        .await
        .unwrap();
    let (findings, _) = s.doctor_of(std::slice::from_ref(&s.a)).await;
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let found = &findings[0];
    assert_eq!(
        (found.check, found.severity),
        (Check::OrphanDatabase, Severity::Info)
    );
    assert!(found.object.starts_with("archived_"), "{found:?}");
    s.run_fix(found).await;
    assert!(s.doctor_of(std::slice::from_ref(&s.a)).await.0.is_empty());
    let role_left: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(name(&s.b))
            .fetch_one(&s.admin)
            .await
            .unwrap();
    assert!(!role_left);
}

#[tokio::test]
async fn doctor_finds_who_else_can_connect() {
    let s = Setup::new().await;
    let (a, b) = (name(&s.a), name(&s.b));
    for grant in [
        format!("GRANT CONNECT ON DATABASE \"{a}\" TO PUBLIC"),
        format!("GRANT CONNECT ON DATABASE \"{a}\" TO \"{b}\""),
        format!("GRANT \"{a}\" TO \"{b}\""),
    ] {
        s.admin_sql(&grant).await;
        let findings = s.doctor().await;
        let found = only(&findings, Check::SchemaPrivilegeLeak, &a);
        assert_eq!(found.severity, Severity::Critical);
        s.run_fix(&found).await;
        assert!(s.doctor().await.is_empty(), "after fixing {grant}");
    }
}

#[tokio::test]
async fn doctor_finds_tenant_roles_with_too_much_or_too_little() {
    let s = Setup::new().await;
    let a = name(&s.a);
    for (change, severity) in [
        ("BYPASSRLS", Severity::Critical),
        ("CREATEDB CREATEROLE", Severity::Critical),
        ("NOLOGIN", Severity::Warning),
    ] {
        s.admin_sql(&format!("ALTER ROLE \"{a}\" {change}")).await;
        let findings = s.doctor().await;
        let found = only(&findings, Check::RoleBypassesRls, &a);
        assert_eq!(found.severity, severity, "{change}");
        s.run_fix(&found).await;
        assert!(s.doctor().await.is_empty(), "after fixing {change}");
    }
    // A missing role is repaired by migrating.
    s.dbs.forget_all();
    let mut in_a = PgConnection::connect_with(&as_role(&a, "postgres"))
        .await
        .unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "REASSIGN OWNED BY \"{a}\" TO postgres; DROP OWNED BY \"{a}\""
    )))
    .execute(&mut in_a)
    .await
    .unwrap();
    in_a.close().await.unwrap();
    s.admin_sql(&format!("DROP ROLE \"{a}\"")).await;
    let found = only(&s.doctor().await, Check::RoleBypassesRls, &a);
    assert_eq!(found.fix, "tenancy migrate");
    s.dbs.migrate_tenant(&s.a.id).await.unwrap();
    assert!(s.doctor().await.is_empty());
}

#[tokio::test]
async fn one_server_under_two_names_is_checked_once() {
    let db = common::PgTestDb::new().await;
    let suffix = db.name[14..26].to_owned();
    let _cleanup = Cleanup {
        suffix: suffix.clone(),
    };
    let home = db.pool(4).await;
    let other = PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url.replacen("127.0.0.1", "localhost", 1))
        .await
        .unwrap();
    let servers = vec![
        DatabaseServer::new("a", home.clone(), 1),
        DatabaseServer::new("b", other, 1),
    ];
    let dbs = PgDatabaseIsolation::with_servers(home.clone(), servers.clone(), notes_migrations());
    let tenants: Vec<TenantInfo> = (0..2).map(|i| tenant(&format!("p{i}{suffix}"))).collect();
    for t in &tenants {
        dbs.provision(t).await.unwrap();
    }
    let mut report = Report::default();
    check_databases(&home, &servers, &tenants, &mut report)
        .await
        .unwrap();
    let mine: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.object.ends_with(&suffix))
        .collect();
    assert!(mine.is_empty(), "{mine:#?}");
    for t in &tenants {
        dbs.deprovision(t, DeprovisionPolicy::Drop).await.unwrap();
    }
}

#[tokio::test]
async fn an_admin_that_is_not_superuser_is_enough() {
    // As on managed PostgreSQL: the admin role may create databases and
    // roles, nothing more.
    let db = common::PgTestDb::new().await;
    let suffix = db.name[14..26].to_owned();
    // The home database goes first: the admin role owns it.
    let guard = (
        db,
        Cleanup {
            suffix: suffix.clone(),
        },
    );
    let db = &guard.0;
    let root = db.pool(1).await;
    let admin_role = format!("admin_{suffix}");
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE ROLE \"{admin_role}\" LOGIN CREATEDB CREATEROLE; \
         ALTER DATABASE \"{}\" OWNER TO \"{admin_role}\"",
        db.name
    )))
    .execute(&root)
    .await
    .unwrap();
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(as_role(&db.name, &admin_role))
        .await
        .unwrap();
    let dbs = PgDatabaseIsolation::new(admin.clone(), notes_migrations());
    let (a, b) = (tenant(&format!("a{suffix}")), tenant(&format!("b{suffix}")));
    for t in [&a, &b] {
        dbs.provision(t).await.unwrap();
    }
    let mut tx = TenantDb::new(dbs.clone()).begin_for(&a.id).await.unwrap();
    let user: String =
        sqlx::query_scalar("INSERT INTO notes (body) VALUES ('x') RETURNING current_user::text")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(user, name(&a));
    tx.commit().await.unwrap();
    let mut report = Report::default();
    check_databases(
        &admin,
        &[DatabaseServer::new("default", admin.clone(), 1)],
        &[a.clone(), b.clone()],
        &mut report,
    )
    .await
    .unwrap();
    let mine: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.object.ends_with(&suffix))
        .collect();
    assert!(mine.is_empty(), "{mine:#?}");
    dbs.deprovision(&a, DeprovisionPolicy::Archive)
        .await
        .unwrap();
    dbs.deprovision(&b, DeprovisionPolicy::Drop).await.unwrap();
    let roles: Vec<(String, bool)> = sqlx::query_as(
        "SELECT rolname::text, rolcanlogin FROM pg_roles WHERE rolname LIKE 'tenant\\_%' AND rolname LIKE $1",
    )
    .bind(format!("%{suffix}"))
    .fetch_all(&root)
    .await
    .unwrap();
    assert_eq!(
        roles,
        [(name(&a), false)],
        "the archive's role stays, NOLOGIN"
    );
}

/// A PostgreSQL cluster of the test's own that checks passwords
/// (`scram-sha-256`), stopped and removed on drop.
struct ScramCluster {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

fn as_postgres(bin: &std::path::Path, args: &[&str]) -> std::process::Command {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    // initdb and pg_ctl refuse to run as root.
    let mut cmd = if root {
        let mut cmd = std::process::Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bin);
        cmd
    } else {
        std::process::Command::new(bin)
    };
    cmd.args(args);
    cmd
}

impl ScramCluster {
    const PASSWORD: &str = "admin-secret";

    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("initdb");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), Self::PASSWORD).unwrap();
        let _ = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        let data = dir.path().join("data");
        let pw = dir.path().join("pw");
        let out = as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "scram-sha-256",
                "--pwfile",
                pw.to_str().unwrap(),
                "-U",
                "postgres",
                "--no-sync",
            ],
        )
        .output()
        .unwrap();
        assert!(out.status.success(), "initdb: {out:?}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            dir.path().display()
        );
        let log = dir.path().join("log");
        let out = as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        )
        .output()
        .unwrap();
        assert!(out.status.success(), "pg_ctl start: {out:?}");
        ScramCluster { dir, bin, port }
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for ScramCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"],
        )
        .output();
    }
}

#[tokio::test]
async fn tenant_roles_log_in_with_their_password_where_passwords_are_checked() {
    let cluster = tokio::task::spawn_blocking(ScramCluster::start)
        .await
        .unwrap();
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(&cluster.url("postgres", ScramCluster::PASSWORD))
        .await
        .unwrap();
    let dbs = PgDatabaseIsolation::new(admin.clone(), notes_migrations());
    let t = tenant("scram");
    dbs.provision(&t).await.unwrap();
    // The pool logs in as the tenant's role with its derived password.
    let mut tx = TenantDb::new(dbs.clone()).begin_for(&t.id).await.unwrap();
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(user, "tenant_scram");
    tx.commit().await.unwrap();
    // The server holds a SCRAM verifier, never the password; a wrong
    // password is refused.
    let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind("tenant_scram")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    let wrong = PgConnectOptions::from_str(&cluster.url("tenant_scram", "guess"))
        .unwrap()
        .database("tenant_scram");
    let err = PgConnection::connect_with(&wrong).await.unwrap_err();
    assert_eq!(code(&err), "28P01", "{err}");
    // Another process of the same deployment derives the same password.
    let again = PgDatabaseIsolation::new(admin.clone(), notes_migrations());
    let mut tx = TenantDb::new(again).begin_for(&t.id).await.unwrap();
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    drop(dbs);
    admin.close().await;
    drop(cluster);
}
