//! PostgreSQL side of [`super`]: rows rendered by the server with
//! `row_to_json`, streamed out and in with `COPY`.

use std::io::{BufRead, Write};

use futures_util::StreamExt;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};
use tenancy_core::TenantId;

use super::{Column, Digest, DigestWriter, Table, io_error, quote};
use crate::DbError;

/// COPY in CSV mode with separators JSON never contains raw (JSON escapes
/// every control character), so each row is one line, byte for byte what
/// `row_to_json` printed, with nothing escaped or quoted.
const COPY_OPTIONS: &str = "WITH (FORMAT csv, DELIMITER E'\\x1f', QUOTE E'\\x1e')";

/// Begins the session: a read-only repeatable-read snapshot, or a write
/// transaction; settings that fix how values print (UTC, shortest exact
/// floats, ISO dates) and the tenant for row-level security (with its
/// signature in the signed form), all
/// transaction-local, in one round trip after `BEGIN`.
///
/// A read of shared tables (`request_role`) runs as the row-level request
/// role ([`PgRowLevel::REQUEST_ROLE`](crate::PgRowLevel::REQUEST_ROLE)),
/// so RLS binds it even when the pool's role is a superuser. Writes keep
/// the pool's role: `COPY FROM` refuses tables under RLS for the roles it
/// binds, and an import checks every row's tenant itself.
pub(super) async fn begin(
    pool: &PgPool,
    tenant: &TenantId,
    schema: Option<&str>,
    signature: Option<&str>,
    write: bool,
    request_role: bool,
) -> Result<Transaction<'static, Postgres>, DbError> {
    let begin = if write {
        "BEGIN"
    } else {
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
    };
    let request_role = request_role && !write;
    let mut tx = pool.begin_with(begin).await?;
    let search_path = schema.map(quote);
    sqlx::query(
        "SELECT set_config('TimeZone', 'UTC', true), set_config('extra_float_digits', '1', true), \
                set_config('IntervalStyle', 'postgres', true), set_config('DateStyle', 'ISO, YMD', true), \
                set_config('tenancy.tenant_id', $1, true), \
                CASE WHEN $2::text IS NULL THEN NULL ELSE set_config('search_path', $2, true) END, \
                CASE WHEN $3::text IS NULL THEN NULL ELSE set_config('tenancy.tenant_sig', $3, true) END, \
                CASE WHEN $4 THEN set_config('role', 'tenancy_request', true) END",
    )
    .bind(tenant.as_str())
    .bind(search_path)
    .bind(signature)
    .bind(request_role)
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}

/// The schema the session works in.
async fn schema(tx: &mut Transaction<'static, Postgres>) -> Result<String, DbError> {
    let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(&mut **tx)
        .await?;
    schema.ok_or_else(|| {
        DbError::Refused(
            "the tenant's schema does not exist (deprovisioned or archived?): nothing to read or write"
                .into(),
        )
    })
}

/// `"schema"."table"`.
async fn qualified(
    tx: &mut Transaction<'static, Postgres>,
    table: &str,
) -> Result<String, DbError> {
    Ok(format!("{}.{}", quote(&schema(tx).await?), quote(table)))
}

/// A table as the catalog query returns it: name, column names, types and
/// binary flags, key, has the tenant column, referenced tables.
type CatalogRow = (
    String,
    Vec<String>,
    Vec<String>,
    Vec<bool>,
    Vec<String>,
    bool,
    Vec<String>,
);

