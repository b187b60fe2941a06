//! The Citus readiness report (`tenancy doctor --citus`): how each table of
//! a PostgreSQL database would live on [Citus](https://docs.citusdata.com/)
//! when its tenants are distributed by the tenant column, and what in the
//! schema Citus would refuse.
//!
//! Every table is classified:
//!
//! - **distributed**: it has the tenant column, so it is distributed by it
//!   and colocated with the other tenant tables;
//! - **reference**: it has no tenant column but a distributed table (or
//!   another reference table) references it by foreign key: lookup data,
//!   replicated to every node;
//! - **local**: everything else, and the toolkit's own tables (schema
//!   `tenancy_rls`, tables named `tenancy_*` or `_tenancy_*`): it stays on
//!   the coordinator.
//!
//! Then each rule of Citus that the schema breaks is a [`Finding`]:
//!
//! - [`Check::CitusUniqueWithoutTenant`]: a primary key, unique constraint
//!   or unique index of a distributed table without the tenant column
//!   (Citus enforces uniqueness only within a shard);
//! - [`Check::CitusFkReferenceToDistributed`]: a foreign key Citus refuses:
//!   from a reference or local table to a distributed table, from a
//!   distributed table to a table that stays local, between distributed
//!   tables without the tenant column at the same position on both sides,
//!   or with an `ON DELETE SET NULL / SET DEFAULT` or `ON UPDATE SET NULL /
//!   SET DEFAULT / CASCADE` action over the tenant column;
//! - [`Check::CitusSequenceNotBigint`]: a column of a distributed table
//!   filled from a sequence (`serial`, identity, `nextval` default) where
//!   the column or the sequence is not `bigint`;
//! - [`Check::CitusTenantTypeMismatch`]: a distributed table whose tenant
//!   column's type differs from the most common one (tables colocate only
//!   when their distribution columns have the same type).
//!
//! Each finding's `fix` is SQL that repairs it; run the fixes in the
//! report's order (unique keys before the foreign keys that use them).
//! `docs/citus.md` gives the Citus documentation behind each rule and the
//! reports on the examples' schemas.
//!
//! The report needs no Citus: it reads only `pg_catalog`, in five
//! catalog-wide queries inside one read-only snapshot, whatever the number
//! of tables, and changes nothing.
//!
//! ```no_run
//! # async fn run(pool: sqlx::PgPool) -> Result<(), tenancy::sql::DbError> {
//! let report = tenancy::sql::doctor::citus::citus_report(&pool, "tenant_id").await?;
//! println!("{}", report.to_text());
//! std::process::exit(report.report.exit_code());
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

use super::{Check, Finding, Report};
use crate::DbError;

/// How a table would live on Citus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CitusClass {
    /// Has the tenant column: sharded by it, colocated with the other
    /// tenant tables.
    Distributed,
    /// No tenant column, referenced by tenant tables: replicated to every
    /// node.
    Reference,
    /// Stays on the coordinator.
    Local,
}

impl CitusClass {
    /// `distributed`, `reference` or `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Distributed => "distributed",
            Self::Reference => "reference",
            Self::Local => "local",
        }
    }
}

impl std::fmt::Display for CitusClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One table and how it would live on Citus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CitusTable {
    /// Schema-qualified, quoted where PostgreSQL needs it
    /// (`public.notes`, `app."Order"`).
    pub table: String,
    /// Distributed, reference or local.
    pub class: CitusClass,
    /// Why it has that class.
    pub reason: String,
}

/// What [`citus_report`] found: every table's class, and the findings
/// with what was counted. Its JSON is `{"tables": [...], "findings":
/// [...], "checked": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CitusReport {
    /// Every table considered, by name.
    pub tables: Vec<CitusTable>,
    /// The findings (sorted) and the counts: `tables`, `distributed`,
    /// `reference`, `local`, `unique_keys`, `foreign_keys`, `sequences`.
    #[serde(flatten)]
    pub report: Report,
}

impl CitusReport {
    /// The class of `table` (schema-qualified, as in [`CitusTable::table`]).
    pub fn class_of(&self, table: &str) -> Option<CitusClass> {
        self.tables
            .iter()
            .find(|t| t.table == table)
            .map(|t| t.class)
    }

