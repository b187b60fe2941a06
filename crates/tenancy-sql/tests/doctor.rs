//! `tenancy doctor`'s checks (SPEC G1) and the request role (G3): a
//! database built by the toolkit is clean; each defect made by hand is
//! named under its check id, and running the fix makes it clean again.
//!
//! One test here changes the cluster-wide role `tenancy_request` for a
//! moment (`role_bypasses_rls`); `cargo test` runs test binaries one after
//! another, and nothing else in this binary depends on that role binding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use sqlx::{AssertSqlSafe, PgPool};
use tenancy::doctor::{Check, Report};
use tenancy_core::{NewTenant, TenantId, TenantInfo, TenantStatus};
use tenancy_sql::doctor;
use tenancy_sql::portable::TenantData;
use tenancy_sql::{Migration, Migrations, PgRowLevel, PgSchemaIsolation, ScopedBegin};

fn migrations(sql: &str) -> Migrations {
    Migrations::new(vec![Migration {
        version: 1,
        name: "app".into(),
        sql: sql.into(),
    }])
    .unwrap()
}

/// The application's shared tables, registered for RLS by the migration.
const APP: &str = "
CREATE TABLE projects (tenant_id text NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY, name text NOT NULL,
    PRIMARY KEY (tenant_id, id));
CREATE TABLE tasks (tenant_id text NOT NULL, id bigserial, project_id bigint NOT NULL, title text NOT NULL,
    PRIMARY KEY (tenant_id, id), FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id));
CREATE INDEX tasks_project ON tasks (tenant_id, project_id);
SELECT tenancy_register_table('projects');
SELECT tenancy_register_table('tasks');
";

/// A row-level database migrated by the library, as the superuser
/// `postgres` (the pool every scoped transaction then starts from).
async fn row_level() -> (common::PgTestDb, PgPool) {
    let db = common::PgTestDb::new().await;
    let pool = db.pool(4).await;
    let applied = PgRowLevel::new(pool.clone())
        .migrate(&migrations(APP))
        .await
        .unwrap();
    assert_eq!((applied.from, applied.to), (0, 1));
    (db, pool)
}

async fn row_level_report(pool: &PgPool) -> Report {
    let mut report = Report::default();
    doctor::check_row_level(pool, "tenant_id", &mut report)
        .await
        .unwrap();
    report.sort();
    report
}

fn objects(report: &Report, check: Check) -> Vec<String> {
    report.of(check).map(|f| f.object.clone()).collect()
}

/// Makes `defect`, expects `check` to name exactly `object`, runs every
/// finding's fix (they are SQL here) and expects a clean report.
async fn defect_found_and_fixed(pool: &PgPool, defect: &str, check: Check, object: &str) {
    assert_eq!(
        row_level_report(pool).await.findings,
        [],
        "the toolkit's database is clean"
    );
    sqlx::raw_sql(AssertSqlSafe(defect.to_owned()))
        .execute(pool)
        .await
        .unwrap();
    let report = row_level_report(pool).await;
    assert_eq!(objects(&report, check), [object], "{report:#?}");
    assert_eq!(report.exit_code(), 1);
    for finding in &report.findings {
        sqlx::raw_sql(AssertSqlSafe(finding.fix.clone()))
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("fix {:?}: {e}", finding.fix));
    }
    let after = row_level_report(pool).await;
    assert_eq!(after.findings, [], "fixed");
    assert_eq!(after.exit_code(), 0);
}

#[tokio::test]
async fn rls_disabled() {
    let (_db, pool) = row_level().await;
    defect_found_and_fixed(
        &pool,
        "ALTER TABLE projects DISABLE ROW LEVEL SECURITY",
        Check::RlsDisabled,
        "projects",
    )
    .await;
}

#[tokio::test]
async fn a_table_added_by_hand_is_rls_disabled() {
    let (_db, pool) = row_level().await;
    defect_found_and_fixed(
        &pool,
        "CREATE TABLE invoices (tenant_id text NOT NULL, id bigserial, PRIMARY KEY (tenant_id, id))",
        Check::RlsDisabled,
        "invoices",
    )
    .await;
}

#[tokio::test]
async fn rls_not_forced() {
    let (_db, pool) = row_level().await;
    defect_found_and_fixed(
        &pool,
        "ALTER TABLE tasks NO FORCE ROW LEVEL SECURITY",
        Check::RlsNotForced,
        "tasks",
    )
    .await;
}