pub(super) async fn tables(
    tx: &mut Transaction<'static, Postgres>,
    tenant_column: &str,
) -> Result<Vec<Table>, DbError> {
    // Refuses a missing schema rather than finding no tables in it.
    schema(tx).await?;
    let rows: Vec<CatalogRow> =
        sqlx::query_as(
            "SELECT c.relname::text, \
                    COALESCE(ARRAY(SELECT a.attname::text FROM pg_attribute a \
                        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                          AND a.attgenerated = '' AND a.attname <> $1 ORDER BY a.attnum), '{}'), \
                    COALESCE(ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                          AND a.attgenerated = '' AND a.attname <> $1 ORDER BY a.attnum), '{}'), \
                    COALESCE(ARRAY(SELECT a.atttypid = 'bytea'::regtype FROM pg_attribute a \
                        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                          AND a.attgenerated = '' AND a.attname <> $1 ORDER BY a.attnum), '{}'), \
                    COALESCE(ARRAY(SELECT a.attname::text FROM pg_index i \
                        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
                        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                        WHERE i.indrelid = c.oid AND i.indisprimary AND a.attname <> $1 ORDER BY k.ord), '{}'), \
                    EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid \
                        AND a.attname = $1 AND NOT a.attisdropped), \
                    COALESCE(ARRAY(SELECT DISTINCT r.relname::text FROM pg_constraint f \
                        JOIN pg_class r ON r.oid = f.confrelid \
                        WHERE f.conrelid = c.oid AND f.contype = 'f'), '{}') \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
             ORDER BY c.relname",
        )
        .bind(tenant_column)
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(name, names, types, binary, key, tenant_column, references)| Table {
                name,
                columns: names
                    .into_iter()
                    .zip(types)
                    .zip(binary)
                    .map(|((name, sql_type), binary)| Column {
                        name,
                        sql_type,
                        binary,
                    })
                    .collect(),
                key,
                tenant_column,
                references,
            },
        )
        .collect())
}

pub(super) async fn migration_version(
    tx: &mut Transaction<'static, Postgres>,
) -> Result<Option<i64>, DbError> {
    let exists: bool = sqlx::query_scalar(
        "SELECT to_regclass(format('%I.%I', current_schema(), '_tenancy_migrations')) IS NOT NULL",
    )
    .fetch_one(&mut **tx)
    .await?;
    if !exists {
        return Ok(Some(0));
    }
    let table = qualified(tx, "_tenancy_migrations").await?;
    let version: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT COALESCE(max(version), 0)::int8 FROM {table}"
    )))
    .fetch_one(&mut **tx)
    .await?;
    Ok(Some(version))
}

/// The WHERE clause of a shared table: the tenant column equals the
/// transaction-local tenant (set from a bound parameter in [`begin`]).
fn where_tenant(filter: Option<&str>) -> String {
    match filter {
        Some(column) => format!(
            " WHERE {}::text = current_setting('tenancy.tenant_id')",
            quote(column)
        ),
        None => String::new(),
    }
}

