//! Tenant-scoped table service: list / get / create / update /
//! delete / count / search over one table, every statement generated with
//! validated identifiers and bind parameters, then scoped by the
//! [`Interceptor`] before it runs.
//!
//! ```
//! use tenancy::interceptor::{Interceptor, TenantTables, service::ScopedTable};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
//! sqlx::query("CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, body TEXT, pinned BOOLEAN)")
//!     .execute(&pool)
//!     .await?;
//! let interceptor = Interceptor::new(TenantTables::new(["notes"]));
//! let notes = ScopedTable::new(interceptor, "notes", "id", ["id", "body", "pinned"])?;
//! let mut conn = pool.acquire().await?;
//! let mut row = serde_json::Map::new();
//! row.insert("body".into(), "hello".into());
//! notes.create(&mut *conn, "tenant-a", &row).await?;
//! assert_eq!(notes.list(&mut *conn, "tenant-a", &Default::default(), 50, 0).await?.len(), 1);
//! assert!(notes.list(&mut *conn, "tenant-b", &Default::default(), 50, 0).await?.is_empty());
//! # Ok(()) }
//! ```

use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Column, Database, Row};

use crate::{Dialect, Interceptor, Refusal, Rewritten};

/// A JSON object: one row, a set of filters, or the fields to write.
pub type Object = Map<String, Value>;

/// Errors of the table service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A table or column name is not a plain identifier.
    #[error("`{0}` is not a valid identifier (letters, digits and `_`, not starting with a digit)")]
    InvalidIdentifier(String),
    /// The table is not one of the interceptor's tenant tables.
    #[error(
        "table `{0}` is not a tenant table of this interceptor; the service only serves scoped tables"
    )]
    NotTenantTable(String),
    /// A field or filter names a column the service does not expose.
    #[error("unknown column `{0}`")]
    UnknownColumn(String),
    /// A value has a JSON type that cannot be bound (arrays, objects).
    #[error("the value of `{0}` must be a string, number, boolean or null")]
    UnsupportedValue(String),
    /// An integer does not fit in 64 bits (it is refused, never rounded).
    #[error(
        "the value of `{0}` is an integer beyond 64 bits (from -9223372036854775808 to 9223372036854775807)"
    )]
    IntegerOutOfRange(String),
    /// Nothing to write.
    #[error("no fields given")]
    NoFields,
    /// The interceptor refused the generated statement.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

fn valid_ident(s: &str) -> Result<String, ServiceError> {
    let ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(ServiceError::InvalidIdentifier(s.to_owned()))
    }
}

/// A generated statement and its parameters (the tenant is bound last).
struct Plan {
    sql: String,
    /// Each value with the field or parameter it came from, for errors.
    params: Vec<(String, Value)>,
    /// How placeholders are written.
    dialect: Dialect,
}

impl Plan {
    /// No statement yet, no parameters.
    fn new(dialect: Dialect) -> Self {
        Self {
            sql: String::new(),
            params: Vec::new(),
            dialect,
        }
    }

    /// Adds `value` (from the field or parameter `name`) as the next
    /// parameter; returns its placeholder.
    fn param(&mut self, name: &str, value: Value) -> String {
        self.params.push((name.to_owned(), value));
        match self.dialect {
            Dialect::Postgres => format!("${}", self.params.len()),
            Dialect::Sqlite => format!("?{}", self.params.len()),
        }
    }
}

/// A tenant-scoped view of one table.
#[derive(Debug, Clone)]
pub struct ScopedTable {
    interceptor: Interceptor,
    table: String,
    key: String,
    columns: Vec<String>,
}