    /// A report for people: one line per table with its class and reason,
    /// then each finding with its severity, check, object, detail and fix.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let count = |class: CitusClass| self.tables.iter().filter(|t| t.class == class).count();
        let _ = writeln!(
            out,
            "Tables: {} ({} distributed, {} reference, {} local)",
            self.tables.len(),
            count(CitusClass::Distributed),
            count(CitusClass::Reference),
            count(CitusClass::Local),
        );
        let width = self
            .tables
            .iter()
            .map(|t| t.table.chars().count())
            .max()
            .unwrap_or(0);
        for t in &self.tables {
            let _ = writeln!(
                out,
                "  {:<11} {:<width$}  {}",
                t.class.as_str(),
                t.table,
                t.reason
            );
        }
        if self.report.findings.is_empty() {
            let _ = writeln!(
                out,
                "\nNo findings: nothing stops this schema from running on Citus."
            );
            return out;
        }
        let _ = writeln!(out, "\nFindings: {}", self.report.findings.len());
        for f in &self.report.findings {
            let _ = writeln!(out, "  {} {} {}", f.severity, f.check, f.object);
            let _ = writeln!(out, "    detail: {}", f.detail);
            let _ = writeln!(out, "    fix:    {}", f.fix);
        }
        out
    }
}

/// Classifies every table of the database behind `pool` for Citus, the
/// tenant column being `tenant_column`, and lists what Citus would refuse
/// (see the [module docs](self) for the rules). Reads only `pg_catalog`,
/// in one read-only transaction; needs no Citus installed.
///
/// # Errors
///
/// [`DbError::UnsafeName`] when `tenant_column` is empty, longer than 63
/// bytes or holds a NUL; [`DbError::Sql`] when the catalogs cannot be read.
pub async fn citus_report(pool: &PgPool, tenant_column: &str) -> Result<CitusReport, DbError> {
    if tenant_column.is_empty() || tenant_column.len() > 63 || tenant_column.contains('\0') {
        return Err(DbError::UnsafeName(format!(
            "\"{}\" cannot be a tenant column: use a column name of 1 to 63 bytes",
            tenant_column.escape_debug()
        )));
    }
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    let catalog = Catalog::read(&mut tx, tenant_column).await?;
    tx.rollback().await?;
    Ok(catalog.report())
}

/// The tables considered, as a `WHERE` condition on `pg_class c` joined
/// with `pg_namespace n`: ordinary and partitioned tables (not partitions)
/// outside the system schemas.
macro_rules! considered {
    () => {
        "c.relkind IN ('r', 'p') AND NOT c.relispartition \
         AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'"
    };
}

/// Every table considered, with its tenant column when it has one.
const TABLES: &str = concat!(
    "SELECT c.oid::int8 AS oid, n.nspname::text AS schema, c.relname::text AS name, \
            format('%I.%I', n.nspname, c.relname) AS qualified, \
            a.attnum AS tenant_attnum, \
            format_type(a.atttypid, a.atttypmod) AS tenant_type, \
            format_type(a.atttypid, NULL) AS tenant_base_type \
     FROM pg_class c \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = $1 \
          AND a.attnum > 0 AND NOT a.attisdropped \
     WHERE ",
    considered!(),
    " ORDER BY 4"
);

/// Every unique index of those tables, with the constraint it backs.
const UNIQUES: &str = concat!(
    "SELECT i.indrelid::int8 AS table_oid, i.indexrelid::int8 AS index_oid, \
            format('%I.%I', n.nspname, ic.relname) AS index_qualified, \
            quote_ident(ic.relname) AS index_name, \
            quote_ident(am.amname) AS access_method, \
            (i.indkey::int2[])[0:i.indnkeyatts - 1] AS key_attnums, \
            pg_get_indexdef(i.indexrelid) AS index_def, \
            con.contype::text AS contype, \
            quote_ident(con.conname) AS constraint_name, \
            CASE WHEN con.oid IS NOT NULL \
                 THEN format('%I.%I.%I', n.nspname, c.relname, con.conname) END \
                 AS constraint_qualified, \
            pg_get_constraintdef(con.oid) AS constraint_def \
     FROM pg_index i \
     JOIN pg_class c ON c.oid = i.indrelid \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_class ic ON ic.oid = i.indexrelid \
     JOIN pg_am am ON am.oid = ic.relam \
     LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid \
          AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u') \
     WHERE i.indisunique AND ",
    considered!(),
    " ORDER BY 3"
);

