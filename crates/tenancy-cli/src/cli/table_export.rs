//! `tenancy export TABLE --tenant-id T`: one tenant's rows of a table
//! ([`crate::ops::table_export`]).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::app::App;
use crate::cli::{CliError, Global};
use crate::ops::table_export::{self, ExportRequest};

/// `tenancy export` options.
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
/// Runs `tenancy export`.
pub async fn run(global: &Global, args: ExportArgs) -> Result<(), CliError> {
    let request = ExportRequest {
        table: args.table,
        tenant: args.tenant_id,
        tenant_field: args.tenant_field,
        limit: args.limit,
        output: args.output,
        format: match args.format {
            Format::Json => table_export::Format::Json,
            Format::Ndjson => table_export::Format::Ndjson,
        },
    };
    table_export::check_names(&request)?;
    let app = App::open(&global.source()).await?;
    let exported = table_export::export_table(&app, &request).await?;
    let (count, tenant) = (exported.rows, &exported.tenant);
    match &exported.output {
        Some(path) => {
            eprintln!(
                "exported {count} rows of {} for tenant {} to {}",
                request.table,
                tenant.slug,
                path.display()
            );
            if global.json {
                let body = serde_json::json!({
                    "table": request.table,
                    "tenant_id": tenant.id,
                    "rows": count,
                    "sha256": exported.sha256,
                    "output": path,
                });
                println!("{body}");
            }
        }
        None => eprintln!(
            "exported {count} rows of {} for tenant {}",
            request.table, tenant.slug
        ),
    }
    Ok(())
}
