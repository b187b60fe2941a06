//! The main database (PostgreSQL or SQLite) as the toolkit's own tables
//! beside the store use it: the job queue and usage.

/// A pool on the main database, whichever it is.
#[derive(Clone, Debug)]
pub(crate) enum MainDb {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
}

/// Runs `$body` with `$pool` bound to `$owner.backend`'s pool (a
/// [`MainDb`]), whichever it is: the SQL is written once for both.
macro_rules! on_pool {
    ($owner:expr, $pool:ident => $body:expr) => {
        match &$owner.backend {
            #[cfg(feature = "postgres")]
            $crate::main_db::MainDb::Postgres($pool) => $body,
            #[cfg(feature = "sqlite")]
            $crate::main_db::MainDb::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;