/// Every foreign key of those tables (not the copies on partitions), with
/// its columns on both sides, in order.
const FOREIGN_KEYS: &str = concat!(
    "SELECT con.conrelid::int8 AS table_oid, con.confrelid::int8 AS ref_oid, \
            con.conindid::int8 AS index_oid, \
            quote_ident(con.conname) AS name, \
            format('%I.%I.%I', n.nspname, c.relname, con.conname) AS qualified, \
            format('%I.%I', rn.nspname, rc.relname) AS ref_qualified, \
            con.conkey AS attnums, con.confkey AS ref_attnums, \
            ARRAY(SELECT quote_ident(a.attname) \
                  FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord) \
                  JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum \
                  ORDER BY k.ord) AS columns, \
            ARRAY(SELECT quote_ident(a.attname) \
                  FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord) \
                  JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum \
                  ORDER BY k.ord) AS ref_columns, \
            con.confupdtype::text AS on_update, con.confdeltype::text AS on_delete, \
            con.confmatchtype::text AS match_type, con.condeferrable AS deferrable, \
            con.condeferred AS deferred, con.convalidated AS validated \
     FROM pg_constraint con \
     JOIN pg_class c ON c.oid = con.conrelid \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_class rc ON rc.oid = con.confrelid \
     JOIN pg_namespace rn ON rn.oid = rc.relnamespace \
     WHERE con.contype = 'f' AND con.conparentid = 0 AND ",
    considered!(),
    " ORDER BY 5"
);

/// Every column of those tables filled from a sequence: by a default that
/// calls `nextval` (`serial`, or by hand) or as an identity column.
const SEQUENCES: &str = concat!(
    "WITH uses AS ( \
         SELECT ad.adrelid AS table_oid, ad.adnum AS attnum, dep.refobjid AS seq_oid, \
                false AS identity \
         FROM pg_attrdef ad \
         JOIN pg_depend dep ON dep.classid = 'pg_attrdef'::regclass AND dep.objid = ad.oid \
              AND dep.refclassid = 'pg_class'::regclass \
         JOIN pg_class s ON s.oid = dep.refobjid AND s.relkind = 'S' \
         UNION \
         SELECT dep.refobjid, dep.refobjsubid, dep.objid, true \
         FROM pg_depend dep \
         JOIN pg_class s ON s.oid = dep.objid AND s.relkind = 'S' \
         WHERE dep.classid = 'pg_class'::regclass AND dep.refclassid = 'pg_class'::regclass \
               AND dep.deptype = 'i' AND dep.refobjsubid > 0 \
     ) \
     SELECT u.table_oid::int8 AS table_oid, \
            quote_ident(a.attname) AS column_name, \
            format_type(a.atttypid, a.atttypmod) AS column_type, \
            a.atttypid = 'int8'::regtype AS column_bigint, \
            format('%I.%I', sn.nspname, s.relname) AS sequence, \
            format_type(sq.seqtypid, NULL) AS sequence_type, \
            sq.seqtypid = 'int8'::regtype AS sequence_bigint, \
            u.identity AS identity \
     FROM uses u \
     JOIN pg_attribute a ON a.attrelid = u.table_oid AND a.attnum = u.attnum \
          AND NOT a.attisdropped \
     JOIN pg_class s ON s.oid = u.seq_oid \
     JOIN pg_namespace sn ON sn.oid = s.relnamespace \
     JOIN pg_sequence sq ON sq.seqrelid = s.oid \
     JOIN pg_class c ON c.oid = u.table_oid \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE ",
    considered!(),
    " ORDER BY 5, 2"
);

#[derive(sqlx::FromRow)]
struct TableRow {
    oid: i64,
    schema: String,
    name: String,
    qualified: String,
    tenant_attnum: Option<i16>,
    tenant_type: Option<String>,
    tenant_base_type: Option<String>,
}

