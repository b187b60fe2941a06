//! What `tenancy doctor` reports: findings about how well a live database
//! isolates its tenants (SPEC G1, G2).
//!
//! The checks themselves read database catalogs and live in the SQL crate
//! (`tenancy_sql::doctor`); this module is their vocabulary: a
//! [`Finding`] names a [`Check`] id, a [`Severity`], the object it is
//! about and the fix, and a [`Report`] gathers them with what was counted.
//!
//! ```
//! use tenancy_core::doctor::{Check, Finding, Report, Severity};
//! let mut report = Report::default();
//! report.count("tables", 3);
//! report.push(Finding::new(
//!     Check::RlsNotForced,
//!     "public.notes",
//!     "row-level security is enabled but not forced: the table owner is not bound",
//!     "ALTER TABLE public.notes FORCE ROW LEVEL SECURITY;",
//! ));
//! assert_eq!(report.findings[0].severity, Severity::Critical);
//! assert_eq!(report.exit_code(), 1);
//! ```

use std::collections::BTreeMap;

use serde::Serialize;

/// How bad a finding is. `critical` means tenants can see or change each
/// other's data now; `warning` means isolation rests on something fragile,
/// or storage and tenants disagree; `info` is worth knowing only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Tenants can reach each other's data.
    Critical,
    /// Fragile or inconsistent.
    Warning,
    /// Worth knowing.
    Info,
}

impl Severity {
    /// `critical`, `warning` or `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! checks {
    ($($(#[$doc:meta])* $variant:ident = $id:literal, $severity:ident;)*) => {
        /// A check's stable id (SPEC G1, G2): scripts match on
        /// [`Check::id`], so these never change.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub enum Check {
            $($(#[$doc])* $variant,)*
        }

        impl Check {
            /// Every check, in report order.
            pub const ALL: &'static [Check] = &[$(Check::$variant,)*];

            /// The stable id, e.g. `rls_disabled`.
            pub fn id(self) -> &'static str {
                match self {
                    $(Self::$variant => $id,)*
                }
            }

            /// The severity of this check's findings.
            pub fn severity(self) -> Severity {
                match self {
                    $(Self::$variant => Severity::$severity,)*
                }
            }
        }
    };
}

checks! {
    /// The request role is superuser, has `BYPASSRLS`, owns tenant
    /// tables, or is missing.
    RoleBypassesRls = "role_bypasses_rls", Critical;
    /// A table with the tenant column has row-level security off.
    RlsDisabled = "rls_disabled", Critical;
    /// Row-level security is on but not forced: the owner is not bound.
    RlsNotForced = "rls_not_forced", Critical;
    /// No policy on the table compares the tenant column with the tenant
    /// setting.
    PolicyMissing = "policy_missing", Critical;
    /// No index leads with the tenant column.
    TenantColumnUnindexed = "tenant_column_unindexed", Warning;
    /// A foreign key between tenant tables without the tenant column.
    /// (Listed before `unique_without_tenant`: its fix re-points the key
    /// first, so that the unique index it used can then be replaced.)
    FkWithoutTenant = "fk_without_tenant", Warning;
    /// A primary key or unique index without the tenant column.
    UniqueWithoutTenant = "unique_without_tenant", Warning;
    /// A tenant role, or PUBLIC, can use another tenant's schema, or a
    /// role can connect to another tenant's database.
    SchemaPrivilegeLeak = "schema_privilege_leak", Critical;
    /// A tenant schema with no tenant.
    OrphanSchema = "orphan_schema", Warning;
    /// A tenant database with no tenant.
    OrphanDatabase = "orphan_database", Warning;
    /// A tenant file with no tenant.
    OrphanFile = "orphan_file", Warning;
    /// A tenant whose schema, database or file is gone.
    MissingStorage = "missing_storage", Warning;
    /// A domain whose tenant is deleted or gone.
    DomainOrphan = "domain_orphan", Warning;
    /// A tenant file (or the main file) readable by other users.
    SqliteFileMode = "sqlite_file_mode", Critical;
    /// `tenancy serve` has no authentication: anyone can name any tenant.
    OpenTenantRoutes = "open_tenant_routes", Warning;
    /// Citus: a primary key or unique constraint without the distribution
    /// column.
    CitusUniqueWithoutTenant = "citus_unique_without_tenant", Warning;
    /// Citus: a reference (or local) table with a foreign key to a
    /// distributed table.
    CitusFkReferenceToDistributed = "citus_fk_reference_to_distributed", Warning;
    /// Citus: a sequence-backed key that is not `bigint`.
    CitusSequenceNotBigint = "citus_sequence_not_bigint", Warning;
    /// Citus: distributed tables whose tenant columns differ in type.
    CitusTenantTypeMismatch = "citus_tenant_type_mismatch", Warning;
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

impl Serialize for Check {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// One thing found: what check, about which object, why, and the SQL or
/// command that repairs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// The check that found it.
    pub check: Check,
    /// The table, role, schema, index, database, file, domain or tenant.
    pub object: String,
    /// What is wrong.
    pub detail: String,
    /// The SQL or command that repairs it.
    pub fix: String,
}

impl Finding {
    /// A finding at its check's severity.
    pub fn new(
        check: Check,
        object: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            severity: check.severity(),
            check,
            object: object.into(),
            detail: detail.into(),
            fix: fix.into(),
        }
    }

    /// The same finding at another severity (e.g. an archived schema is
    /// only `info`).
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
}

/// Every finding of a run, and what was looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The findings, most severe first once [`Report::sort`] ran.
    pub findings: Vec<Finding>,
    /// How many of each kind of object were checked (`tables`,
    /// `tenant_tables`, `schemas`, `tenants`, …).
    pub checked: BTreeMap<String, u64>,
}

impl Report {
    /// Adds a finding.
    pub fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// Adds `n` to the count of `what`.
    pub fn count(&mut self, what: &str, n: u64) {
        *self.checked.entry(what.to_owned()).or_default() += n;
    }

