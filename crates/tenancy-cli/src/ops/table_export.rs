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

use tenancy::TenantInfo;

use crate::app::{App, AppError, TENANT_COLUMN};

/// Why a table export failed.
#[derive(Debug, thiserror::Error)]
pub enum TableExportError {
    /// The app could not find the tenant or open its data.
    #[error(transparent)]
    App(#[from] AppError),
    /// The request names something that is not there or cannot be used;
    /// the message says what to pass instead.
    #[error("{0}")]
    Refused(String),
    /// Reading or writing failed.
    #[error("{0}")]
    Failed(String),
}

impl TableExportError {
    fn failed(e: impl std::fmt::Display) -> Self {
        Self::Failed(e.to_string())
    }
}

/// The rows' format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON array.
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// The table.
    pub table: String,
    /// The tenant's id or slug.
    pub tenant: String,
    /// The column holding the tenant id in shared tables [default: `tenant_id`].
    pub tenant_field: Option<String>,
    /// At most this many rows.
    pub limit: Option<u64>,
    /// The file to write (`FILE.partial`, renamed when complete); stdout when `None`.
    pub output: Option<PathBuf>,
    /// The format.
    pub format: Format,
}

/// What was exported.
#[derive(Debug)]
pub struct Exported {
    /// The tenant.
    pub tenant: TenantInfo,
    /// Rows written.
    pub rows: u64,
    /// SHA-256 of the rows, as the archive format computes it.
    pub sha256: String,
    /// The file written, unless it was stdout.
    pub output: Option<PathBuf>,
}

/// Exports one tenant's rows of a table.
pub async fn export_table(
    app: &App,
    request: &ExportRequest,
) -> Result<Exported, TableExportError> {
    check_names(request)?;
    let own_space = app.strategy() != "row_level";
    if own_space && let Some(field) = &request.tenant_field {
        return Err(TableExportError::Refused(format!(
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
    let field = request.tenant_field.as_deref().unwrap_or(TENANT_COLUMN);
    let tenant = app.tenant(&request.tenant).await?;
    let data = app.tenant_data(&tenant.id, field).await?;
    let mut session = data.read().await.map_err(TableExportError::failed)?;
    let Some(table) = session
        .table(&request.table)
        .await
        .map_err(TableExportError::failed)?
    else {
        let place = if own_space {
            format!(" in the database of tenant {}", tenant.slug)
        } else {
            String::new()
        };
        return Err(TableExportError::Refused(format!(
            "table `{}` does not exist{place}: check the name (tables are case-sensitive)",
            request.table
        )));
    };
    if !own_space && !table.tenant_column {
        return Err(TableExportError::Refused(format!(
            "column `{field}` does not exist in table `{}`: pass the column that holds the tenant id with --tenant-field (columns: {})",
            request.table,
            table
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if table.columns.is_empty() {
        return Err(TableExportError::Refused(format!(
            "table `{}` has no column besides `{field}`: nothing to export",
            request.table
        )));
    }

    let mut out = Output::create(request.output.as_deref(), request.format)?;
    let digest = session
        .export_table(&table, request.limit, &mut out)
        .await
        .map_err(|e| TableExportError::Failed(format!("export failed: {e}")))?;
    drop(session);
    let count = digest.rows;
    let written = out.finish()?;
    drop(out);
    Ok(Exported {
        tenant,
        rows: count,
        sha256: digest.sha256,
        output: written,
    })
}

/// Refuses a table or tenant field that is not a plain identifier, before
/// anything is opened.
pub fn check_names(request: &ExportRequest) -> Result<(), TableExportError> {
    check_ident("table", &request.table)?;
    if let Some(field) = &request.tenant_field {
        check_ident("tenant field", field)?;
    }
    Ok(())
}

/// Refuses names that are not plain identifiers before any SQL is built.
fn check_ident(what: &str, name: &str) -> Result<(), TableExportError> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63;
    if ok {
        Ok(())
    } else {
        Err(TableExportError::Refused(format!(
            "{what} `{}` is not a valid name: use letters, digits and `_`, not starting with a digit",
            name.escape_debug()
        )))
    }
}

/// Where rows go: stdout, or a file written as `FILE.partial` and renamed
/// when complete, so a failed export never leaves a truncated FILE. NDJSON
/// lines pass through; for `json` they become the elements of one array.
struct Output {
    writer: Box<dyn Write + Send>,
    format: Format,
    /// A row ended and its newline is held back (`json`: the next row
    /// needs a comma before it).
    held_newline: bool,
    /// Nonzero once anything was written.
    rows: u64,
    file: Option<(PathBuf, PathBuf)>,
}

impl Output {
    fn create(path: Option<&Path>, format: Format) -> Result<Self, TableExportError> {
        let (writer, file): (Box<dyn Write + Send>, _) = match path {
            None => (Box::new(std::io::BufWriter::new(std::io::stdout())), None),
            Some(path) => {
                let mut partial = path.as_os_str().to_owned();
                partial.push(".partial");
                let partial = PathBuf::from(partial);
                let f = std::fs::File::create(&partial).map_err(|e| {
                    TableExportError::Failed(format!(
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
    fn finish(&mut self) -> Result<Option<PathBuf>, TableExportError> {
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
                    TableExportError::Failed(format!(
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

fn write_error(e: std::io::Error) -> TableExportError {
    TableExportError::Failed(format!("cannot write the export: {e}"))
}
