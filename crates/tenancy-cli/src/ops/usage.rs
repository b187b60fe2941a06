//! Usage reports (SPEC E4): what tenants used, per hour, from the store,
//! for `tenancy usage` and `GET /admin/tenants/{id}/usage`.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use tenancy::usage::{Metric, UsageRow, hour_start};

use crate::app::{App, AppError};

/// The longest range one report covers.
pub const MAX_DAYS: i64 = 400;
/// The range when none is given: the last 30 days.
pub const DEFAULT_DAYS: i64 = 30;

/// Why a report failed.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// The tenant named was not found, or the app failed.
    #[error(transparent)]
    App(#[from] AppError),
    /// `from`/`to` are not dates, or not in order.
    #[error("{0}")]
    InvalidRange(String),
    /// The store failed.
    #[error("usage store: {0}")]
    Store(#[from] sqlx::Error),
}

/// A usage report: the rows (a tenant's metric in one hour) and their
/// totals per tenant and metric (counts summed; `storage_bytes`, a level,
/// its largest sample).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    /// Start of the range (included).
    pub from: DateTime<Utc>,
    /// End of the range (excluded).
    pub to: DateTime<Utc>,
    /// Per tenant, per metric.
    #[schema(value_type = Object)]
    pub totals: BTreeMap<String, BTreeMap<String, i64>>,
    /// Per tenant, hour and metric, in that order.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<UsageRow>,
    /// Whether the rows stop at the report limit (narrow the range).
    pub truncated: bool,
}

/// A bound of a range: a date (`2026-12-01`, midnight UTC; as `to`, the
/// end of that day) or an RFC 3339 time.
fn bound(raw: &str, name: &str, end: bool) -> Result<DateTime<Utc>, UsageError> {
    if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        let day = date.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        let day = if end {
            day.and_then(|d| d.checked_add_signed(Duration::days(1)))
        } else {
            day
        };
        return day.ok_or_else(|| UsageError::InvalidRange(format!("`{name}` is out of range")));
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            UsageError::InvalidRange(format!(
                "`{name}` must be a date (2026-12-01) or an RFC 3339 time (2026-12-01T10:00:00Z), not \"{}\"",
                raw.chars().take(40).collect::<String>().escape_debug()
            ))
        })
}

/// The range `[from, to)` of the arguments: by default the last
/// [`DEFAULT_DAYS`] days up to the end of the current hour. `from` not
/// before `to`, or more than [`MAX_DAYS`] days, is refused.
pub fn range(
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), UsageError> {
    let to = match to {
        Some(raw) => bound(raw, "to", true)?,
        None => DateTime::from_timestamp(hour_start(Utc::now()) + 3600, 0).unwrap_or_else(Utc::now),
    };
    let from = match from {
        Some(raw) => bound(raw, "from", false)?,
        None => to - Duration::days(DEFAULT_DAYS),
    };
    // `to` as a date is the end of that day: `from` on the day after is
    // past it, and an empty range is refused as well.
    if from >= to {
        return Err(UsageError::InvalidRange(format!(
            "`from` ({from}) is not before `to` ({to}): swap them"
        )));
    }
    if to - from > Duration::days(MAX_DAYS) {
        return Err(UsageError::InvalidRange(format!(
            "the range is longer than {MAX_DAYS} days: ask for it in parts"
        )));
    }
    Ok((from, to))
}

