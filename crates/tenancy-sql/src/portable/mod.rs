//! Tenant data portability: every table of one tenant read out
//! as exact JSON rows, and written back into any strategy and database.
//!
//! [`TenantData`] says where a tenant's tables live: shared tables told
//! apart by a tenant column (row level), the tenant's own schema, or its
//! own database or file. A [`Session`] is one transaction there: a
//! read-only snapshot for exports ([`TenantData::read`]) so every table is
//! read at the same instant, or a write transaction for imports and purges
//! ([`TenantData::write`]) that commits all tables or none.
//!
//! # The row format
//!
//! One JSON object per line (NDJSON), keys are column names, the tenant
//! column is left out (it is the importing tenant's on the way back).
//!
//! - PostgreSQL renders every row itself (`row_to_json`, streamed with
//!   `COPY … TO STDOUT`): `uuid`, `timestamptz` (UTC), `date`, `numeric`
//!   (every digit, `NaN` as a string), `jsonb`/`json` (as JSON), arrays,
//!   enums, intervals, ranges, composites: whatever the server can print.
//!   `bytea` is base64. Nothing is decoded type by type in Rust, so no type
//!   comes out as `null`.
//! - SQLite has five storage classes; each value is written from its own
//!   class: INTEGER and REAL as JSON numbers (REAL in the shortest form that
//!   reads back to the same double; SQLite's own `json_object` prints 15
//!   significant digits and would lose e.g. `0.1 + 0.2`), TEXT as a string,
//!   BLOB as base64, NULL as `null`. A BLOB in a column not declared BLOB
//!   (or the reverse) is refused with the row named, because the archive
//!   could not say which it is.
//!
//! Rows are streamed in key order: memory does not grow with the table.
//!
//! # Safety
//!
//! Table and column names used in SQL are read from the database's own
//! catalog and quoted; names found in an archive only select among them.
//! The tenant id is always a bound parameter (or the transaction-local
//! setting `tenancy.tenant_id`, itself set from a bound parameter).

use std::io::{BufRead, Write};

use tenancy_core::TenantId;

use crate::DbError;

mod stream;

pub use stream::{Digest, DigestWriter, LineLimit, MAX_ROW_BYTES, digest_of};

#[cfg(feature = "postgres")]
mod pg;
#[cfg(feature = "sqlite")]
mod sqlite;

/// Tables whose names start with this belong to the toolkit's store, never
/// to a tenant.
const STORE_PREFIX: &str = "tenancy_";
/// The per-tenant migrations bookkeeping table.
const BOOKKEEPING: &str = "_tenancy_migrations";

/// Where one tenant's tables live.
#[derive(Clone)]
pub struct TenantData {
    tenant: TenantId,
    column: String,
    place: Place,
}

#[derive(Clone)]
enum Place {
    #[cfg(feature = "postgres")]
    Pg {
        pool: sqlx::PgPool,
        /// The tenant's own schema; `None`: the connection's current schema.
        schema: Option<String>,
        shared: bool,
        /// The tenant's signature under a [`crate::TenantSigningKey`], for
        /// shared tables under the signed form of row level.
        signature: Option<String>,
    },
    #[cfg(feature = "sqlite")]
    Sqlite {
        pool: sqlx::SqlitePool,
        shared: bool,
    },
}

#[cfg(feature = "postgres")]
impl Place {
    /// A PostgreSQL place, unsigned (see [`TenantData::signed`]).
    fn pg(pool: sqlx::PgPool, schema: Option<String>, shared: bool) -> Self {
        Self::Pg {
            pool,
            schema,
            shared,
            signature: None,
        }
    }
}

impl TenantData {
    /// Shared PostgreSQL tables (row level): the tenant's rows are those
    /// whose `column` holds its id; tables without `column` are not the
    /// tenant's.
    #[cfg(feature = "postgres")]
    pub fn pg_shared(pool: sqlx::PgPool, tenant: TenantId, column: &str) -> Result<Self, DbError> {
        Self::at(tenant, column, Place::pg(pool, None, true))
    }

