//! `tenancy tenants …`: create, inspect and change tenants.
//!
//! Every change goes through the lifecycle service, so provisioning
//! (schemas, databases), events and cache invalidation happen exactly as
//! they do in the server. `--json` prints the tenant (or `{"items": […],
//! "total": N}` for `list`) on stdout.

use clap::{Args, Subcommand};
use serde_json::json;
use tenancy::{ListQuery, NewTenant, Slug, TenantInfo, TenantUpdate};

use crate::app::to_json;
use crate::app::{App, CliError, Global, json_or_string};

/// Tenant commands.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant (provisioned by the isolation strategy, then active).
    Create(CreateArgs),
    /// List active tenants (all with --all).
    List(ListArgs),
    /// Show one tenant.
    Show(TenantArg),
    /// Change a tenant's name, slug or plan.
    Update(UpdateArgs),
    /// Suspend a tenant: it is refused service, its data is kept.
    Suspend(SuspendArgs),
    /// Make a tenant active again.
    Activate(TenantArg),
    /// Switch a tenant off (applies lifecycle.deprovision_policy).
    Deactivate(TenantArg),
    /// Delete a tenant and its config overrides (applies
    /// lifecycle.deprovision_policy to its data; --purge --yes removes everything).
    Delete(DeleteArgs),
    /// Write every table, the record, config and migration version of a tenant to one archive.
    Export(crate::portability::ExportArgs),
    /// Restore an archive as a new tenant (any strategy, same migration version), verified.
    Import(crate::portability::ImportArgs),
    /// Move a tenant's database to another server (database strategy, lifecycle.database_servers).
    Move(crate::portability::MoveArgs),
    /// The pending pool (lifecycle.pending_pool): provisioned tenants waiting for a signup.
    #[command(subcommand)]
    Pool(crate::pool::PoolCommand),
}

/// `tenants delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The tenant's id or slug.
    #[arg(value_name = "ID|SLUG")]
    pub tenant: String,
    /// Remove every row, schema, database, file, config key and placement of the
    /// tenant (whatever lifecycle.deprovision_policy says), then scan to prove it.
    #[arg(long)]
    pub purge: bool,
    /// Confirm --purge: it cannot be undone.
    #[arg(long, requires = "purge")]
    pub yes: bool,
}

/// `tenants create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Unique handle: 2-63 lower-case letters, digits and '-', starting with a letter.
    #[arg(long)]
    pub slug: String,
    /// Display name.
    #[arg(long)]
    pub name: String,
    /// Commercial plan (selects plan-wide defaults such as rate limits).
    #[arg(long)]
    pub plan: Option<String>,
    /// Metadata: a JSON object.
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
}

/// `tenants list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Include inactive, suspended and provisioning tenants.
    #[arg(long)]
    pub all: bool,
}

/// A tenant named by id or slug.
#[derive(Debug, Args)]
pub struct TenantArg {
    /// The tenant's id or slug.
    #[arg(value_name = "ID|SLUG")]
    pub tenant: String,
}

/// `tenants update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The tenant's id or slug.
    #[arg(value_name = "ID|SLUG")]
    pub tenant: String,
    /// New display name.
    #[arg(long)]
    pub name: Option<String>,
    /// New slug.
    #[arg(long)]
    pub slug: Option<String>,
    /// New plan.
    #[arg(long, conflicts_with = "clear_plan")]
    pub plan: Option<String>,
    /// Remove the plan.
    #[arg(long)]
    pub clear_plan: bool,
    /// New metadata: a JSON object (replaces the old one).
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
}

/// `tenants suspend`.
#[derive(Debug, Args)]
pub struct SuspendArgs {
    /// The tenant's id or slug.
    #[arg(value_name = "ID|SLUG")]
    pub tenant: String,
    /// Why (recorded as the status reason).
    #[arg(long)]
    pub reason: Option<String>,
}

