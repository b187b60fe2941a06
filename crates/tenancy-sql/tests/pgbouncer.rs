//! Behind pgbouncer in transaction pooling mode: 16 clients
//! share 2 server connections; row-level (RLS, as an ordinary role) and
//! schema isolation stay scoped for every transaction, and probes between
//! them would see any tenant setting, role or search_path left on a reused
//! server connection. A control shows the probes do catch a session-level
//! setting.
//!
//! pgbouncer comes from Debian's package (scripts/test.sh installs it); the
//! test starts its own instance on a free port and stops it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions};
use tenancy_core::*;
use tenancy_sql::*;

use common::register_notes;

struct Bouncer {
    dir: tempfile::TempDir,
    port: u16,
}

fn root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Bouncer {
    fn start(users: &[&str]) -> Bouncer {
        let bin = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect(
                "pgbouncer is required: scripts/test.sh installs it (apt-get install pgbouncer)",
            );
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display();
        let ini = format!(
            "[databases]\n* = host=127.0.0.1 port=5432\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {d}/users.txt\npool_mode = transaction\n\
             default_pool_size = 2\nmin_pool_size = 0\nmax_client_conn = 200\npidfile = {d}/pgbouncer.pid\n\
             logfile = {d}/pgbouncer.log\nignore_startup_parameters = extra_float_digits\n"
        );
        std::fs::write(dir.path().join("pgbouncer.ini"), ini).unwrap();
        let auth: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
        std::fs::write(dir.path().join("users.txt"), auth).unwrap();
        let ini = dir.path().join("pgbouncer.ini");
        let status = if root() {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            Command::new("runuser")
                .args(["-u", "postgres", "--", bin, "-d"])
                .arg(&ini)
                .status()
                .unwrap()
        } else {
            Command::new(bin).arg("-d").arg(&ini).status().unwrap()
        };
        assert!(status.success(), "pgbouncer did not start");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Bouncer { dir, port }
    }

    /// A pool of `clients` connections through pgbouncer, as `user`, with
    /// the statement cache off. pgbouncer before 1.21 cannot keep prepared
    /// statements across transactions, and sqlx 0.9 still names a
    /// statement of a `persistent` query with the cache off: application
    /// queries use `.persistent(false)` (the scoping statements of every
    /// strategy are simple queries already).
    async fn pool(&self, db: &str, user: &str, clients: u32) -> PgPool {
        let options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(user)
            .database(db)
            .statement_cache_capacity(0)
            .disable_statement_logging();
        PgPoolOptions::new()
            .max_connections(clients)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .unwrap()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("pgbouncer.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn tenant(id: &str) -> TenantInfo {
    NewTenant::new(&format!("s-{}", id.to_lowercase()), id)
        .unwrap()
        .id(id.parse().unwrap())
        .into_info(chrono::Utc::now())
}

/// What a probe outside any tenant transaction sees on the server
/// connection it was given: tenant setting, role, search_path.
async fn probe(pool: &PgPool) -> (String, String, String) {
    let mut tx = pool.begin().await.unwrap();
    let seen: (Option<String>, String, String) = sqlx::query_as(
        "SELECT current_setting('tenancy.tenant_id', true), current_user::text, current_setting('search_path')",
    )
    .persistent(false)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    (seen.0.unwrap_or_default(), seen.1, seen.2)
}

/// Many concurrent scoped transactions of two tenants, probes in between.
async fn hammer(
    db: &TenantDb<sqlx::Postgres>,
    pool: &PgPool,
    a: &TenantId,
    b: &TenantId,
    user: &str,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (db, pool) = (db.clone(), pool.clone());
        let (t, user) = (
            if i % 2 == 0 { a.clone() } else { b.clone() },
            user.to_owned(),
        );
        tasks.spawn(async move {
            for n in 0..20 {
                let mut tx = db.begin_for(&t).await.unwrap();
                sqlx::query("INSERT INTO notes (body) VALUES ($1)")
                    .persistent(false)
                    .bind(format!("{t}-{i}-{n}"))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
                    .persistent(false)
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap();
                assert!(
                    bodies.iter().all(|x| x.starts_with(&format!("{t}-"))),
                    "tenant {t} saw another tenant's rows"
                );
                tx.commit().await.unwrap();
                let (setting, role, path) = probe(&pool).await;
                assert_eq!(
                    setting, "",
                    "a tenant setting leaked through a server connection"
                );
                assert_eq!(role, user, "a tenant role leaked");
                assert!(
                    !path.contains("tenant_"),
                    "a tenant search_path leaked: {path}"
                );
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

fn notes(sql: &str) -> Migrations {
    Migrations::new(vec![Migration {
        version: 1,
        name: "notes".into(),
        sql: sql.into(),
    }])
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_and_schema_isolation_behind_pgbouncer() {
    let db = common::PgTestDb::new().await;
    let admin = db.pool(2).await;
    let role = format!("app_{}", &db.name[db.name.len() - 12..]);
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, tenant_id TEXT NOT NULL, body TEXT NOT NULL); \
         CREATE ROLE \"{role}\" LOGIN NOSUPERUSER NOBYPASSRLS; \
         GRANT SELECT, INSERT ON notes TO \"{role}\"; GRANT USAGE ON SEQUENCE notes_id_seq TO \"{role}\""
    )))
    .execute(&admin)
    .await
    .unwrap();
    register_notes(&admin).await;
    PgRowLevel::new(admin.clone())
        .allow_role(&role)
        .await
        .unwrap();
    let bouncer = Bouncer::start(&["postgres", &role]);

    // Row level, as an ordinary role: RLS keyed on a transaction-local
    // setting.
    let app = bouncer.pool(&db.name, &role, 16).await;
    let rls = TenantDb::new(PgRowLevel::new(app.clone()));
    let (a, b): (TenantId, TenantId) = ("red".parse().unwrap(), "blue".parse().unwrap());
    hammer(&rls, &app, &a, &b, &role).await;
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT tenant_id, count(*) FROM notes GROUP BY tenant_id ORDER BY 1")
            .fetch_all(&admin)
            .await
            .unwrap();
    assert_eq!(counts, [("blue".to_owned(), 160), ("red".to_owned(), 160)]);

    // Control: a session-level setting does leak through pgbouncer, and
    // the probes see it (so they would catch a strategy that used one).
    sqlx::query("SELECT set_config('tenancy.tenant_id', 'leaked', false)")
        .persistent(false)
        .execute(&app)
        .await
        .unwrap();
    let mut seen_leak = false;
    for _ in 0..40 {
        if probe(&app).await.0 == "leaked" {
            seen_leak = true;
            break;
        }
    }
    assert!(
        seen_leak,
        "the probe cannot see a leaked setting: it would prove nothing"
    );
    app.close().await;

    // Schema per tenant (SET LOCAL ROLE + transaction-local search_path),
    // provisioned directly, used through pgbouncer.
    let schemas = PgSchemaIsolation::new(
        admin.clone(),
        notes("CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)"),
    );
    let suffix = &db.name[db.name.len() - 10..];
    let (sa, sb) = (
        tenant(&format!("pa{suffix}")),
        tenant(&format!("pb{suffix}")),
    );
    schemas.provision(&sa).await.unwrap();
    schemas.provision(&sb).await.unwrap();
    // A fresh pgbouncer: the control above left a leaked setting behind.
    drop(bouncer);
    let bouncer = Bouncer::start(&["postgres", &role]);
    let through = bouncer.pool(&db.name, "postgres", 16).await;
    let sdb = TenantDb::new(PgSchemaIsolation::new(through.clone(), Migrations::none()));
    hammer(&sdb, &through, &sa.id, &sb.id, "postgres").await;
    for t in [&sa, &sb] {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {}.notes",
            PgSchemaIsolation::schema_of(&t.id).unwrap()
        )))
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_eq!(n, 160);
    }
    through.close().await;
    drop(bouncer);
    for t in [&sa, &sb] {
        schemas
            .deprovision(t, tenancy_core::config::DeprovisionPolicy::Drop)
            .await
            .unwrap();
    }
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\""
    )))
    .execute(&admin)
    .await
    .unwrap();
}