    /// Shared PostgreSQL tables under the signed form of row level
    /// ([`PgRowLevel::signed`](crate::PgRowLevel::signed)): each session
    /// also sets the tenant's signature under `key`, so the policies let
    /// it read and write the tenant's rows (without it, a role bound by RLS
    /// would export nothing and import nothing). Other places ignore it.
    ///
    /// ```
    /// # fn f(pool: sqlx::PgPool, key: &tenancy::TenantSigningKey) -> Result<(), tenancy::DbError> {
    /// use tenancy::sql::portable::TenantData;
    /// let data = TenantData::pg_shared(pool, "acme".parse().unwrap(), "tenant_id")?.signed(key);
    /// # let _ = data; Ok(()) }
    /// ```
    #[cfg(feature = "postgres")]
    pub fn signed(mut self, key: &crate::TenantSigningKey) -> Self {
        let tenant = self.tenant.clone();
        #[allow(irrefutable_let_patterns)]
        if let Place::Pg { signature, .. } = &mut self.place {
            *signature = Some(key.sign(&tenant));
        }
        self
    }

    /// The tenant's own PostgreSQL schema (`tenant_<id>`) in the database
    /// of `pool`.
    #[cfg(feature = "postgres")]
    pub fn pg_schema(pool: sqlx::PgPool, tenant: TenantId, column: &str) -> Result<Self, DbError> {
        let schema = crate::ident::tenant_object_name(&tenant)?;
        Self::at(tenant, column, Place::pg(pool, Some(schema), false))
    }

    /// The tenant's own PostgreSQL database, reached through `pool`.
    #[cfg(feature = "postgres")]
    pub fn pg_database(
        pool: sqlx::PgPool,
        tenant: TenantId,
        column: &str,
    ) -> Result<Self, DbError> {
        Self::at(tenant, column, Place::pg(pool, None, false))
    }

    /// Shared SQLite tables (row level), told apart by `column`.
    #[cfg(feature = "sqlite")]
    pub fn sqlite_shared(
        pool: sqlx::SqlitePool,
        tenant: TenantId,
        column: &str,
    ) -> Result<Self, DbError> {
        Self::at(tenant, column, Place::Sqlite { pool, shared: true })
    }

    /// The tenant's own SQLite file, reached through `pool`.
    #[cfg(feature = "sqlite")]
    pub fn sqlite_database(
        pool: sqlx::SqlitePool,
        tenant: TenantId,
        column: &str,
    ) -> Result<Self, DbError> {
        Self::at(
            tenant,
            column,
            Place::Sqlite {
                pool,
                shared: false,
            },
        )
    }

    /// The tenant's data at `place`, told apart (where shared) by `column`.
    fn at(tenant: TenantId, column: &str, place: Place) -> Result<Self, DbError> {
        Ok(Self {
            tenant,
            column: plain_name(column)?,
            place,
        })
    }

    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The tenant column.
    pub fn column(&self) -> &str {
        &self.column
    }

    /// Whether the tables are shared with other tenants (row level).
    pub fn is_shared(&self) -> bool {
        match &self.place {
            #[cfg(feature = "postgres")]
            Place::Pg { shared, .. } => *shared,
            #[cfg(feature = "sqlite")]
            Place::Sqlite { shared, .. } => *shared,
        }
    }

    /// `postgres` or `sqlite`.
    pub fn database_kind(&self) -> &'static str {
        match &self.place {
            #[cfg(feature = "postgres")]
            Place::Pg { .. } => "postgres",
            #[cfg(feature = "sqlite")]
            Place::Sqlite { .. } => "sqlite",
        }
    }

    /// A read-only snapshot: every table read in it is seen at the same
    /// instant.
    pub async fn read(&self) -> Result<Session, DbError> {
        self.begin(false).await
    }

    /// A write transaction: imports and purges commit all tables or none.
    pub async fn write(&self) -> Result<Session, DbError> {
        self.begin(true).await
    }

    async fn begin(&self, write: bool) -> Result<Session, DbError> {
        let tx = match &self.place {
            #[cfg(feature = "postgres")]
            Place::Pg {
                pool,
                schema,
                signature,
                shared,
            } => Tx::Pg(
                pg::begin(
                    pool,
                    &self.tenant,
                    schema.as_deref(),
                    signature.as_deref(),
                    write,
                    *shared,
                )
                .await?,
            ),
            #[cfg(feature = "sqlite")]
            Place::Sqlite { pool, .. } => Tx::Sqlite(sqlite::begin(pool, write).await?),
        };
        Ok(Session {
            data: self.clone(),
            tx,
        })
    }
}

