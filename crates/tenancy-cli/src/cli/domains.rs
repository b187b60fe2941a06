//! `tenancy domains add|list|verify|remove`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tenancy::TenantDomain;

use crate::app::App;
use crate::cli::{CliError, Global};
use crate::ops::domains::{add, domain_json, list, remove, verify};

/// Domain commands.
#[derive(Debug, Subcommand)]
pub enum DomainsCommand {
    /// Add a domain to a tenant (pending until verified, unless --verified).
    Add(AddArgs),
    /// List a tenant's domains.
    List(ListArgs),
    /// Verify a domain: its TXT record `_tenancy-challenge.<domain>` must hold its token.
    Verify(DomainArg),
    /// Remove a domain.
    Remove(DomainArg),
}

/// `domains add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The tenant's id or slug.
    #[arg(value_name = "TENANT")]
    pub tenant: String,
    /// The domain, e.g. portal.acme.com.
    pub domain: String,
    /// Make it the tenant's primary domain.
    #[arg(long)]
    pub primary: bool,
    /// Mark it verified now (the operator vouches for it), skipping DNS.
    #[arg(long)]
    pub verified: bool,
}

/// `domains list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The tenant's id or slug.
    #[arg(value_name = "TENANT")]
    pub tenant: String,
}

/// A domain named on the command line.
#[derive(Debug, Args)]
pub struct DomainArg {
    /// The domain.
    pub domain: String,
}

/// Runs a domains command.
pub async fn run(global: &Global, cmd: DomainsCommand) -> Result<(), CliError> {
    let app = App::open(&global.source()).await?;
    let actor = crate::cli::actor();
    let print = |d: &TenantDomain, verb: &str| {
        if global.json {
            println!("{}", domain_json(d));
        } else {
            println!(
                "{verb} {} of tenant {} ({}{})",
                d.domain,
                d.tenant_id,
                d.status,
                if d.primary { ", primary" } else { "" }
            );
            if !d.is_verified() {
                println!(
                    "to verify it, publish TXT {} = \"{}\" and run `tenancy domains verify {}`",
                    d.domain.challenge_name(),
                    d.token,
                    d.domain
                );
            }
        }
    };
    match cmd {
        DomainsCommand::Add(a) => {
            let d = add(&app, &actor, &a.tenant, &a.domain, a.primary, a.verified).await?;
            print(&d, "added");
        }
        DomainsCommand::Verify(a) => {
            let d = verify(&app, &actor, &a.domain).await?;
            print(&d, "verified");
        }
        DomainsCommand::Remove(a) => {
            let d = remove(&app, &actor, &a.domain).await?;
            if global.json {
                println!("{}", domain_json(&d));
            } else {
                println!("removed {} from tenant {}", d.domain, d.tenant_id);
            }
        }
        DomainsCommand::List(a) => {
            let all = list(&app, &a.tenant).await?;
            if global.json {
                let items: Vec<Value> = all.iter().map(domain_json).collect();
                println!("{}", json!({ "items": items }));
            } else if all.is_empty() {
                println!("no domains");
            } else {
                for d in &all {
                    println!(
                        "{}  {}{}",
                        d.domain,
                        d.status,
                        if d.primary { "  primary" } else { "" }
                    );
                }
            }
        }
    }
    Ok(())
}
