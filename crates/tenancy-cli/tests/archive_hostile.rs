//! Archives and purges under attack (issue 25): an archive edited by
//! someone who wants another tenant's name, a domain they do not own, or
//! the importer's memory; a purge that must not reach a look-alike tenant's
//! archived data; a failed import that must leave a trace.
//!
//! Every hostile archive starts as a real export, rewritten here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Cli, PgTestDb, Sending, id_of, serve};
use serde_json::Value;
use sha2::Digest as _;
use sqlx::Connection;

/// Every entry of an archive, in order: (name, bytes).
fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

/// A ustar header named `name` byte for byte (the `tar` crate refuses to
/// write `..` or absolute names; an attacker's tool does not).
fn header(name: &str) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    let raw = &mut header.as_ustar_mut().unwrap().name;
    raw[..name.len()].copy_from_slice(name.as_bytes());
    header
}

/// A regular ustar entry, header and padded data.
fn regular(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = header(name);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// A header-only entry of another type (symlink, hard link, directory…).
fn special(name: &str, kind: tar::EntryType, link: &str) -> Vec<u8> {
    let mut header = header(name);
    header.set_size(0);
    header.set_mode(0o777);
    header.set_entry_type(kind);
    header.as_ustar_mut().unwrap().linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_cksum();
    header.as_bytes().to_vec()
}

/// A GNU sparse entry that reads as `real_size` bytes: zeros, then `tail`
/// (one 512-byte block stored).
fn sparse(name: &str, real_size: u64, tail: &[u8]) -> Vec<u8> {
    let mut block = vec![b' '; 512];
    block[512 - tail.len()..].copy_from_slice(tail);
    let mut header = tar::Header::new_gnu();
    header.set_path(name).unwrap();
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::GNUSparse);
    header.set_size(512);
    let gnu = header.as_gnu_mut().unwrap();
    gnu.sparse[0].set_offset(real_size - 512);
    gnu.sparse[0].set_length(512);
    gnu.set_real_size(real_size);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(&block);
    out
}

/// Raw entries (already made by [`regular`], [`special`], [`sparse`]) as
/// one archive.
fn write_raw(path: &Path, parts: &[Vec<u8>]) {
    let mut bytes: Vec<u8> = parts.concat();
    bytes.extend_from_slice(&[0u8; 1024]);
    std::fs::write(path, bytes).unwrap();
}

/// `entries` with the manifest changed by `edit`, as a new archive.
fn rewrite(entries: &[(String, Vec<u8>)], path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut edit = Some(edit);
    let parts: Vec<Vec<u8>> = entries
        .iter()
        .map(|(name, bytes)| {
            if name == "manifest.json" {
                let mut m: Value = serde_json::from_slice(bytes).unwrap();
                if let Some(edit) = edit.take() {
                    edit(&mut m);
                }
                regular(name, &serde_json::to_vec_pretty(&m).unwrap())
            } else {
                regular(name, bytes)
            }
        })
        .collect();
    write_raw(path, &parts);
}

/// `entries` with every table emptied, the manifest agreeing (so one
/// archive can be imported several times under row level).
fn without_rows(entries: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    entries
        .iter()
        .map(|(name, bytes)| {
            if name == "manifest.json" {
                let mut m: Value = serde_json::from_slice(bytes).unwrap();
                for t in m["tables"].as_array_mut().unwrap() {
                    t["rows"] = 0.into();
                    t["sha256"] = sha256_hex(b"").into();
                }
                (name.clone(), serde_json::to_vec(&m).unwrap())
            } else {
                (name.clone(), Vec::new())
            }
        })
        .collect()
}

