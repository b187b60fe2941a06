//! SQL tenant stores: [`SqliteStore`] (the embedded default) and
//! [`PgStore`] (production). Both keep slugs unique, generate ids, enforce
//! status transitions atomically and map database errors to
//! [`StoreError`]s that say what was wrong.
//!
//! The two stores are one piece of code (`shared.rs`), written once and
//! implemented for each store type; each database's module holds only what
//! differs: its schema, how it connects, and its write statements
//! (PostgreSQL announces every change inside the statement that makes it,
//! SQLite's triggers write the same announcements to `tenancy_changes`).

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod shared;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PgStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use tenancy_core::{StoreError, TenantInfo, TenantStatus};

/// One row of `tenancy_domains`, as both databases return it.
#[derive(sqlx::FromRow)]
pub(crate) struct DomainRow {
    domain: String,
    tenant_id: String,
    is_primary: bool,
    status: String,
    token: String,
    created_at: DateTime<Utc>,
    verified_at: Option<DateTime<Utc>>,
}

/// The columns of [`DomainRow`], in order, as a literal for `concat!`.
macro_rules! domain_columns {
    () => {
        "domain, tenant_id, is_primary, status, token, created_at, verified_at"
    };
}
use domain_columns;

/// The store's tables, for `concat!`: the same on both databases but for
/// the types of JSON values, points in time and auto-numbered keys. Each
/// statement is idempotent.
macro_rules! store_tables {
    (json: $json:literal, time: $time:literal, serial: $serial:literal) => {
        concat!(
            "
CREATE TABLE IF NOT EXISTS tenancy_tenants (
    id            TEXT PRIMARY KEY,
    slug          TEXT NOT NULL,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'inactive', 'suspended', 'provisioning')),
    status_reason TEXT,
    plan          TEXT,
    metadata      ", $json, " NOT NULL DEFAULT '{}',
    created_at    ", $time, " NOT NULL,
    updated_at    ", $time, " NOT NULL,
    trial_ends_at ", $time, ",
    CONSTRAINT tenancy_tenants_slug_key UNIQUE (slug)
);
CREATE INDEX IF NOT EXISTS tenancy_tenants_created ON tenancy_tenants (created_at, id);
CREATE TABLE IF NOT EXISTS tenancy_config (
    tenant_id TEXT NOT NULL REFERENCES tenancy_tenants (id) ON DELETE CASCADE,
    key       TEXT NOT NULL,
    value     ", $json, " NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE TABLE IF NOT EXISTS tenancy_domains (
    domain      TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenancy_tenants (id) ON DELETE CASCADE,
    is_primary  BOOLEAN NOT NULL DEFAULT false,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'verified')),
    token       TEXT NOT NULL,
    created_at  ", $time, " NOT NULL,
    verified_at ", $time, "
);
CREATE INDEX IF NOT EXISTS tenancy_domains_tenant ON tenancy_domains (tenant_id);
-- No foreign key: a deleted tenant's entries stay.
CREATE TABLE IF NOT EXISTS tenancy_audit (
    id        ", $serial, ",
    at        ", $time, " NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    tenant_id TEXT,
    before    ", $json, ",
    after     ", $json, "
);
CREATE INDEX IF NOT EXISTS tenancy_audit_tenant ON tenancy_audit (tenant_id, id);
-- Impersonation grants, keyed by the hash of their token; used once.
CREATE TABLE IF NOT EXISTS tenancy_impersonations (
    key        TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    user_name  TEXT NOT NULL,
    issued_by  TEXT NOT NULL,
    expires_at ", $time, " NOT NULL,
    used_at    ", $time, "
);
-- Pending pool members: provisioned ids waiting for a signup.
CREATE TABLE IF NOT EXISTS tenancy_pending (
    id         TEXT PRIMARY KEY,
    ready      BOOLEAN NOT NULL DEFAULT false,
    version    BIGINT,
    created_at ", $time, " NOT NULL
);
"
        )
    };
}
use store_tables;

/// `SELECT` every column of a row type (given by its `*_columns` macro)
/// `FROM` `$table`, then `$rest`, as a literal.
macro_rules! select {
    ($columns:ident, $table:literal, $rest:literal) => {
        concat!(
            "SELECT ",
            $crate::store::$columns!(),
            " FROM ",
            $table,
            " ",
            $rest
        )
    };
}
#[cfg(any(feature = "postgres", feature = "sqlite"))]
use select;

/// The columns of [`TenantRow`], in order, as a literal for `concat!`.
macro_rules! tenant_columns {
    () => {
        "id, slug, name, status, status_reason, plan, metadata, created_at, updated_at, trial_ends_at"
    };
}
use tenant_columns;

/// The columns of [`AuditRow`], in order, as a literal for `concat!`.
macro_rules! audit_columns {
    () => {
        "id, at, actor, action, tenant_id, before, after"
    };
}
use audit_columns;

impl TryFrom<DomainRow> for tenancy_core::TenantDomain {
    type Error = StoreError;

    fn try_from(row: DomainRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str| {
            StoreError::Unavailable(format!("corrupt domain row {}: {what}", row.domain))
        };
        Ok(tenancy_core::TenantDomain {
            domain: row.domain.parse().map_err(|_| corrupt("invalid domain"))?,
            tenant_id: row
                .tenant_id
                .parse()
                .map_err(|_| corrupt("invalid tenant id"))?,
            primary: row.is_primary,
            status: row.status.parse()?,
            token: row.token,
            created_at: row.created_at,
            verified_at: row.verified_at,
        })
    }
}