impl ScopedTable {
    /// Serve `table` (a tenant table of `interceptor`) with primary key
    /// column `key` and the exposed `columns` (the key is added if missing;
    /// the tenant column is never exposed).
    pub fn new<I, S>(
        interceptor: Interceptor,
        table: &str,
        key: &str,
        columns: I,
    ) -> Result<Self, ServiceError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let table = valid_ident(table)?;
        let key = valid_ident(key)?;
        let tenant_column = interceptor.tables().tenant_column().to_owned();
        let mut cols = vec![key.clone()];
        for c in columns {
            let c = valid_ident(c.as_ref())?;
            if c == tenant_column {
                return Err(ServiceError::UnknownColumn(c));
            }
            if !cols.contains(&c) {
                cols.push(c);
            }
        }
        let probe = format!("SELECT 1 FROM {table}");
        let scoped = interceptor.rewrite(&probe, Dialect::Postgres)?;
        if scoped.tenant_param().is_none() {
            return Err(ServiceError::NotTenantTable(table));
        }
        Ok(Self {
            interceptor,
            table,
            key,
            columns: cols,
        })
    }

    fn column(&self, name: &str) -> Result<&str, ServiceError> {
        self.columns
            .iter()
            .find(|c| *c == name)
            .map(String::as_str)
            .ok_or_else(|| ServiceError::UnknownColumn(name.to_owned()))
    }

    fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `"column" = placeholder` for each of `fields`, in order, each value
    /// a parameter of `plan`.
    fn equalities(&self, fields: &Object, plan: &mut Plan) -> Result<Vec<String>, ServiceError> {
        fields
            .iter()
            .map(|(name, value)| {
                let c = self.column(name)?;
                Ok(format!("\"{c}\" = {}", plan.param(c, value.clone())))
            })
            .collect()
    }

    /// ` WHERE "key" = placeholder`, `id` a parameter of `plan`.
    fn where_key(&self, id: &Value, plan: &mut Plan) -> String {
        let p = plan.param(&self.key, id.clone());
        format!(" WHERE \"{}\" = {p}", self.key)
    }

    fn where_filters(&self, filters: &Object, plan: &mut Plan) -> Result<String, ServiceError> {
        let parts = self.equalities(filters, plan)?;
        Ok(if parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", parts.join(" AND "))
        })
    }

    fn plan_list(
        &self,
        filters: &Object,
        limit: i64,
        offset: i64,
        d: Dialect,
    ) -> Result<Plan, ServiceError> {
        let mut plan = Plan::new(d);
        let w = self.where_filters(filters, &mut plan)?;
        let l = plan.param("limit", Value::from(limit.max(0)));
        let o = plan.param("offset", Value::from(offset.max(0)));
        plan.sql = format!(
            "SELECT {} FROM \"{}\"{w} ORDER BY \"{}\" LIMIT {l} OFFSET {o}",
            self.select_list(),
            self.table,
            self.key
        );
        Ok(plan)
    }

    fn plan_get(&self, id: &Value, d: Dialect) -> Plan {
        let mut plan = Plan::new(d);
        let w = self.where_key(id, &mut plan);
        plan.sql = format!("SELECT {} FROM \"{}\"{w}", self.select_list(), self.table);
        plan
    }

    fn plan_create(&self, fields: &Object, d: Dialect) -> Result<Plan, ServiceError> {
        if fields.is_empty() {
            return Err(ServiceError::NoFields);
        }
        let mut plan = Plan::new(d);
        let mut cols = Vec::new();
        let mut vals = Vec::new();
        for (name, value) in fields {
            let c = self.column(name)?;
            cols.push(format!("\"{c}\""));
            vals.push(plan.param(c, value.clone()));
        }
        plan.sql = format!(
            "INSERT INTO \"{}\" ({}) VALUES ({}) RETURNING {}",
            self.table,
            cols.join(", "),
            vals.join(", "),
            self.select_list()
        );
        Ok(plan)
    }

    fn plan_update(&self, id: &Value, fields: &Object, d: Dialect) -> Result<Plan, ServiceError> {
        if fields.is_empty() {
            return Err(ServiceError::NoFields);
        }
        let mut plan = Plan::new(d);
        let sets = self.equalities(fields, &mut plan)?;
        let w = self.where_key(id, &mut plan);
        plan.sql = format!(
            "UPDATE \"{}\" SET {}{w} RETURNING {}",
            self.table,
            sets.join(", "),
            self.select_list()
        );
        Ok(plan)
    }

    fn plan_delete(&self, id: &Value, d: Dialect) -> Plan {
        let mut plan = Plan::new(d);
        let w = self.where_key(id, &mut plan);
        plan.sql = format!(
            "DELETE FROM \"{}\"{w} RETURNING \"{}\"",
            self.table, self.key
        );
        plan
    }

    fn plan_count(&self, filters: &Object, d: Dialect) -> Result<Plan, ServiceError> {
        let mut plan = Plan::new(d);
        let w = self.where_filters(filters, &mut plan)?;
        plan.sql = format!("SELECT count(*) AS n FROM \"{}\"{w}", self.table);
        Ok(plan)
    }

    fn plan_text_bytes(&self, d: Dialect) -> Plan {
        let mut plan = Plan::new(d);
        let lengths = self
            .columns
            .iter()
            .map(|c| format!("COALESCE(LENGTH(CAST(\"{c}\" AS TEXT)), 0)"))
            .collect::<Vec<_>>()
            .join(" + ");
        plan.sql = format!(
            "SELECT CAST(COALESCE(SUM({lengths}), 0) AS BIGINT) AS n FROM \"{}\"",
            self.table
        );
        plan
    }

    fn plan_search(
        &self,
        text: &str,
        columns: &[&str],
        limit: i64,
        d: Dialect,
    ) -> Result<Plan, ServiceError> {
        let mut plan = Plan::new(d);
        let escaped: String = text
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let p = plan.param("q", Value::from(format!("%{escaped}%")));
        let like = match d {
            Dialect::Postgres => "ILIKE",
            Dialect::Sqlite => "LIKE",
        };
        let mut ors = Vec::new();
        for c in columns {
            let c = self.column(c)?;
            ors.push(format!("CAST(\"{c}\" AS TEXT) {like} {p} ESCAPE '\\'"));
        }
        if ors.is_empty() {
            return Err(ServiceError::NoFields);
        }
        let l = plan.param("limit", Value::from(limit.max(0)));
        plan.sql = format!(
            "SELECT {} FROM \"{}\" WHERE ({}) ORDER BY \"{}\" LIMIT {l}",
            self.select_list(),
            self.table,
            ors.join(" OR "),
            self.key
        );
        Ok(plan)
    }

    fn scope(&self, plan: &Plan) -> Result<Rewritten, ServiceError> {
        let scoped = self.interceptor.rewrite(&plan.sql, plan.dialect)?;
        if scoped.tenant_param() != Some(plan.params.len() + 1) {
            return Err(Refusal::Internal("service statement was not scoped".into()).into());
        }
        Ok(scoped)
    }
}

