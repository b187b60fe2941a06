//! The one place this workspace uses `unsafe` (audited; SECURITY.md):
//! a tenant's SQLite connection may not `ATTACH` another database file,
//! or SQL run through `TenantDb` could open another tenant's
//! file. sqlx offers no setting for it, so the connection's limit on
//! attached databases is set to 0 with `sqlite3_limit` on the raw handle.
//! `ATTACH` then fails with "too many attached databases - max 0".
#![allow(unsafe_code)]

use sqlx::SqliteConnection;

/// Forbids `ATTACH` on `conn` for as long as it lives.
pub(crate) async fn forbid_attach(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let raw = handle.as_raw_handle();
    // SAFETY: `raw` is the open `sqlite3*` of this connection, valid while
    // `handle` holds the connection's lock (until the end of this
    // function), and no other thread uses the connection meanwhile.
    // `sqlite3_limit` only reads and writes that connection's limit array;
    // `SQLITE_LIMIT_ATTACHED` is a valid limit category and 0 a valid value.
    let previous = unsafe {
        libsqlite3_sys::sqlite3_limit(raw.as_ptr(), libsqlite3_sys::SQLITE_LIMIT_ATTACHED, 0)
    };
    tracing::trace!(previous, "ATTACH disabled on a tenant connection");
    Ok(())
}