pub(super) async fn export(
    tx: &mut Transaction<'static, Postgres>,
    table: &Table,
    filter: Option<&str>,
    limit: Option<u64>,
    out: &mut DigestWriter<&mut (dyn Write + Send)>,
) -> Result<(), DbError> {
    let from = qualified(tx, &table.name).await?;
    let select = table
        .columns
        .iter()
        .map(|c| {
            let q = quote(&c.name);
            if c.binary {
                format!("translate(encode({q}, 'base64'), E'\\n', '') AS {q}")
            } else if c.sql_type == "json" {
                format!("{q}::jsonb AS {q}")
            } else {
                q
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let order = if table.key.is_empty() {
        "_tenancy_row::text".to_owned()
    } else {
        table
            .key
            .iter()
            .map(|k| format!("_tenancy_row.{}", quote(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    let sql = format!(
        "COPY (SELECT row_to_json(_tenancy_row)::text FROM (SELECT {select} FROM {from}{}) _tenancy_row \
         ORDER BY {order}{limit}) TO STDOUT {COPY_OPTIONS}",
        where_tenant(filter)
    );
    let mut stream = tx.copy_out_raw(&sql).await?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if chunk.contains(&0x1e) {
            return Err(DbError::Refused(format!(
                "table `{}`: the server quoted a row, which JSON rows never need; refusing an export that might not be exact",
                table.name
            )));
        }
        out.write_all(&chunk).map_err(io_error)?;
    }
    Ok(())
}

pub(super) async fn count(
    tx: &mut Transaction<'static, Postgres>,
    table: &Table,
    filter: Option<&str>,
) -> Result<u64, DbError> {
    let from = qualified(tx, &table.name).await?;
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {from}{}",
        where_tenant(filter)
    )))
    .fetch_one(&mut **tx)
    .await?;
    Ok(u64::try_from(n).unwrap_or_default())
}

pub(super) async fn delete(
    tx: &mut Transaction<'static, Postgres>,
    table: &Table,
    column: &str,
) -> Result<u64, DbError> {
    let from = qualified(tx, &table.name).await?;
    let done = sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM {from}{}",
        where_tenant(Some(column))
    )))
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

pub(super) async fn truncate(
    tx: &mut Transaction<'static, Postgres>,
    tables: &[Table],
) -> Result<(), DbError> {
    let mut names = Vec::with_capacity(tables.len());
    for t in tables {
        names.push(qualified(tx, &t.name).await?);
    }
    sqlx::query(AssertSqlSafe(format!("TRUNCATE {}", names.join(", "))))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Bytes fed to `COPY … FROM STDIN` at a time.
const CHUNK: usize = 256 * 1024;

pub(super) async fn import(
    tx: &mut Transaction<'static, Postgres>,
    target: &Table,
    columns: &[Column],
    tenant: &TenantId,
    tenant_column: &str,
    rows: &mut dyn BufRead,
) -> Result<Digest, DbError> {
    let into = qualified(tx, &target.name).await?;
    sqlx::raw_sql(
        "CREATE TEMP TABLE IF NOT EXISTS _tenancy_import (j jsonb) ON COMMIT DROP; \
         TRUNCATE pg_temp._tenancy_import",
    )
    .execute(&mut **tx)
    .await?;

    // The rows, byte for byte, into the staging table (parsed as jsonb).
    let mut digest = DigestWriter::new(std::io::sink());
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY pg_temp._tenancy_import (j) FROM STDIN {COPY_OPTIONS}"
        ))
        .await?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match rows.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = copy.abort("read failed").await;
                return Err(DbError::Refused(format!(
                    "table `{}`: cannot read the rows: {e}",
                    target.name
                )));
            }
        };
        digest.write_all(&buf[..n]).map_err(io_error)?;
        copy.send(&buf[..n]).await?;
    }
    let staged = copy.finish().await?;
    let digest = digest.finish().0;

    // Then typed by the target's own column types, in one statement.
    let mut names = Vec::new();
    let mut values = Vec::new();
    let mut record = Vec::new();
    if target.tenant_column {
        let ty: String = sqlx::query_scalar(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = $1::regclass AND attname = $2",
        )
        .bind(&into)
        .bind(tenant_column)
        .fetch_one(&mut **tx)
        .await?;
        names.push(quote(tenant_column));
        values.push(format!("CAST($1::text AS {ty})"));
    }
    for c in columns {
        let Some(t) = target.columns.iter().find(|t| t.name == c.name) else {
            continue;
        };
        let q = quote(&c.name);
        names.push(q.clone());
        if t.binary {
            values.push(format!("decode(_tenancy_r.{q}, 'base64')"));
            record.push(format!("{q} text"));
        } else {
            values.push(format!("_tenancy_r.{q}"));
            record.push(format!("{q} {}", t.sql_type));
        }
    }
    let sql = format!(
        "INSERT INTO {into} ({}) OVERRIDING SYSTEM VALUE SELECT {} \
         FROM pg_temp._tenancy_import _tenancy_i CROSS JOIN LATERAL jsonb_to_record(_tenancy_i.j) AS _tenancy_r({})",
        names.join(", "),
        values.join(", "),
        record.join(", ")
    );
    let mut insert = sqlx::query(AssertSqlSafe(sql));
    if target.tenant_column {
        insert = insert.bind(tenant.as_str());
    }
    let inserted = insert.execute(&mut **tx).await.map_err(|e| {
        DbError::Refused(format!(
            "table `{}`: cannot insert the rows: {e}",
            target.name
        ))
    })?;
    if inserted.rows_affected() != staged || staged != digest.rows {
        return Err(DbError::Refused(format!(
            "table `{}`: {} lines read, {staged} staged, {} inserted",
            target.name,
            digest.rows,
            inserted.rows_affected()
        )));
    }

    // Sequences behind serial and identity columns continue after the
    // imported keys.
    for c in target
        .columns
        .iter()
        .filter(|c| matches!(c.sql_type.as_str(), "integer" | "bigint" | "smallint"))
    {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT setval(s.seq, m.mx) FROM (SELECT pg_get_serial_sequence($1, $2) AS seq) s, \
                    (SELECT max({col})::int8 AS mx FROM {into}) m \
             WHERE s.seq IS NOT NULL AND m.mx IS NOT NULL \
               AND m.mx > COALESCE(pg_sequence_last_value(s.seq::regclass), 0)",
            col = quote(&c.name)
        )))
        .bind(&into)
        .bind(&c.name)
        .execute(&mut **tx)
        .await?;
    }
    Ok(digest)
}