#[tokio::test]
async fn policy_missing() {
    let (_db, pool) = row_level().await;
    defect_found_and_fixed(
        &pool,
        "DROP POLICY tenancy_isolation ON projects",
        Check::PolicyMissing,
        "projects",
    )
    .await;
}

#[tokio::test]
async fn a_permissive_policy_beside_the_tenant_one_is_policy_missing() {
    let (_db, pool) = row_level().await;
    defect_found_and_fixed(
        &pool,
        "CREATE POLICY everyone ON projects USING (true)",
        Check::PolicyMissing,
        "everyone ON projects",
    )
    .await;
}

#[tokio::test]
async fn tenant_column_unindexed() {
    let (_db, pool) = row_level().await;
    // Unindexed, otherwise registered properly (no unique key at all).
    let fix = "CREATE TABLE audit_lines (tenant_id text NOT NULL, line text NOT NULL); \
               SELECT tenancy_register_table('audit_lines')";
    defect_found_and_fixed(&pool, fix, Check::TenantColumnUnindexed, "audit_lines").await;
}

#[tokio::test]
async fn unique_without_tenant() {
    let (_db, pool) = row_level().await;
    defect_found_and_fixed(
        &pool,
        "CREATE UNIQUE INDEX projects_name ON projects (name)",
        Check::UniqueWithoutTenant,
        "projects_name",
    )
    .await;
}

#[tokio::test]
async fn fk_without_tenant() {
    let (_db, pool) = row_level().await;
    // The loose key needs a unique index without the tenant column: both
    // are named, and the fixes (the key's first) repair both.
    defect_found_and_fixed(
        &pool,
        "CREATE UNIQUE INDEX projects_id_only ON projects (id); \
         ALTER TABLE tasks ADD CONSTRAINT tasks_project_loose FOREIGN KEY (project_id) REFERENCES projects (id)",
        Check::FkWithoutTenant,
        "\"tasks_project_loose\" ON tasks",
    )
    .await;
}

#[tokio::test]
async fn role_bypasses_rls() {
    let (_db, pool) = row_level().await;
    defect_found_and_fixed(
        &pool,
        "ALTER ROLE tenancy_request BYPASSRLS",
        Check::RoleBypassesRls,
        "tenancy_request",
    )
    .await;
    defect_found_and_fixed(
        &pool,
        "ALTER TABLE projects OWNER TO tenancy_request",
        Check::RoleBypassesRls,
        "projects",
    )
    .await;
}

/// G3: the pool connects as the superuser `postgres`, and still a scoped
/// transaction's hand-written SQL sees only its tenant (it runs as the
/// request role), as does an export of the tenant's data.
#[tokio::test]
async fn a_superuser_pool_is_bound_by_rls_in_every_scoped_transaction() {
    let (_db, pool) = row_level().await;
    let superuser: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(superuser, "the test's pool is a superuser's");
    sqlx::raw_sql(
        "INSERT INTO projects (tenant_id, name) VALUES ('acme', 'a1'), ('acme', 'a2'), ('globex', 'g1')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let rls = PgRowLevel::new(pool.clone())
        .with_table("projects", "tenant_id")
        .unwrap();
    let acme: TenantId = "acme".parse().unwrap();
    let mut tx = rls.begin_for(&acme).await.unwrap();
    let (user, seen): (String, Vec<String>) =
        sqlx::query_as("SELECT current_user::text, ARRAY(SELECT name FROM projects ORDER BY name)")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(user, "tenancy_request");
    assert_eq!(seen, ["a1", "a2"], "raw SQL sees only acme's rows");
    let planted = sqlx::query("INSERT INTO projects (tenant_id, name) VALUES ('globex', 'x')")
        .execute(&mut *tx)
        .await;
    assert!(planted.is_err(), "cannot write another tenant's row");
    drop(tx);

    // The export of acme's data: its rows only.
    let data = TenantData::pg_shared(pool.clone(), acme.clone(), "tenant_id").unwrap();
    let mut session = data.read().await.unwrap();
    let tables = session.tables().await.unwrap();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["projects", "tasks"]);
    let mut out = Vec::new();
    session
        .export_table(&tables[0], None, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("a1") && !text.contains("g1"), "{text}");

    // The library's check: the pool can switch, and the role binds.
    tenancy_core::IsolationStrategy::check(&rls).await.unwrap();
}

