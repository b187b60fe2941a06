//! The edges of `tenancy serve` under hostile or broken conditions: slow
//! clients, a database that stops answering, storage removed by hand,
//! database errors, bad input, unbounded admin input, refused admin
//! actions, the gateway's rate limit and open tenant routes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, PgTestDb, Sending, listening_base};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A `tenancy serve` of this file's own: its stderr kept in a file.
struct Serve {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Starts the server, with `ulimit -n` set to `descriptors` when given.
    fn start(database_url: Option<&str>, env: &[(&str, &str)], descriptors: Option<u32>) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), database_url, env, descriptors)
    }

    /// The same in `dir` (which may hold a `tenancy.yaml`).
    fn start_in(
        dir: tempfile::TempDir,
        database_url: Option<&str>,
        env: &[(&str, &str)],
        descriptors: Option<u32>,
    ) -> Self {
        let binary = env!("CARGO_BIN_EXE_tenancy");
        let mut args = vec![
            "serve".to_owned(),
            "--bind".into(),
            "127.0.0.1:0".into(),
            "--admin-token".into(),
            ADMIN_TOKEN.into(),
        ];
        if let Some(url) = database_url {
            args.extend(["--database-url".to_owned(), url.to_owned()]);
        }
        let mut cmd = match descriptors {
            Some(n) => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(binary)
                    .args(&args);
                cmd
            }
            None => {
                let mut cmd = Command::new(binary);
                cmd.args(&args);
                cmd
            }
        };
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        cmd.current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env("TENANCY_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = cmd.spawn().unwrap();
        let base = listening_base(&mut child);
        Self { child, base, dir }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn call(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = c.request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.sent().await;
    let (status, headers) = (res.status(), res.headers().clone());
    let text = res.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

const ADMIN: (&str, &str) = ("authorization", "Bearer test-admin-token-0123456789");

async fn create_tenant(c: &reqwest::Client, base: &str, slug: &str) -> Value {
    let (status, _, body) = call(
        c,
        reqwest::Method::POST,
        format!("{base}/admin/tenants"),
        &[ADMIN],
        Some(json!({"slug": slug, "name": slug})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

fn assert_problem(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["request_id"].as_str().is_some_and(|id| !id.is_empty()),
        "every problem names its request: {body}"
    );
}

/// No database text in a problem: no SQL words, no constraint names.
fn assert_no_database_text(body: &Value) {
    let text = body.to_string().to_lowercase();
    for leak in [
        "constraint",
        "sqlite",
        "relation",
        "expression is of type",
        "error returned from database",
        "code:",
        "syntax",
    ] {
        assert!(
            !text.contains(leak),
            "database text `{leak}` reached the client: {body}"
        );
    }
}

// Slow clients -------------------------------------------------------------

/// Hundreds of half-sent headers under a 256-descriptor limit: they are
/// closed within the header timeout, and a normal request is answered
/// meanwhile.
#[tokio::test]
async fn half_sent_headers_are_closed_and_others_are_served() {
    let server = Serve::start(
        None,
        &[("TENANCY__SERVER__HEADER_TIMEOUT_MS", "2000")],
        Some(256),
    );
    assert!(
        server.child.id() > 0 && std::fs::read_to_string("/proc/self/limits").is_ok(),
        "Linux"
    );
    let addr = server.addr();
    let started = Instant::now();
    let slow: Vec<std::net::TcpStream> = (0..300)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: slow.test\r\nX-Half: ")
                .unwrap();
            s
        })
        .collect();
    // A normal request, sent after all of them.
    let c = client();
    let answered = Instant::now();
    let res = c.get(format!("{}/health", server.base)).send().await;
    let waited = answered.elapsed();
    let res = res.expect("a normal request is answered while the slow clients hang");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        waited < Duration::from_secs(7),
        "answered after {waited:?}: within two header timeouts"
    );
    // Every half-sent request is closed by the server, none answered.
    let closed = tokio::task::spawn_blocking(move || {
        let mut closed = 0;
        for mut s in slow {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 256];
            match s.read(&mut buf) {
                Ok(0) => closed += 1,
                // A reset is a close too.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
                Ok(n) => {
                    // hyper may answer 408 before closing.
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
                    closed += 1;
                }
                Err(e) => panic!("a half-sent request stayed open: {e}"),
            }
        }
        closed
    })
    .await
    .unwrap();
    assert_eq!(closed, 300);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "all closed after {:?}",
        started.elapsed()
    );
    assert!(
        server.stderr().is_empty() || !server.stderr().contains("panicked"),
        "{}",
        server.stderr()
    );
}

