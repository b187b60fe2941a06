//! SQLite side of [`super`]: each value written from its storage class.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::TryStreamExt;
use serde_json::value::RawValue;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, AssertSqlSafe, Row, Sqlite, SqlitePool, Transaction, TypeInfo, ValueRef};
use tenancy_core::TenantId;

use super::{Column, Digest, DigestWriter, Table, io_error, quote};
use crate::DbError;

pub(super) async fn begin(
    pool: &SqlitePool,
    write: bool,
) -> Result<Transaction<'static, Sqlite>, DbError> {
    // A write takes the lock at once; a read is a snapshot from its first
    // statement on (WAL).
    let begin = if write { "BEGIN IMMEDIATE" } else { "BEGIN" };
    let mut tx = pool.begin_with(begin).await?;
    if write {
        // Foreign keys are checked at commit, so tables can come in any
        // order.
        sqlx::query("PRAGMA defer_foreign_keys = ON")
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx)
}

/// Whether a declared type has BLOB affinity by name.
fn is_binary(declared: &str) -> bool {
    declared.to_ascii_uppercase().contains("BLOB")
}

pub(super) async fn tables(
    tx: &mut Transaction<'static, Sqlite>,
    tenant_column: &str,
) -> Result<Vec<Table>, DbError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name",
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        // table_info leaves generated columns out.
        let cols: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT name, type, pk FROM pragma_table_info(?1) ORDER BY cid")
                .bind(&name)
                .fetch_all(&mut **tx)
                .await?;
        let mut key: Vec<(i64, String)> = cols
            .iter()
            .filter(|(_, _, pk)| *pk > 0)
            .map(|(n, _, pk)| (*pk, n.clone()))
            .collect();
        key.sort();
        let references: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?1)")
                .bind(&name)
                .fetch_all(&mut **tx)
                .await?;
        tables.push(Table {
            tenant_column: cols.iter().any(|(n, _, _)| n == tenant_column),
            columns: cols
                .iter()
                .filter(|(n, _, _)| n != tenant_column)
                .map(|(n, t, _)| Column {
                    name: n.clone(),
                    sql_type: t.clone(),
                    binary: is_binary(t),
                })
                .collect(),
            key: key.into_iter().map(|(_, n)| n).collect(),
            references,
            name,
        });
    }
    Ok(tables)
}

pub(super) async fn migration_version(
    tx: &mut Transaction<'static, Sqlite>,
) -> Result<Option<i64>, DbError> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_tenancy_migrations')",
    )
    .fetch_one(&mut **tx)
    .await?;
    if !exists {
        return Ok(Some(0));
    }
    let version: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _tenancy_migrations")
            .fetch_one(&mut **tx)
            .await?;
    Ok(Some(version))
}

fn where_tenant(filter: Option<&str>) -> String {
    match filter {
        Some(column) => format!(" WHERE {} = ?1", quote(column)),
        None => String::new(),
    }
}