/// Without the request role's membership, a scoped transaction fails and
/// leaves the connection clean (the switch happens before BEGIN).
#[tokio::test]
async fn a_pool_that_may_not_switch_fails_closed_and_stays_usable() {
    let (db, pool) = row_level().await;
    let role = format!("outsider_{}", &db.name[db.name.len() - 12..]);
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE ROLE \"{role}\" LOGIN NOSUPERUSER NOBYPASSRLS; GRANT SELECT ON projects TO \"{role}\""
    )))
    .execute(&pool)
    .await
    .unwrap();
    let url = db
        .url
        .replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
    let outsider = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let rls = PgRowLevel::new(outsider.clone());
    let err = rls.begin_for(&"acme".parse().unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("tenancy_request"), "{err}");
    // The one connection is not stuck in an aborted transaction.
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&outsider)
        .await
        .unwrap();
    assert_eq!(one, 1);
    assert!(tenancy_core::IsolationStrategy::check(&rls).await.is_err());
    outsider.close().await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\""
    )))
    .execute(&pool)
    .await
    .unwrap();
}

fn tenant(id: &TenantId) -> TenantInfo {
    let mut info = NewTenant::new(&format!("s-{id}"), "T")
        .unwrap()
        .id(id.clone())
        .into_info(chrono::Utc::now());
    info.status = TenantStatus::Active;
    info
}

async fn schema_report(pool: &PgPool, tenants: &[TenantInfo]) -> Report {
    let mut report = Report::default();
    doctor::check_schemas(pool, tenants, &mut report)
        .await
        .unwrap();
    report.sort();
    report
}

