//! The nginx gateway example end to end (`examples/gateway-nginx`):
//! `tenancy serve` answers nginx's `auth_request`, nginx forwards to the
//! example's upstream service with the resolved tenant's headers
//! (replacing any the client sent), and refuses requests without a tenant
//! that may be served. nginx runs from the example's config template in a
//! temporary directory, on a free port, as whoever runs the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{ADMIN_TOKEN, Cli, Sending, create_tenant, free_port, serve};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// nginx, stopped when dropped.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // One process (`master_process off`): nothing is left behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx on `PATH` or where Debian puts it; a clear failure otherwise.
fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nginx is required for this test and was not found on PATH or in /usr/sbin: \
                 run scripts/test.sh, which installs it (Debian package `nginx`)"
            )
        })
}

/// Writes the example's template with these ports and starts nginx in the
/// foreground, its pid, logs and temporary files in a temporary directory.
fn start_nginx(binary: &Path, tenancy_port: &str, upstream_port: u16) -> (Nginx, String) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().to_str().unwrap().to_owned();
    let port = free_port();
    let template = include_str!("../../../examples/gateway-nginx/nginx.conf.template");
    let conf = template
        .replace("{{NGINX_PORT}}", &port.to_string())
        .replace("{{TENANCY_PORT}}", tenancy_port)
        .replace("{{UPSTREAM_PORT}}", &upstream_port.to_string())
        .replace("{{PREFIX}}", &prefix);
    assert!(!conf.contains("{{"), "a placeholder was left: {conf}");
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(binary)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        // The log before the config is read (default: /var/log/nginx).
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .args(["-g", "daemon off; master_process off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    (Nginx { child, dir }, format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn nginx_forwards_only_resolved_tenants_with_their_headers() {
    let nginx_bin = nginx_binary();
    let mut cli = Cli::sqlite();
    cli.env
        .push(("TENANCY__RATE_LIMIT__DEFAULT_RPS".into(), "5".into()));
    let tenancy = serve(&cli);
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut ids = std::collections::HashMap::new();
    for (slug, plan) in [("acme", Some("pro")), ("globex", None), ("initech", None)] {
        let res = create_tenant(
            &c,
            &tenancy.base,
            json!({"slug": slug, "name": slug, "plan": plan}),
        )
        .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let tenant: Value = res.json().await.unwrap();
        ids.insert(slug, tenant["id"].as_str().unwrap().to_owned());
    }
    let res = c
        .post(format!("{}/admin/tenants/initech/suspend", tenancy.base))
        .bearer_auth(ADMIN_TOKEN)
        .sent()
        .await;
    assert_eq!(res.status(), StatusCode::OK);

    // The example's upstream service (the library its binary serves).
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_port = upstream.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(upstream, example_gateway_nginx::app()).await });

    let tenancy_port = tenancy.base.rsplit(':').next().unwrap();
    let (mut nginx, base) = start_nginx(&nginx_bin, tenancy_port, upstream_port);
    let mut ready = false;
    for _ in 0..200 {
        if let Some(status) = nginx.child.try_wait().unwrap() {
            panic!("nginx exited ({status}): {}", nginx.error_log());
        }
        if c.get(format!("{base}/whoami")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "nginx did not answer: {}", nginx.error_log());

    let whoami = |headers: &[(&str, &str)]| {
        let mut req = c.get(format!("{base}/whoami"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };

    // A tenant named by slug reaches the upstream with its resolved id,
    // slug and plan; what the client sent under those names is replaced.
    let res = whoami(&[
        ("x-tenant-id", "acme"),
        ("x-tenant-slug", "globex"),
        ("x-tenant-plan", "enterprise"),
    ])
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({"tenant_id": ids["acme"], "tenant_slug": "acme", "tenant_plan": "pro"}),
        "the resolved tenant, not the client's X-Tenant-Slug/X-Tenant-Plan"
    );
    // By id too; a tenant without a plan gets no X-Tenant-Plan at all, not
    // the one the client sent.
    let res = whoami(&[
        ("x-tenant-id", &ids["globex"]),
        ("x-tenant-plan", "enterprise"),
    ])
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({"tenant_id": ids["globex"], "tenant_slug": "globex", "tenant_plan": null})
    );

    // Refusals never reach the upstream.
    let res = whoami(&[("x-tenant-id", "nope")]).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "unknown tenant");
    let res = whoami(&[]).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "no tenant");
    let res = whoami(&[("x-tenant-slug", "acme")]).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "X-Tenant-Slug names no tenant: only the gateway sets it"
    );
    let res = whoami(&[("x-tenant-id", "initech")]).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "suspended");

    // A suspension made now applies at the next request.
    let res = c
        .post(format!("{}/admin/tenants/acme/suspend", tenancy.base))
        .bearer_auth(ADMIN_TOKEN)
        .sent()
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = whoami(&[("x-tenant-id", "acme")]).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "acme suspended");

    // The tenant's rate limit applies at the gateway too (5 per second
    // here): nginx answers the 429 with its Retry-After, and the upstream
    // never sees the request.
    let mut limited = None;
    for _ in 0..40 {
        let res = whoami(&[("x-tenant-id", "globex")]).await.unwrap();
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(res);
            break;
        }
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = limited.expect("40 requests in a row over a limit of 5/s: some must be 429");
    let retry_after = res.headers()["retry-after"].to_str().unwrap().to_owned();
    assert!(retry_after.parse::<u64>().unwrap() >= 1, "{retry_after}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");
}