/// The one place generated SQL becomes a sqlx query: the text has been
/// produced by [`ScopedTable`] from validated identifiers and scoped by the
/// interceptor; every value is bound.
fn audited_query<'q, DB: Database>(
    scoped: &Rewritten,
) -> sqlx::query::Query<'q, DB, <DB as Database>::Arguments> {
    sqlx::query(AssertSqlSafe(scoped.sql_arc()))
}

/// A connection of either backend, for [`ScopedTable`]'s methods: made
/// from `&mut PgConnection` or `&mut SqliteConnection` (`&mut *tx` of a
/// transaction).
#[non_exhaustive]
pub enum Conn<'c> {
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(&'c mut sqlx::PgConnection),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(&'c mut sqlx::SqliteConnection),
}

#[cfg(feature = "postgres")]
impl<'c> From<&'c mut sqlx::PgConnection> for Conn<'c> {
    fn from(conn: &'c mut sqlx::PgConnection) -> Self {
        Self::Postgres(conn)
    }
}

#[cfg(feature = "sqlite")]
impl<'c> From<&'c mut sqlx::SqliteConnection> for Conn<'c> {
    fn from(conn: &'c mut sqlx::SqliteConnection) -> Self {
        Self::Sqlite(conn)
    }
}

impl Conn<'_> {
    /// The SQL dialect of the connection.
    fn dialect(&self) -> Dialect {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => Dialect::Postgres,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => Dialect::Sqlite,
        }
    }
}