/// Schema strategy: two provisioned tenants are clean; a grant across
/// schemas, a schema with no tenant and a tenant whose schema was dropped
/// are each named, and their fixes (SQL; `tenancy migrate` for the missing
/// schema) clean it.
#[tokio::test]
async fn schema_checks() {
    let db = common::PgTestDb::new().await;
    let pool = db.pool(4).await;
    let suffix = &db.name[db.name.len() - 10..];
    let ids: Vec<TenantId> = ["a", "b"]
        .iter()
        .map(|p| format!("{p}{suffix}").parse().unwrap())
        .collect();
    let tenants: Vec<TenantInfo> = ids.iter().map(tenant).collect();
    let schemas = PgSchemaIsolation::new(
        pool.clone(),
        migrations("CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL)"),
    );
    for id in &ids {
        schemas.migrate_tenant(id).await.unwrap();
    }
    assert_eq!(schema_report(&pool, &tenants).await.findings, []);
    let (a, b) = (format!("tenant_{}", ids[0]), format!("tenant_{}", ids[1]));

    let run = |sql: String| {
        let pool = pool.clone();
        async move {
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    let fix_all = |report: Report| {
        let pool = pool.clone();
        let schemas = schemas.clone();
        let ids = ids.clone();
        async move {
            for f in report.findings {
                if f.fix == "tenancy migrate" {
                    for id in &ids {
                        schemas.migrate_tenant(id).await.unwrap();
                    }
                } else {
                    sqlx::raw_sql(AssertSqlSafe(f.fix))
                        .execute(&pool)
                        .await
                        .unwrap();
                }
            }
        }
    };

    run(format!("GRANT USAGE ON SCHEMA \"{a}\" TO \"{b}\"")).await;
    let report = schema_report(&pool, &tenants).await;
    assert_eq!(
        objects(&report, Check::SchemaPrivilegeLeak),
        std::slice::from_ref(&a)
    );
    fix_all(report).await;
    assert_eq!(schema_report(&pool, &tenants).await.findings, []);

    run(format!("GRANT USAGE ON SCHEMA \"{b}\" TO PUBLIC")).await;
    let report = schema_report(&pool, &tenants).await;
    assert_eq!(
        objects(&report, Check::SchemaPrivilegeLeak),
        std::slice::from_ref(&b)
    );
    fix_all(report).await;
    assert_eq!(schema_report(&pool, &tenants).await.findings, []);

    let ghost = format!("tenant_ghost{suffix}");
    run(format!("CREATE SCHEMA \"{ghost}\"")).await;
    let report = schema_report(&pool, &tenants).await;
    assert_eq!(objects(&report, Check::OrphanSchema), [ghost]);
    fix_all(report).await;
    assert_eq!(schema_report(&pool, &tenants).await.findings, []);

    run(format!("DROP SCHEMA \"{b}\" CASCADE")).await;
    let report = schema_report(&pool, &tenants).await;
    assert_eq!(
        objects(&report, Check::MissingStorage),
        [format!("tenant s-{} ({})", ids[1], ids[1])]
    );
    fix_all(report).await;
    assert_eq!(schema_report(&pool, &tenants).await.findings, []);

    for id in &ids {
        run(format!(
            "DROP SCHEMA \"tenant_{id}\" CASCADE; DROP ROLE \"tenant_{id}\""
        ))
        .await;
    }
}

/// SQLite: files of the database strategy and the shared tables of row
/// level.
#[tokio::test]
async fn sqlite_checks() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let files = tenancy_sql::SqliteDatabaseIsolation::new(
        dir.path().join("tenants"),
        migrations("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"),
    );
    let ids: Vec<TenantId> = vec!["acme".parse().unwrap(), "globex".parse().unwrap()];
    let tenants: Vec<TenantInfo> = ids.iter().map(tenant).collect();
    for t in &tenants {
        tenancy_core::IsolationStrategy::provision(&files, t)
            .await
            .unwrap();
    }
    let report = |tenants: Vec<TenantInfo>| {
        let dir = files.dir().to_owned();
        move || {
            let mut r = Report::default();
            doctor::check_sqlite_files(&dir, &tenants, &mut r);
            r.sort();
            r
        }
    };
    let check = report(tenants.clone());
    assert_eq!(
        check().findings,
        [],
        "files the toolkit made are owner-only"
    );
    let acme = files.path_of(&ids[0]).unwrap();
    let shown = acme.display().to_string();

    std::fs::set_permissions(&acme, std::fs::Permissions::from_mode(0o644)).unwrap();
    let found = check();
    assert_eq!(
        objects(&found, Check::SqliteFileMode),
        std::slice::from_ref(&shown)
    );
    assert_eq!(found.findings[0].fix, format!("chmod 600 '{shown}'"));
    std::fs::set_permissions(&acme, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(check().findings, []);

    let ghost = files.dir().join("tenant_ghost.db");
    std::fs::write(&ghost, b"").unwrap();
    std::fs::set_permissions(&ghost, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        objects(&check(), Check::OrphanFile),
        [ghost.display().to_string()]
    );
    std::fs::remove_file(&ghost).unwrap();
    assert_eq!(check().findings, []);

    let globex = files.path_of(&ids[1]).unwrap();
    std::fs::remove_file(&globex).unwrap();
    assert_eq!(
        objects(&check(), Check::MissingStorage),
        [format!("tenant s-globex ({})", ids[1])]
    );
    files.migrate_tenant(&ids[1]).await.unwrap();
    assert_eq!(check().findings, [], "tenancy migrate re-creates the file");

    // Row level: shared tables checked like PostgreSQL's, the interceptor
    // standing for RLS.
    let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, body TEXT); \
         CREATE INDEX notes_tenant ON notes (tenant_id, id)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let shared = |scoped: &'static [&'static str]| {
        let pool = pool.clone();
        async move {
            let scoped: Vec<String> = scoped.iter().map(|s| s.to_string()).collect();
            let mut r = Report::default();
            doctor::check_sqlite_row_level(&pool, "tenant_id", &scoped, &mut r)
                .await
                .unwrap();
            r
        }
    };
    assert_eq!(
        shared(&["notes"]).await.findings,
        [],
        "rowid keys are not reported"
    );
    assert_eq!(objects(&shared(&[]).await, Check::RlsDisabled), ["notes"]);
    sqlx::raw_sql("CREATE UNIQUE INDEX notes_body ON notes (body)")
        .execute(&pool)
        .await
        .unwrap();
    let found = shared(&["notes"]).await;
    assert_eq!(objects(&found, Check::UniqueWithoutTenant), ["notes_body"]);
    sqlx::raw_sql(AssertSqlSafe(found.findings[0].fix.clone()))
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(shared(&["notes"]).await.findings, []);
}
