//! SQL backends of the `tenancy` toolkit, on sqlx.
//!
//! - Stores: [`SqliteStore`] (embedded default) and [`PgStore`].
//! - Isolation: [`PgRowLevel`] (RLS), [`PgSchemaIsolation`],
//!   [`PgDatabaseIsolation`], [`SqliteDatabaseIsolation`], all opening
//!   scoped transactions through one API, [`TenantDb::begin`].
//! - Migrations: [`Migrations`], per tenant (schema, database), or of the
//!   shared tables under row level ([`PgRowLevel::migrate`], whose SQL
//!   registers tables with `SELECT tenancy_register_table('t')`).
//! - [`doctor`]: the checks of `tenancy doctor`, on the catalogs of a live
//!   database, and the Citus readiness report.
//!
//! ```
//! use tenancy::{Migration, Migrations, NewTenant, PgSchemaIsolation, PgStore, Tenancy, TenantDb};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let name = format!("doc_{}", uuid::Uuid::new_v4().simple());
//! # let admin = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/postgres").await?;
//! # sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await?;
//! # let url = format!("postgres://postgres@127.0.0.1/{name}");
//! let pool = sqlx::PgPool::connect(&url).await?;
//! let migrations = Migrations::new(vec![Migration {
//!     version: 1,
//!     name: "notes".into(),
//!     sql: "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)".into(),
//! }])?; // or Migrations::from_dir("migrations".as_ref())?
//! let schemas = PgSchemaIsolation::new(pool.clone(), migrations);
//! let tenancy = Tenancy::builder()
//!     .store(PgStore::new(pool.clone()))
//!     .isolation(schemas.clone())
//!     .build()?;
//! # PgStore::new(pool.clone()).migrate().await?;
//! let acme = tenancy.lifecycle().create(NewTenant::new("acme", "Acme")?).await?; // schema made, migrated
//!
//! let db = TenantDb::new(schemas);
//! tenancy::with_tenant(acme.id.clone(), async {
//!     let mut tx = db.begin().await?; // search_path = the tenant's schema, this transaction only
//!     sqlx::query("INSERT INTO notes (body) VALUES ($1)").bind("hi").execute(&mut *tx).await?;
//!     tx.commit().await?;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! }).await?;
//! # pool.close().await;
//! # sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&admin).await?;
//! # Ok(()) }
//! ```
//!
//! Features: `postgres`, `sqlite` (both default).

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod changes;
mod db;
pub mod deployment;
pub mod doctor;
pub mod ident;
pub mod isolation;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub mod jobs;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod main_db;
pub mod migrate;
#[cfg(feature = "postgres")]
pub mod notify;
pub mod portable;
#[cfg(feature = "sqlite")]
pub mod sqlite_changes;
pub mod store;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub mod usage;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use changes::ChangeTargets;
pub use db::{DbError, ScopedBegin, TenantDb, is_missing_storage};
#[cfg(feature = "postgres")]
pub use isolation::{
    DatabaseServer, PgDatabaseIsolation, PgRowLevel, PgSchemaIsolation, SigningKeyError,
    TenantSigningKey,
};
#[cfg(feature = "sqlite")]
pub use isolation::{InterceptedTx, ScopedQuery, SqliteDatabaseIsolation, SqliteRowLevel};
pub use migrate::{Applied, Migration, Migrations};
#[cfg(feature = "postgres")]
pub use notify::{CHANGES_CHANNEL, ListenerStatus, PgChangeListener};
#[cfg(feature = "sqlite")]
pub use sqlite_changes::SqliteChangeListener;
#[cfg(feature = "postgres")]
pub use store::PgStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