/// Runs a tenants command.
pub async fn run(global: &Global, cmd: TenantsCommand) -> Result<(), CliError> {
    // Check what can be checked before touching the database.
    if let TenantsCommand::Create(args) = &cmd {
        Slug::new(&args.slug).map_err(CliError::msg)?;
    }
    match cmd {
        TenantsCommand::Export(args) => return crate::portability::export(global, args).await,
        TenantsCommand::Import(args) => return crate::portability::import(global, args).await,
        TenantsCommand::Move(args) => return crate::portability::move_tenant(global, args).await,
        TenantsCommand::Pool(cmd) => return crate::pool::run(global, cmd).await,
        TenantsCommand::Delete(args) if args.purge => {
            if !args.yes {
                return Err(CliError::msg(
                    "--purge removes every row, schema, database, file and config key of the tenant and cannot be undone: \
                     add --yes to confirm (or `tenancy tenants export` it first)",
                ));
            }
            return crate::portability::purge(global, &args.tenant).await;
        }
        cmd => run_lifecycle(global, cmd).await,
    }
}

async fn run_lifecycle(global: &Global, cmd: TenantsCommand) -> Result<(), CliError> {
    let app = App::open(global).await?;
    let lifecycle = app.tenancy.lifecycle();
    let (verb, before, tenant) = match cmd {
        TenantsCommand::List(args) => return list(&app, global, args.all).await,
        TenantsCommand::Show(t) => ("", None, app.tenant(&t.tenant).await?),
        TenantsCommand::Create(args) => {
            let mut new = NewTenant::new(&args.slug, args.name).map_err(CliError::msg)?;
            if let Some(plan) = args.plan {
                new = new.plan(plan);
            }
            if let Some(metadata) = args.metadata {
                new = new.metadata(metadata_object(&metadata)?);
            }
            (
                "created",
                None,
                lifecycle.create(new).await.map_err(CliError::msg)?,
            )
        }
        TenantsCommand::Update(args) => {
            let update = TenantUpdate {
                slug: args
                    .slug
                    .as_deref()
                    .map(Slug::new)
                    .transpose()
                    .map_err(CliError::msg)?,
                name: args.name,
                plan: if args.clear_plan {
                    Some(None)
                } else {
                    args.plan.map(Some)
                },
                metadata: args.metadata.as_deref().map(metadata_object).transpose()?,
            };
            if update.is_empty() {
                return Err(CliError::msg(
                    "nothing to update: pass --name, --slug, --plan, --clear-plan or --metadata",
                ));
            }
            let current = app.tenant(&args.tenant).await?;
            let updated = lifecycle
                .update(&current.id, update)
                .await
                .map_err(CliError::msg)?;
            ("updated", Some(current), updated)
        }
        TenantsCommand::Suspend(args) => {
            let current = app.tenant(&args.tenant).await?;
            let tenant = lifecycle
                .suspend(&current.id, args.reason.as_deref())
                .await
                .map_err(CliError::msg)?;
            ("suspended", Some(current), tenant)
        }
        TenantsCommand::Activate(t) => {
            let current = app.tenant(&t.tenant).await?;
            let tenant = lifecycle
                .activate(&current.id)
                .await
                .map_err(CliError::msg)?;
            ("activated", Some(current), tenant)
        }
        TenantsCommand::Deactivate(t) => {
            let current = app.tenant(&t.tenant).await?;
            let tenant = lifecycle
                .deactivate(&current.id)
                .await
                .map_err(CliError::msg)?;
            ("deactivated", Some(current), tenant)
        }
        TenantsCommand::Delete(t) => {
            let current = app.tenant(&t.tenant).await?;
            let tenant = lifecycle.delete(&current.id).await.map_err(CliError::msg)?;
            ("deleted", Some(current), tenant)
        }
        TenantsCommand::Export(_)
        | TenantsCommand::Import(_)
        | TenantsCommand::Move(_)
        | TenantsCommand::Pool(_) => {
            return Ok(());
        }
    };
    if !verb.is_empty() {
        let action = match verb {
            "created" => "tenant.create",
            "updated" => "tenant.update",
            "suspended" => "tenant.suspend",
            "activated" => "tenant.activate",
            "deactivated" => "tenant.deactivate",
            _ => "tenant.delete",
        };
        let after = (verb != "deleted")
            .then(|| crate::app::audit_value(&tenant))
            .flatten();
        app.audit(
            tenancy::audit::NewAuditEntry::new(crate::app::cli_actor(), action)
                .tenant(tenant.id.clone())
                .change(before.as_ref().and_then(crate::app::audit_value), after),
        )
        .await;
    }
    if global.json {
        println!("{}", to_json(&tenant)?);
    } else if verb.is_empty() {
        print_details(&tenant);
    } else {
        println!(
            "{verb} tenant {} (id {}, status {})",
            tenant.slug, tenant.id, tenant.status
        );
    }
    app.flush_events().await;
    Ok(())
}