/// The usage of `tenant` (id or slug; every tenant when `None`) in
/// `[from, to)`.
pub async fn report(
    app: &App,
    tenant: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<UsageReport, UsageError> {
    let tenant = match tenant {
        Some(reference) => Some(app.tenant(reference).await?.id),
        None => None,
    };
    let rows = app.usage.report(tenant.as_ref(), from, to).await?;
    let truncated =
        i64::try_from(rows.len()).unwrap_or(i64::MAX) >= tenancy_sql::usage::MAX_REPORT_ROWS;
    let mut totals: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for row in &rows {
        let total = totals
            .entry(row.tenant_id.to_string())
            .or_default()
            .entry(row.metric.clone())
            .or_insert(0);
        let gauge = row.metric.parse::<Metric>().is_ok_and(Metric::is_gauge);
        *total = if gauge {
            (*total).max(row.value)
        } else {
            total.saturating_add(row.value)
        };
    }
    Ok(UsageReport {
        from,
        to,
        totals,
        rows,
        truncated,
    })
}

/// `tenant`'s storage in bytes, as its isolation allows measuring it:
/// the tables of its schema (with indexes and TOAST), its database, its
/// SQLite file (with its WAL), or, under row-level isolation where tenants
/// share pages, the length of its rows' text in the served tables (an
/// estimate).
pub async fn tenant_storage(app: &App, tenant: &tenancy::TenantInfo) -> Result<u64, String> {
    use crate::app::{ScopedDb, TenantMigrator};
    let id = &tenant.id;
    if let Some(TenantMigrator::SqliteFiles(files)) = &app.migrator {
        let path = files.path_of(id).map_err(|e| e.to_string())?;
        let mut bytes = 0;
        for suffix in ["", "-wal"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            if let Ok(meta) = std::fs::metadata(&file) {
                bytes += meta.len();
            }
        }
        return Ok(bytes);
    }
    let t = id.as_str();
    // Row level: the text of the tenant's rows in every served table, on
    // the scoped transaction `$tx` (either database).
    macro_rules! rows_text {
        ($tx:expr) => {{
            let mut sum = 0;
            for res in app.resources.iter() {
                sum += res
                    .table
                    .text_bytes(tenancy_interceptor::service::Conn::from(&mut *$tx), t)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            sum
        }};
    }
    let bytes: i64 = match &app.db {
        ScopedDb::Postgres(db) => {
            let mut tx = db.begin_for(id).await.map_err(|e| e.to_string())?;
            let bytes = match app.tenancy.isolation().name() {
                "schema" => sqlx::query_scalar(
                    "SELECT CAST(COALESCE(sum(pg_total_relation_size(c.oid)), 0) AS BIGINT) \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')",
                )
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| e.to_string())?,
                "database" => sqlx::query_scalar("SELECT pg_database_size(current_database())")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?,
                _ => rows_text!(tx),
            };
            let _ = tx.rollback().await;
            bytes
        }
        _ => {
            let Some(mut tx) = app.sqlite_tx(id).await.map_err(|e| e.to_string())? else {
                return Ok(0);
            };
            let bytes = rows_text!(tx);
            let _ = tx.rollback().await;
            bytes
        }
    };
    Ok(u64::try_from(bytes).unwrap_or(0))
}

/// Samples every active tenant's storage into the usage meter (flushed
/// with the rest); returns how many were sampled. A tenant that cannot be
/// measured is skipped (and logged).
pub async fn sample_storage(app: &App) -> usize {
    let tenants = match crate::ops::tenants::list_all(app, false).await {
        Ok((tenants, _)) => tenants,
        Err(e) => {
            tracing::warn!(error = %e, "storage sampling: cannot list the tenants");
            return 0;
        }
    };
    let mut sampled = 0;
    for tenant in &tenants {
        match tenant_storage(app, tenant).await {
            Ok(bytes) => {
                app.tenancy.usage().storage_sampled(&tenant.id, bytes);
                sampled += 1;
            }
            Err(e) => {
                tracing::warn!(tenant_id = %tenant.id, error = %e, "storage sampling: cannot measure the tenant");
            }
        }
    }
    sampled
}

/// The report's rows as CSV: `tenant_id,hour,metric,value`, one per line,
/// hours in RFC 3339 (UTC). Ids and metric names never need quoting.
pub fn csv(report: &UsageReport) -> String {
    let mut out = String::from("tenant_id,hour,metric,value\n");
    for row in &report.rows {
        out.push_str(&format!(
            "{},{},{},{}\n",
            row.tenant_id,
            row.hour.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            row.metric,
            row.value
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let (from, to) = range(Some("2026-11-01"), Some("2026-11-30")).unwrap();
        assert_eq!(from.to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        let (from, to) = range(None, None).unwrap();
        assert_eq!(to - from, Duration::days(30));
        assert!(range(Some("2026-12-02"), Some("2026-12-01")).is_err());
        assert!(range(Some("yesterday"), None).is_err());
        assert!(range(Some("2020-01-01"), Some("2026-01-01")).is_err());
        assert!(range(Some("2026-12-01T10:00:00Z"), Some("2026-12-01T11:00:00Z")).is_ok());
    }
}
