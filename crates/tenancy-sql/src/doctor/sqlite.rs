//! Checks of the SQLite deployments: shared tables under the query
//! interceptor (row level), a file per tenant (database), and the modes of
//! the files themselves.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use sqlx::SqlitePool;
use tenancy_core::{TenantInfo, TenantStatus};

use super::{Check, Finding, Report, Severity};
use crate::DbError;
use crate::ident::archived_id;
use crate::portable::quote;

/// Checks the shared tables of the SQLite database of `pool` (row level):
/// every table with `tenant_column` is one the query interceptor scopes
/// (`scoped`; reported as `rls_disabled` otherwise: on SQLite the
/// interceptor is what row-level security is on PostgreSQL), has an index
/// leading with the column, and its unique keys and foreign keys include it.
///
/// A rowid alias (`INTEGER PRIMARY KEY`) is not reported: every rowid table
/// has a unique rowid whatever it declares, so there is nothing to change.
pub async fn check_sqlite_row_level(
    pool: &SqlitePool,
    tenant_column: &str,
    scoped: &[String],
    report: &mut Report,
) -> Result<(), DbError> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND name NOT LIKE 'tenancy\\_%' ESCAPE '\\' AND name NOT LIKE '\\_tenancy\\_%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    report.count("tables", tables.len() as u64);
    let mut tenant_tables = HashSet::new();
    for table in &tables {
        let has: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
        )
        .bind(table)
        .bind(tenant_column)
        .fetch_one(pool)
        .await?;
        if has {
            tenant_tables.insert(table.clone());
        }
    }
    report.count("tenant_tables", tenant_tables.len() as u64);
    let column = quote(tenant_column);
    for table in tables.iter().filter(|t| tenant_tables.contains(*t)) {
        let name = quote(table);
        if !scoped.iter().any(|s| s.eq_ignore_ascii_case(table)) {
            report.push(Finding::new(
                Check::RlsDisabled,
                table,
                format!(
                    "{table} has the tenant column {tenant_column} but the query interceptor does not scope it \
                     (SQLite has no row-level security): queries on it see every tenant's rows"
                ),
                format!("add {table} to server.resources (or Open::shared_table(\"{table}\"))"),
            ));
        }
        // (index name, unique, origin, key columns in order)
        let indexes: Vec<(String, bool, String)> =
            sqlx::query_as("SELECT name, \"unique\", origin FROM pragma_index_list(?1)")
                .bind(table)
                .fetch_all(pool)
                .await?;
        let mut indexed = false;
        for (index, unique, origin) in indexes {
            let columns: Vec<Option<String>> = sqlx::query_scalar(
                "SELECT name FROM pragma_index_xinfo(?1) WHERE key = 1 ORDER BY seqno",
            )
            .bind(&index)
            .fetch_all(pool)
            .await?;
            if columns.first().and_then(|c| c.as_deref()) == Some(tenant_column) {
                indexed = true;
            }
            let has_tenant = columns.iter().any(|c| c.as_deref() == Some(tenant_column));
            if unique && !has_tenant {
                let keyed = std::iter::once(column.clone())
                    .chain(columns.iter().flatten().map(|c| quote(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let fix = if origin == "c" {
                    format!(
                        "DROP INDEX {}; CREATE UNIQUE INDEX {} ON {name} ({keyed});",
                        quote(&index),
                        quote(&index)
                    )
                } else {
                    format!(
                        "-- {index} comes from the table's definition: rebuild {table} with UNIQUE/PRIMARY KEY ({keyed})"
                    )
                };
                report.push(Finding::new(
                    Check::UniqueWithoutTenant,
                    &index,
                    format!(
                        "the unique index {index} on {table} does not include {tenant_column}: a tenant inserting a \
                         value another tenant holds learns that it exists"
                    ),
                    fix,
                ));
            }
        }
        if !indexed {
            report.push(Finding::new(
                Check::TenantColumnUnindexed,
                table,
                format!("no index of {table} leads with {tenant_column}: every tenant's query scans the whole table"),
                format!(
                    "CREATE INDEX {} ON {name} ({column});",
                    quote(&format!("{table}_{tenant_column}"))
                ),
            ));
        }
        // Foreign keys to other tenant tables that leave out the column.
        let keys: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT id, \"table\", \"from\" FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
        )
        .bind(table)
        .fetch_all(pool)
        .await?;
        let mut ids: Vec<i64> = keys.iter().map(|k| k.0).collect();
        ids.dedup();
        for id in ids {
            let parts: Vec<&(i64, String, String)> = keys.iter().filter(|k| k.0 == id).collect();
            let Some(target) = parts.first().map(|k| k.1.clone()) else {
                continue;
            };
            if tenant_tables.contains(&target) && !parts.iter().any(|k| k.2 == tenant_column) {
                report.push(Finding::new(
                    Check::FkWithoutTenant,
                    format!("{table} -> {target}"),
                    format!(
                        "the foreign key from {table} to {target} leaves out {tenant_column}: a row can reference \
                         another tenant's row"
                    ),
                    format!(
                        "-- rebuild {table} with FOREIGN KEY ({column}, …) REFERENCES {} ({column}, …)",
                        quote(&target)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Checks the files of the database strategy in `dir` against `tenants`:
/// each tenant's `tenant_<id>.db` exists (`missing_storage`), each file has
/// a tenant (`orphan_file`; archives are `info`), and no file is readable
/// or writable by other users (`sqlite_file_mode`).
pub fn check_sqlite_files(dir: &Path, tenants: &[TenantInfo], report: &mut Report) {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".db") {
                files.push((stem.to_owned(), entry.path()));
            }
        }
    }
    files.sort();
    report.count("files", files.len() as u64);
    report.count("tenants", tenants.len() as u64);
    let known: HashSet<String> = tenants.iter().map(|t| format!("tenant_{}", t.id)).collect();
    let present: HashSet<&str> = files.iter().map(|(stem, _)| stem.as_str()).collect();
    for tenant in tenants {
        let stem = format!("tenant_{}", tenant.id);
        if tenant.status != TenantStatus::Provisioning && !present.contains(stem.as_str()) {
            report.push(Finding::new(
                Check::MissingStorage,
                format!("tenant {} ({})", tenant.slug, tenant.id),
                format!(
                    "tenant {} is {} but its file {} does not exist: its requests fail",
                    tenant.slug,
                    tenant.status.as_str(),
                    dir.join(format!("{stem}.db")).display()
                ),
                "tenancy migrate",
            ));
        }
    }
    for (stem, path) in &files {
        let shown = path.display().to_string();
        if let Some(id) = archived_id(stem) {
            report.push(
                Finding::new(
                    Check::OrphanFile,
                    &shown,
                    format!(
                        "{shown} is the archive of tenant {id}, kept by the deprovision policy"
                    ),
                    format!("rm -f {}", shell_quote(&shown)),
                )
                .with_severity(Severity::Info),
            );
        } else if stem.starts_with("tenant_") && !known.contains(stem) {
            report.push(Finding::new(
                Check::OrphanFile,
                &shown,
                format!("the file {shown} belongs to no tenant of the store"),
                format!("rm -f {}", shell_quote(&shown)),
            ));
        }
        check_file_mode(path, report);
    }
}

/// `sqlite_file_mode`: `path` (a tenant's file, or the main file that holds
/// every tenant's rows) must be readable and writable by its owner only.
pub fn check_file_mode(path: &Path, report: &mut Report) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            let shown = path.display().to_string();
            report.push(Finding::new(
                Check::SqliteFileMode,
                &shown,
                format!(
                    "{shown} has mode {mode:o}: other users of this machine can read tenant data in it"
                ),
                format!("chmod 600 {}", shell_quote(&shown)),
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, report);
}

/// The SQLite file of a `sqlite://FILE` URL.
pub fn sqlite_file_of(url: &str) -> Option<PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}
