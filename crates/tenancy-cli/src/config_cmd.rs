//! `tenancy config …`: per-tenant configuration.
//!
//! A tenant's effective configuration is the application defaults
//! (`tenancy.overrides.defaults` in `tenancy.yaml`) with the tenant's
//! overrides on top. Writes go through the config service, so they publish
//! `ConfigChanged` like the admin API does.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::app::to_json;
use crate::app::{App, CliError, Global, json_or_string};

/// Config commands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Set a tenant's override: VALUE is JSON if it parses (42, true,
    /// {"a":1}, "quoted"), else a plain string.
    Set(SetArgs),
    /// Print a tenant's effective value of KEY (override, else default);
    /// fails when neither exists.
    Get(KeyArgs),
    /// Remove a tenant's override of KEY (the default applies again).
    Unset(KeyArgs),
    /// Print a tenant's effective config: defaults merged with overrides.
    List(TenantArgs),
}

/// `config set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The tenant's id or slug.
    #[arg(value_name = "TENANT")]
    pub tenant: String,
    /// The key: 1-128 characters of letters, digits, '_', '.' or '-'.
    pub key: String,
    /// The value (JSON if it parses, else a string).
    pub value: String,
}

/// A tenant and a key.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The tenant's id or slug.
    #[arg(value_name = "TENANT")]
    pub tenant: String,
    /// The key.
    pub key: String,
}

/// A tenant.
#[derive(Debug, Args)]
pub struct TenantArgs {
    /// The tenant's id or slug.
    #[arg(value_name = "TENANT")]
    pub tenant: String,
}

/// Runs a config command.
pub async fn run(global: &Global, cmd: ConfigCommand) -> Result<(), CliError> {
    let app = App::open(global).await?;
    let overrides = app.tenancy.overrides();
    match cmd {
        ConfigCommand::Set(args) => {
            let tenant = app.tenant(&args.tenant).await?;
            let value = json_or_string(&args.value);
            let before = previous(&app, &tenant.id, &args.key).await;
            overrides
                .set(&tenant.id, &args.key, value.clone())
                .await
                .map_err(CliError::msg)?;
            app.audit(
                tenancy::audit::NewAuditEntry::new(crate::app::cli_actor(), "config.set")
                    .tenant(tenant.id.clone())
                    .change(
                        before.map(|v| json!({ "key": args.key, "value": v })),
                        Some(json!({ "key": args.key, "value": value })),
                    ),
            )
            .await;
            if global.json {
                let body = json!({ "tenant_id": tenant.id, "key": args.key, "value": value });
                println!("{}", to_json(&body)?);
            } else {
                println!("{} = {} for tenant {}", args.key, value, tenant.slug);
            }
        }
        ConfigCommand::Get(args) => {
            let tenant = app.tenant(&args.tenant).await?;
            let value = overrides
                .get(&tenant.id, &args.key)
                .await
                .map_err(CliError::msg)?
                .ok_or_else(|| {
                    CliError::msg(format!(
                        "tenant {} has no config key `{}` and there is no default: \
                         set it with `tenancy config set {} {} VALUE` \
                         (see `tenancy config list {}`)",
                        tenant.slug,
                        args.key.escape_debug(),
                        tenant.slug,
                        args.key.escape_debug(),
                        tenant.slug
                    ))
                })?;
            if global.json {
                println!("{}", to_json(&value)?);
            } else {
                println!("{}", plain(&value));
            }
        }
        ConfigCommand::Unset(args) => {
            let tenant = app.tenant(&args.tenant).await?;
            let before = previous(&app, &tenant.id, &args.key).await;
            let existed = overrides
                .delete(&tenant.id, &args.key)
                .await
                .map_err(CliError::msg)?;
            if existed {
                app.audit(
                    tenancy::audit::NewAuditEntry::new(crate::app::cli_actor(), "config.unset")
                        .tenant(tenant.id.clone())
                        .change(before.map(|v| json!({ "key": args.key, "value": v })), None),
                )
                .await;
            }
            if global.json {
                let body = json!({ "tenant_id": tenant.id, "key": args.key, "removed": existed });
                println!("{}", to_json(&body)?);
            } else if existed {
                println!("removed {} for tenant {}", args.key, tenant.slug);
            } else {
                println!(
                    "tenant {} had no override of {}",
                    tenant.slug,
                    args.key.escape_debug()
                );
            }
        }
        ConfigCommand::List(args) => {
            let tenant = app.tenant(&args.tenant).await?;
            let effective = overrides
                .effective(&tenant.id)
                .await
                .map_err(CliError::msg)?;
            if global.json {
                println!("{}", to_json(&effective)?);
            } else if effective.is_empty() {
                println!("tenant {} has no config", tenant.slug);
            } else {
                for (key, value) in &effective {
                    println!("{key} = {value}");
                }
            }
        }
    }
    app.flush_events().await;
    Ok(())
}

/// A value for humans: strings without quotes, everything else as JSON.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The tenant's own override of `key` (not the default), for the audit log.
pub(crate) async fn previous(
    app: &App,
    tenant: &tenancy::TenantId,
    key: &str,
) -> Option<serde_json::Value> {
    app.tenancy
        .config_store()
        .overrides(tenant)
        .await
        .ok()
        .and_then(|map| map.get(key).cloned())
}