/// Pages through every matching tenant and prints them.
async fn list(app: &App, global: &Global, all: bool) -> Result<(), CliError> {
    let base = if all {
        ListQuery::all()
    } else {
        ListQuery::active()
    };
    let mut items: Vec<TenantInfo> = Vec::new();
    let mut total;
    loop {
        let offset = items.len() as u64;
        let page = app
            .tenancy
            .store()
            .list(base.clone().page(offset, ListQuery::MAX_LIMIT))
            .await
            .map_err(CliError::msg)?;
        total = page.total;
        let got = page.items.len();
        items.extend(page.items);
        if got == 0 || items.len() as u64 >= total {
            break;
        }
    }
    // Tenants created while paging may push `total` up; report what we print.
    let total = total.max(items.len() as u64);
    if global.json {
        let body = json!({ "items": items, "total": total });
        println!("{}", to_json(&body)?);
        return Ok(());
    }
    if items.is_empty() {
        println!(
            "no {}tenants{}",
            if all { "" } else { "active " },
            if all {
                ""
            } else {
                " (--all includes inactive ones)"
            }
        );
        return Ok(());
    }
    let id_w = column_width(items.iter().map(|t| t.id.as_str()), "ID");
    let slug_w = column_width(items.iter().map(|t| t.slug.as_str()), "SLUG");
    let plan_w = column_width(
        items.iter().map(|t| t.plan.as_deref().unwrap_or("-")),
        "PLAN",
    );
    println!(
        "{:id_w$}  {:slug_w$}  {:12}  {:plan_w$}  NAME",
        "ID", "SLUG", "STATUS", "PLAN"
    );
    for t in &items {
        println!(
            "{:id_w$}  {:slug_w$}  {:12}  {:plan_w$}  {}",
            t.id.as_str(),
            t.slug.as_str(),
            t.status.as_str(),
            t.plan.as_deref().unwrap_or("-"),
            t.name
        );
    }
    println!("{} tenant(s)", items.len());
    Ok(())
}

fn column_width<'a>(values: impl Iterator<Item = &'a str>, header: &str) -> usize {
    values
        .map(|v| v.chars().count())
        .chain(std::iter::once(header.len()))
        .max()
        .unwrap_or(header.len())
}

fn print_details(t: &TenantInfo) {
    println!("id:         {}", t.id);
    println!("slug:       {}", t.slug);
    println!("name:       {}", t.name);
    match &t.status_reason {
        Some(reason) => println!("status:     {} ({reason})", t.status),
        None => println!("status:     {}", t.status),
    }
    println!("plan:       {}", t.plan.as_deref().unwrap_or("-"));
    println!("metadata:   {}", t.metadata);
    println!("created_at: {}", t.created_at.to_rfc3339());
    println!("updated_at: {}", t.updated_at.to_rfc3339());
}

/// Parses `--metadata`: it must be a JSON object.
fn metadata_object(raw: &str) -> Result<serde_json::Value, CliError> {
    match json_or_string(raw) {
        v @ serde_json::Value::Object(_) => Ok(v),
        _ => Err(CliError::msg(
            "--metadata must be a JSON object, e.g. --metadata '{\"region\":\"eu\"}'",
        )),
    }
}