pub(super) async fn export(
    tx: &mut Transaction<'static, Sqlite>,
    table: &Table,
    filter: Option<&str>,
    tenant: &TenantId,
    limit: Option<u64>,
    out: &mut DigestWriter<&mut (dyn Write + Send)>,
) -> Result<(), DbError> {
    let select = table
        .columns
        .iter()
        .map(|c| quote(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let order = if table.key.is_empty() {
        "rowid".to_owned()
    } else {
        table
            .key
            .iter()
            .map(|k| quote(k))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let limit = match limit {
        Some(n) => format!(" LIMIT {}", i64::try_from(n).unwrap_or(i64::MAX)),
        None => String::new(),
    };
    let sql = format!(
        "SELECT {select} FROM {}{} ORDER BY {order}{limit}",
        quote(&table.name),
        where_tenant(filter)
    );
    // Keys, already escaped as JSON strings.
    let keys: Vec<String> = table
        .columns
        .iter()
        .map(|c| serde_json::to_string(&c.name).unwrap_or_default())
        .collect();
    let mut query = sqlx::query(AssertSqlSafe(sql));
    if filter.is_some() {
        query = query.bind(tenant.as_str());
    }
    let mut rows = query.fetch(&mut **tx);
    let mut line = Vec::with_capacity(256);
    while let Some(row) = rows.try_next().await? {
        line.clear();
        line.push(b'{');
        for (i, column) in table.columns.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            line.extend_from_slice(keys[i].as_bytes());
            line.push(b':');
            let value = row.try_get_raw(i)?;
            if value.is_null() {
                line.extend_from_slice(b"null");
                continue;
            }
            let class = value.type_info().name().to_owned();
            let mismatch = || {
                let key: Vec<String> = table
                    .key
                    .iter()
                    .filter_map(|k| {
                        let i = table.columns.iter().position(|c| &c.name == k)?;
                        let v = row
                            .try_get::<String, _>(i)
                            .ok()
                            .or_else(|| row.try_get::<i64, _>(i).ok().map(|n| n.to_string()))?;
                        Some(format!("{k}={v}"))
                    })
                    .collect();
                DbError::Refused(format!(
                    "table `{}`, row {}: column `{}` is declared {} but holds a {class} value; \
                     an export could not say which it is, so it is refused (fix the row or the column's type)",
                    table.name,
                    if key.is_empty() {
                        "?".to_owned()
                    } else {
                        key.join(", ")
                    },
                    column.name,
                    if column.sql_type.is_empty() {
                        "without a type"
                    } else {
                        &column.sql_type
                    },
                ))
            };
            match class.as_str() {
                "INTEGER" => {
                    let n: i64 = row.try_get(i)?;
                    if column.binary {
                        return Err(mismatch());
                    }
                    write!(line, "{n}").map_err(io_error)?;
                }
                "REAL" => {
                    let x: f64 = row.try_get(i)?;
                    if column.binary {
                        return Err(mismatch());
                    }
                    if x.is_finite() {
                        serde_json::to_writer(&mut line, &x)
                            .map_err(|e| DbError::Refused(e.to_string()))?;
                    } else if x > 0.0 {
                        line.extend_from_slice(b"\"Infinity\"");
                    } else {
                        line.extend_from_slice(b"\"-Infinity\"");
                    }
                }
                "BLOB" => {
                    if !column.binary {
                        return Err(mismatch());
                    }
                    let bytes: Vec<u8> = row.try_get(i)?;
                    line.push(b'"');
                    line.extend_from_slice(BASE64.encode(bytes).as_bytes());
                    line.push(b'"');
                }
                _ => {
                    if column.binary {
                        return Err(mismatch());
                    }
                    let text: String = row.try_get(i)?;
                    serde_json::to_writer(&mut line, &text)
                        .map_err(|e| DbError::Refused(e.to_string()))?;
                }
            }
        }
        line.extend_from_slice(b"}\n");
        out.write_all(&line).map_err(io_error)?;
    }
    Ok(())
}

pub(super) async fn count(
    tx: &mut Transaction<'static, Sqlite>,
    table: &Table,
    filter: Option<&str>,
    tenant: &TenantId,
) -> Result<u64, DbError> {
    let sql = format!(
        "SELECT count(*) FROM {}{}",
        quote(&table.name),
        where_tenant(filter)
    );
    let mut query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql));
    if filter.is_some() {
        query = query.bind(tenant.as_str());
    }
    Ok(u64::try_from(query.fetch_one(&mut **tx).await?).unwrap_or_default())
}

