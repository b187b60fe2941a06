//! Per-tenant configuration: a tenant's effective configuration is the
//! application defaults (`tenancy.overrides.defaults`) with the tenant's
//! overrides on top. Writes go through the config service, so they
//! publish `ConfigChanged` wherever they come from.

use serde_json::{Value, json};
use tenancy::{StoreError, TenantInfo};

use crate::app::App;

/// Why a configuration operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The store refused (an invalid key: [`StoreError::InvalidConfigKey`]) or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key has no override and no default.
    #[error(
        "tenant {slug} has no config key `{key}` and there is no default: set it with \
         `tenancy config set {slug} {key} VALUE` (see `tenancy config list {slug}`)"
    )]
    NoValue {
        /// The tenant's slug.
        slug: String,
        /// The key asked for, escaped.
        key: String,
    },
}

/// Sets `tenant`'s override of `key` to `value`, recorded as `config.set`.
pub async fn set(
    app: &App,
    actor: &str,
    tenant: &TenantInfo,
    key: &str,
    value: Value,
) -> Result<(), ConfigError> {
    let before = previous(app, &tenant.id, key).await;
    app.tenancy
        .overrides()
        .set(&tenant.id, key, value.clone())
        .await?;
    follow_limits(app, tenant, key).await;
    app.audit(
        tenancy::audit::NewAuditEntry::new(actor, "config.set")
            .tenant(tenant.id.clone())
            .change(
                before.map(|v| json!({ "key": key, "value": v })),
                Some(json!({ "key": key, "value": value })),
            ),
    )
    .await;
    Ok(())
}

/// What an override change moves elsewhere: `limits.jobs_concurrency` is
/// written to the job queue, where every worker's claims read it.
async fn follow_limits(app: &App, tenant: &TenantInfo, key: &str) {
    if key.strip_prefix(tenancy::plans::LIMIT_PREFIX) == Some(crate::ops::plans::JOBS_CONCURRENCY) {
        crate::ops::plans::apply_job_limit(app, tenant).await;
    }
}

/// Removes `tenant`'s override of `key` (recorded as `config.unset`);
/// `false` when there was none.
pub async fn unset(
    app: &App,
    actor: &str,
    tenant: &TenantInfo,
    key: &str,
) -> Result<bool, ConfigError> {
    let before = previous(app, &tenant.id, key).await;
    let existed = app.tenancy.overrides().delete(&tenant.id, key).await?;
    follow_limits(app, tenant, key).await;
    if existed {
        app.audit(
            tenancy::audit::NewAuditEntry::new(actor, "config.unset")
                .tenant(tenant.id.clone())
                .change(before.map(|v| json!({ "key": key, "value": v })), None),
        )
        .await;
    }
    Ok(existed)
}

/// `tenant`'s effective value of `key`: its override, else the default.
pub async fn get(app: &App, tenant: &TenantInfo, key: &str) -> Result<Value, ConfigError> {
    app.tenancy
        .overrides()
        .get(&tenant.id, key)
        .await?
        .ok_or_else(|| ConfigError::NoValue {
            slug: tenant.slug.to_string(),
            key: key.escape_debug().to_string(),
        })
}

/// `tenant`'s effective configuration: defaults merged with overrides.
pub async fn effective(app: &App, tenant: &TenantInfo) -> Result<tenancy::ConfigMap, ConfigError> {
    Ok(app.tenancy.overrides().effective(&tenant.id).await?)
}

/// The tenant's own override of `key` (not the default), for the audit log.
async fn previous(app: &App, tenant: &tenancy::TenantId, key: &str) -> Option<serde_json::Value> {
    app.tenancy
        .config_store()
        .overrides(tenant)
        .await
        .ok()
        .and_then(|map| map.get(key).cloned())
}
