//! Test support: the binary in a temporary directory, and a fresh
//! PostgreSQL database per test.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

#[path = "../../../tenancy-sql/tests/common/own_runtime.rs"]
mod own_runtime;
use own_runtime::on_own_runtime;

const BIN: &str = env!("CARGO_BIN_EXE_tenancy");

/// The binary in a temporary working directory with a fixed environment.
pub struct Cli {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Cli {
    /// SQLite at the default URL (`tenancy.db` in the working directory).
    pub fn sqlite() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    /// `DATABASE_URL=url`.
    pub fn with_url(url: &str) -> Self {
        let mut cli = Self::sqlite();
        cli.env.push(("DATABASE_URL".into(), url.into()));
        cli
    }

    pub fn strategy(mut self, strategy: &str) -> Self {
        self.env.push((
            "TENANCY__LIFECYCLE__ISOLATION_STRATEGY".into(),
            strategy.into(),
        ));
        self
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.dir.path()).args(args);
        for (key, _) in std::env::vars() {
            if key.starts_with("TENANCY__") || key == "DATABASE_URL" {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.output().unwrap()
    }

    /// Runs a command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `tenants create --slug <slug> --name <name> --json`: the new tenant.
    pub fn create(&self, slug: &str, name: &str) -> Value {
        self.json(&[
            "tenants", "create", "--slug", slug, "--name", name, "--json",
        ])
    }

    /// Runs a command that must succeed and print JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout}"))
    }

    /// Runs a command that must fail; returns stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "{args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        String::from_utf8(out.stderr).unwrap()
    }
}

pub fn id_of(tenant: &Value) -> String {
    tenant["id"].as_str().unwrap().to_owned()
}

/// The server tests use (`TENANCY_TEST_PG` overrides it).
pub fn admin_url() -> String {
    std::env::var("TENANCY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test, dropped afterwards (also when the
/// test fails).
pub struct PgTestDb {
    pub name: String,
    pub url: String,
    /// Per-tenant databases (database strategy) to drop as well.
    tenant_dbs: std::sync::Mutex<Vec<String>>,
}

impl PgTestDb {
    pub async fn new() -> Self {
        let name = format!("tenancy_cli_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is required at {} ({e})", admin_url()));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
        let admin = admin_url();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        let url = format!("{base}/{name}");
        Self {
            name,
            url,
            tenant_dbs: std::sync::Mutex::default(),
        }
    }

    /// Drops tenant `id`'s database with this one.
    pub fn track_tenant(&self, id: &str) {
        self.track_database(&format!("tenant_{id}"));
    }

    /// Drops database `name` (made by the test) with this one.
    pub fn track_database(&self, name: &str) {
        self.tenant_dbs.lock().unwrap().push(name.to_owned());
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let mut names = std::mem::take(&mut *self.tenant_dbs.lock().unwrap());
        names.push(self.name.clone());
        on_own_runtime(move || async move {
            // Schema isolation makes one cluster-wide role per tenant:
            // drop them with the test database's tenant schemas.
            if let Some(db) = names.last()
                && let Some((base, _)) = admin_url().rsplit_once('/')
                && let Ok(mut conn) = PgConnection::connect(&format!("{base}/{db}")).await
            {
                let schemas: Vec<String> = sqlx::query_scalar(
                    "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'",
                )
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default();
                for role in schemas {
                    for sql in [
                        format!("DROP SCHEMA IF EXISTS \"{role}\" CASCADE"),
                        format!("DROP OWNED BY \"{role}\""),
                        format!("DROP ROLE IF EXISTS \"{role}\""),
                    ] {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                            .execute(&mut conn)
                            .await;
                    }
                }
            }
            if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                for name in names {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                    // The database strategy's login role of the same name.
                    if name.starts_with("tenant_") {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP ROLE IF EXISTS \"{name}\""
                        )))
                        .execute(&mut admin)
                        .await;
                    }
                }
            }
        });
    }
}

/// The admin token of servers started by [`serve`].
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running `tenancy serve`, killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tenancy serve` on a free port in `cli`'s directory and environment.
pub fn serve(cli: &Cli) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenancy"));
    cmd.current_dir(cli.dir.path())
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--admin-token",
            ADMIN_TOKEN,
        ])
        .envs(cli.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let base = listening_base(&mut child);
    Server { child, base }
}

/// The address a `tenancy serve` started with piped stdout says it listens
/// on; the rest of its stdout is drained on a thread.
pub fn listening_base(child: &mut Child) -> String {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("the server exited before listening")
            .unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    base
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PostgreSQL cluster of this test's own: initdb in a temporary
/// directory, a free port, stopped on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

pub fn as_postgres(bin: &std::path::Path, args: &[&str]) -> Command {
    // initdb and pg_ctl refuse to run as root.
    if nix_is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bin).args(args);
        cmd
    } else {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        cmd
    }
}

pub fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    pub fn start() -> Cluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries are required in /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("no initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        if nix_is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let data = dir.path().join("data");
        let out = as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            dir.path().display()
        );
        let out = as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                dir.path().join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Cluster { dir, bin, port }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Cluster {
    /// SIGKILLs the postmaster (its backends exit on their own).
    pub fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_owned();
        let ok = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
        assert!(ok.success());
    }

    /// Starts the cluster again (after [`Cluster::kill`]): retried while the
    /// killed backends are still exiting.
    pub fn restart(&self) {
        let data = self.dir.path().join("data");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        for _ in 0..50 {
            let out = as_postgres(
                &self.bin.join("pg_ctl"),
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-o",
                    &options,
                    "-l",
                    self.dir.path().join("log").to_str().unwrap(),
                    "-w",
                    "start",
                ],
            )
            .output()
            .unwrap();
            if out.status.success() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the cluster did not start again");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        )
        .output();
    }
}

/// Sending a request in a test: a transport error fails the test.
pub trait Sending {
    /// The answer.
    fn sent(self) -> impl Future<Output = reqwest::Response>;
    /// The answer's JSON body.
    fn json_body(self) -> impl Future<Output = Value>;
    /// The answer's text body.
    fn text_body(self) -> impl Future<Output = String>;
}

impl Sending for reqwest::RequestBuilder {
    async fn sent(self) -> reqwest::Response {
        self.send().await.unwrap()
    }
    async fn json_body(self) -> Value {
        self.sent().await.json().await.unwrap()
    }
    async fn text_body(self) -> String {
        self.sent().await.text().await.unwrap()
    }
}

/// The string field `key` of each object in the JSON array `list`.
pub fn strs<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    let items = list
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"));
    items.iter().map(|t| t[key].as_str().unwrap()).collect()
}

/// Asserts that the tenant JSON `t` has every field of a tenant.
pub fn assert_tenant_fields(t: &Value) {
    let fields = ["id", "slug", "name", "status", "plan", "metadata"];
    for key in fields.iter().chain(&["created_at", "updated_at"]) {
        assert!(t.get(key).is_some(), "tenant JSON lacks {key}: {t}");
    }
}

/// The titles of the notes in a list answer (none if it is not a list).
pub fn titles(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| n["title"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// An admin API call with the admin token: the status and the JSON body
/// (null when the body is not JSON).
pub async fn admin_call(
    http: &reqwest::Client,
    url: String,
    method: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http
        .request(method.parse().unwrap(), url)
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.sent().await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `POST /admin/tenants` with the admin token and the tenant `body`.
pub async fn create_tenant(http: &reqwest::Client, base: &str, body: Value) -> reqwest::Response {
    http.post(format!("{base}/admin/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .sent()
        .await
}