pub(super) async fn delete(
    tx: &mut Transaction<'static, Sqlite>,
    table: &Table,
    column: &str,
    tenant: &TenantId,
) -> Result<u64, DbError> {
    let sql = format!(
        "DELETE FROM {}{}",
        quote(&table.name),
        where_tenant(Some(column))
    );
    let done = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

pub(super) async fn truncate(
    tx: &mut Transaction<'static, Sqlite>,
    tables: &[Table],
) -> Result<(), DbError> {
    for t in tables.iter().rev() {
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {}", quote(&t.name))))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub(super) async fn import(
    tx: &mut Transaction<'static, Sqlite>,
    target: &Table,
    columns: &[Column],
    tenant: &TenantId,
    tenant_column: &str,
    rows: &mut dyn BufRead,
) -> Result<Digest, DbError> {
    let mut names = Vec::new();
    if target.tenant_column {
        names.push(quote(tenant_column));
    }
    names.extend(columns.iter().map(|c| quote(&c.name)));
    let placeholders = (1..=names.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({placeholders})",
        quote(&target.name),
        names.join(", ")
    );
    let real: Vec<bool> = columns
        .iter()
        .map(|c| {
            let t = c.sql_type.to_ascii_uppercase();
            t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB")
        })
        .collect();

    let mut digest = DigestWriter::new(std::io::sink());
    let mut line = String::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let n = rows.read_line(&mut line).map_err(|e| {
            DbError::Refused(format!(
                "table `{}`: cannot read the rows: {e}",
                target.name
            ))
        })?;
        if n == 0 {
            break;
        }
        number += 1;
        digest.write_all(line.as_bytes()).map_err(io_error)?;
        let bad = |why: String| {
            DbError::Refused(format!("table `{}`, line {number}: {why}", target.name))
        };
        let object: HashMap<&str, &RawValue> =
            serde_json::from_str(line.trim_end_matches('\n')).map_err(|e| bad(e.to_string()))?;
        let mut args = SqliteArguments::default();
        if target.tenant_column {
            args.add(tenant.as_str()).map_err(|e| bad(e.to_string()))?;
        }
        for (i, c) in columns.iter().enumerate() {
            let raw = object.get(c.name.as_str()).map_or("null", |v| v.get());
            bind(&mut args, raw, c.binary, real[i])
                .map_err(|why| bad(format!("column `{}`: {why}", c.name)))?;
        }
        sqlx::query_with(AssertSqlSafe(sql.as_str()), args)
            .execute(&mut **tx)
            .await
            .map_err(|e| bad(format!("cannot insert: {e}")))?;
    }
    Ok(digest.finish().0)
}

/// Binds one JSON value (its raw text) as the SQLite value it was exported
/// from.
fn bind(args: &mut SqliteArguments, raw: &str, binary: bool, real: bool) -> Result<(), String> {
    let added = match raw.as_bytes().first() {
        Some(b'n') => args.add(None::<i64>),
        Some(b't') => args.add(1_i64),
        Some(b'f') => args.add(0_i64),
        Some(b'"') => {
            let text: String = serde_json::from_str(raw).map_err(|e| e.to_string())?;
            if binary {
                let bytes = BASE64
                    .decode(text.as_bytes())
                    .map_err(|e| format!("not base64: {e}"))?;
                args.add(bytes)
            } else if real && text == "Infinity" {
                args.add(f64::INFINITY)
            } else if real && text == "-Infinity" {
                args.add(f64::NEG_INFINITY)
            } else {
                args.add(text)
            }
        }
        Some(b'[' | b'{') => args.add(raw.to_owned()),
        Some(_) => {
            if binary {
                return Err("a number where base64 bytes were expected".into());
            }
            if let Ok(n) = raw.parse::<i64>() {
                args.add(n)
            } else if let Ok(x) = raw.parse::<f64>()
                && x.is_finite()
                && !raw.bytes().all(|b| b.is_ascii_digit() || b == b'-')
            {
                args.add(x)
            } else {
                // An integer beyond 64 bits: SQLite keeps the text unless
                // the column's affinity can hold it without loss.
                args.add(raw.to_owned())
            }
        }
        None => return Err("empty value".into()),
    };
    added.map_err(|e| e.to_string())
}
