//! `tenancy sql …`: see what the query interceptor makes of a statement.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use tenancy_interceptor::{Dialect, Interceptor, TenantTables};

/// `tenancy sql` subcommands.
#[derive(Debug, Subcommand)]
pub enum SqlCommand {
    /// Read one SQL statement on stdin and print it scoped to the current
    /// tenant (the tenant is the bind parameter after the statement's own),
    /// or print why it is refused and exit with status 1.
    Rewrite(RewriteArgs),
}

/// Arguments of `tenancy sql rewrite`.
#[derive(Debug, Args)]
pub struct RewriteArgs {
    /// Tenant-scoped tables, comma-separated (e.g. `notes,orders,app.items`).
    #[arg(long, value_delimiter = ',', required = true)]
    tables: Vec<String>,
    /// The tenant column.
    #[arg(long, default_value = TenantTables::DEFAULT_COLUMN)]
    column: String,
    /// SQL dialect of the statement.
    #[arg(long, value_enum, default_value_t = DialectArg::Postgres)]
    dialect: DialectArg,
}

/// SQL dialects on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DialectArg {
    /// PostgreSQL (`$1` placeholders).
    Postgres,
    /// SQLite (`?1` placeholders).
    Sqlite,
}

impl From<DialectArg> for Dialect {
    fn from(d: DialectArg) -> Self {
        match d {
            DialectArg::Postgres => Dialect::Postgres,
            DialectArg::Sqlite => Dialect::Sqlite,
        }
    }
}

/// Run a `tenancy sql` subcommand.
pub fn run(cmd: SqlCommand) -> ExitCode {
    match cmd {
        SqlCommand::Rewrite(args) => rewrite(args),
    }
}

fn rewrite(args: RewriteArgs) -> ExitCode {
    let mut sql = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut sql) {
        eprintln!("error: cannot read the statement from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let tables = TenantTables::new(&args.tables).column(args.column);
    let interceptor = Interceptor::new(tables);
    match interceptor.rewrite_uncached(&sql, args.dialect.into()) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            if writeln!(stdout, "{}", out.sql()).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(refusal) => {
            eprintln!("{refusal}");
            ExitCode::FAILURE
        }
    }
}
