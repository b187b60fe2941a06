//! Tenant table configuration and identifier matching.

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart};

use crate::Dialect;

/// The tenant-scoped tables and the tenant column.
///
/// Table names are catalog names, matched as Postgres does: an unquoted
/// identifier in SQL folds to lower case, a quoted one is exact (SQLite
/// compares case-insensitively). A name may be schema-qualified
/// (`app.notes`); an unqualified name matches the table in any schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantTables {
    tables: Vec<TableName>,
    column: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TableName {
    schema: Option<String>,
    name: String,
}

impl TenantTables {
    /// The default tenant column.
    pub const DEFAULT_COLUMN: &'static str = "tenant_id";

    /// These tables are tenant-scoped; the column is `tenant_id`.
    pub fn new<I, S>(tables: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let tables = tables
            .into_iter()
            .filter_map(|t| {
                let t = t.as_ref().trim();
                if t.is_empty() {
                    return None;
                }
                Some(match t.rsplit_once('.') {
                    Some((schema, name)) => TableName {
                        schema: Some(schema.to_owned()),
                        name: name.to_owned(),
                    },
                    None => TableName {
                        schema: None,
                        name: t.to_owned(),
                    },
                })
            })
            .collect();
        Self {
            tables,
            column: Self::DEFAULT_COLUMN.to_owned(),
        }
    }

    /// Use `column` as the tenant column (a catalog name, e.g. `tenant_id`).
    pub fn column(mut self, column: impl Into<String>) -> Self {
        self.column = column.into();
        self
    }

    /// The tenant column.
    pub fn tenant_column(&self) -> &str {
        &self.column
    }

    /// The configured table names, as given.
    pub fn table_names(&self) -> impl Iterator<Item = String> + '_ {
        self.tables.iter().map(|t| match &t.schema {
            Some(s) => format!("{s}.{}", t.name),
            None => t.name.clone(),
        })
    }

    /// Is this (possibly qualified) reference a tenant table?
    pub(crate) fn matches(&self, name: &ObjectName, dialect: Dialect) -> bool {
        let Some(parts) = idents(name) else {
            // A name we cannot read is treated as a tenant table: fail closed.
            return true;
        };
        let Some((table, rest)) = parts.split_last() else {
            return true;
        };
        let schema = rest.last();
        self.tables.iter().any(|t| {
            ident_eq(table, &t.name, dialect)
                && match (schema, &t.schema) {
                    (Some(s), Some(cfg)) => ident_eq(s, cfg, dialect),
                    _ => true,
                }
        })
    }

    /// Is this identifier the tenant column?
    pub(crate) fn is_column(&self, ident: &Ident, dialect: Dialect) -> bool {
        ident_eq(ident, &self.column, dialect)
    }

    /// The tenant column as an identifier, quoted when needed.
    pub(crate) fn column_ident(&self) -> Ident {
        quoted_if_needed(&self.column)
    }
}

/// An identifier for a catalog name, quoted unless it is a plain lower-case
/// identifier.
pub(crate) fn quoted_if_needed(name: &str) -> Ident {
    let plain = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        Ident::new(name)
    } else {
        Ident::with_quote('"', name)
    }
}

/// The plain identifiers of a name, or `None` if a part is not one.
pub(crate) fn idents(name: &ObjectName) -> Option<Vec<&Ident>> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(i),
            ObjectNamePart::Function(_) => None,
        })
        .collect()
}

/// Does `ident` (as written in SQL) denote the catalog name `catalog`?
pub(crate) fn ident_eq(ident: &Ident, catalog: &str, dialect: Dialect) -> bool {
    match (dialect, ident.quote_style) {
        (Dialect::Postgres, Some(_)) => ident.value == catalog,
        (Dialect::Postgres, None) => fold_eq(&ident.value, catalog),
        (Dialect::Sqlite, _) => ident.value.eq_ignore_ascii_case(catalog),
    }
}

/// `written.to_lowercase() == catalog` without allocating in the ASCII case.
fn fold_eq(written: &str, catalog: &str) -> bool {
    if written.is_ascii() {
        written.len() == catalog.len()
            && written
                .bytes()
                .zip(catalog.bytes())
                .all(|(a, b)| a.to_ascii_lowercase() == b)
    } else {
        written.to_lowercase() == catalog
    }
}

/// The name a reference resolves to, normalised for comparing CTE names.
pub(crate) fn normalise(ident: &Ident, dialect: Dialect) -> String {
    match (dialect, ident.quote_style) {
        (Dialect::Postgres, Some(_)) => ident.value.clone(),
        _ => ident.value.to_lowercase(),
    }
}