#[derive(sqlx::FromRow)]
struct UniqueRow {
    table_oid: i64,
    index_oid: i64,
    index_qualified: String,
    index_name: String,
    access_method: String,
    key_attnums: Vec<i16>,
    index_def: String,
    contype: Option<String>,
    constraint_name: Option<String>,
    constraint_qualified: Option<String>,
    constraint_def: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ForeignKeyRow {
    table_oid: i64,
    ref_oid: i64,
    index_oid: i64,
    name: String,
    qualified: String,
    ref_qualified: String,
    attnums: Vec<i16>,
    ref_attnums: Vec<i16>,
    columns: Vec<String>,
    ref_columns: Vec<String>,
    on_update: String,
    on_delete: String,
    match_type: String,
    deferrable: bool,
    deferred: bool,
    validated: bool,
}

#[derive(sqlx::FromRow)]
struct SequenceRow {
    table_oid: i64,
    column_name: String,
    column_type: String,
    column_bigint: bool,
    sequence: String,
    sequence_type: String,
    sequence_bigint: bool,
    identity: bool,
}

/// What the catalogs say, read once.
struct Catalog {
    /// The tenant column's name, as it reads in prose.
    tenant: String,
    /// The tenant column's name, quoted for SQL where it needs it.
    tenant_q: String,
    tables: Vec<TableRow>,
    /// Index of `tables` by oid.
    by_oid: HashMap<i64, usize>,
    uniques: Vec<UniqueRow>,
    foreign_keys: Vec<ForeignKeyRow>,
    sequences: Vec<SequenceRow>,
}

impl Catalog {
    async fn read(
        tx: &mut Transaction<'static, Postgres>,
        tenant_column: &str,
    ) -> Result<Self, DbError> {
        let tenant_q: String = sqlx::query_scalar("SELECT quote_ident($1)")
            .bind(tenant_column)
            .fetch_one(&mut **tx)
            .await?;
        let tables: Vec<TableRow> = sqlx::query_as(TABLES)
            .bind(tenant_column)
            .fetch_all(&mut **tx)
            .await?;
        let by_oid = tables.iter().enumerate().map(|(i, t)| (t.oid, i)).collect();
        let uniques = sqlx::query_as(UNIQUES).fetch_all(&mut **tx).await?;
        let foreign_keys = sqlx::query_as(FOREIGN_KEYS).fetch_all(&mut **tx).await?;
        let sequences = sqlx::query_as(SEQUENCES).fetch_all(&mut **tx).await?;
        Ok(Self {
            tenant: tenant_column.to_owned(),
            tenant_q,
            tables,
            by_oid,
            uniques,
            foreign_keys,
            sequences,
        })
    }

    fn report(&self) -> CitusReport {
        let classes = self.classify();
        let mut report = Report::default();
        let tables: Vec<CitusTable> = self
            .tables
            .iter()
            .filter_map(|t| {
                classes.get(&t.oid).map(|(class, reason)| CitusTable {
                    table: t.qualified.clone(),
                    class: *class,
                    reason: reason.clone(),
                })
            })
            .collect();
        report.count("tables", tables.len() as u64);
        for class in [
            CitusClass::Distributed,
            CitusClass::Reference,
            CitusClass::Local,
        ] {
            let n = tables.iter().filter(|t| t.class == class).count();
            report.count(class.as_str(), n as u64);
        }
        let class_of = |oid: i64| classes.get(&oid).map(|(c, _)| *c);
        self.unique_findings(&class_of, &mut report);
        self.foreign_key_findings(&class_of, &mut report);
        self.sequence_findings(&class_of, &mut report);
        self.type_findings(&class_of, &mut report);
        report.sort();
        CitusReport { tables, report }
    }

    fn table(&self, oid: i64) -> Option<&TableRow> {
        self.by_oid.get(&oid).and_then(|i| self.tables.get(*i))
    }

