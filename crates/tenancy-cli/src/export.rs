//! `tenancy export TABLE --tenant-id T`: one tenant's rows of a table, as
//! a JSON array or NDJSON.
//!
//! The table's columns are read from the database the tenant's data lives
//! in (the main database under `row_level`, the tenant's own schema or
//! database otherwise). Rows are read through the query interceptor, so the
//! tenant filter is always a bound parameter of a statement the interceptor
//! scoped; a table or column that does not exist is refused by name before
//! anything is read.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use sqlx::{AssertSqlSafe, Postgres, Sqlite, Transaction};
use tenancy::TenantInfo;
use tenancy_interceptor::service::{Object, ScopedTable};
use tenancy_interceptor::{Interceptor, TenantTables};

use crate::app::{App, CliError, Db, Global};

/// Rows read per statement.
const PAGE: u64 = 1000;

/// Export arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "Under the row_level strategy TABLE must have the tenant field. \
Under the schema and database strategies the tenant's own schema or database is read; \
there a table without the tenant field is exported whole, because everything in it \
belongs to the tenant.\n\nExported values: integers, floats, booleans and text; columns of \
other types (on PostgreSQL e.g. uuid, timestamptz, jsonb) are exported as null, with a \
warning on stderr."
)]
pub struct ExportArgs {
    /// The table to export.
    pub table: String,
    /// The tenant whose rows to export: its id or slug.
    #[arg(long, value_name = "ID|SLUG")]
    pub tenant_id: String,
    /// The column that holds the tenant id.
    #[arg(long, default_value = "tenant_id", value_name = "COLUMN")]
    pub tenant_field: String,
    /// Export at most N rows.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Write to FILE instead of stdout (written as FILE.partial, renamed when complete).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// `json`: one JSON array; `ndjson`: one JSON object per line.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON array.
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// A column as the database describes it.
#[derive(Debug, Clone)]
struct ColumnInfo {
    name: String,
    data_type: String,
    primary_key: bool,
}

/// How rows are read.
enum Reader {
    /// Through the interceptor, filtered by the tenant field.
    Scoped(ScopedTable),
    /// The whole table of the tenant's own schema or database; the SQL
    /// takes LIMIT and OFFSET as its two parameters.
    Whole(String),
}

/// An open transaction in the tenant's scope.
enum Tx {
    Pg(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

/// Runs an export.
pub async fn run(global: &Global, args: ExportArgs) -> Result<(), CliError> {
    check_ident("table", &args.table)?;
    check_ident("tenant field", &args.tenant_field)?;
    let app = App::open(global).await?;
    let tenant = app.tenant(&args.tenant_id).await?;
    let own_space = app.config.lifecycle.isolation_strategy != "row_level";

    let mut tx = open(&app, &tenant).await?;
    let columns = match &mut tx {
        Tx::Pg(tx) => pg_columns(tx, &args.table).await?,
        Tx::Sqlite(tx) => sqlite_columns(tx, &args.table).await?,
    };
    if columns.is_empty() {
        let place = if own_space {
            format!(" in the database of tenant {}", tenant.slug)
        } else {
            String::new()
        };
        return Err(CliError::msg(format!(
            "table `{}` does not exist{place}: check the name (tables are case-sensitive)",
            args.table
        )));
    }
    let has_tenant_field = columns.iter().any(|c| c.name == args.tenant_field);
    if !has_tenant_field && !own_space {
        return Err(CliError::msg(format!(
            "column `{}` does not exist in table `{}`: pass the column that holds the tenant id with --tenant-field (columns: {})",
            args.tenant_field,
            args.table,
            columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let exported: Vec<&ColumnInfo> = columns
        .iter()
        .filter(|c| c.name != args.tenant_field)
        .collect();
    let Some(key) = exported
        .iter()
        .find(|c| c.primary_key)
        .or_else(|| exported.first())
        .map(|c| c.name.clone())
    else {
        return Err(CliError::msg(format!(
            "table `{}` has no column besides `{}`: nothing to export",
            args.table, args.tenant_field
        )));
    };
    warn_unsupported(&tx, &exported);
    let names: Vec<&str> = exported.iter().map(|c| c.name.as_str()).collect();

    let reader = if has_tenant_field {
        let interceptor =
            Interceptor::new(TenantTables::new([args.table.as_str()]).column(&args.tenant_field));
        Reader::Scoped(
            ScopedTable::new(interceptor, &args.table, &key, &names)
                .map_err(|e| CliError::msg(format!("cannot export table `{}`: {e}", args.table)))?,
        )
    } else {
        Reader::Whole(whole_table_sql(&tx, &args.table, &key, &names))
    };

    let mut out = Output::create(args.output.as_deref(), args.format)?;
    let progress = indicatif::ProgressBar::new_spinner();
    let mut count: u64 = 0;
    loop {
        let want = match args.limit {
            Some(limit) => PAGE.min(limit - count),
            None => PAGE,
        };
        if want == 0 {
            break;
        }
        let rows = read_page(&mut tx, &reader, tenant.id.as_str(), want, count).await?;
        for row in &rows {
            out.write(row)?;
        }
        count += rows.len() as u64;
        progress.set_message(format!("exported {count} rows"));
        progress.tick();
        if (rows.len() as u64) < want {
            break;
        }
        if count % (PAGE * 10) == 0 && progress.is_hidden() {
            eprintln!("exported {count} rows");
        }
    }
    progress.finish_and_clear();
    // Read-only: nothing to commit.
    drop(tx);
    let written = out.finish()?;
    drop(out);
    match &written {
        Some(path) => {
            eprintln!(
                "exported {count} rows of {} for tenant {} to {}",
                args.table,
                tenant.slug,
                path.display()
            );
            if global.json {
                let body = serde_json::json!({
                    "table": args.table,
                    "tenant_id": tenant.id,
                    "rows": count,
                    "output": path,
                });
                println!("{body}");
            }
        }
        None => eprintln!(
            "exported {count} rows of {} for tenant {}",
            args.table, tenant.slug
        ),
    }
    Ok(())
}

/// Refuses names that are not plain identifiers before any SQL is built.
fn check_ident(what: &str, name: &str) -> Result<(), CliError> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63;
    if ok {
        Ok(())
    } else {
        Err(CliError::msg(format!(
            "{what} `{}` is not a valid name: use letters, digits and `_`, not starting with a digit",
            name.escape_debug()
        )))
    }
}

/// A transaction in the tenant's schema or database (or the main database
/// under `row_level`, where the interceptor scopes every statement).
async fn open(app: &App, tenant: &TenantInfo) -> Result<Tx, CliError> {
    let cannot = |e: &dyn std::fmt::Display| {
        CliError::msg(format!(
            "cannot open the database of tenant {}: {e}",
            tenant.slug
        ))
    };
    match &app.db {
        Db::Postgres(db) => db
            .begin_for(&tenant.id)
            .await
            .map(Tx::Pg)
            .map_err(|e| cannot(&e)),
        Db::SqliteRowLevel(_) | Db::SqliteDatabase(_) => match app.sqlite_tx(&tenant.id).await {
            Ok(Some(tx)) => Ok(Tx::Sqlite(tx)),
            Ok(None) => Err(cannot(&"no SQLite database")),
            Err(e) => Err(cannot(&e)),
        },
    }
}

async fn pg_columns(
    tx: &mut Transaction<'static, Postgres>,
    table: &str,
) -> Result<Vec<ColumnInfo>, CliError> {
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT c.column_name::text, c.data_type::text, \
                COALESCE(c.ordinal_position::int2 = ( \
                    SELECT i.indkey[0] FROM pg_index i \
                    WHERE i.indisprimary \
                      AND i.indrelid = to_regclass(format('%I.%I', current_schema(), $1::text)) \
                ), false) \
         FROM information_schema.columns c \
         WHERE c.table_schema = current_schema() AND c.table_name = $1 \
         ORDER BY c.ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut **tx)
    .await
    .map_err(|e| CliError::msg(format!("cannot read the columns of `{table}`: {e}")))?;
    Ok(rows
        .into_iter()
        .map(|(name, data_type, primary_key)| ColumnInfo {
            name,
            data_type,
            primary_key,
        })
        .collect())
}

async fn sqlite_columns(
    tx: &mut Transaction<'static, Sqlite>,
    table: &str,
) -> Result<Vec<ColumnInfo>, CliError> {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT name, type, pk FROM pragma_table_info(?1) ORDER BY cid")
            .bind(table)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| CliError::msg(format!("cannot read the columns of `{table}`: {e}")))?;
    Ok(rows
        .into_iter()
        .map(|(name, data_type, pk)| ColumnInfo {
            name,
            data_type,
            primary_key: pk == 1,
        })
        .collect())
}

/// Says which columns cannot be exported as values.
fn warn_unsupported(tx: &Tx, columns: &[&ColumnInfo]) {
    let supported = |t: &str| match tx {
        Tx::Pg(_) => matches!(
            t,
            "bigint"
                | "integer"
                | "double precision"
                | "boolean"
                | "text"
                | "character varying"
                | "character"
                | "name"
        ),
        Tx::Sqlite(_) => !t.to_ascii_uppercase().contains("BLOB"),
    };
    for c in columns {
        if !supported(&c.data_type) {
            eprintln!(
                "warning: column `{}` has type {}, which the exporter does not read: it is exported as null",
                c.name, c.data_type
            );
        }
    }
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `SELECT cols FROM table ORDER BY key LIMIT p1 OFFSET p2`, every name
/// quoted; used only inside the tenant's own schema or database.
fn whole_table_sql(tx: &Tx, table: &str, key: &str, columns: &[&str]) -> String {
    let (l, o) = match tx {
        Tx::Pg(_) => ("$1", "$2"),
        Tx::Sqlite(_) => ("?1", "?2"),
    };
    let list = columns
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT {list} FROM {} ORDER BY {} LIMIT {l} OFFSET {o}",
        quote(table),
        quote(key)
    )
}

async fn read_page(
    tx: &mut Tx,
    reader: &Reader,
    tenant: &str,
    limit: u64,
    offset: u64,
) -> Result<Vec<Object>, CliError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    let none = Object::new();
    let failed = |e: &dyn std::fmt::Display| CliError::msg(format!("export failed: {e}"));
    match (tx, reader) {
        (Tx::Pg(tx), Reader::Scoped(table)) => table
            .list_pg(tx, tenant, &none, limit, offset)
            .await
            .map_err(|e| failed(&e)),
        (Tx::Sqlite(tx), Reader::Scoped(table)) => table
            .list_sqlite(tx, tenant, &none, limit, offset)
            .await
            .map_err(|e| failed(&e)),
        (Tx::Pg(tx), Reader::Whole(sql)) => {
            let rows = sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(limit)
                .bind(offset)
                .fetch_all(&mut **tx)
                .await
                .map_err(|e| failed(&e))?;
            Ok(rows
                .iter()
                .map(tenancy_interceptor::service::row_to_object)
                .collect())
        }
        (Tx::Sqlite(tx), Reader::Whole(sql)) => {
            let rows = sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(limit)
                .bind(offset)
                .fetch_all(&mut **tx)
                .await
                .map_err(|e| failed(&e))?;
            Ok(rows
                .iter()
                .map(tenancy_interceptor::service::row_to_object)
                .collect())
        }
    }
}

/// Where rows go: stdout, or a file written as `FILE.partial` and renamed
/// when complete, so a failed export never leaves a truncated FILE.
struct Output {
    writer: Box<dyn Write>,
    format: Format,
    rows: u64,
    file: Option<(PathBuf, PathBuf)>,
}

impl Output {
    fn create(path: Option<&Path>, format: Format) -> Result<Self, CliError> {
        let (writer, file): (Box<dyn Write>, _) = match path {
            None => (
                Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
                None,
            ),
            Some(path) => {
                let mut partial = path.as_os_str().to_owned();
                partial.push(".partial");
                let partial = PathBuf::from(partial);
                let f = std::fs::File::create(&partial).map_err(|e| {
                    CliError::msg(format!(
                        "cannot create {}: {e} (check that the directory exists and is writable)",
                        partial.display()
                    ))
                })?;
                (
                    Box::new(std::io::BufWriter::new(f)),
                    Some((partial, path.to_owned())),
                )
            }
        };
        Ok(Self {
            writer,
            format,
            rows: 0,
            file,
        })
    }

    fn write(&mut self, row: &Object) -> Result<(), CliError> {
        let line = serde_json::to_string(row)
            .map_err(|e| CliError::msg(format!("cannot encode a row as JSON: {e}")))?;
        let prefix = match (self.format, self.rows) {
            (Format::Ndjson, _) => "",
            (Format::Json, 0) => "[\n",
            (Format::Json, _) => ",\n",
        };
        self.rows += 1;
        write!(self.writer, "{prefix}{line}").map_err(write_error)?;
        if self.format == Format::Ndjson {
            self.writer.write_all(b"\n").map_err(write_error)?;
        }
        Ok(())
    }

    /// Closes the output; returns the file written, if any.
    fn finish(&mut self) -> Result<Option<PathBuf>, CliError> {
        if self.format == Format::Json {
            let end: &[u8] = if self.rows == 0 { b"[]\n" } else { b"\n]\n" };
            self.writer.write_all(end).map_err(write_error)?;
        }
        self.writer.flush().map_err(write_error)?;
        // Close the file before renaming it.
        drop(std::mem::replace(
            &mut self.writer,
            Box::new(std::io::sink()),
        ));
        match self.file.take() {
            None => Ok(None),
            Some((partial, path)) => {
                std::fs::rename(&partial, &path).map_err(|e| {
                    CliError::msg(format!(
                        "cannot move {} to {}: {e}",
                        partial.display(),
                        path.display()
                    ))
                })?;
                Ok(Some(path))
            }
        }
    }
}

impl Drop for Output {
    /// An export that did not finish removes its partial file.
    fn drop(&mut self) {
        if let Some((partial, _)) = self.file.take() {
            let _ = std::fs::remove_file(partial);
        }
    }
}

fn write_error(e: std::io::Error) -> CliError {
    CliError::msg(format!("cannot write the export: {e}"))
}
