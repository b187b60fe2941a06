//! `tenancy sql rewrite` end to end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `tenancy sql rewrite` with `args` on `sql`: it succeeds and prints `expected`.
fn rewrites(args: &[&str], sql: &str, expected: &str) {
    let out = run(&[&["sql", "rewrite"], args].concat(), sql);
    assert!(out.status.success(), "{args:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected, "{args:?}");
}

#[test]
fn rewrites_postgres() {
    rewrites(
        &["--tables", "notes,orders", "--column", "tenant_id"],
        "SELECT * FROM notes n JOIN orders o ON o.nid = n.id WHERE n.a = $1 OR n.b\n",
        "SELECT * FROM notes n JOIN orders o ON o.nid = n.id WHERE (n.a = $1 OR n.b) AND n.tenant_id = $2 AND o.tenant_id = $2\n",
    );
}

#[test]
fn rewrites_sqlite() {
    rewrites(
        &["--tables", "notes", "--dialect", "sqlite"],
        "SELECT * FROM notes WHERE id = ?",
        "SELECT * FROM notes WHERE id = ?1 AND notes.tenant_id = ?2\n",
    );
}

#[test]
fn refuses_with_status_1() {
    let out = run(&["sql", "rewrite", "--tables", "notes"], "TRUNCATE notes");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("TRUNCATE") && err.contains("notes"), "{err}");
}

#[test]
fn tables_are_required() {
    let out = run(&["sql", "rewrite"], "SELECT 1");
    assert!(!out.status.success());
}