/// A name of the tenant column: a plain identifier (no `schema.` part).
fn plain_name(name: &str) -> Result<String, DbError> {
    if name.contains('.') {
        return Err(DbError::UnsafeName(format!(
            "tenant column `{}` is not a plain name: use letters, digits and `_`",
            name.escape_debug()
        )));
    }
    crate::ident::validate_table(name)?;
    Ok(name.to_owned())
}

/// `"name"`, with embedded quotes doubled: for names read from the
/// database's catalog.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

enum Tx {
    #[cfg(feature = "postgres")]
    Pg(sqlx::Transaction<'static, sqlx::Postgres>),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

/// One table of a tenant, as its database describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Table {
    /// Its name.
    pub name: String,
    /// Its columns in order, without the tenant column and without
    /// generated columns.
    pub columns: Vec<Column>,
    /// The primary key columns (rows are read in this order), empty when
    /// there is none.
    pub key: Vec<String>,
    /// Whether the table has the tenant column.
    pub tenant_column: bool,
    /// Tables this one references by foreign key.
    #[serde(default)]
    pub references: Vec<String>,
}

/// One column.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its declared type, as the database prints it.
    #[serde(rename = "type")]
    pub sql_type: String,
    /// Whether values are bytes (written as base64).
    pub binary: bool,
}

/// The read buffer of an import, over the caller's own.
const IMPORT_BUFFER: usize = 64 << 10;

/// One transaction in a tenant's data: see [`TenantData::read`] and
/// [`TenantData::write`].
pub struct Session {
    data: TenantData,
    tx: Tx,
}

impl Session {
    /// Every table of the tenant, referenced tables before the tables that
    /// reference them (the order an import can insert in). Under row level
    /// these are the shared tables with the tenant column; the store's own
    /// tables (`tenancy_*`) and the migrations bookkeeping are never
    /// included.
    pub async fn tables(&mut self) -> Result<Vec<Table>, DbError> {
        let shared = self.data.is_shared();
        let mut tables = self.catalog().await?;
        tables.retain(|t| !shared || t.tenant_column);
        Ok(dependency_order(tables))
    }

    /// One table by exact name (the store's tables and the migrations
    /// bookkeeping excepted); under row level it may lack the tenant column
    /// ([`Table::tenant_column`]), which makes it no table of the tenant.
    pub async fn table(&mut self, name: &str) -> Result<Option<Table>, DbError> {
        Ok(self.catalog().await?.into_iter().find(|t| t.name == name))
    }

    async fn catalog(&mut self) -> Result<Vec<Table>, DbError> {
        let column = self.data.column.clone();
        let mut tables = match &mut self.tx {
            #[cfg(feature = "postgres")]
            Tx::Pg(tx) => pg::tables(tx, &column).await?,
            #[cfg(feature = "sqlite")]
            Tx::Sqlite(tx) => sqlite::tables(tx, &column).await?,
        };
        tables.retain(|t| !t.name.starts_with(STORE_PREFIX) && t.name != BOOKKEEPING);
        Ok(tables)
    }

    /// The tenant's migration version (the highest version recorded in its
    /// schema or database), `None` for shared tables, whose migrations are
    /// the application's.
    pub async fn migration_version(&mut self) -> Result<Option<i64>, DbError> {
        if self.data.is_shared() {
            return Ok(None);
        }
        match &mut self.tx {
            #[cfg(feature = "postgres")]
            Tx::Pg(tx) => pg::migration_version(tx).await,
            #[cfg(feature = "sqlite")]
            Tx::Sqlite(tx) => sqlite::migration_version(tx).await,
        }
    }

    /// Writes the tenant's rows of `table` to `out` as NDJSON, in key order,
    /// at most `limit` rows.
    pub async fn export_table(
        &mut self,
        table: &Table,
        limit: Option<u64>,
        out: &mut (dyn Write + Send),
    ) -> Result<Digest, DbError> {
        let filter = self.filter(table);
        let mut out = DigestWriter::new(out);
        match &mut self.tx {
            #[cfg(feature = "postgres")]
            Tx::Pg(tx) => pg::export(tx, table, filter.as_deref(), limit, &mut out).await?,
            #[cfg(feature = "sqlite")]
            Tx::Sqlite(tx) => {
                let tenant = &self.data.tenant;
                sqlite::export(tx, table, filter.as_deref(), tenant, limit, &mut out).await?
            }
        }
        out.flush().map_err(io_error)?;
        Ok(out.finish().0)
    }