    /// Each table's class and the reason for it.
    fn classify(&self) -> HashMap<i64, (CitusClass, String)> {
        let tenant = &self.tenant;
        let mut classes: HashMap<i64, (CitusClass, String)> = HashMap::new();
        for t in &self.tables {
            let entry = if t.schema == "tenancy_rls" {
                Some((
                    CitusClass::Local,
                    "the toolkit's row-level security setting (schema tenancy_rls): stays local on the coordinator"
                        .to_owned(),
                ))
            } else if is_toolkit(t) {
                Some((
                    CitusClass::Local,
                    "the toolkit's control plane: stays local on the coordinator".to_owned(),
                ))
            } else {
                t.tenant_type.as_ref().map(|ty| {
                    (
                        CitusClass::Distributed,
                        format!(
                            "has {tenant} ({ty}): distributed by it, colocated with the other tenant tables"
                        ),
                    )
                })
            };
            if let Some(entry) = entry {
                classes.insert(t.oid, entry);
            }
        }
        // Reference: referenced by a distributed table, then (to a fixed
        // point) by a reference table. Tables already classed keep their
        // class.
        let mut referenced_by: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
        loop {
            let mut added = false;
            for fk in &self.foreign_keys {
                if classes.contains_key(&fk.ref_oid) || self.table(fk.ref_oid).is_none() {
                    continue;
                }
                let Some((class, _)) = classes.get(&fk.table_oid) else {
                    continue;
                };
                if *class == CitusClass::Local {
                    continue;
                }
                let Some(from) = self.table(fk.table_oid) else {
                    continue;
                };
                referenced_by.entry(fk.ref_oid).or_default().insert(format!(
                    "{} table {}",
                    class.as_str(),
                    from.qualified
                ));
                added = true;
            }
            for (oid, from) in std::mem::take(&mut referenced_by) {
                // A lookup table may be referenced by hundreds: name three.
                let mut names: Vec<String> = from.iter().take(3).cloned().collect();
                if from.len() > 3 {
                    names.push(format!("{} more", from.len() - 3));
                }
                classes.insert(
                    oid,
                    (
                        CitusClass::Reference,
                        format!(
                            "no {tenant}; referenced by the {}: a reference table, replicated to every node",
                            names.join(", ")
                        ),
                    ),
                );
            }
            if !added {
                break;
            }
        }
        for t in &self.tables {
            classes.entry(t.oid).or_insert_with(|| {
                let reason = if t.schema.starts_with("tenant_") {
                    // The schema strategy's name for a tenant's schema.
                    format!(
                        "no {tenant}, in the tenant schema {}: stays local under row-based \
                         sharding (Citus's schema-based sharding would make the schema its own \
                         colocation group)",
                        t.schema
                    )
                } else {
                    format!(
                        "no {tenant} and not referenced by tenant tables: stays local on the \
                         coordinator"
                    )
                };
                (CitusClass::Local, reason)
            });
        }
        classes
    }

    /// Primary keys, unique constraints and unique indexes of distributed
    /// tables without the tenant column among their key columns.
    fn unique_findings(&self, class_of: &dyn Fn(i64) -> Option<CitusClass>, report: &mut Report) {
        let mut checked = 0;
        for u in &self.uniques {
            if class_of(u.table_oid) != Some(CitusClass::Distributed) {
                continue;
            }
            checked += 1;
            let Some(table) = self.table(u.table_oid) else {
                continue;
            };
            let Some(tenant_attnum) = table.tenant_attnum else {
                continue;
            };
            if u.key_attnums.contains(&tenant_attnum) {
                continue;
            }
            // Foreign keys that use this key must go first; their own
            // findings add them back with the tenant column.
            let mut fix: String = self
                .foreign_keys
                .iter()
                .filter(|fk| fk.index_oid == u.index_oid)
                .filter_map(|fk| {
                    self.table(fk.table_oid).map(|from| {
                        format!(
                            "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}; ",
                            from.qualified, fk.name
                        )
                    })
                })
                .collect();
            let tenant = &self.tenant;
            let rule = format!(
                "Citus enforces uniqueness only inside a shard, so every primary key, unique \
                 constraint and unique index of a distributed table must include the \
                 distribution column ({tenant}), and create_distributed_table refuses the table \
                 otherwise"
            );
            let (object, what) = match (&u.contype, &u.constraint_name, &u.constraint_def) {
                (Some(contype), Some(name), Some(def)) => {
                    let kind = if contype == "p" {
                        "primary key"
                    } else {
                        "unique constraint"
                    };
                    let _ = write!(
                        fix,
                        "ALTER TABLE {} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} {};",
                        table.qualified,
                        with_tenant_first(def, &self.tenant_q)
                    );
                    (
                        u.constraint_qualified
                            .clone()
                            .unwrap_or_else(|| u.index_qualified.clone()),
                        kind,
                    )
                }
                _ => {
                    match self.index_with_tenant(u, table) {
                        Some(create) => {
                            let _ = write!(fix, "DROP INDEX {}; {create};", u.index_qualified);
                        }
                        // Not printed as expected: nothing to run, only
                        // what to do (never a DROP without its CREATE).
                        None => {
                            fix = format!(
                                "-- drop {} and create it again with {} as its first key column: {}",
                                u.index_qualified, self.tenant_q, u.index_def
                            );
                        }
                    }
                    (u.index_qualified.clone(), "unique index")
                }
            };
            report.push(Finding::new(
                Check::CitusUniqueWithoutTenant,
                object,
                format!(
                    "{what} of {} does not include {tenant}: {rule}. The fix makes it unique per tenant",
                    table.qualified
                ),
                fix,
            ));
        }
        report.count("unique_keys", checked);
    }

