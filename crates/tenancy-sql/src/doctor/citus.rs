//! The Citus readiness report (SPEC G2).

use serde::Serialize;
use sqlx::PgPool;

use super::Report;
use crate::DbError;

/// The report (placeholder until the classification lands).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CitusReport {
    /// The findings.
    #[serde(flatten)]
    pub report: Report,
}

impl CitusReport {
    /// The report as text.
    pub fn to_text(&self) -> String {
        String::new()
    }
}

/// Classifies the tables of `pool`'s database for Citus.
pub async fn citus_report(pool: &PgPool, tenant_column: &str) -> Result<CitusReport, DbError> {
    let _ = (pool, tenant_column);
    Ok(CitusReport::default())
}
