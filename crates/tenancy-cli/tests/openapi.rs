//! `GET /openapi.json`: an OpenAPI 3.1 document of the whole
//! surface, and schemathesis against a running `tenancy serve`: no 5xx,
//! every response's status, content type, headers and body conform.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{ADMIN_TOKEN, Cli, Sending, create_tenant, serve};
use serde_json::{Value, json};

/// schemathesis's `st`, installed by scripts/test.sh into a virtualenv.
fn schemathesis() -> String {
    if let Ok(path) = std::env::var("TENANCY_SCHEMATHESIS") {
        return path;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let default = format!("{home}/.cache/tenancy-schemathesis/bin/st");
    if std::path::Path::new(&default).exists() {
        return default;
    }
    panic!(
        "schemathesis is required for this test: scripts/test.sh installs it \
         (python3 -m venv ~/.cache/tenancy-schemathesis && ~/.cache/tenancy-schemathesis/bin/pip install schemathesis)"
    );
}

#[tokio::test]
async fn the_document_covers_the_surface_and_the_server_conforms_to_it() {
    let st = schemathesis();
    let cli = Cli::sqlite();
    let server = serve(&cli);
    let c = reqwest::Client::builder().no_proxy().build().unwrap();

    let doc: Value = c
        .get(format!("{}/openapi.json", server.base))
        .json_body()
        .await;
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/health",
        "/metrics",
        "/resolve",
        "/tls/ask",
        "/admin/tenants",
        "/admin/tenants/{tenant}/suspend",
        "/admin/tenants/{tenant}/config/{key}",
        "/admin/tenants/{tenant}/domains",
        "/admin/tenants/{tenant}/impersonate",
        "/admin/audit",
        "/api/notes",
        "/api/notes/{id}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    let unauthorized = &doc["paths"]["/admin/tenants"]["post"]["responses"]["401"];
    assert!(
        unauthorized["content"]["application/problem+json"].is_object(),
        "{unauthorized}"
    );
    assert!(doc["components"]["schemas"]["TenantInfo"].is_object());
    // The built-in resource is written out: its columns, the one a create
    // needs, and no key (the database assigns it).
    let create = &doc["components"]["schemas"]["notes_create"];
    assert_eq!(create["required"], json!(["title"]), "{create}");
    assert_eq!(create["additionalProperties"], false);
    assert!(create["properties"]["id"].is_null(), "{create}");
    // The server's bounds are the document's.
    let list = &doc["paths"]["/admin/tenants"]["get"]["parameters"];
    let limit = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["maximum"], 1000, "{limit}");
    let slug = &doc["components"]["schemas"]["CreateBody"]["properties"]["slug"];
    assert!(slug["pattern"].is_string(), "{slug}");

    // A tenant for the tenant routes to resolve.
    let res = create_tenant(&c, &server.base, json!({"slug": "acme", "name": "Acme"})).await;
    assert_eq!(res.status(), 201);

    let out = Command::new(&st)
        .args([
            "--config-file",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml"),
            "run",
            &format!("{}/openapi.json", server.base),
            "--header",
            &format!("Authorization: Bearer {ADMIN_TOKEN}"),
            "--header",
            "X-Tenant-Id: acme",
            // Every check: the server accepts what the schema allows and
            // refuses what it forbids, answers undeclared methods with 405,
            // and refuses admin calls without the token.
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--generation-deterministic",
            "--request-timeout",
            "10",
        ])
        // Anything schemathesis writes stays out of the source tree.
        .current_dir(cli.dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");
}
