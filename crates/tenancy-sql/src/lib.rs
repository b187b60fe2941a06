//! SQL backends of the `tenancy` toolkit, on sqlx.
//!
//! - Stores: [`SqliteStore`] (embedded default) and [`PgStore`].
//!
//! Features: `postgres`, `sqlite` (both default).

pub mod store;

#[cfg(feature = "postgres")]
pub use store::PgStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
