//! The audit log of admin actions: read here; each operation records its
//! own entry (through [`App::audit`]).

use tenancy::StoreError;
use tenancy::audit::{AuditEntry, AuditQuery};

use crate::app::App;

/// Why the audit log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store keeps no audit log.
    #[error("this store keeps no audit log")]
    NoLog,
    /// No tenant has this id or slug, and it is not a well-formed id (of a
    /// deleted tenant).
    #[error("no tenant \"{}\": see `tenancy tenants list --all`", .0.escape_debug())]
    UnknownTenant(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The entries `query` selects, newest first, limited to the tenant
/// `tenant` names (an id or slug; the id of a deleted tenant) when given.
pub async fn entries(
    app: &App,
    mut query: AuditQuery,
    tenant: Option<&str>,
) -> Result<Vec<AuditEntry>, AuditError> {
    let log = app.tenancy.audit().ok_or(AuditError::NoLog)?;
    if let Some(reference) = tenant {
        let id = match app.tenancy.store().find(reference).await? {
            Some(tenant) => tenant.id,
            None => reference
                .parse()
                .map_err(|_| AuditError::UnknownTenant(reference.chars().take(64).collect()))?,
        };
        query = query.tenant(id);
    }
    Ok(log.audit(query).await?)
}