    /// The tenant's rows in `table`.
    pub async fn row_count(&mut self, table: &Table) -> Result<u64, DbError> {
        let filter = self.filter(table);
        #[cfg(feature = "sqlite")]
        let tenant = self.data.tenant.clone();
        match &mut self.tx {
            #[cfg(feature = "postgres")]
            Tx::Pg(tx) => pg::count(tx, table, filter.as_deref()).await,
            #[cfg(feature = "sqlite")]
            Tx::Sqlite(tx) => sqlite::count(tx, table, filter.as_deref(), &tenant).await,
        }
    }

    /// Inserts NDJSON rows read from `rows` (as [`Session::export_table`]
    /// wrote them) into `target`, one of [`Session::tables`]. `columns`
    /// describes the rows (from the archive); every one must exist in
    /// `target` with the same binary-ness, and `target` may have no other
    /// columns but ones with defaults. The tenant column, when `target` has
    /// one, gets this session's tenant. Returns the digest of what was read,
    /// which the caller compares with what it expected before committing.
    ///
    /// A row longer than [`MAX_ROW_BYTES`] is refused, the table named:
    /// memory stays bounded whatever `rows` holds.
    pub async fn import_table(
        &mut self,
        target: &Table,
        columns: &[Column],
        rows: &mut dyn BufRead,
    ) -> Result<Digest, DbError> {
        check_shape(target, columns)?;
        let tenant = self.data.tenant.clone();
        let column = self.data.column.clone();
        let mut bounded =
            std::io::BufReader::with_capacity(IMPORT_BUFFER, LineLimit::new(rows, MAX_ROW_BYTES));
        let rows: &mut dyn BufRead = &mut bounded;
        match &mut self.tx {
            #[cfg(feature = "postgres")]
            Tx::Pg(tx) => pg::import(tx, target, columns, &tenant, &column, rows).await,
            #[cfg(feature = "sqlite")]
            Tx::Sqlite(tx) => sqlite::import(tx, target, columns, &tenant, &column, rows).await,
        }
    }

    /// Empties `tables` of the tenant's own schema or database (what its
    /// migrations seeded), before an import; refused on shared tables.
    pub async fn clear_tables(&mut self, tables: &[Table]) -> Result<(), DbError> {
        if self.data.is_shared() {
            return Err(DbError::Refused(
                "clear_tables applies to a tenant's own schema or database only".into(),
            ));
        }
        if tables.is_empty() {
            return Ok(());
        }
        match &mut self.tx {
            #[cfg(feature = "postgres")]
            Tx::Pg(tx) => pg::truncate(tx, tables).await,
            #[cfg(feature = "sqlite")]
            Tx::Sqlite(tx) => sqlite::truncate(tx, tables).await,
        }
    }

    /// Deletes the tenant's rows from every one of its shared tables
    /// (row level only); returns the rows deleted per table.
    pub async fn delete_rows(&mut self) -> Result<Vec<(String, u64)>, DbError> {
        if !self.data.is_shared() {
            return Err(DbError::Refused(
                "delete_rows applies to shared tables only: the tenant's own schema or database is dropped instead"
                    .into(),
            ));
        }
        let tables = self.tables().await?;
        #[cfg(feature = "sqlite")]
        let tenant = self.data.tenant.clone();
        let column = self.data.column.clone();
        let mut deleted = Vec::new();
        for table in tables.iter().rev() {
            let n = match &mut self.tx {
                #[cfg(feature = "postgres")]
                Tx::Pg(tx) => pg::delete(tx, table, &column).await?,
                #[cfg(feature = "sqlite")]
                Tx::Sqlite(tx) => sqlite::delete(tx, table, &column, &tenant).await?,
            };
            deleted.push((table.name.clone(), n));
        }
        Ok(deleted)
    }