fn manifest_of(entries: &[(String, Vec<u8>)]) -> Value {
    let (_, bytes) = entries.iter().find(|(n, _)| n == "manifest.json").unwrap();
    serde_json::from_slice(bytes).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The binary run under a virtual memory limit (`ulimit -v`, in KiB).
fn run_limited(cli: &Cli, kib: u64, args: &[&str]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.current_dir(cli.dir.path())
        .arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_tenancy"))
        .args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("TENANCY__") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    cmd.envs(cli.env.iter().map(|(k, v)| (k, v)));
    cmd.output().unwrap()
}

fn slugs(cli: &Cli) -> Vec<String> {
    let mut slugs: Vec<String> = cli.json(&["tenants", "list", "--all", "--json"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap().to_owned())
        .collect();
    slugs.sort();
    slugs
}

/// The audit log, newest first.
fn audit(cli: &Cli) -> Vec<Value> {
    cli.json(&["--json", "audit", "--limit", "1000"])["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// A SQLite deployment with tenant `acme` (two notes, a verified primary
/// domain), exported to `acme.tar`; returns the deployment and the
/// archive's entries.
async fn exported_acme() -> (Cli, Vec<(String, Vec<u8>)>) {
    let source = Cli::sqlite();
    let acme = id_of(&source.create("acme", "Acme"));
    let url = format!("sqlite://{}", source.path("tenancy.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO notes (tenant_id, title, body) VALUES (?1, 'one', ''), (?1, 'two', '')",
    )
    .bind(&acme)
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);
    source.ok(&[
        "domains",
        "add",
        "acme",
        "portal.bigbank.test",
        "--verified",
        "--primary",
    ]);
    source.ok(&["tenants", "export", "acme", "--output", "acme.tar"]);
    let entries = entries(&source.path("acme.tar"));
    (source, entries)
}

/// A note of tenant `tenant` with key `key`, written straight into the
/// deployment's shared notes table (row level).
async fn insert_note(cli: &Cli, tenant: &str, key: i64) {
    match cli.env.iter().find(|(k, _)| k == "DATABASE_URL") {
        Some((_, url)) => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(
                "INSERT INTO notes (id, tenant_id, title, body) VALUES ($1, $2, 'mine', '')",
            )
            .bind(key)
            .bind(tenant)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        None => {
            let url = format!("sqlite://{}", cli.path("tenancy.db").display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(
                "INSERT INTO notes (id, tenant_id, title, body) VALUES (?1, ?2, 'mine', '')",
            )
            .bind(key)
            .bind(tenant)
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
}

#[tokio::test]
async fn an_archive_cannot_take_another_tenants_id_or_slug_on_sqlite() {
    no_takeover(Cli::sqlite()).await;
}

#[tokio::test]
async fn an_archive_cannot_take_another_tenants_id_or_slug_on_postgres() {
    let db = PgTestDb::new().await;
    no_takeover(Cli::with_url(&db.url)).await;
}

async fn no_takeover(victim: Cli) {
    let (_source, archive) = exported_acme().await;
    let archive = without_rows(&archive);
    let real_acme = victim.create("acme", "Real");
    let real_id = id_of(&real_acme);

    // The archived id is another tenant's slug: imported under a new id,
    // and said so; `acme` still reaches the real acme.
    rewrite(&archive, &victim.path("evil2.tar"), |m| {
        m["tenant"]["id"] = "acme".into();
        m["tenant"]["slug"] = "evil2".into();
    });
    let out = victim.run(&["tenants", "import", "evil2.tar", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let imported: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(imported["id"], "acme", "{imported}");
    assert_eq!(imported["slug"], "evil2");
    assert_eq!(imported["archived_id"], "acme", "{imported}");
    assert_eq!(imported["id_kept"], false, "{imported}");
    assert!(
        stderr.contains("acme") && stderr.contains("new id"),
        "the new id is announced: {stderr}"
    );
    let shown = victim.json(&["tenants", "show", "acme", "--json"]);
    assert_eq!(shown["id"], real_id.as_str(), "acme is still the real acme");
    assert_eq!(shown["name"], "Real");

    // The archived id is another tenant's id: a new id too.
    rewrite(&archive, &victim.path("evil3.tar"), |m| {
        m["tenant"]["id"] = real_id.as_str().into();
        m["tenant"]["slug"] = "evil3".into();
    });
    let imported = victim.json(&["tenants", "import", "evil3.tar", "--json"]);
    assert_ne!(imported["id"], real_id.as_str());
    assert_eq!(imported["id_kept"], false);

    // The id of a tenant deleted under the `keep` policy, whose rows are
    // still there: not taken over.
    let gone = id_of(&victim.create("gone", "G"));
    insert_note(&victim, &gone, 100).await;
    victim.ok(&["tenants", "delete", "gone"]);
    rewrite(&archive, &victim.path("heir.tar"), |m| {
        m["tenant"]["id"] = gone.as_str().into();
        m["tenant"]["slug"] = "heir".into();
        m["domains"] = serde_json::json!([]);
    });
    let imported = victim.json(&["tenants", "import", "heir.tar", "--json"]);
    assert_ne!(imported["id"], gone.as_str(), "{imported}");
    assert_eq!(imported["id_kept"], false);
    let rows = victim.json(&["export", "notes", "--tenant-id", "heir"]);
    assert_eq!(
        rows,
        serde_json::json!([]),
        "the old rows stay the old tenant's"
    );

    // A free id is kept; then that id is taken as a slug by nobody else.
    rewrite(&archive, &victim.path("zeta.tar"), |m| {
        m["tenant"]["id"] = "zeta".into();
        m["tenant"]["slug"] = "zeta-corp".into();
        m["domains"] = serde_json::json!([]);
    });
    let imported = victim.json(&["tenants", "import", "zeta.tar", "--json"]);
    assert_eq!(imported["id"], "zeta");
    assert_eq!(imported["id_kept"], true);
    // An archive whose slug is that id is refused, before anything is made.
    rewrite(&archive, &victim.path("shadow.tar"), |m| {
        m["tenant"]["id"] = "shadow-id".into();
        m["tenant"]["slug"] = "zeta".into();
        m["domains"] = serde_json::json!([]);
    });
    let before = slugs(&victim);
    let err = victim.fail(&["tenants", "import", "shadow.tar"]);
    assert!(
        err.contains("\"zeta\"") && err.contains("id") && err.contains("--slug"),
        "{err}"
    );
    // The same through --slug.
    let err = victim.fail(&["tenants", "import", "shadow.tar", "--slug", "zeta"]);
    assert!(err.contains("\"zeta\""), "{err}");
    // And an archived id equal to the slug asked for is no way around it.
    assert_eq!(slugs(&victim), before, "nothing was imported");
    assert_eq!(
        victim.json(&["tenants", "show", "zeta", "--json"])["slug"],
        "zeta-corp"
    );
}

#[tokio::test]
async fn imported_domains_arrive_pending_unless_trusted_on_sqlite() {
    pending_domains(Cli::sqlite(), Cli::sqlite()).await;
}

#[tokio::test]
async fn imported_domains_arrive_pending_unless_trusted_on_postgres() {
    let (one, two) = (PgTestDb::new().await, PgTestDb::new().await);
    pending_domains(Cli::with_url(&one.url), Cli::with_url(&two.url)).await;
}

async fn pending_domains(target: Cli, trusting: Cli) {
    let (_source, archive) = exported_acme().await;
    let archived_token = manifest_of(&archive)["domains"][0]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    rewrite(&archive, &target.path("a.tar"), |_| {});
    let out = target.run(&["tenants", "import", "a.tar"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("portal.bigbank.test") && stderr.contains("pending"),
        "the operator is told: {stderr}"
    );
    let domains = target.json(&["domains", "list", "acme", "--json"]);
    let domain = &domains["items"][0];
    assert_eq!(domain["domain"], "portal.bigbank.test");
    assert_eq!(domain["status"], "pending", "{domain}");
    assert_ne!(
        domain["txt_value"], archived_token,
        "the archive's token is not the challenge"
    );
    assert_eq!(domain["primary"], true);
    // No DNS proof, no certificate, no resolution.
    let server = serve(&target);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let ask = http
        .get(format!(
            "{}/tls/ask?domain=portal.bigbank.test",
            server.base
        ))
        .sent()
        .await;
    assert!(!ask.status().is_success(), "{}", ask.status());
    drop(server);
    // Each domain is its own audit entry.
    let log = audit(&target);
    let entry = log
        .iter()
        .find(|e| e["action"] == "domain.import")
        .unwrap_or_else(|| panic!("no domain.import entry: {log:?}"));
    assert_eq!(entry["after"]["domain"], "portal.bigbank.test");
    assert_eq!(entry["after"]["status"], "pending");
    assert!(log.iter().any(|e| e["action"] == "tenant.import"));

    // An operator who trusts the archive keeps the verified status.
    rewrite(&archive, &trusting.path("a.tar"), |_| {});
    trusting.ok(&["tenants", "import", "a.tar", "--trust-domains"]);
    let domains = trusting.json(&["domains", "list", "acme", "--json"]);
    assert_eq!(domains["items"][0]["status"], "verified");
    let log = audit(&trusting);
    let entry = log.iter().find(|e| e["action"] == "domain.import").unwrap();
    assert_eq!(entry["after"]["status"], "verified");
}

/// One archive refused: why, nothing made, and an audit entry saying so.
fn refused(cli: &Cli, out: &Output, expect: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    for e in expect {
        assert!(err.contains(e), "expected {e:?} in: {err}");
    }
    assert_eq!(slugs(cli), Vec::<String>::new(), "nothing was imported");
    let log = audit(cli);
    let last = &log[0];
    assert_eq!(last["action"], "tenant.import_failed", "{last}");
    assert_eq!(last["tenant_id"], Value::Null, "{last}");
    let reason = last["after"]["error"].as_str().unwrap_or_default();
    assert!(reason.contains(expect[0]), "{reason}");
    err
}

#[tokio::test]
async fn hostile_archives_are_refused_with_flat_memory() {
    let (_source, archive) = exported_acme().await;
    let manifest = manifest_of(&archive);
    let table = archive
        .iter()
        .find(|(n, _)| n.starts_with("tables/"))
        .unwrap()
        .clone();
    let target = Cli::sqlite();
    target.ok(&["tenants", "list"]);
    // 512 MiB of address space: the whole binary fits, a 2 GiB manifest does not.
    const LIMIT_KIB: u64 = 512 * 1024;
    let import = |file: &str| run_limited(&target, LIMIT_KIB, &["tenants", "import", file]);
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();

    // A 2 GiB sparse manifest stored in a few KiB.
    write_raw(
        &target.path("sparse.tar"),
        &[
            regular(&table.0, &table.1),
            sparse("manifest.json", 2 << 30, b"{}"),
        ],
    );
    refused(&target, &import("sparse.tar"), &["sparse"]);

    // A real 17 MiB manifest (valid JSON, padded).
    let mut big = manifest_bytes.clone();
    big.extend(std::iter::repeat_n(b' ', 17 << 20));
    write_raw(
        &target.path("big.tar"),
        &[regular(&table.0, &table.1), regular("manifest.json", &big)],
    );
    refused(&target, &import("big.tar"), &["16 MiB", "manifest.json"]);

    // Links, directories and devices are no table, even with a manifest
    // that agrees (no rows, the checksum of nothing).
    let mut empty = manifest.clone();
    empty["tables"][0]["rows"] = 0.into();
    empty["tables"][0]["sha256"] = sha256_hex(b"").into();
    let empty = serde_json::to_vec(&empty).unwrap();
    for (kind, what) in [
        (tar::EntryType::Symlink, "symlink"),
        (tar::EntryType::Link, "hard link"),
        (tar::EntryType::Directory, "directory"),
        (tar::EntryType::Char, "device"),
    ] {
        let file = format!("{}.tar", what.replace(' ', "-"));
        write_raw(
            &target.path(&file),
            &[
                special(&table.0, kind, "/etc/passwd"),
                regular("manifest.json", &empty),
            ],
        );
        refused(&target, &import(&file), &[what]);
    }

    // Entry names that climb out or are absolute, even when the manifest
    // lists them.
    for name in [
        "../0001.ndjson",
        "/tmp/0001.ndjson",
        "tables/../../x.ndjson",
    ] {
        let mut m = manifest.clone();
        m["tables"][0]["file"] = name.into();
        write_raw(
            &target.path("climb.tar"),
            &[
                regular(name, &table.1),
                regular("manifest.json", &serde_json::to_vec(&m).unwrap()),
            ],
        );
        refused(&target, &import("climb.tar"), &["entry name"]);
    }

    // The same table entry twice.
    write_raw(
        &target.path("twice.tar"),
        &[
            regular(&table.0, &table.1),
            regular(&table.0, &table.1),
            regular("manifest.json", &manifest_bytes),
        ],
    );
    refused(&target, &import("twice.tar"), &["twice"]);

    // One row of 65 MiB, with a manifest that agrees: refused by the bound
    // on one NDJSON line, naming the table.
    let first = table.1.split(|b| *b == b'\n').next().unwrap();
    let mut first: Value = serde_json::from_slice(first).unwrap();
    first["title"] = "x".repeat(65 << 20).into();
    let mut row = serde_json::to_vec(&first).unwrap();
    row.push(b'\n');
    let mut m = manifest.clone();
    m["tables"][0]["rows"] = 1.into();
    m["tables"][0]["sha256"] = sha256_hex(&row).into();
    m["domains"] = serde_json::json!([]);
    write_raw(
        &target.path("row.tar"),
        &[
            regular(&table.0, &row),
            regular("manifest.json", &serde_json::to_vec(&m).unwrap()),
        ],
    );
    refused(&target, &import("row.tar"), &["64 MiB", "notes"]);

    // The untouched archive still imports under the same limit.
    rewrite(&archive, &target.path("good.tar"), |_| {});
    let out = import("good.tar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // And the export refuses such a row, rather than write an archive no
    // import reads.
    let acme = id_of(&target.json(&["tenants", "show", "acme", "--json"]));
    let url = format!("sqlite://{}", target.path("tenancy.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("INSERT INTO notes (tenant_id, title, body) VALUES (?1, ?2, '')")
        .bind(&acme)
        .bind("x".repeat(65 << 20))
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    let err = target.fail(&["tenants", "export", "acme", "--output", "huge.tar"]);
    assert!(err.contains("notes") && err.contains("64 MiB"), "{err}");
    assert!(!target.path("huge.tar").exists() && !target.path("huge.tar.partial").exists());
}

#[tokio::test]
async fn a_failed_import_is_audited_on_sqlite() {
    failed_import_audited(Cli::sqlite()).await;
}

#[tokio::test]
async fn a_failed_import_is_audited_on_postgres() {
    let db = PgTestDb::new().await;
    failed_import_audited(Cli::with_url(&db.url)).await;
}

async fn failed_import_audited(target: Cli) {
    let (_source, archive) = exported_acme().await;
    target.ok(&["tenants", "create", "--slug", "acme", "--name", "A"]);
    // Refused before a tenant exists: the slug is taken.
    rewrite(&archive, &target.path("a.tar"), |_| {});
    let err = target.fail(&["tenants", "import", "a.tar"]);
    let log = audit(&target);
    assert_eq!(log[0]["action"], "tenant.import_failed", "{log:?}");
    assert_eq!(log[0]["tenant_id"], Value::Null);
    let reason = log[0]["after"]["error"].as_str().unwrap();
    assert!(err.contains(reason), "{reason} / {err}");
    assert!(reason.contains("already used"), "{reason}");
    assert_eq!(log[0]["after"]["file"], "a.tar");

    // Failed after the tenant was made (on SQLite the archived rows' keys
    // are taken under row level; PostgreSQL keys notes by tenant, so a
    // constraint refuses new rows there): the tenant is gone, and so is its
    // id from the entry.
    let copy = target.json(&["tenants", "show", "acme", "--json"]);
    let id = id_of(&copy);
    match target.env.iter().find(|(k, _)| k == "DATABASE_URL") {
        Some((_, url)) => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::raw_sql("ALTER TABLE notes ADD CONSTRAINT no_new_rows CHECK (false) NOT VALID")
                .execute(&mut conn)
                .await
                .unwrap();
        }
        None => insert_note(&target, &id, 1).await,
    }
    let err = target.fail(&["tenants", "import", "a.tar", "--slug", "acme-two"]);
    assert!(err.contains("nothing was kept"), "{err}");
    let log = audit(&target);
    assert_eq!(log[0]["action"], "tenant.import_failed", "{log:?}");
    assert_eq!(log[0]["tenant_id"], Value::Null);
    assert!(
        log[0]["after"]["error"]
            .as_str()
            .unwrap()
            .contains("nothing was kept")
    );
    assert_eq!(slugs(&target), ["acme"]);
}

#[tokio::test]
async fn purge_removes_its_own_archives_only() {
    // SQLite, a file per tenant.
    let mut lite = Cli::sqlite().strategy("database");
    lite.env.push((
        "TENANCY__LIFECYCLE__DEPROVISION_POLICY".into(),
        "archive".into(),
    ));
    let acme = id_of(&lite.create("acme", "A"));
    // An archived copy of acme's own, from an earlier deactivation.
    lite.ok(&["tenants", "deactivate", "acme"]);
    lite.ok(&["tenants", "activate", "acme"]);
    let dir = lite.path("tenancy.db.tenants");
    let own: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("archived_"))
        .collect();
    assert!(
        own.len() == 1 && own[0].ends_with(&format!("_{acme}.db")),
        "{own:?}"
    );
    // Archived files of tenants `x_<acme id>` and `<acme id>x`, named as
    // the database strategy names them.
    let others = [
        format!("archived_1700000000_x_{acme}.db"),
        format!("archived_1700000000_{acme}x.db"),
        format!("archived_1700000000_{acme}_x.db"),
    ];
    for name in &others {
        std::fs::write(dir.join(name), b"someone else's data").unwrap();
    }
    let out = lite.ok(&["tenants", "delete", "acme", "--purge", "--yes"]);
    assert!(out.contains("finds nothing left"), "{out}");
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut expected = others.to_vec();
    expected.sort();
    assert_eq!(left, expected, "acme's archive gone, nobody else's");

    // PostgreSQL, a schema per tenant and a database per tenant.
    for strategy in ["schema", "database"] {
        let db = PgTestDb::new().await;
        let mut cli = Cli::with_url(&db.url).strategy(strategy);
        cli.env.push((
            "TENANCY__LIFECYCLE__DEPROVISION_POLICY".into(),
            "archive".into(),
        ));
        let acme = id_of(&cli.create("acme", "A"));
        db.track_tenant(&acme);
        cli.ok(&["tenants", "deactivate", "acme"]);
        cli.ok(&["tenants", "activate", "acme"]);
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let others = [
            format!("archived_1700000000_x_{acme}"),
            format!("archived_1700000000_{acme}_x"),
        ];
        for name in &others {
            let sql = match strategy {
                "schema" => format!("CREATE SCHEMA \"{name}\""),
                _ => {
                    db.track_database(name);
                    format!("CREATE DATABASE \"{name}\"")
                }
            };
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let out = cli.ok(&["tenants", "delete", "acme", "--purge", "--yes"]);
        assert!(out.contains("finds nothing left"), "{strategy}: {out}");
        let query = match strategy {
            "schema" => "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1 ORDER BY 1",
            _ => "SELECT datname::text FROM pg_database WHERE datname LIKE $1 ORDER BY 1",
        };
        let left: Vec<String> = sqlx::query_scalar(query)
            .bind(format!("archived\\_%{acme}%"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let mut expected = others.to_vec();
        expected.sort();
        assert_eq!(
            left, expected,
            "{strategy}: acme's archive gone, nobody else's"
        );
        drop(conn);
    }
}
