//! `tenancy config set|get|unset|list`.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::app::{App, json_or_string};
use crate::cli::{CliError, Global, to_json};
use crate::ops::config;

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
    let app = App::open(&global.source()).await?;
    let actor = crate::cli::actor();
    match cmd {
        ConfigCommand::Set(args) => {
            let tenant = app.tenant(&args.tenant).await?;
            let value = json_or_string(&args.value);
            config::set(&app, &actor, &tenant, &args.key, value.clone()).await?;
            if global.json {
                let body = json!({ "tenant_id": tenant.id, "key": args.key, "value": value });
                println!("{}", to_json(&body)?);
            } else {
                println!("{} = {} for tenant {}", args.key, value, tenant.slug);
            }
        }
        ConfigCommand::Get(args) => {
            let tenant = app.tenant(&args.tenant).await?;
            let value = config::get(&app, &tenant, &args.key).await?;
            if global.json {
                println!("{}", to_json(&value)?);
            } else {
                println!("{}", plain(&value));
            }
        }
        ConfigCommand::Unset(args) => {
            let tenant = app.tenant(&args.tenant).await?;
            let existed = config::unset(&app, &actor, &tenant, &args.key).await?;
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
            let effective = config::effective(&app, &tenant).await?;
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