/// Runs a planned statement on one backend: scoped by the interceptor,
/// its values bound, the tenant bound last.
macro_rules! run_on {
    ($name:ident, $feature:literal, $db:ty, $conn:ty, $row:ty) => {
        #[cfg(feature = $feature)]
        impl ScopedTable {
            async fn $name(
                &self,
                conn: &mut $conn,
                plan: Plan,
                tenant: &str,
            ) -> Result<Vec<Object>, ServiceError> {
                let scoped = self.scope(&plan)?;
                let mut q = audited_query::<$db>(&scoped);
                for (name, v) in plan.params {
                    q = match v {
                        Value::Null => q.bind(None::<String>),
                        Value::Bool(b) => q.bind(b),
                        Value::Number(n) => match (n.as_i64(), n.is_f64()) {
                            (Some(i), _) => q.bind(i),
                            (None, true) => q.bind(n.as_f64()),
                            // Beyond i64: never rounded into a float.
                            (None, false) => return Err(ServiceError::IntegerOutOfRange(name)),
                        },
                        Value::String(s) => q.bind(s),
                        _ => return Err(ServiceError::UnsupportedValue(name)),
                    };
                }
                let rows = q.bind(tenant.to_owned()).fetch_all(&mut *conn).await?;
                Ok(rows.iter().map(|r| row_to_object::<$db, $row>(r)).collect())
            }
        }
    };
}

run_on!(
    run_pg,
    "postgres",
    sqlx::Postgres,
    sqlx::PgConnection,
    sqlx::postgres::PgRow
);
run_on!(
    run_sqlite,
    "sqlite",
    sqlx::Sqlite,
    sqlx::SqliteConnection,
    sqlx::sqlite::SqliteRow
);

impl ScopedTable {
    /// Plans a statement in the dialect of `conn` and runs it there.
    async fn run<'c>(
        &self,
        conn: impl Into<Conn<'c>>,
        tenant: &str,
        plan: impl FnOnce(Dialect) -> Result<Plan, ServiceError>,
    ) -> Result<Vec<Object>, ServiceError> {
        let conn = conn.into();
        let plan = plan(conn.dialect())?;
        match conn {
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => self.run_pg(conn, plan, tenant).await,
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(conn) => self.run_sqlite(conn, plan, tenant).await,
        }
    }

    /// Lists the tenant's rows ordered by key, with equality filters on
    /// exposed columns.
    pub async fn list<'c>(
        &self,
        conn: impl Into<Conn<'c>>,
        tenant: &str,
        filters: &Object,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Object>, ServiceError> {
        self.run(conn, tenant, |d| self.plan_list(filters, limit, offset, d))
            .await
    }

    /// Gets one of the tenant's rows by key.
    pub async fn get<'c>(
        &self,
        conn: impl Into<Conn<'c>>,
        tenant: &str,
        id: &Value,
    ) -> Result<Option<Object>, ServiceError> {
        let rows = self.run(conn, tenant, |d| Ok(self.plan_get(id, d))).await?;
        Ok(rows.into_iter().next())
    }

    /// Creates a row; the tenant column is filled by the interceptor.
    pub async fn create<'c>(
        &self,
        conn: impl Into<Conn<'c>>,
        tenant: &str,
        fields: &Object,
    ) -> Result<Object, ServiceError> {
        self.run(conn, tenant, |d| self.plan_create(fields, d))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Refusal::Internal("INSERT returned no row".into()).into())
    }

    /// Updates the given fields of one of the tenant's rows; `None` if the
    /// tenant has no such row.
    pub async fn update<'c>(
        &self,
        conn: impl Into<Conn<'c>>,
        tenant: &str,
        id: &Value,
        fields: &Object,
    ) -> Result<Option<Object>, ServiceError> {
        let rows = self
            .run(conn, tenant, |d| self.plan_update(id, fields, d))
            .await?;
        Ok(rows.into_iter().next())
    }

    /// Deletes one of the tenant's rows; `false` if the tenant has no such row.
    pub async fn delete<'c>(
        &self,
        conn: impl Into<Conn<'c>>,
        tenant: &str,
        id: &Value,
    ) -> Result<bool, ServiceError> {
        let rows = self
            .run(conn, tenant, |d| Ok(self.plan_delete(id, d)))
            .await?;
        Ok(!rows.is_empty())
    }

    /// Counts the tenant's rows matching equality filters.
    pub async fn count<'c>(
        &self,
        conn: impl Into<Conn<'c>>,
        tenant: &str,
        filters: &Object,
    ) -> Result<i64, ServiceError> {
        let rows = self
            .run(conn, tenant, |d| self.plan_count(filters, d))
            .await?;
        Ok(first_n(&rows))
    }

    /// An estimate of the tenant's data in this table: the length of the
    /// text of each exposed column, summed over its rows (what usage
    /// metering samples as storage under row-level isolation, where
    /// tenants share the table's pages).
    pub async fn text_bytes<'c>(
        &self,
        conn: impl Into<Conn<'c>>,
        tenant: &str,
    ) -> Result<i64, ServiceError> {
        let rows = self
            .run(conn, tenant, |d| Ok(self.plan_text_bytes(d)))
            .await?;
        Ok(first_n(&rows))
    }

    /// The tenant's rows whose given columns contain `text` (case-insensitive).
    pub async fn search<'c>(
        &self,
        conn: impl Into<Conn<'c>>,
        tenant: &str,
        text: &str,
        columns: &[&str],
        limit: i64,
    ) -> Result<Vec<Object>, ServiceError> {
        self.run(conn, tenant, |d| self.plan_search(text, columns, limit, d))
            .await
    }
}

