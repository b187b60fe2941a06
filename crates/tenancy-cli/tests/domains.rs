//! Tenant domains end to end: the admin API and CLI of
//! `tenancy serve` on SQLite and PostgreSQL (two instances), DNS TXT
//! verification against a dnsmasq this test starts, `/tls/ask`, and Caddy's
//! on-demand TLS in front of `tenancy serve`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cli, PgTestDb, Sending, Server, admin_call, free_port, serve, titles};
use serde_json::{Value, json};

/// A process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary(name: &str) -> String {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/sbin"] {
        let path = format!("{dir}/{name}");
        if std::path::Path::new(&path).exists() {
            return path;
        }
    }
    panic!(
        "{name} is required for this test: scripts/test.sh installs it (apt-get install {name})"
    );
}

/// dnsmasq on `port` answering one TXT record.
fn dnsmasq(port: u16, name: &str, value: &str) -> Process {
    let child = Command::new(binary("dnsmasq"))
        .args([
            "--no-daemon",
            &format!("--port={port}"),
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            &format!("--txt-record={name},{value}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Ready when the port answers.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.connect(("127.0.0.1", port)))
            .is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Process(child)
}

struct Http {
    http: reqwest::Client,
}

impl Http {
    fn new() -> Self {
        Self {
            http: reqwest::Client::new(),
        }
    }

    async fn admin(
        &self,
        s: &Server,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        admin_call(&self.http, format!("{}{path}", s.base), method, body).await
    }

    /// GET `path` with `Host: host`.
    async fn host(&self, s: &Server, host: &str, path: &str) -> (u16, Value) {
        let res = self
            .http
            .get(format!("{}{path}", s.base))
            .header("host", host)
            .sent()
            .await;
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn ask(&self, s: &Server, domain: &str) -> u16 {
        self.http
            .get(format!("{}/tls/ask?domain={domain}", s.base))
            .sent()
            .await
            .status()
            .as_u16()
    }
}

/// The whole domain story against `servers` (all on one store).
async fn scenario(cli: &Cli, servers: &[Server], dns_port: u16) {
    let h = Http::new();
    let one = &servers[0];
    for slug in ["acme", "beta"] {
        let (s, _) = h
            .admin(
                one,
                "POST",
                "/admin/tenants",
                Some(json!({"slug": slug, "name": slug})),
            )
            .await;
        assert_eq!(s, 201);
    }
    let res = h
        .http
        .post(format!("{}/api/notes", one.base))
        .header("x-tenant-id", "acme")
        .json(&json!({"title": "acme-note"}))
        .sent()
        .await;
    assert_eq!(res.status(), 201);

    // Bad input: 422 with a reason; no token: 401.
    let long = format!("{}.com", "a".repeat(300));
    for bad in [
        "a..b",
        long.as_str(),
        "*.x.com",
        "evil.com/../",
        "a\u{1}b.com",
        "10.0.0.1",
        "",
    ] {
        let (s, body) = h
            .admin(
                one,
                "POST",
                "/admin/tenants/acme/domains",
                Some(json!({"domain": bad})),
            )
            .await;
        assert_eq!(s, 422, "{bad:?}: {body}");
        assert_eq!(body["code"], "invalid_domain", "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains("invalid domain"),
            "{body}"
        );
    }
    let res = h
        .http
        .post(format!("{}/admin/tenants/acme/domains", one.base))
        .json(&json!({"domain": "portal.acme.test"}))
        .sent()
        .await;
    assert_eq!(res.status(), 401);

    // Added: pending, with the TXT record to publish.
    let (s, added) = h
        .admin(
            one,
            "POST",
            "/admin/tenants/acme/domains",
            Some(json!({"domain": "Portal.Acme.TEST.", "primary": true})),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    assert_eq!(added["domain"], "portal.acme.test");
    assert_eq!(added["status"], "pending");
    assert_eq!(added["txt_name"], "_tenancy-challenge.portal.acme.test");
    let token = added["txt_value"].as_str().unwrap().to_owned();
    // A second claim, by anyone, is a conflict.
    for (tenant, name) in [
        ("beta", "portal.acme.test"),
        ("beta", "PORTAL.acme.test:443"),
        ("acme", "portal.acme.test"),
    ] {
        let (s, body) = h
            .admin(
                one,
                "POST",
                &format!("/admin/tenants/{tenant}/domains"),
                Some(json!({"domain": name})),
            )
            .await;
        assert_eq!(s, 409, "{body}");
        assert_eq!(body["code"], "domain_taken");
    }
    let (s, _) = h
        .admin(
            one,
            "POST",
            "/admin/tenants/ghost/domains",
            Some(json!({"domain": "g.test"})),
        )
        .await;
    assert_eq!(s, 404);

    // Pending: does not resolve, no certificate.
    for s in servers {
        assert_eq!(h.host(s, "portal.acme.test", "/api/notes").await.0, 401);
        assert_eq!(h.ask(s, "portal.acme.test").await, 404);
    }

    // Verification: a wrong TXT value is refused, the right one verifies.
    {
        let _dns = dnsmasq(
            dns_port,
            "_tenancy-challenge.portal.acme.test",
            "wrong-token",
        );
        let (s, body) = h
            .admin(one, "POST", "/admin/domains/portal.acme.test/verify", None)
            .await;
        assert_eq!(s, 409, "{body}");
        assert_eq!(body["code"], "domain_not_verified");
        assert!(body["detail"].as_str().unwrap().contains(&token), "{body}");
    }
    {
        let _dns = dnsmasq(dns_port, "_tenancy-challenge.portal.acme.test", &token);
        let (s, body) = h
            .admin(one, "POST", "/admin/domains/portal.acme.test/verify", None)
            .await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["status"], "verified");
    }
    let (s, _) = h
        .admin(one, "POST", "/admin/domains/nowhere.test/verify", None)
        .await;
    assert_eq!(s, 404);

    // Every spelling of the host resolves acme, in every instance.
    for server in servers {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let (s, body) = h.host(server, "portal.acme.test", "/api/notes").await;
            if s == 200 {
                assert_eq!(titles(&body), ["acme-note"]);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "verification not seen: {s} {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for host in [
            "PORTAL.Acme.Test",
            "portal.acme.test.",
            "portal.acme.test:8443",
        ] {
            let (s, body) = h.host(server, host, "/api/notes").await;
            assert_eq!(s, 200, "{host}: {body}");
            assert_eq!(titles(&body), ["acme-note"], "{host}");
        }
        assert_eq!(h.ask(server, "portal.acme.test").await, 200);
        assert_eq!(h.ask(server, "PORTAL.acme.test.").await, 200);
        assert_eq!(h.ask(server, "unknown.test").await, 404);
        assert_eq!(
            h.ask(server, "acme.app.test").await,
            200,
            "slug.base_domain"
        );
        assert_eq!(h.ask(server, "ghost.app.test").await, 404);
        assert_eq!(h.ask(server, "*.app.test").await, 404);
    }
    let list = cli.json(&["domains", "list", "acme", "--json"]);
    assert_eq!(list["items"][0]["domain"], "portal.acme.test");
    assert_eq!(list["items"][0]["primary"], true);

    // A suspended tenant's domain: 403, and no certificate.
    let (s, _) = h
        .admin(
            one,
            "POST",
            "/admin/tenants/acme/suspend",
            Some(json!({"reason": "unpaid"})),
        )
        .await;
    assert_eq!(s, 200);
    for server in servers {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let (s, body) = h.host(server, "portal.acme.test", "/api/notes").await;
            if s == 403 && h.ask(server, "portal.acme.test").await == 404 {
                assert_eq!(body["code"], "tenant_not_active", "{body}");
                break;
            }
            assert!(Instant::now() < deadline, "suspension not seen: {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (s, _) = h
        .admin(one, "POST", "/admin/tenants/acme/activate", None)
        .await;
    assert_eq!(s, 200);

    // Removed through one instance: stops resolving in every instance.
    let (s, _) = h
        .admin(one, "DELETE", "/admin/domains/portal.acme.test", None)
        .await;
    assert_eq!(s, 200);
    for server in servers {
        let deadline = Instant::now() + Duration::from_secs(2);
        while h.host(server, "portal.acme.test", "/api/notes").await.0 != 401 {
            assert!(
                Instant::now() < deadline,
                "removal not seen by {}",
                server.base
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(h.ask(server, "portal.acme.test").await, 404);
    }
    let (s, _) = h
        .admin(one, "DELETE", "/admin/domains/portal.acme.test", None)
        .await;
    assert_eq!(s, 404);

    // The CLI: add verified by an operator, remove.
    let added = cli.json(&[
        "domains",
        "add",
        "beta",
        "shop.beta.test",
        "--verified",
        "--json",
    ]);
    assert_eq!(added["status"], "verified");
    let err = cli.fail(&["domains", "add", "acme", "shop.beta.test"]);
    assert!(err.contains("already claimed"), "{err}");
    let err = cli.fail(&["domains", "add", "acme", "a..b"]);
    assert!(err.contains("invalid domain"), "{err}");
    for server in servers {
        let deadline = Instant::now() + Duration::from_secs(2);
        while h.ask(server, "shop.beta.test").await != 200 {
            assert!(
                Instant::now() < deadline,
                "a domain added by the CLI not seen"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    cli.ok(&["domains", "remove", "shop.beta.test"]);
    let err = cli.fail(&["domains", "verify", "shop.beta.test"]);
    assert!(err.contains("not a domain of any tenant"), "{err}");
}

fn domain_env(cli: &mut Cli, dns_port: u16) {
    cli.env.push((
        "TENANCY__DOMAINS__NAMESERVERS".into(),
        format!("127.0.0.1:{dns_port}"),
    ));
    cli.env
        .push(("TENANCY__RESOLUTION__BASE_DOMAIN".into(), "app.test".into()));
}

#[tokio::test]
async fn domains_on_sqlite() {
    let dns_port = free_port();
    let mut cli = Cli::sqlite();
    domain_env(&mut cli, dns_port);
    let server = serve(&cli);
    scenario(&cli, &[server], dns_port).await;
}

#[tokio::test]
async fn domains_on_postgres_reach_every_instance() {
    let db = PgTestDb::new().await;
    let dns_port = free_port();
    let mut cli = Cli::with_url(&db.url);
    domain_env(&mut cli, dns_port);
    let servers = [serve(&cli), serve(&cli)];
    scenario(&cli, &servers, dns_port).await;
}

/// Caddy (Debian's package) with on-demand TLS from its internal CA in
/// front of `tenancy serve`: a verified domain gets a certificate and
/// acme's notes over HTTPS; an unknown or unverified one gets none.
#[tokio::test]
async fn caddy_on_demand_tls_in_front_of_serve() {
    let mut cli = Cli::sqlite();
    domain_env(&mut cli, free_port());
    let server = serve(&cli);
    let h = Http::new();
    let (s, _) = h
        .admin(
            &server,
            "POST",
            "/admin/tenants",
            Some(json!({"slug": "acme", "name": "Acme"})),
        )
        .await;
    assert_eq!(s, 201);
    let res = h
        .http
        .post(format!("{}/api/notes", server.base))
        .header("x-tenant-id", "acme")
        .json(&json!({"title": "over-tls"}))
        .sent()
        .await;
    assert_eq!(res.status(), 201);
    for (domain, verified) in [("portal.acme.test", true), ("pending.acme.test", false)] {
        let (s, _) = h
            .admin(
                &server,
                "POST",
                "/admin/tenants/acme/domains",
                Some(json!({"domain": domain, "verified": verified})),
            )
            .await;
        assert_eq!(s, 201);
    }

    let dir = tempfile::tempdir().unwrap();
    let (https, http) = (free_port(), free_port());
    let upstream = server.base.trim_start_matches("http://");
    let caddyfile = format!(
        "{{\n  admin off\n  skip_install_trust\n  local_certs\n  http_port {http}\n  https_port {https}\n  storage file_system {storage}\n  on_demand_tls {{\n    ask {base}/tls/ask\n  }}\n}}\n\nhttps:// {{\n  tls {{\n    on_demand\n  }}\n  reverse_proxy {upstream}\n}}\n",
        storage = dir.path().join("storage").display(),
        base = server.base,
    );
    std::fs::write(dir.path().join("Caddyfile"), caddyfile).unwrap();
    let child = Command::new(binary("caddy"))
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(dir.path().join("Caddyfile"))
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("caddy.log")).unwrap())
        .spawn()
        .unwrap();
    let _caddy = Process(child);
    let root = dir.path().join("storage/pki/authorities/local/root.crt");
    let curl = |domain: &str| {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--resolve"])
            .arg(format!("{domain}:{https}:127.0.0.1"))
            .arg("--cacert")
            .arg(&root)
            .arg(format!("https://{domain}:{https}/api/notes"))
            .output()
            .unwrap()
    };
    // The internal CA is made on the first handshake Caddy accepts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if root.exists() {
            let out = curl("portal.acme.test");
            if out.status.success() {
                break String::from_utf8(out.stdout).unwrap();
            }
        } else {
            let _ = curl("portal.acme.test");
        }
        assert!(
            Instant::now() < deadline,
            "no certificate for a verified domain: {}",
            std::fs::read_to_string(dir.path().join("caddy.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let notes: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(titles(&notes), ["over-tls"], "{body}");
    for refused in ["unknown.acme.test", "pending.acme.test"] {
        let out = curl(refused);
        assert!(!out.status.success(), "{refused} got a certificate");
    }
}
