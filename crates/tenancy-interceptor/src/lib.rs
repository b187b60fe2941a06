//! SQL query interceptor: scopes any statement to the current tenant, and
//! refuses what it cannot scope.
//!
//! Row-level isolation keeps every tenant's rows in shared tables with a
//! tenant column. Where Postgres Row-Level Security is not available (SQLite)
//! the interceptor is the wall between tenants; where it is, it is a second
//! one. Given the set of tenant-scoped tables and the tenant column, the
//! [`Interceptor`] rewrites a statement so it can only see and touch the
//! current tenant's rows:
//!
//! - every reference to a tenant table gets `alias.tenant_id = $n`, in WHERE
//!   for plain and inner joins, in the ON clause for the nullable side of
//!   outer joins, inside every subquery, CTE and set-operation arm;
//! - INSERT gets the tenant column and value, UPDATE/DELETE are filtered,
//!   `ON CONFLICT DO UPDATE` only updates the tenant's own row;
//! - the tenant is always a bind parameter, numbered after the statement's
//!   own parameters, so the rewrite does not depend on the tenant and is
//!   cached by SQL text.
//!
//! Anything it cannot prove safe is a [`Refusal`], never a pass-through.
//! See `docs/sql-rewrite.md` for the full list.
//!
//! ```
//! use tenancy::interceptor::{Dialect, Interceptor, TenantTables};
//!
//! let interceptor = Interceptor::new(TenantTables::new(["notes", "orders"]).column("tenant_id"));
//! let out = interceptor
//!     .rewrite("SELECT id FROM notes n WHERE n.id = $1 OR n.pinned", Dialect::Postgres)
//!     .unwrap();
//! assert_eq!(
//!     out.sql(),
//!     "SELECT id FROM notes n WHERE (n.id = $1 OR n.pinned) AND n.tenant_id = $2"
//! );
//! // Bind the statement's own parameters in order, then the tenant at index 2.
//! assert_eq!(out.tenant_param(), Some(2));
//!
//! // Fail closed.
//! assert!(interceptor.rewrite("TRUNCATE notes", Dialect::Postgres).is_err());
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod names;
mod params;
mod rewrite;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub mod service;
#[doc(hidden)]
pub mod verify;

use std::sync::Arc;

pub use error::Refusal;
pub use names::TenantTables;

/// The SQL dialect a statement is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// PostgreSQL: placeholders `$1`, `$2`, …
    Postgres,
    /// SQLite: placeholders `?1`, `?2`, … (anonymous `?` are renumbered).
    Sqlite,
}

impl Dialect {
    /// The dialect's name, as used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::Sqlite => "sqlite",
        }
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A statement scoped to the current tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    sql: Arc<str>,
    tenant_param: Option<usize>,
}

impl Rewritten {
    /// The rewritten SQL text.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The rewritten SQL text, shared.
    pub fn sql_arc(&self) -> Arc<str> {
        Arc::clone(&self.sql)
    }

    /// The 1-based index of the tenant bind parameter, or `None` when the
    /// statement touches no tenant table and takes no tenant parameter.
    ///
    /// The statement's own parameters keep their numbers `1..n`; the tenant
    /// is always `n + 1`, so binding the statement's parameters in order and
    /// then the tenant id is correct.
    pub fn tenant_param(&self) -> Option<usize> {
        self.tenant_param
    }
}

/// Default number of rewritten statements kept per dialect.
pub const DEFAULT_CACHE_CAPACITY: u64 = 10_000;

/// Rewrites statements for one set of tenant tables, with a cache of
/// rewritten statements keyed by (SQL text, dialect).
///
/// Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct Interceptor {
    inner: Arc<Inner>,
}

struct Inner {
    tables: TenantTables,
    postgres: moka::sync::Cache<Arc<str>, Result<Rewritten, Refusal>>,
    sqlite: moka::sync::Cache<Arc<str>, Result<Rewritten, Refusal>>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("tables", &self.inner.tables)
            .finish_non_exhaustive()
    }
}

impl Interceptor {
    /// An interceptor for these tenant tables with the default cache size.
    pub fn new(tables: TenantTables) -> Self {
        Self::with_cache_capacity(tables, DEFAULT_CACHE_CAPACITY)
    }

    /// An interceptor keeping at most `capacity` statements per dialect.
    pub fn with_cache_capacity(tables: TenantTables, capacity: u64) -> Self {
        let cache = || moka::sync::Cache::builder().max_capacity(capacity).build();
        Self {
            inner: Arc::new(Inner {
                tables,
                postgres: cache(),
                sqlite: cache(),
            }),
        }
    }

    /// The tenant tables and column this interceptor scopes.
    pub fn tables(&self) -> &TenantTables {
        &self.inner.tables
    }

    /// Rewrite `sql` so it only sees and touches the current tenant's rows,
    /// using the cache. Refusals are cached too.
    pub fn rewrite(&self, sql: &str, dialect: Dialect) -> Result<Rewritten, Refusal> {
        let cache = match dialect {
            Dialect::Postgres => &self.inner.postgres,
            Dialect::Sqlite => &self.inner.sqlite,
        };
        if let Some(hit) = cache.get(sql) {
            return hit;
        }
        let result = self.rewrite_uncached(sql, dialect);
        cache.insert(Arc::from(sql), result.clone());
        result
    }

    /// Rewrite without looking at or filling the cache.
    pub fn rewrite_uncached(&self, sql: &str, dialect: Dialect) -> Result<Rewritten, Refusal> {
        rewrite::rewrite(&self.inner.tables, sql, dialect)
    }
}
