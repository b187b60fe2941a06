//! SQL backends of the `tenancy` toolkit, on sqlx.
//!
//! - Stores (SPEC S4): [`SqliteStore`] (embedded default) and [`PgStore`].
//! - Isolation (SPEC I3–I6): [`PgRowLevel`] (RLS), [`PgSchemaIsolation`],
//!   [`PgDatabaseIsolation`], [`SqliteDatabaseIsolation`], all opening
//!   scoped transactions through one API, [`TenantDb::begin`].
//! - Per-tenant migrations: [`Migrations`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tenancy_sql::{Migrations, PgSchemaIsolation, TenantDb};
//! let pool = sqlx::PgPool::connect("postgres://app@127.0.0.1/app").await?;
//! let schemas = PgSchemaIsolation::new(pool, Migrations::from_dir("migrations".as_ref())?);
//! let db = TenantDb::new(schemas.clone()); // and `.isolation(schemas)` on the Tenancy builder
//! tenancy_core::context::with_tenant("acme".parse()?, async {
//!     let mut tx = db.begin().await?; // search_path = "tenant_acme", for this transaction only
//!     sqlx::query("INSERT INTO notes (body) VALUES ($1)").bind("hi").execute(&mut *tx).await?;
//!     tx.commit().await?;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! }).await?;
//! # Ok(()) }
//! ```
//!
//! Features: `postgres`, `sqlite` (both default).

mod db;
pub mod ident;
pub mod isolation;
pub mod migrate;
#[cfg(feature = "postgres")]
pub mod notify;
pub mod portable;
pub mod store;

pub use db::{DbError, ScopedBegin, TenantDb};
#[cfg(feature = "postgres")]
pub use isolation::{DatabaseServer, PgDatabaseIsolation, PgRowLevel, PgSchemaIsolation};
#[cfg(feature = "sqlite")]
pub use isolation::{InterceptedTx, ScopedQuery, SqliteDatabaseIsolation, SqliteRowLevel};
pub use migrate::{Applied, Migration, Migrations};
#[cfg(feature = "postgres")]
pub use notify::{CHANGES_CHANNEL, ChangeTargets, ListenerStatus, PgChangeListener};
#[cfg(feature = "postgres")]
pub use store::PgStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