    /// `CREATE UNIQUE INDEX` of `u` with the tenant column first: its
    /// definition as PostgreSQL prints it, the tenant column inserted
    /// after the known prefix (`CREATE UNIQUE INDEX name ON [ONLY] table
    /// USING am (`); `None` when the definition does not start so.
    fn index_with_tenant(&self, u: &UniqueRow, table: &TableRow) -> Option<String> {
        ["", "ONLY "].iter().find_map(|only| {
            let prefix = format!(
                "CREATE UNIQUE INDEX {} ON {only}{} USING {} (",
                u.index_name, table.qualified, u.access_method
            );
            let rest = u.index_def.strip_prefix(&prefix)?;
            Some(format!("{prefix}{}, {rest}", self.tenant_q))
        })
    }

    /// Foreign keys Citus refuses.
    fn foreign_key_findings(
        &self,
        class_of: &dyn Fn(i64) -> Option<CitusClass>,
        report: &mut Report,
    ) {
        let tenant = &self.tenant;
        let mut checked = 0;
        for fk in &self.foreign_keys {
            let (Some(from), Some(from_class)) = (self.table(fk.table_oid), class_of(fk.table_oid))
            else {
                continue;
            };
            // The toolkit's own tables are not the application's to change.
            if is_toolkit(from) {
                continue;
            }
            let to = self.table(fk.ref_oid);
            let to_class = class_of(fk.ref_oid);
            checked += 1;
            let drop = format!(
                "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {};",
                from.qualified, fk.name
            );
            match (from_class, to_class) {
                (CitusClass::Reference | CitusClass::Local, Some(CitusClass::Distributed)) => {
                    report.push(Finding::new(
                        Check::CitusFkReferenceToDistributed,
                        fk.qualified.clone(),
                        format!(
                            "foreign key from the {} table {} to the distributed table {}: Citus \
                             does not support foreign keys from reference or local tables to \
                             distributed tables. Drop it, or add {tenant} to {} so that it is \
                             distributed too",
                            from_class, from.qualified, fk.ref_qualified, from.qualified
                        ),
                        drop,
                    ));
                }
                (CitusClass::Distributed, Some(CitusClass::Local)) => {
                    report.push(Finding::new(
                        Check::CitusFkReferenceToDistributed,
                        fk.qualified.clone(),
                        format!(
                            "foreign key from the distributed table {} to {}, which stays local \
                             on the coordinator: Citus requires the referenced table of a \
                             distributed table to be distributed or a reference table",
                            from.qualified, fk.ref_qualified
                        ),
                        drop,
                    ));
                }
                (CitusClass::Distributed, Some(to_class)) => {
                    let Some(tenant_attnum) = from.tenant_attnum else {
                        continue;
                    };
                    let mut why = Vec::new();
                    let mut same_position = false;
                    if to_class == CitusClass::Distributed {
                        let ref_tenant = to.and_then(|t| t.tenant_attnum);
                        same_position = fk
                            .attnums
                            .iter()
                            .zip(&fk.ref_attnums)
                            .any(|(a, r)| *a == tenant_attnum && Some(*r) == ref_tenant);
                        if !same_position {
                            why.push(format!(
                                "it links two distributed tables but does not pair {tenant} with \
                                 {tenant} (Citus requires the distribution column in the key, at \
                                 the same position on both sides, so that both rows are on one node)"
                            ));
                        }
                    }
                    let tenant_included = fk.attnums.contains(&tenant_attnum);
                    if tenant_included || to_class == CitusClass::Distributed {
                        // The fix includes the tenant column in any case
                        // when both sides are distributed.
                        if matches!(fk.on_delete.as_str(), "n" | "d") {
                            why.push(format!(
                                "ON DELETE {} would change {tenant} (Citus refuses SET NULL and \
                                 SET DEFAULT on delete when the distribution column is in the key)",
                                action(&fk.on_delete)
                            ));
                        }
                        if matches!(fk.on_update.as_str(), "n" | "d" | "c") {
                            why.push(format!(
                                "ON UPDATE {} would change {tenant} (Citus refuses SET NULL, SET \
                                 DEFAULT and CASCADE on update when the distribution column is in \
                                 the key)",
                                action(&fk.on_update)
                            ));
                        }
                    }
                    if why.is_empty() {
                        continue;
                    }
                    let pair = match to {
                        Some(to) if to_class == CitusClass::Distributed && !same_position => {
                            Some((tenant_attnum, to))
                        }
                        _ => None,
                    };
                    let fix = self.foreign_key_fix(fk, from, pair);
                    report.push(Finding::new(
                        Check::CitusFkReferenceToDistributed,
                        fk.qualified.clone(),
                        format!(
                            "foreign key from {} to {}: {}. The fix keeps the key within a tenant \
                             and uses NO ACTION where the action was refused",
                            from.qualified,
                            fk.ref_qualified,
                            why.join("; ")
                        ),
                        fix,
                    ));
                }
                _ => {}
            }
        }
        report.count("foreign_keys", checked);
    }

