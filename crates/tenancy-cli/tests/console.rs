//! The web console in a real headless Chromium: scripts/test.sh
//! installs Debian's chromium and Playwright (PyPI, in the schemathesis
//! virtualenv). Screenshots go to target/console-screenshots (not in git).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{ADMIN_TOKEN, Cli, Sending, serve};

fn python() -> String {
    let st = std::env::var("TENANCY_SCHEMATHESIS").unwrap_or_else(|_| {
        format!(
            "{}/.cache/tenancy-schemathesis/bin/st",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let python = std::path::Path::new(&st).with_file_name("python");
    assert!(
        python.exists(),
        "the test virtualenv is missing: run scripts/test.sh (it installs Playwright and chromium)"
    );
    python.to_string_lossy().into_owned()
}

#[tokio::test]
async fn an_operator_manages_a_tenant_in_the_console() {
    let python = python();
    let cli = Cli::sqlite();
    let server = serve(&cli);

    // The console's assets: from the binary, with a strict CSP.
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let res = c.get(format!("{}/console", server.base)).sent().await;
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = res.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );

    let shots = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/console-screenshots"
    );
    let out = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/console/console_e2e.py"
        ))
        .args([server.base.as_str(), ADMIN_TOKEN, shots])
        .arg(cli.path("tenancy.db"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "console e2e failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("console e2e: ok"), "{stdout}");
}