    /// Most severe first, then by check and object: stable output.
    pub fn sort(&mut self) {
        self.findings.sort_by(|a, b| {
            (a.severity, a.check, &a.object).cmp(&(b.severity, b.check, &b.object))
        });
    }

    /// The findings of one check.
    pub fn of(&self, check: Check) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.check == check)
    }

    /// Whether any finding is critical.
    pub fn has_critical(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity == Severity::Critical)
    }

    /// `tenancy doctor`'s exit code for a completed run: 0 when no
    /// critical or warning finding, 1 otherwise. (2, "could not check",
    /// is the caller's, when the run itself failed.)
    pub fn exit_code(&self) -> i32 {
        if self
            .findings
            .iter()
            .any(|f| f.severity <= Severity::Warning)
        {
            1
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_snake_case() {
        let mut ids: Vec<_> = Check::ALL.iter().map(|c| c.id()).collect();
        assert!(
            ids.iter()
                .all(|id| id.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), Check::ALL.len());
    }

    #[test]
    fn exit_code_ignores_info_only() {
        let mut report = Report::default();
        assert_eq!(report.exit_code(), 0);
        report.push(
            Finding::new(
                Check::OrphanSchema,
                "tenant_old",
                "archived",
                "DROP SCHEMA …",
            )
            .with_severity(Severity::Info),
        );
        assert_eq!(report.exit_code(), 0);
        report.push(Finding::new(Check::DomainOrphan, "a.test", "gone", "…"));
        assert_eq!(report.exit_code(), 1);
        assert!(!report.has_critical());
    }

    #[test]
    fn json_uses_the_contract_names() {
        let mut report = Report::default();
        report.count("tables", 2);
        report.push(Finding::new(Check::RlsDisabled, "public.t", "off", "fix"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["findings"][0]["check"], "rls_disabled");
        assert_eq!(json["findings"][0]["severity"], "critical");
        assert_eq!(json["checked"]["tables"], 2);
        for key in ["object", "detail", "fix"] {
            assert!(json["findings"][0][key].is_string(), "{key}");
        }
    }
}