/// A body that never finishes is 408 `body_timeout` after the body
/// timeout; a body over the bound is 413 at once.
#[tokio::test]
async fn slow_and_oversized_bodies_are_refused() {
    let server = Serve::start(None, &[("TENANCY__SERVER__BODY_TIMEOUT_MS", "1000")], None);
    let c = client();
    create_tenant(&c, &server.base, "acme").await;
    let addr = server.addr();
    let took = Instant::now();
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(
            b"POST /api/notes HTTP/1.1\r\nHost: x\r\nX-Tenant-Id: acme\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"title\":",
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        String::from_utf8_lossy(&reply).into_owned()
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("body_timeout"), "{reply}");
    assert!(
        took.elapsed() < Duration::from_secs(5),
        "{:?}",
        took.elapsed()
    );

    // Refused on the declared length, before a byte of the body is read.
    // (A client still writing a body the server will not read may see the
    // connection reset before it reads the answer, so none is sent here.)
    let addr = server.addr();
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(
            b"POST /api/notes HTTP/1.1\r\nHost: x\r\nX-Tenant-Id: acme\r\ncontent-type: application/json\r\ncontent-length: 2097152\r\n\r\n",
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        String::from_utf8_lossy(&reply).into_owned()
    })
    .await
    .unwrap();
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("body_too_large"), "{reply}");
}

// A database that stops answering -----------------------------------------

/// A TCP proxy to PostgreSQL that can freeze: bytes stop flowing both ways
/// while every socket stays open, as when a server dies without closing
/// its connections.
struct FreezingProxy {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl FreezingProxy {
    async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let target = target.to_owned();
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pipe(ri, wo, flag.clone()));
                tokio::spawn(pipe(ro, wi, flag.clone()));
            }
        });
        Self { port, frozen }
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while frozen.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Whatever was read while freezing is held, not passed on.
        while frozen.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Every request during a database freeze gets a prompt 503 problem with
