//! `tenancy export TABLE --tenant-id T`: one tenant's rows of a table, as
//! a JSON array or NDJSON, every value exact.
//!
//! The table is read where the tenant's data lives (the main database
//! under `row_level`, the tenant's own schema or database otherwise). Values
//! are rendered by the database itself (PostgreSQL's `row_to_json`,
//! streamed with `COPY`) or, on SQLite, from each value's storage class;
//! see `tenancy_sql::portable`. The tenant is always a bound parameter; a
//! table or column that does not exist is refused by name before anything
//! is read.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::app::{App, CliError, Global, TENANT_COLUMN};

/// Export arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "Under the row_level strategy TABLE must have the tenant field (default tenant_id). \
Under the schema and database strategies the tenant's own schema or database is read and the \
whole table is the tenant's: --tenant-field has no effect there and is refused.\n\n\
Every column type is exported with its value: on PostgreSQL the server renders each row \
(uuid, timestamptz in UTC, date, numeric with every digit, json/jsonb, arrays, enums, …), \
bytea as base64; on SQLite each value by its storage class, BLOB as base64."
)]
pub struct ExportArgs {
    /// The table to export.
    pub table: String,
    /// The tenant whose rows to export: its id or slug.
    #[arg(long, value_name = "ID|SLUG")]
    pub tenant_id: String,
    /// The column that holds the tenant id (row_level only) [default: tenant_id].
    #[arg(long, value_name = "COLUMN")]
    pub tenant_field: Option<String>,
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

/// Runs an export.
pub async fn run(global: &Global, args: ExportArgs) -> Result<(), CliError> {
    check_ident("table", &args.table)?;
    if let Some(field) = &args.tenant_field {
        check_ident("tenant field", field)?;
    }
    let app = App::open(global).await?;
    let own_space = app.strategy() != "row_level";
    if own_space && let Some(field) = &args.tenant_field {
        return Err(CliError::msg(format!(
            "--tenant-field {field} has no effect under the `{}` isolation strategy: \
             each tenant has its own {}, so the whole table is the tenant's; drop the option",
            app.strategy(),
            if app.strategy() == "schema" {
                "schema"
            } else {
                "database"
            }
        )));
    }
    let field = args.tenant_field.as_deref().unwrap_or(TENANT_COLUMN);
    let tenant = app.tenant(&args.tenant_id).await?;
    let data = app.tenant_data(&tenant.id, field).await?;
    let mut session = data.read().await.map_err(CliError::msg)?;
    let Some(table) = session.table(&args.table).await.map_err(CliError::msg)? else {
        let place = if own_space {
            format!(" in the database of tenant {}", tenant.slug)
        } else {
            String::new()
        };
        return Err(CliError::msg(format!(
            "table `{}` does not exist{place}: check the name (tables are case-sensitive)",
            args.table
        )));
    };
    if !own_space && !table.tenant_column {
        return Err(CliError::msg(format!(
            "column `{field}` does not exist in table `{}`: pass the column that holds the tenant id with --tenant-field (columns: {})",
            args.table,
            table
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if table.columns.is_empty() {
        return Err(CliError::msg(format!(
            "table `{}` has no column besides `{field}`: nothing to export",
            args.table
        )));
    }

    let mut out = Output::create(args.output.as_deref(), args.format)?;
    let digest = session
        .export_table(&table, args.limit, &mut out)
        .await
        .map_err(|e| CliError::msg(format!("export failed: {e}")))?;
    drop(session);
    let count = digest.rows;
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
                    "sha256": digest.sha256,
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

/// Where rows go: stdout, or a file written as `FILE.partial` and renamed
/// when complete, so a failed export never leaves a truncated FILE. NDJSON
/// lines pass through; for `json` they become the elements of one array.
struct Output {
    writer: Box<dyn Write>,
    format: Format,
    /// A row ended and its newline is held back (`json`: the next row
    /// needs a comma before it).
    held_newline: bool,
    /// Nonzero once anything was written.
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
                    Box::new(std::io::BufWriter::with_capacity(1 << 20, f)),
                    Some((partial, path.to_owned())),
                )
            }
        };
        Ok(Self {
            writer,
            format,
            held_newline: false,
            rows: 0,
            file,
        })
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

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.format == Format::Ndjson {
            self.rows += buf.iter().filter(|b| **b == b'\n').count() as u64;
            return self.writer.write(buf);
        }
        // JSON array: "[\n" row (",\n" row)* "\n]\n".
        let mut rest = buf;
        while !rest.is_empty() {
            if self.rows == 0 {
                self.writer.write_all(b"[\n")?;
                self.rows = 1;
            } else if self.held_newline {
                self.writer.write_all(b",\n")?;
                self.held_newline = false;
            }
            match rest.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.writer.write_all(&rest[..i])?;
                    self.held_newline = true;
                    rest = &rest[i + 1..];
                }
                None => {
                    self.writer.write_all(rest)?;
                    rest = &[];
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
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