    /// The foreign key `fk` recreated under its name: when `pair` gives
    /// the referencing table's tenant column and the referenced table,
    /// with the tenant columns paired first (and no other pairing of
    /// either tenant column); actions Citus refuses over the tenant column
    /// become NO ACTION.
    fn foreign_key_fix(
        &self,
        fk: &ForeignKeyRow,
        from: &TableRow,
        pair: Option<(i16, &TableRow)>,
    ) -> String {
        let (columns, ref_columns): (Vec<&str>, Vec<&str>) = match pair {
            Some((tenant_attnum, to)) => {
                let ref_tenant = to.tenant_attnum;
                let rest = fk
                    .attnums
                    .iter()
                    .zip(&fk.ref_attnums)
                    .zip(fk.columns.iter().zip(&fk.ref_columns))
                    .filter(|((a, r), _)| **a != tenant_attnum && Some(**r) != ref_tenant)
                    .map(|(_, (c, rc))| (c.as_str(), rc.as_str()));
                std::iter::once((self.tenant_q.as_str(), self.tenant_q.as_str()))
                    .chain(rest)
                    .unzip()
            }
            None => fk
                .columns
                .iter()
                .zip(&fk.ref_columns)
                .map(|(c, rc)| (c.as_str(), rc.as_str()))
                .unzip(),
        };
        let mut sql = format!(
            "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {name}, ADD CONSTRAINT {name} FOREIGN KEY ({}) REFERENCES {} ({})",
            from.qualified,
            columns.join(", "),
            fk.ref_qualified,
            ref_columns.join(", "),
            name = fk.name,
        );
        if fk.match_type == "f" {
            sql.push_str(" MATCH FULL");
        }
        let on_delete = match fk.on_delete.as_str() {
            "n" | "d" => "a",
            other => other,
        };
        let on_update = match fk.on_update.as_str() {
            "n" | "d" | "c" => "a",
            other => other,
        };
        if on_delete != "a" {
            let _ = write!(sql, " ON DELETE {}", action(on_delete));
        }
        if on_update != "a" {
            let _ = write!(sql, " ON UPDATE {}", action(on_update));
        }
        if fk.deferrable {
            sql.push_str(if fk.deferred {
                " DEFERRABLE INITIALLY DEFERRED"
            } else {
                " DEFERRABLE"
            });
        }
        if !fk.validated {
            sql.push_str(" NOT VALID");
        }
        sql.push(';');
        sql
    }

    /// Sequence-filled columns of distributed tables that are not bigint
    /// (or whose sequence is not).
    fn sequence_findings(&self, class_of: &dyn Fn(i64) -> Option<CitusClass>, report: &mut Report) {
        let mut checked = 0;
        for s in &self.sequences {
            if class_of(s.table_oid) != Some(CitusClass::Distributed) {
                continue;
            }
            checked += 1;
            if s.column_bigint && s.sequence_bigint {
                continue;
            }
            let Some(table) = self.table(s.table_oid) else {
                continue;
            };
            let mut fix = Vec::new();
            if !s.column_bigint {
                fix.push(format!(
                    "ALTER TABLE {} ALTER COLUMN {} TYPE bigint;",
                    table.qualified, s.column_name
                ));
            }
            // Changing an identity column's type changes its sequence's too.
            let sequence_follows = s.identity && !s.column_bigint;
            if !s.sequence_bigint && !sequence_follows {
                fix.push(format!("ALTER SEQUENCE {} AS bigint;", s.sequence));
            }
            let kind = if s.identity {
                "identity column"
            } else {
                "column"
            };
            report.push(Finding::new(
                Check::CitusSequenceNotBigint,
                s.sequence.clone(),
                format!(
                    "{kind} {}.{} ({}) takes its values from the sequence {} ({}): Citus encodes \
                     the node in the values a sequence gives on each node, which works only for \
                     bigint sequences; with a smaller type, inserts on worker nodes fail",
                    table.qualified, s.column_name, s.column_type, s.sequence, s.sequence_type
                ),
                fix.join(" "),
            ));
        }
        report.count("sequences", checked);
    }