    /// Commits (an import or a purge).
    pub async fn commit(self) -> Result<(), DbError> {
        match self.tx {
            #[cfg(feature = "postgres")]
            Tx::Pg(tx) => tx.commit().await?,
            #[cfg(feature = "sqlite")]
            Tx::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }

    /// The tenant column to filter `table` by: under row level, and in the
    /// tenant's own space never (the whole table is the tenant's).
    fn filter(&self, table: &Table) -> Option<String> {
        (self.data.is_shared() && table.tenant_column).then(|| self.data.column.clone())
    }
}

/// Refuses rows whose columns do not fit `target`.
fn check_shape(target: &Table, columns: &[Column]) -> Result<(), DbError> {
    for c in columns {
        match target.columns.iter().find(|t| t.name == c.name) {
            None => {
                return Err(DbError::Refused(format!(
                    "table `{}`: the archive has column `{}`, which the target table lacks (columns: {})",
                    target.name,
                    c.name,
                    names(&target.columns)
                )));
            }
            Some(t) if t.binary != c.binary => {
                return Err(DbError::Refused(format!(
                    "table `{}`: column `{}` is {} in the archive ({}) but {} in the target ({})",
                    target.name,
                    c.name,
                    if c.binary { "binary" } else { "not binary" },
                    c.sql_type,
                    if t.binary { "binary" } else { "not binary" },
                    t.sql_type
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(missing) = target
        .columns
        .iter()
        .find(|t| !columns.iter().any(|c| c.name == t.name))
    {
        return Err(DbError::Refused(format!(
            "table `{}`: the target has column `{}`, which the archive lacks (archive columns: {}): \
             the two are not at the same migration version",
            target.name,
            missing.name,
            names(columns)
        )));
    }
    Ok(())
}

fn names(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sorts tables so that referenced tables come first (a cycle keeps the
/// catalog order for the tables in it).
fn dependency_order(mut tables: Vec<Table>) -> Vec<Table> {
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    let mut ordered: Vec<Table> = Vec::with_capacity(tables.len());
    while !tables.is_empty() {
        let ready = tables.iter().position(|t| {
            t.references.iter().all(|r| {
                r == &t.name
                    || ordered.iter().any(|o| &o.name == r)
                    || !tables.iter().any(|x| &x.name == r)
            })
        });
        // A cycle: take the first remaining table.
        let next = tables.remove(ready.unwrap_or(0));
        ordered.push(next);
    }
    ordered
}

pub(crate) fn io_error(e: std::io::Error) -> DbError {
    DbError::Refused(format!("cannot write the rows: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_longer_than_the_bound_is_refused() {
        use std::io::Read as _;
        let mut out = Vec::new();
        LineLimit::new(&b"12345\n1234\n\n12345\n"[..], 6)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), 18);
        let err = LineLimit::new(&b"12345\n123456\n"[..], 6)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("6 bytes"), "{err}");
        // Writing: the same bound.
        let mut sink = LineLimit::new(Vec::new(), 6);
        sink.write_all(b"12345\n").unwrap();
        assert!(sink.write_all(b"1234567").is_err());
        // Without a newline at all.
        let endless = std::io::repeat(b'x').take(1 << 20);
        let err = digest_of(LineLimit::new(endless, 1 << 10)).unwrap_err();
        assert!(err.to_string().contains("1 KiB"), "{err}");
    }

    fn table(name: &str, references: &[&str]) -> Table {
        Table {
            name: name.into(),
            columns: vec![],
            key: vec![],
            tenant_column: true,
            references: references.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn referenced_tables_come_first() {
        let order = dependency_order(vec![
            table("a_lines", &["orders", "products"]),
            table("orders", &["customers"]),
            table("customers", &[]),
            table("products", &[]),
            table("tree", &["tree"]),
        ]);
        let names: Vec<&str> = order.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["customers", "orders", "products", "a_lines", "tree"]
        );
    }

    #[test]
    fn digest_counts_lines_and_hashes() {
        let d = digest_of(&b"{\"a\":1}\n{\"a\":2}\n"[..]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.rows, 2);
        assert_eq!(d.sha256.len(), 64);
        let other = digest_of(&b"{\"a\":1}\n{\"a\":3}\n"[..]).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(d.sha256, other.sha256);
    }

    #[test]
    fn shapes_must_match() {
        let target = Table {
            name: "t".into(),
            columns: vec![
                Column {
                    name: "a".into(),
                    sql_type: "integer".into(),
                    binary: false,
                },
                Column {
                    name: "b".into(),
                    sql_type: "bytea".into(),
                    binary: true,
                },
            ],
            key: vec![],
            tenant_column: false,
            references: vec![],
        };
        assert!(check_shape(&target, &target.columns).is_ok());
        let err = check_shape(&target, &target.columns[..1]).unwrap_err();
        assert!(err.to_string().contains("`b`"), "{err}");
        let mut text = target.columns.clone();
        text[1].binary = false;
        assert!(check_shape(&target, &text).is_err());
    }
}
