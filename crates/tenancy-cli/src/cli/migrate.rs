//! `tenancy migrate`: the application's migrations, applied to every
//! tenant by [`crate::ops::migrate`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Args;

use crate::app::App;
use crate::cli::{CliError, Global};
use crate::ops::migrate::{self, Summary};

/// `tenancy migrate` options.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Directory of `<version>_<name>.sql` files [default: lifecycle.migrations_dir]
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Tenants migrated at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Open every schema to check its version, even those the version index
    /// records as current (schema strategy).
    #[arg(long)]
    pub verify: bool,
}

/// Runs `tenancy migrate`.
pub async fn run(global: &Global, args: MigrateArgs) -> Result<(), CliError> {
    let app = App::open_with_migrations(&global.source(), args.dir).await?;
    let progress = Arc::new(Progress::default());
    let summary =
        migrate::migrate_all(&app, usize::from(args.jobs), args.verify, progress.clone()).await?;
    progress.finish();
    print(global, &summary)?;
    if summary.failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "{} tenant(s) failed to migrate and stay at their previous version; fix the cause and re-run `tenancy migrate` (only what is missing is applied)",
            summary.failed.len()
        )))
    }
}

fn print(global: &Global, summary: &Summary) -> Result<(), CliError> {
    let latest = summary.latest_version;
    if global.json {
        println!("{}", crate::cli::to_json(summary)?);
    } else if let Some(shared) = &summary.shared {
        println!(
            "shared tables: version {} -> {} ({} applied; latest version {latest}); row-level security set up",
            shared.from, shared.to, shared.applied
        );
    } else {
        println!(
            "migrated: {}, already current: {}, failed: {} (latest version {latest})",
            summary.migrated.len(),
            summary.current.len(),
            summary.failed.len()
        );
        for f in &summary.failed {
            println!(
                "  failed {} ({}): {}",
                f.slug,
                f.id,
                f.error.as_deref().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// A bar on a terminal, a line per tenant otherwise.
#[derive(Default)]
struct Progress {
    bar: std::sync::OnceLock<indicatif::ProgressBar>,
    done: AtomicU64,
    total: AtomicU64,
}

impl migrate::Progress for Progress {
    fn start(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tenants {msg}")
            {
                bar.set_style(style);
            }
            let _ = self.bar.set(bar);
        }
    }

    fn tenant(&self, slug: &str, result: &Result<tenancy_sql::Applied, tenancy_sql::DbError>) {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.total.load(Ordering::Relaxed);
        match self.bar.get() {
            Some(bar) => {
                bar.inc(1);
                if result.is_err() {
                    bar.set_message(format!("(failed: {slug})"));
                }
            }
            None => match result {
                Ok(a) if a.count > 0 => eprintln!("[{n}/{total}] {slug}: {} -> {}", a.from, a.to),
                Ok(a) => eprintln!("[{n}/{total}] {slug}: current at {}", a.to),
                Err(e) => eprintln!("[{n}/{total}] {slug}: FAILED: {e}"),
            },
        }
    }
}

impl Progress {
    fn finish(&self) {
        if let Some(bar) = self.bar.get() {
            bar.finish();
        }
    }
}
