//! Whole-tenant data portability: `tenancy tenants export`,
//! `import`, and `delete --purge`.
//!
//! One module per operation: [`export`](export::export),
//! [`import`](import::import), [`purge`](purge::purge) and
//! [`move`](moving::move_tenant); the progress display they share is here.

use std::io::IsTerminal;

mod export;
mod import;
mod moving;
mod purge;

pub use export::{ExportArgs, export};
pub use import::{ImportArgs, import};
pub use moving::{MoveArgs, move_tenant};
pub use purge::purge;

/// Progress on a terminal, lines otherwise.
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub(crate) fn new(tables: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(tables);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} tables {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Self { bar }
    }

    pub(crate) fn table(&self, verb: &str, name: &str, rows: u64, took: std::time::Duration) {
        let line = format!("{verb} {name}: {rows} rows in {:.2} s", took.as_secs_f64());
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                bar.set_message(line);
            }
            None => eprintln!("{line}"),
        }
    }

    pub(crate) fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