/// The `n` column of the first row (a count or a sum), 0 when absent.
fn first_n(rows: &[Object]) -> i64 {
    rows.first()
        .and_then(|r| r.get("n"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// A row as a JSON object (integers, floats, text, booleans; other types as
/// null).
///
/// The column's declared type picks the decoder first, so a text cell costs
/// one decode rather than a chain of failed attempts (each failure builds an
/// error); undeclared or unusual types fall back to trying each in turn.
pub fn row_to_object<DB, R>(row: &R) -> Object
where
    DB: Database<Row = R>,
    R: Row<Database = DB>,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> i32: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> f64: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> bool: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'r> String: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
{
    use sqlx::TypeInfo;
    let mut out = Object::new();
    for (i, col) in row.columns().iter().enumerate() {
        let ty = col.type_info().name().to_ascii_uppercase();
        let text = || {
            row.try_get::<Option<String>, _>(i)
                .ok()
                .map(|v| v.map_or(Value::Null, Value::from))
        };
        let int = || {
            row.try_get::<Option<i64>, _>(i)
                .ok()
                .map(|v| v.map_or(Value::Null, Value::from))
                .or_else(|| {
                    row.try_get::<Option<i32>, _>(i)
                        .ok()
                        .map(|v| v.map_or(Value::Null, Value::from))
                })
        };
        let first = match ty.as_str() {
            "TEXT" | "VARCHAR" | "CHAR" | "BPCHAR" | "NAME" | "CITEXT" => text(),
            "INTEGER" | "INT8" | "BIGINT" | "INT4" | "INT" | "INT2" | "SMALLINT" => int(),
            _ => None,
        };
        let v = first.unwrap_or_else(|| {
            if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                v.map_or(Value::Null, Value::from)
            } else if let Ok(v) = row.try_get::<Option<i32>, _>(i) {
                v.map_or(Value::Null, Value::from)
            } else if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
                v.map_or(Value::Null, Value::from)
            } else if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
                v.map_or(Value::Null, Value::from)
            } else if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                v.map_or(Value::Null, Value::from)
            } else {
                Value::Null
            }
        });
        out.insert(col.name().to_owned(), v);
    }
    out
}