/// A failed domain insert: taken, or no such tenant.
pub(crate) fn domain_insert_error(
    e: sqlx::Error,
    domain: &tenancy_core::TenantDomain,
) -> StoreError {
    match e.as_database_error() {
        Some(d) if d.is_unique_violation() => StoreError::DomainTaken(domain.domain.to_string()),
        Some(d) if d.is_foreign_key_violation() => {
            StoreError::NotFound(domain.tenant_id.to_string())
        }
        _ => unavailable(e),
    }
}

/// One row of `tenancy_tenants`, as both databases return it.
#[derive(sqlx::FromRow)]
pub(crate) struct TenantRow {
    id: String,
    slug: String,
    name: String,
    status: String,
    status_reason: Option<String>,
    plan: Option<String>,
    metadata: Json<serde_json::Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    trial_ends_at: Option<DateTime<Utc>>,
}

impl TryFrom<TenantRow> for TenantInfo {
    type Error = StoreError;

    fn try_from(row: TenantRow) -> Result<Self, StoreError> {
        // Rows are written only through the store, so a bad value means the
        // table was edited by hand: refuse it rather than guess.
        let corrupt =
            |what: &str| StoreError::Unavailable(format!("corrupt tenant row {}: {what}", row.id));
        Ok(TenantInfo {
            id: row.id.parse().map_err(|_| corrupt("invalid id"))?,
            slug: row.slug.parse().map_err(|_| corrupt("invalid slug"))?,
            name: row.name.clone(),
            status: row
                .status
                .parse::<TenantStatus>()
                .map_err(|_| corrupt("invalid status"))?,
            status_reason: row.status_reason.clone(),
            plan: row.plan.clone(),
            metadata: row.metadata.0.clone(),
            created_at: row.created_at,
            updated_at: row.updated_at,
            trial_ends_at: row.trial_ends_at,
        })
    }
}

/// The statuses a tenant may be in for a move to `to` to be allowed, padded
/// to four binds (an impossible status fills the rest).
pub(crate) fn allowed_sources(to: TenantStatus) -> [&'static str; 4] {
    use TenantStatus::*;
    let mut out = ["-"; 4];
    for (slot, from) in out.iter_mut().zip(
        [Active, Inactive, Suspended, Provisioning]
            .into_iter()
            .filter(|f| f.can_become(to)),
    ) {
        *slot = from.as_str();
    }
    out
}

/// Maps a database error to a store error.
pub(crate) fn map_err(err: sqlx::Error, slug: Option<&str>, id: Option<&str>) -> StoreError {
    if let Some(db) = err.as_database_error()
        && db.is_unique_violation()
    {
        let text = format!("{} {}", db.message(), db.constraint().unwrap_or_default());
        if text.contains("slug") {
            return StoreError::DuplicateSlug(slug.unwrap_or_default().to_owned());
        }
        return StoreError::DuplicateId(id.unwrap_or_default().to_owned());
    }
    StoreError::unavailable(err)
}

/// Maps a store-level SQL error that cannot be a constraint violation.
pub(crate) fn unavailable(err: sqlx::Error) -> StoreError {
    StoreError::unavailable(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_sources_match_the_transition_rules() {
        assert_eq!(
            allowed_sources(TenantStatus::Active),
            ["active", "inactive", "suspended", "provisioning"]
        );
        assert_eq!(
            allowed_sources(TenantStatus::Suspended),
            ["active", "inactive", "suspended", "-"]
        );
        assert_eq!(
            allowed_sources(TenantStatus::Provisioning),
            ["provisioning", "-", "-", "-"]
        );
    }
}

/// One row of `tenancy_audit`, as both databases return it.
#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    id: i64,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    tenant_id: Option<String>,
    before: Option<Json<serde_json::Value>>,
    after: Option<Json<serde_json::Value>>,
}

impl TryFrom<AuditRow> for tenancy_core::AuditEntry {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> Result<Self, StoreError> {
        Ok(tenancy_core::AuditEntry {
            id: row.id,
            at: row.at,
            actor: row.actor,
            action: row.action,
            tenant_id: row
                .tenant_id
                .map(|t| t.parse())
                .transpose()
                .map_err(|_| StoreError::Unavailable(format!("corrupt audit row {}", row.id)))?,
            before: row.before.map(|j| j.0),
            after: row.after.map(|j| j.0),
        })
    }
}

/// Rows of `tenancy_pending` (id, ready, version, created_at) as pool
/// members.
pub(crate) fn pending_members(
    rows: Vec<(String, bool, Option<i64>, DateTime<Utc>)>,
) -> Result<Vec<tenancy_core::PendingTenant>, StoreError> {
    rows.into_iter()
        .map(|(id, ready, version, created_at)| {
            Ok(tenancy_core::PendingTenant {
                id: pending_id(&id)?,
                ready,
                version,
                created_at,
            })
        })
        .collect()
}

/// The id of a row of `tenancy_pending`, which only the store writes: a
/// bad one means the table was edited by hand.
pub(crate) fn pending_id(id: &str) -> Result<tenancy_core::TenantId, StoreError> {
    tenancy_core::TenantId::new(id)
        .map_err(|_| StoreError::Unavailable(format!("corrupt pending id {id}")))
}