    /// Distributed tables whose tenant column's type differs from the
    /// most common one.
    fn type_findings(&self, class_of: &dyn Fn(i64) -> Option<CitusClass>, report: &mut Report) {
        let distributed: Vec<(&TableRow, &str, &str)> = self
            .tables
            .iter()
            .filter(|t| class_of(t.oid) == Some(CitusClass::Distributed))
            .filter_map(|t| Some((t, t.tenant_base_type.as_deref()?, t.tenant_type.as_deref()?)))
            .collect();
        // Most tables, then the type's name: one answer, whatever the order.
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, base, _) in &distributed {
            *counts.entry(base).or_default() += 1;
        }
        let Some(common) = counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(base, _)| *base)
        else {
            return;
        };
        if counts.len() < 2 {
            return;
        }
        // The full type (with modifiers) of the first table that has it.
        let Some(target) = distributed
            .iter()
            .find(|(_, base, _)| *base == common)
            .map(|(_, _, full)| *full)
        else {
            return;
        };
        let tenant = &self.tenant;
        for (t, base, full) in &distributed {
            if *base == common {
                continue;
            }
            let n = counts.get(common).copied().unwrap_or(0);
            report.push(Finding::new(
                Check::CitusTenantTypeMismatch,
                t.qualified.clone(),
                format!(
                    "{tenant} of {} is {full}, while {n} distributed tables have {target}: Citus \
                     colocates tables by default only when their distribution columns have the \
                     same type, and joins and foreign keys between tenant tables need them \
                     colocated. (PostgreSQL will not change the type of a column a policy uses: \
                     drop the table's row-level policies first and create them again afterwards.)",
                    t.qualified
                ),
                format!(
                    "ALTER TABLE {} ALTER COLUMN {q} TYPE {target} USING {q}::{target};",
                    t.qualified,
                    q = self.tenant_q
                ),
            ));
        }
    }
}

/// Whether `t` is one of the toolkit's own tables.
fn is_toolkit(t: &TableRow) -> bool {
    t.schema == "tenancy_rls" || t.name.starts_with("tenancy_") || t.name.starts_with("_tenancy_")
}

/// A foreign key action by its `pg_constraint` code.
fn action(code: &str) -> &'static str {
    match code {
        "r" => "RESTRICT",
        "c" => "CASCADE",
        "n" => "SET NULL",
        "d" => "SET DEFAULT",
        _ => "NO ACTION",
    }
}

/// A primary key or unique constraint definition (`PRIMARY KEY (id)`,
/// `UNIQUE NULLS NOT DISTINCT (a, b) INCLUDE (c)`) with `tenant` as its
/// first column. Nothing before the first `(` is an identifier.
fn with_tenant_first(def: &str, tenant: &str) -> String {
    match def.split_once('(') {
        Some((head, rest)) => format!("{head}({tenant}, {rest}"),
        None => def.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_goes_first_in_a_key() {
        assert_eq!(
            with_tenant_first("PRIMARY KEY (id)", "tenant_id"),
            "PRIMARY KEY (tenant_id, id)"
        );
        assert_eq!(
            with_tenant_first("UNIQUE NULLS NOT DISTINCT (a, \"B(\") INCLUDE (c)", "\"T\""),
            "UNIQUE NULLS NOT DISTINCT (\"T\", a, \"B(\") INCLUDE (c)"
        );
    }

    #[test]
    fn classes_serialize_lowercase() {
        let t = CitusTable {
            table: "public.notes".into(),
            class: CitusClass::Distributed,
            reason: "r".into(),
        };
        let json = serde_json::to_value(&t).unwrap_or_default();
        assert_eq!(json["class"], "distributed");
    }
}