/// `Retry-After`: none waits longer than the request timeout (3 s by
/// default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_waits_on_a_database_that_stopped_answering() {
    let db = PgTestDb::new().await;
    let proxy = FreezingProxy::start("127.0.0.1:5432").await;
    let url = db
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
    assert_ne!(
        url, db.url,
        "the test database is reached through the proxy"
    );
    let server = Serve::start(Some(&url), &[], None);
    let c = client();
    create_tenant(&c, &server.base, "acme").await;
    for _ in 0..3 {
        let (status, _, body) = call(
            &c,
            reqwest::Method::POST,
            format!("{}/api/notes", server.base),
            &[("x-tenant-id", "acme")],
            Some(json!({"title": "before"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    proxy.frozen.store(true, Ordering::Relaxed);
    let mut requests = Vec::new();
    for i in 0..12 {
        let (c, base) = (c.clone(), server.base.clone());
        requests.push(tokio::spawn(async move {
            let started = Instant::now();
            let (method, body) = if i % 2 == 0 {
                (reqwest::Method::GET, None)
            } else {
                (reqwest::Method::POST, Some(json!({"title": "during"})))
            };
            let out = call(
                &c,
                method,
                format!("{base}/api/notes"),
                &[("x-tenant-id", "acme")],
                body,
            )
            .await;
            (started.elapsed(), out)
        }));
    }
    for r in requests {
        let (took, (status, headers, body)) = r.await.unwrap();
        assert!(
            took < Duration::from_millis(4500),
            "answered after {took:?}: {body}"
        );
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(headers.contains_key("retry-after"), "{headers:?}");
        assert_eq!(
            headers["content-type"], "application/problem+json",
            "{headers:?}"
        );
        assert!(
            [
                "request_timeout",
                "database_unavailable",
                "tenant_store_unavailable"
            ]
            .contains(&body["code"].as_str().unwrap()),
            "{body}"
        );
    }
    proxy.frozen.store(false, Ordering::Relaxed);
}

// Storage missing and database text ---------------------------------------

async fn storage_missing_is_a_server_fault(server: &Serve, drop_storage: impl AsyncFnOnce(&str)) {
    let c = client();
    let tenant = create_tenant(&c, &server.base, "gone").await;
    create_tenant(&c, &server.base, "kept").await;
    for slug in ["gone", "kept"] {
        let (status, _, body) = call(
            &c,
            reqwest::Method::POST,
            format!("{}/api/notes", server.base),
            &[("x-tenant-id", slug)],
            Some(json!({"title": "t"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    drop_storage(tenant["id"].as_str().unwrap()).await;
    let (status, headers, body) = call(
        &c,
        reqwest::Method::GET,
        format!("{}/api/notes", server.base),
        &[("x-tenant-id", "gone")],
        None,
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "tenant_storage_missing",
    );
    assert!(headers.contains_key("retry-after"));
    assert_no_database_text(&body);
    // Other tenants are served; /health names the tenant.
    let (status, _, body) = call(
        &c,
        reqwest::Method::GET,
        format!("{}/api/notes", server.base),
        &[("x-tenant-id", "kept")],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, _, health) = call(
        &c,
        reqwest::Method::GET,
        format!("{}/health", server.base),
        &[],
        None,
    )
    .await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(
        health["checks"]["tenant_storage"]["missing"],
        json!([tenant["id"]]),
        "{health}"
    );
    // The log has what the client did not get, under the request's id.
    let id = body_request_id(&c, server, "gone").await;
    let log = wait_for_log(server, &id).await;
    assert!(log.contains("tenant storage missing"), "{log}");
}

async fn body_request_id(c: &reqwest::Client, server: &Serve, slug: &str) -> String {
    let (_, headers, body) = call(
        c,
        reqwest::Method::GET,
        format!("{}/api/notes", server.base),
        &[("x-tenant-id", slug)],
        None,
    )
    .await;
    let id = body["request_id"].as_str().unwrap().to_owned();
    assert_eq!(headers["x-request-id"], id.as_str());
    id
}

/// The log's line for request `id`.
async fn wait_for_log(server: &Serve, id: &str) -> String {
    for _ in 0..50 {
        if let Some(line) = server.stderr().lines().find(|l| l.contains(id)) {
            return line.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no log line names request {id}:\n{}", server.stderr());
}

#[tokio::test]
async fn a_removed_tenant_file_is_503_tenant_storage_missing_on_sqlite() {
    let server = Serve::start(
        None,
        &[("TENANCY__LIFECYCLE__ISOLATION_STRATEGY", "database")],
        None,
    );
    let dir: PathBuf = server.dir.path().to_owned();
    storage_missing_is_a_server_fault(&server, async |id: &str| {
        let mut removed = 0;
        for entry in walk(&dir) {
            let name = entry.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains(id) {
                std::fs::remove_file(&entry).unwrap();
                removed += 1;
            }
        }
        assert!(removed > 0, "the tenant's file was found");
    })
    .await;
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn a_dropped_tenant_schema_is_503_tenant_storage_missing_on_postgres() {
    let db = PgTestDb::new().await;
    let server = Serve::start(
        Some(&db.url),
        &[("TENANCY__LIFECYCLE__ISOLATION_STRATEGY", "schema")],
        None,
    );
    let url = db.url.clone();
    storage_missing_is_a_server_fault(&server, async move |id: &str| {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let schemas: Vec<String> = sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let schema = schemas
            .into_iter()
            .find(|s| s.contains(&id.replace('-', "_")) || s.contains(id))
            .expect("the tenant's schema");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{schema}\" CASCADE"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    })
    .await;
}

/// Bad input is refused naming the field, never with the database's text
/// (which the log keeps under the request's id: see the storage tests).
async fn database_errors_name_the_field(server: &Serve) {
    let c = client();
    create_tenant(&c, &server.base, "acme").await;
    let post = |body: Value| {
        call(
            &c,
            reqwest::Method::POST,
            format!("{}/api/notes", server.base),
            &[("x-tenant-id", "acme")],
            Some(body),
        )
    };
    let (status, _, body) = post(json!({"title": null})).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_value",
    );
    assert!(
        body["detail"].as_str().unwrap().contains("`title`"),
        "{body}"
    );
    assert_no_database_text(&body);

    // The wrong field was named before: `body` is the object, not `id`.
    let (status, _, body) = post(json!({"title": "t", "body": {"a": [1, 2]}})).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_value",
    );
    assert!(
        body["detail"].as_str().unwrap().contains("`body`"),
        "{body}"
    );

    // Beyond 64 bits: refused, not stored as a rounded float.
    for big in [
        "12345678901234567891",
        "-92233720368547758080",
        "123456789012345678901234567890",
    ] {
        let raw = format!("{{\"title\": {big}}}");
        let res = c
            .post(format!("{}/api/notes", server.base))
            .header("x-tenant-id", "acme")
            .header("content-type", "application/json")
            .body(raw)
            .sent()
            .await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_problem(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
        );
        assert!(
            body["detail"].as_str().unwrap().contains("`title`"),
            "{body}"
        );
    }

    // A key of the wrong type.
    let (status, _, body) = post(json!({"id": "abc", "title": "t"})).await;
    assert_eq!(status.as_u16() / 100, 4, "{body}");
    assert_no_database_text(&body);
    let (status, _, body) = call(
        &c,
        reqwest::Method::GET,
        format!("{}/api/notes/abc", server.base),
        &[("x-tenant-id", "acme")],
        None,
    )
    .await;
    assert_eq!(status.as_u16() / 100, 4, "{body}");
    assert_no_database_text(&body);
    let (_, _, list) = call(
        &c,
        reqwest::Method::GET,
        format!("{}/api/notes", server.base),
        &[("x-tenant-id", "acme")],
        None,
    )
    .await;
    assert_eq!(list["total"], 0, "nothing was written: {list}");
}

#[tokio::test]
async fn database_errors_never_reach_clients_on_sqlite() {
    let server = Serve::start(None, &[], None);
    database_errors_name_the_field(&server).await;
}

#[tokio::test]
async fn database_errors_never_reach_clients_on_postgres() {
    let db = PgTestDb::new().await;
    let server = Serve::start(Some(&db.url), &[], None);
    database_errors_name_the_field(&server).await;
}

/// A configured resource whose columns the server does not type: the
/// database refuses the value, and the client learns which field, never the
/// database's words, which the log keeps under the request's id.
#[tokio::test]
async fn database_refusals_name_the_field_and_stay_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(
        migrations.join("0001_items.sql"),
        "CREATE TABLE items (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, title TEXT NOT NULL, qty INTEGER CHECK (qty >= 0))",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tenancy.yaml"),
        "tenancy:\n  server:\n    resources:\n      - name: items\n        columns: [title, qty]\n",
    )
    .unwrap();
    let migrations = migrations.to_string_lossy().into_owned();
    let server = Serve::start_in(
        dir,
        None,
        &[
            ("TENANCY__LIFECYCLE__ISOLATION_STRATEGY", "database"),
            ("TENANCY__LIFECYCLE__MIGRATIONS_DIR", &migrations),
        ],
        None,
    );
    let c = client();
    create_tenant(&c, &server.base, "acme").await;
    let post = |body: Value| {
        call(
            &c,
            reqwest::Method::POST,
            format!("{}/api/items", server.base),
            &[("x-tenant-id", "acme")],
            Some(body),
        )
    };
    let (status, _, body) = post(json!({"title": "ok", "qty": 1})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, body) = post(json!({"title": null, "qty": 1})).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_value",
    );
    assert_eq!(body["detail"], "`title` is required", "{body}");
    assert_no_database_text(&body);
    let log = wait_for_log(&server, body["request_id"].as_str().unwrap()).await;
    assert!(
        log.contains("NOT NULL constraint failed"),
        "the log has the database's words: {log}"
    );
    let (status, _, body) = post(json!({"title": "x", "qty": -1})).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_value",
    );
    assert_no_database_text(&body);
    let (_, _, list) = call(
        &c,
        reqwest::Method::GET,
        format!("{}/api/items", server.base),
        &[("x-tenant-id", "acme")],
        None,
    )
    .await;
    assert_eq!(list["total"], 1, "nothing else was written: {list}");
}

// The admin API -----------------------------------------------------------

#[tokio::test]
async fn admin_input_is_strict_and_bounded() {
    let server = Serve::start(None, &[], None);
    let c = client();
    let base = &server.base;
    let tenant = create_tenant(&c, base, "acme").await;
    let patch = |body: Value| {
        call(
            &c,
            reqwest::Method::PATCH,
            format!("{base}/admin/tenants/acme"),
            &[ADMIN],
            Some(body),
        )
    };
    for (body, field) in [
        (json!({"status": "suspended"}), "status"),
        (json!({"id": "other"}), "id"),
        (json!({"created_at": "2020-01-01T00:00:00Z"}), "created_at"),
        (json!({"name": "ok", "colour": "red"}), "colour"),
    ] {
        let (status, _, problem) = patch(body).await;
        assert_problem(
            status,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        );
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{problem}"
        );
    }
    let (_, _, now) = call(
        &c,
        reqwest::Method::GET,
        format!("{base}/admin/tenants/acme"),
        &[ADMIN],
        None,
    )
    .await;
    assert_eq!(now["name"], tenant["name"], "nothing changed");
    assert_eq!(now["status"], "active");
    let (status, _, _) = patch(json!({"name": "Acme Corp"})).await;
    assert_eq!(status, StatusCode::OK);

    // Pages are capped, and the cap is said.
    for url in [
        format!("{base}/admin/audit?limit=1000000000"),
        format!("{base}/admin/audit?limit=1001"),
        format!("{base}/admin/tenants?limit=1001"),
        format!("{base}/admin/tenants?offset=99999999999"),
    ] {
        let (status, _, problem) = call(&c, reqwest::Method::GET, url, &[ADMIN], None).await;
        assert_problem(
            status,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
        );
    }
    let (status, _, _) = call(
        &c,
        reqwest::Method::GET,
        format!("{base}/admin/audit?limit=1000"),
        &[ADMIN],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, problem) = call(
        &c,
        reqwest::Method::GET,
        format!("{base}/api/notes?limit=1001"),
        &[("x-tenant-id", "acme")],
        None,
    )
    .await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_query",
    );

    // Config values and key counts are bounded.
    let put = |key: String, value: Value| {
        call(
            &c,
            reqwest::Method::PUT,
            format!("{base}/admin/tenants/acme/config/{key}"),
            &[ADMIN],
            Some(value),
        )
    };
    let (status, _, problem) = put("big".into(), json!("x".repeat(70_000))).await;
    assert_problem(
        status,
        &problem,
        StatusCode::PAYLOAD_TOO_LARGE,
        "value_too_large",
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("65536"),
        "{problem}"
    );
    for i in 0..200 {
        let (status, _, body) = put(format!("k{i}"), json!(i)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _, problem) = put("k200".into(), json!(1)).await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "too_many_keys",
    );
    let (status, _, _) = put("k7".into(), json!("changed")).await;
    assert_eq!(status, StatusCode::OK, "an existing key can still change");
    let (status, _, problem) = call(
        &c,
        reqwest::Method::POST,
        format!("{base}/admin/tenants"),
        &[ADMIN],
        Some(json!({"slug": "meta", "name": "m", "metadata": {"blob": "x".repeat(20_000)}})),
    )
    .await;
    assert_problem(
        status,
        &problem,
        StatusCode::PAYLOAD_TOO_LARGE,
        "value_too_large",
    );
    let (status, _, problem) = call(
        &c,
        reqwest::Method::POST,
        format!("{base}/admin/tenants"),
        &[ADMIN],
        Some(json!({"slug": "longname", "name": "n".repeat(201)})),
    )
    .await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    );
}

/// A slug may not be another tenant's id (issue 26, finding 5): the admin
/// API refuses it with 409, and the tenant keeps being the one its id names.
#[tokio::test]
async fn a_slug_cannot_be_another_tenants_id() {
    let server = Serve::start(None, &[], None);
    let c = client();
    // A tenant whose generated id is also a valid slug (starts with a letter).
    let mut target = None;
    for i in 0..40 {
        let t = create_tenant(&c, &server.base, &format!("t{i}")).await;
        if t["id"]
            .as_str()
            .unwrap()
            .starts_with(|ch: char| ch.is_ascii_lowercase())
        {
            target = Some(t);
            break;
        }
    }
    let target = target.expect("one of 40 uuids starts with a letter");
    // Another tenant, to be renamed onto the target's id.
    create_tenant(&c, &server.base, "other").await;
    let id = target["id"].as_str().unwrap();
    let (status, _, problem) = call(
        &c,
        reqwest::Method::POST,
        format!("{}/admin/tenants", server.base),
        &[ADMIN],
        Some(json!({"slug": id, "name": "Evil"})),
    )
    .await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "duplicate");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("one namespace"),
        "{problem}"
    );
    let (status, _, problem) = call(
        &c,
        reqwest::Method::PATCH,
        format!("{}/admin/tenants/other", server.base),
        &[ADMIN],
        Some(json!({"slug": id})),
    )
    .await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "duplicate");
    let (_, _, found) = call(
        &c,
        reqwest::Method::GET,
        format!("{}/admin/tenants/{id}", server.base),
        &[ADMIN],
        None,
    )
    .await;
    assert_eq!(
        found["slug"], target["slug"],
        "the id still names its own tenant"
    );
}

async fn audit(c: &reqwest::Client, base: &str, query: &str) -> Vec<Value> {
    let (status, _, body) = call(
        c,
        reqwest::Method::GET,
        format!("{base}/admin/audit?{query}"),
        &[ADMIN],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

/// Refused admin actions are audit entries with their reason; a flood of
/// bad tokens is recorded only up to a budget.
#[tokio::test]
async fn refused_admin_actions_are_audited_within_a_budget() {
    let server = Serve::start(None, &[], None);
    let c = client();
    let base = &server.base;
    let acme = create_tenant(&c, base, "acme").await;
    let wrong = ("authorization", "Bearer wrong-token-wrong-token");
    let (status, _, _) = call(
        &c,
        reqwest::Method::POST,
        format!("{base}/admin/tenants/acme/suspend"),
        &[wrong, ("x-actor", "mallory")],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = call(
        &c,
        reqwest::Method::GET,
        format!("{base}/admin/tenants/nobody"),
        &[ADMIN],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = call(
        &c,
        reqwest::Method::POST,
        format!("{base}/admin/tenants"),
        &[ADMIN, ("x-actor", "ops")],
        Some(json!({"slug": "acme", "name": "dup"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, _) = call(
        &c,
        reqwest::Method::PATCH,
        format!("{base}/admin/tenants/acme"),
        &[ADMIN],
        Some(json!({"status": "active"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let entries = audit(&c, base, "limit=100").await;
    let refused: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "admin.refused")
        .collect();
    let find = |status: u16| {
        refused
            .iter()
            .find(|e| e["after"]["status"] == status)
            .unwrap_or_else(|| panic!("no refused entry with status {status}: {entries:#?}"))
    };
    let unauthorized = find(401);
    assert_eq!(unauthorized["actor"], "unauthenticated");
    assert_eq!(unauthorized["after"]["claimed_actor"], "mallory");
    assert_eq!(unauthorized["after"]["path"], "/admin/tenants/acme/suspend");
    assert_eq!(
        unauthorized["tenant_id"], acme["id"],
        "the tenant it aimed at"
    );
    assert_eq!(find(404)["after"]["code"], "tenant_not_found");
    let conflict = find(409);
    assert_eq!(conflict["actor"], "admin:ops");
    assert!(
        conflict["after"]["reason"]
            .as_str()
            .unwrap()
            .contains("acme"),
        "{conflict}"
    );
    assert!(
        find(422)["after"]["reason"]
            .as_str()
            .unwrap()
            .contains("status")
    );
    // Tenant acme's own log shows the attempts aimed at it.
    let acme_log = audit(&c, base, "tenant=acme&limit=100").await;
    assert!(
        acme_log.iter().any(|e| e["action"] == "admin.refused"),
        "{acme_log:#?}"
    );

    // A flood of bad tokens: at most the burst (50) and 5 a second are
    // written, however long the flood takes on this machine.
    let flood = Instant::now();
    for _ in 0..300 {
        let res = c
            .get(format!("{base}/admin/tenants"))
            .bearer_auth("not-the-token-not-the-token")
            .sent()
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let entries = audit(&c, base, "limit=1000").await;
    let floods = entries
        .iter()
        .filter(|e| e["action"] == "admin.refused" && e["after"]["status"] == 401)
        .count();
    let most = 50 + 5 * (flood.elapsed().as_secs() as usize + 1);
    assert!(
        (40..=most).contains(&floods),
        "{floods} entries for 301 refusals (at most {most})"
    );
}

// The gateway and open routes ---------------------------------------------

/// `/resolve` applies the tenant's rate limit, as `/api` does.
#[tokio::test]
async fn resolve_applies_the_tenant_rate_limit() {
    let server = Serve::start(None, &[("TENANCY__RATE_LIMIT__DEFAULT_RPS", "5")], None);
    let c = client();
    create_tenant(&c, &server.base, "acme").await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..40 {
        let (status, headers, body) = call(
            &c,
            reqwest::Method::GET,
            format!("{}/resolve", server.base),
            &[("x-tenant-id", "acme")],
            None,
        )
        .await;
        statuses.push(status.as_u16());
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((headers, body));
        }
    }
    let (headers, body) = limited.unwrap_or_else(|| panic!("no 429 in {statuses:?}"));
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(body["code"].is_string(), "{body}");
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 5,
        "{statuses:?}"
    );
}

/// With no authentication configured, the server says so: at start, in
/// `/health` and (through `/health`) on the console.
#[tokio::test]
async fn open_tenant_routes_are_announced() {
    let server = Serve::start(None, &[], None);
    let c = client();
    let (_, _, health) = call(
        &c,
        reqwest::Method::GET,
        format!("{}/health", server.base),
        &[],
        None,
    )
    .await;
    assert_eq!(health["auth"], "open", "{health}");
    assert!(
        health["auth_warning"]
            .as_str()
            .unwrap()
            .contains("any caller naming a tenant")
    );
    assert!(
        server
            .stderr()
            .contains("WARNING: no authentication is configured"),
        "{}",
        server.stderr()
    );
    let js = c
        .get(format!("{}/console/console.js", server.base))
        .text_body()
        .await;
    assert!(js.contains("auth-warning"), "the console shows it");

    let secured = Serve::start(
        None,
        &[(
            "TENANCY__AUTH__JWT_SECRET",
            "a-secret-of-enough-length-0123456789",
        )],
        None,
    );
    let (_, _, health) = call(
        &c,
        reqwest::Method::GET,
        format!("{}/health", secured.base),
        &[],
        None,
    )
    .await;
    assert_eq!(health["auth"], "required", "{health}");
    let optional = Serve::start(
        None,
        &[
            (
                "TENANCY__AUTH__JWT_SECRET",
                "a-secret-of-enough-length-0123456789",
            ),
            ("TENANCY__AUTH__REQUIRED", "false"),
        ],
        None,
    );
    let (_, _, health) = call(
        &c,
        reqwest::Method::GET,
        format!("{}/health", optional.base),
        &[],
        None,
    )
    .await;
    assert_eq!(health["auth"], "optional", "{health}");
    // Required: a tenant route without a token is 401 token_required,
    // the gateway's /resolve too.
    for path in ["/api/notes", "/resolve"] {
        let (status, _, body) = call(
            &c,
            reqwest::Method::GET,
            format!("{}{path}", secured.base),
            &[("x-tenant-id", "acme")],
            None,
        )
        .await;
        assert_eq!(
            (status.as_u16(), body["code"].as_str()),
            (401, Some("token_required")),
            "{path}: {body}"
        );
    }
}
