//! Isolation strategies. Each implements
//! [`IsolationStrategy`](tenancy_core::IsolationStrategy) (provision,
//! deprovision, health) and [`ScopedBegin`](crate::ScopedBegin) (the
//! per-transaction scope):
//!
//! | strategy | name | data | scope per transaction |
//! |---|---|---|---|
//! | [`PgRowLevel`] | `row_level` | shared tables + `tenant_id`, RLS enabled and forced | `set_config('tenancy.tenant_id', …, true)` (signed form: plus `tenancy.tenant_sig`, checked by the policy) |
//! | [`PgSchemaIsolation`] | `schema` | schema `tenant_<id>` owned by role `tenant_<id>` | `SET LOCAL ROLE` + `set_config('search_path', …, true)` |
//! | [`PgDatabaseIsolation`] | `database` | database `tenant_<id>` | a pool per tenant (bounded set) |
//! | [`SqliteDatabaseIsolation`] | `database` | file `tenant_<id>.db` | a pool per tenant (bounded set) |
//! | [`SqliteRowLevel`] | `row_level` | shared tables + `tenant_id` | every statement rewritten by the query interceptor |
//!
//! Every scope is transaction-local and is set in the same round trip as
//! `BEGIN`, so a connection returned to the pool carries no tenant state
//! (safe behind pgbouncer in transaction mode) and scoping costs no extra
//! round trip.

#[cfg(feature = "postgres")]
mod pg_database;
#[cfg(feature = "postgres")]
mod row_level;
#[cfg(feature = "postgres")]
mod schema;
#[cfg(feature = "sqlite")]
mod sqlite_database;
#[cfg(feature = "sqlite")]
mod sqlite_guard;
#[cfg(feature = "sqlite")]
mod sqlite_row_level;

#[cfg(feature = "postgres")]
pub use pg_database::{DatabaseServer, PgDatabaseIsolation};
#[cfg(feature = "postgres")]
pub use row_level::{PgRowLevel, SigningKeyError, TenantSigningKey};
#[cfg(feature = "postgres")]
pub use schema::PgSchemaIsolation;
#[cfg(feature = "sqlite")]
pub use sqlite_database::{SqliteDatabaseIsolation, create_sqlite_file};
#[cfg(feature = "sqlite")]
pub use sqlite_row_level::{InterceptedTx, ScopedQuery, SqliteRowLevel};

use tenancy_core::IsolationError;

#[cfg(feature = "postgres")]
pub(crate) fn step_error<'a>(
    strategy: &'a str,
    step: &'a str,
) -> impl Fn(sqlx::Error) -> IsolationError + 'a {
    move |e| IsolationError::new(strategy, step, e)
}

pub(crate) fn db_error(strategy: &str, step: &str, e: crate::DbError) -> IsolationError {
    IsolationError::new(strategy, step, e)
}
