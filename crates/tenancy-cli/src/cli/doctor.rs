//! `tenancy doctor`: prints what [`crate::ops::doctor`] finds, and exits 0
//! (no critical or warning finding), 1 (findings) or 2 (could not check).

use std::process::ExitCode;

use clap::Args;
use tenancy::doctor::Report;

use crate::app::App;
use crate::cli::Global;
use crate::ops::doctor;

/// `tenancy doctor` options.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Report the Citus readiness of the schema instead: each table
    /// distributed (by the tenant column), reference or local, and what
    /// stops it from running on Citus.
    #[arg(long)]
    pub citus: bool,
}

/// Runs `tenancy doctor`; the exit code is the contract (0, 1, 2).
pub async fn run(global: &Global, args: DoctorArgs) -> ExitCode {
    let source = global.source();
    let app = match App::open(&source).await {
        Ok(app) => app,
        Err(e) => return cannot_check(global, &e),
    };
    if args.citus {
        return match doctor::citus(&app).await {
            Ok(citus) => {
                if global.json {
                    print_json(&citus);
                } else {
                    print!("{}", citus.to_text());
                }
                exit_code(&citus.report)
            }
            Err(e) => cannot_check(global, &e),
        };
    }
    match doctor::examine(&app, source.url()).await {
        Ok(report) => {
            if global.json {
                print_json(&report);
            } else {
                print!("{}", text(&report));
            }
            exit_code(&report)
        }
        Err(e) => cannot_check(global, &e),
    }
}

/// The report for people: one block per finding, then the counts.
pub fn text(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for f in &report.findings {
        let _ = writeln!(out, "{:<8} {}  {}", f.severity, f.check, f.object);
        let _ = writeln!(out, "         {}", f.detail);
        let _ = writeln!(out, "         fix: {}", f.fix);
    }
    let counts = report
        .checked
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        out,
        "{} finding(s); checked: {}",
        report.findings.len(),
        if counts.is_empty() {
            "nothing"
        } else {
            &counts
        }
    );
    out
}

fn exit_code(report: &Report) -> ExitCode {
    ExitCode::from(report.exit_code() as u8)
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("error: cannot print the report: {e}"),
    }
}

fn cannot_check(global: &Global, error: &dyn std::fmt::Display) -> ExitCode {
    if global.json {
        println!(
            "{}",
            serde_json::json!({ "error": error.to_string(), "findings": [], "checked": {} })
        );
    }
    eprintln!("error: the doctor could not check: {error}");
    ExitCode::from(2)
}
