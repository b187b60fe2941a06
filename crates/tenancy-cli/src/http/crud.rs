//! Tenant-aware CRUD resources, scoped by the isolation strategy
//! and, on shared tables, by the query interceptor.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use sqlx::{Postgres, Sqlite, Transaction};
use tenancy::{Tenant, TenantId};
use tenancy_interceptor::service::{Conn, Object, ServiceError};

use super::{ServerState, problem};
use crate::app::{App, ColumnType, Resource};
use crate::ops::portability::MOVING_KEY;

/// The resources under `/api` and, for the path resolver, under
/// `/tenants/{tenant}/api`. `guard` puts the tenant layers on each method
/// (route layers): a method a route does not serve is 405 at once, before
/// any tenant is resolved or required.
pub(super) fn routes(
    guard: impl Fn(MethodRouter<ServerState>) -> MethodRouter<ServerState>,
) -> Router<ServerState> {
    let mut router = Router::new();
    for prefix in ["/api", "/tenants/{tenant}/api"] {
        router = router
            .route(
                &format!("{prefix}/{{resource}}"),
                guard(get(list).post(create)),
            )
            .route(
                &format!("{prefix}/{{resource}}/{{id}}"),
                guard(get(show).patch(update).delete(remove)),
            );
    }
    router
}

/// The largest page (`limit`).
const MAX_LIMIT: i64 = 1000;
/// The furthest page start (`offset`).
const MAX_OFFSET: i64 = 1_000_000_000;

enum Tx {
    Pg(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

async fn open(app: &App, tenant: &TenantId) -> Result<Tx, Response> {
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::error!(
            request_id = %super::connections::current_request_id(),
            error = %e,
            "cannot open a scoped transaction"
        );
        unavailable(
            "database_unavailable",
            "the tenant database is unavailable: retry after the delay",
            1,
        )
    };
    match &app.db {
        crate::app::ScopedDb::Postgres(db) => db.begin_for(tenant).await.map(Tx::Pg).map_err(|e| {
            if missing(&e) {
                storage_missing(&e)
            } else {
                unavailable(&e)
            }
        }),
        _ => match app.sqlite_tx(tenant).await {
            Ok(Some(tx)) => Ok(Tx::Sqlite(tx)),
            Ok(None) => Err(unavailable(&"no SQLite transaction")),
            Err(e) if missing(&e) => Err(storage_missing(&e)),
            Err(e) => Err(unavailable(&e)),
        },
    }
}

/// Whether opening a scoped transaction failed because the tenant's
/// storage is gone.
fn missing(e: &tenancy_sql::DbError) -> bool {
    match e {
        tenancy_sql::DbError::MissingStorage(_) => true,
        tenancy_sql::DbError::Sql(e) => e
            .as_database_error()
            .is_some_and(tenancy_sql::is_missing_storage),
        _ => false,
    }
}

impl Tx {
    /// The transaction's connection, for the table service.
    fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Pg(tx) => Conn::from(&mut **tx),
            Tx::Sqlite(tx) => Conn::from(&mut **tx),
        }
    }

    /// Serializes the creates of `tenant` in `resource` until this
    /// transaction ends: a transaction-scoped advisory lock on PostgreSQL.
    /// SQLite needs none: its one writer is taken by the insert, before
    /// the count.
    async fn serialize_creates(
        &mut self,
        tenant: &str,
        resource: &str,
    ) -> Result<(), ServiceError> {
        if let Tx::Pg(tx) = self {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("tenancy.rows/{tenant}/{resource}"))
                .execute(&mut **tx)
                .await
                .map_err(ServiceError::Database)?;
        }
        Ok(())
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Pg(tx) => tx.commit().await,
            Tx::Sqlite(tx) => tx.commit().await,
        }
    }
}

/// Runs `work` on a transaction scoped to `tenant` and commits when it
/// succeeded; a failure is the problem response naming `columns`.
async fn scoped<T>(
    app: &App,
    tenant: &TenantId,
    columns: &[String],
    work: impl AsyncFnOnce(&mut Tx) -> Result<T, ServiceError>,
) -> Result<T, Response> {
    let mut tx = open(app, tenant).await?;
    match work(&mut tx).await {
        Ok(v) => tx
            .commit()
            .await
            .map(|()| v)
            .map_err(|e| service_problem(ServiceError::Database(e), columns)),
        Err(e) => Err(service_problem(e, columns)),
    }
}

/// 503 with `Retry-After` while the tenant's writes are paused by a move.
async fn writes_paused(app: &App, tenant: &TenantId) -> Option<Response> {
    let overrides = app.tenancy.config_store().overrides(tenant).await.ok()?;
    overrides.get(MOVING_KEY)?;
    Some(unavailable(
        "writes_paused",
        "this tenant's data is being moved to another server: writes pause for a few seconds, retry after the delay",
        2,
    ))
}

fn unavailable(code: &'static str, detail: &str, retry_after: u64) -> Response {
    tenancy::Problem::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
        .retry_after(retry_after)
        .into_response()
}

/// Marks a response as caused by a tenant's missing storage, for
/// `GET /health`.
#[derive(Clone, Copy, Debug)]
pub(super) struct StorageMissing;

fn storage_missing(error: &dyn std::fmt::Display) -> Response {
    tracing::error!(
        request_id = %super::connections::current_request_id(),
        error = %error,
        "tenant storage missing"
    );
    let mut response = unavailable(
        "tenant_storage_missing",
        "this tenant's storage (schema, database or file) is missing: an operator must restore it; \
         the server log has the details under this request_id",
        30,
    );
    response.extensions_mut().insert(StorageMissing);
    response
}

/// The field a database error is about, when it names one of the
/// resource's columns (nothing else of its text reaches the client).
fn field_of(db: &(dyn sqlx::error::DatabaseError + 'static), columns: &[String]) -> Option<String> {
    let named = db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(|pg| pg.column().map(str::to_owned))
        .or_else(|| {
            // Postgres: `column "id" is of type bigint …`.
            let message = db.message();
            let rest = &message[message.find("column \"")? + 8..];
            Some(rest[..rest.find('"')?].to_owned())
        })
        .or_else(|| {
            // SQLite: `NOT NULL constraint failed: notes.title`.
            let (_, column) = db.message().rsplit_once(": ")?;
            Some(column.rsplit('.').next()?.to_owned())
        })?;
    columns.iter().find(|c| **c == named).cloned()
}

fn service_problem(err: ServiceError, columns: &[String]) -> Response {
    let request_id = super::connections::current_request_id();
    match &err {
        ServiceError::Database(db) => {
            if let Some(d) = db.as_database_error() {
                if tenancy_sql::is_missing_storage(d) {
                    return storage_missing(db);
                }
                let code = d.code().unwrap_or_default();
                // A read-only tenant database: a move paused its writes.
                if code == "25006" {
                    return unavailable(
                        "writes_paused",
                        "this tenant's data is being moved to another server: retry after the delay",
                        2,
                    );
                }
                // Connection, resource and operator-intervention classes:
                // the database is going away or not there.
                if ["08", "53", "57"]
                    .iter()
                    .any(|class| code.starts_with(class))
                {
                    tracing::error!(%request_id, error = %db, "database unavailable");
                    return unavailable(
                        "database_unavailable",
                        "the database is unavailable: retry after the delay",
                        1,
                    );
                }
                if d.is_unique_violation() {
                    return problem(
                        StatusCode::CONFLICT,
                        "duplicate",
                        "a row with this key already exists",
                    );
                }
                // The value was wrong for its column: data exceptions (22),
                // integrity (23), type mismatches (42804, 42883) and
                // SQLite's constraint (19) and mismatch (20) codes.
                let input = code.starts_with("22")
                    || code.starts_with("23")
                    || matches!(
                        code.as_ref(),
                        "42804" | "42883" | "19" | "20" | "275" | "787" | "1299" | "2067" | "1555"
                    )
                    || d.is_check_violation()
                    || d.is_foreign_key_violation();
                if input {
                    tracing::warn!(%request_id, error = %db, "input refused by the database");
                    let what = if d.kind() == sqlx::error::ErrorKind::NotNullViolation {
                        "is required"
                    } else {
                        "has a value its column does not accept"
                    };
                    let detail = match field_of(d, columns) {
                        Some(field) => format!("`{field}` {what}"),
                        None => format!("a field {what}"),
                    };
                    return problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", detail);
                }
            }
            // Anything else is the server's fault: its text stays in the
            // log, under the request's id.
            tracing::error!(%request_id, error = %db, "database error");
            if db.as_database_error().is_some() {
                return problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "database_error",
                    "the request failed in the database; the server log has the details under this request_id",
                );
            }
            unavailable(
                "database_unavailable",
                "the database is unavailable: retry after the delay",
                1,
            )
        }
        ServiceError::UnknownColumn(c) if c == "tenant_id" => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "tenant_field_refused",
            "the tenant is taken from the request, never from the body: remove `tenant_id`",
        ),
        ServiceError::Refused(_) => {
            tracing::error!(%request_id, error = %err, "generated statement refused");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "statement_refused",
                "the query interceptor refused the generated statement; the server log has the details",
            )
        }
        _ => problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", err),
    }
}

fn resource<'a>(app: &'a App, params: &HashMap<String, String>) -> Result<&'a Resource, Response> {
    let name = params
        .get("resource")
        .map(String::as_str)
        .unwrap_or_default();
    app.resource(name).ok_or_else(|| {
        problem(
            StatusCode::NOT_FOUND,
            "unknown_resource",
            format!("no resource `{name}`"),
        )
    })
}

/// A path or query value as JSON: integers and booleans typed, else text.
fn typed(value: &str) -> Value {
    if let Ok(n) = value.parse::<i64>() {
        return json!(n);
    }
    match value {
        "true" => json!(true),
        "false" => json!(false),
        _ => json!(value),
    }
}

/// The row id of the path, typed as the key column when its type is known
/// (`None`: it cannot name a row, so the row is not found).
fn id_param(res: &Resource, params: &HashMap<String, String>) -> Option<Value> {
    let raw = params.get("id").map(String::as_str).unwrap_or_default();
    match res
        .types
        .iter()
        .find(|(c, _)| *c == res.columns[0])
        .map(|(_, t)| *t)
    {
        Some(ColumnType::Integer) => raw.parse::<i64>().ok().map(Value::from),
        Some(ColumnType::Text) => Some(Value::from(raw)),
        None => Some(typed(raw)),
    }
}

/// Whether `content-type` names JSON.
pub(super) fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .is_some_and(|m| {
            m.eq_ignore_ascii_case("application/json")
                || (m.len() > 5 && m[m.len() - 5..].eq_ignore_ascii_case("+json"))
        })
}

/// The body as an object of scalar fields: every refusal names its field,
/// and an integer beyond 64 bits is refused, never rounded into a float.
fn body_object(
    res: &Resource,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<Object, Response> {
    let invalid = |code: &'static str, detail: String| {
        Err(problem(StatusCode::UNPROCESSABLE_ENTITY, code, detail))
    };
    if !is_json(headers) {
        return invalid(
            "invalid_body",
            "send the body as JSON, with `content-type: application/json`".into(),
        );
    }
    let fields: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
        match serde_json::from_slice(body) {
            Ok(fields) => fields,
            Err(e) if e.is_syntax() || e.is_eof() => {
                return invalid("invalid_body", format!("the body is not valid JSON: {e}"));
            }
            Err(_) => return invalid("invalid_body", "the body must be a JSON object".into()),
        };
    let mut object = Map::new();
    for (name, raw) in fields {
        if res.read_only.contains(&name) {
            return invalid(
                "invalid_value",
                format!("`{name}` is read-only: the database assigns it"),
            );
        }
        let text = raw.get();
        let integer_literal = text.bytes().all(|b| b.is_ascii_digit() || b == b'-')
            && text.bytes().any(|b| b.is_ascii_digit());
        if integer_literal && text.parse::<i64>().is_err() {
            return invalid(
                "invalid_value",
                format!(
                    "`{name}` is an integer beyond 64 bits (-9223372036854775808 to 9223372036854775807): send it as a string"
                ),
            );
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(_) | Value::Object(_)) => {
                return invalid(
                    "invalid_value",
                    format!("`{name}` must be a string, number, boolean or null"),
                );
            }
            Ok(value) => {
                let expected = res.types.iter().find(|(c, _)| *c == name).map(|(_, t)| *t);
                let fits = match (expected, &value) {
                    (None, _) => true,
                    (Some(ColumnType::Integer), Value::Number(n)) => n.is_i64(),
                    (Some(ColumnType::Text), Value::String(text)) => !text.contains('\0'),
                    _ => false,
                };
                if !fits {
                    let what = match expected {
                        Some(ColumnType::Integer) => "an integer",
                        _ => "a string without NUL characters",
                    };
                    return invalid("invalid_value", format!("`{name}` must be {what}"));
                }
                object.insert(name, value);
            }
            Err(e) => return invalid("invalid_body", format!("`{name}`: {e}")),
        }
    }
    Ok(object)
}

struct Page {
    limit: i64,
    offset: i64,
    search: Option<String>,
    filters: Object,
}

fn page(query: HashMap<String, String>) -> Result<Page, Response> {
    let mut page = Page {
        limit: 50,
        offset: 0,
        search: None,
        filters: Map::new(),
    };
    for (k, v) in query {
        let number = |v: &str, max: i64| {
            v.parse::<i64>()
                .ok()
                .filter(|n| (0..=max).contains(n))
                .ok_or_else(|| {
                    problem(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_query",
                        format!("`{k}` must be an integer from 0 to {max}"),
                    )
                })
        };
        match k.as_str() {
            "limit" => page.limit = number(&v, MAX_LIMIT)?,
            "offset" => page.offset = number(&v, MAX_OFFSET)?,
            "q" => page.search = Some(v),
            _ => {
                page.filters.insert(k, typed(&v));
            }
        }
    }
    Ok(page)
}

#[utoipa::path(get,
    path = "/api/{resource}",
    tag = "tenant",
    summary = "List the tenant's rows",
    params(("resource" = String, Path, description = "Resource name (notes by default)"), ("limit" = Option<i64>, Query, description = "Page size (0–1000, default 50)", minimum = 0, maximum = 1000), ("offset" = Option<i64>, Query, description = "Page start (at most 1,000,000,000)", minimum = 0, maximum = 1000000000), ("q" = Option<String>, Query, description = "Text search")),
    responses((status = 200, description = "Rows", body = super::docs::RowsDoc),
        super::docs::TenantRouteErrors))]
pub(super) async fn list(
    State(state): State<ServerState>,
    tenant: Tenant,
    Path(params): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let res = match resource(&state.app, &params) {
        Ok(r) => r,
        Err(r) => return r,
    };
    list_for(&state.app, res, &tenant.id, query).await
}

async fn list_for(
    app: &App,
    res: &Resource,
    tenant: &TenantId,
    query: HashMap<String, String>,
) -> Response {
    let p = match page(query) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let t = tenant.as_str();
    let search_cols: Vec<&str> = res.search.iter().map(String::as_str).collect();
    let result = scoped(app, tenant, &res.columns, async |tx: &mut Tx| {
        match &p.search {
            Some(q) => {
                let items = res
                    .table
                    .search(tx.conn(), t, q, &search_cols, p.limit)
                    .await?;
                let total = i64::try_from(items.len()).unwrap_or(i64::MAX);
                Ok((items, total))
            }
            None => {
                let items = res
                    .table
                    .list(tx.conn(), t, &p.filters, p.limit, p.offset)
                    .await?;
                let total = res.table.count(tx.conn(), t, &p.filters).await?;
                Ok((items, total))
            }
        }
    })
    .await;
    match result {
        Ok((items, total)) => Json(json!({"items": items, "total": total})).into_response(),
        Err(r) => r,
    }
}

#[utoipa::path(get,
    path = "/api/{resource}/{id}",
    tag = "tenant",
    summary = "One of the tenant's rows",
    params(("resource" = String, Path, description = "Resource name (notes by default)"), ("id" = String, Path, description = "Row id")),
    responses((status = 200, description = "The row", body = Object),
        super::docs::TenantRouteErrors))]
pub(super) async fn show(
    State(state): State<ServerState>,
    tenant: Tenant,
    Path(params): Path<HashMap<String, String>>,
) -> Response {
    let res = match resource(&state.app, &params) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(id) = id_param(res, &params) else {
        return not_found(&params);
    };
    let t = tenant.id.as_str();
    let result = scoped(&state.app, &tenant.id, &res.columns, async |tx: &mut Tx| {
        res.table.get(tx.conn(), t, &id).await
    })
    .await;
    match result {
        Ok(Some(row)) => Json(row).into_response(),
        Ok(None) => not_found(&params),
        Err(r) => r,
    }
}

fn not_found(params: &HashMap<String, String>) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no {} with id {} in this tenant",
            params.get("resource").map(String::as_str).unwrap_or("row"),
            params.get("id").map(String::as_str).unwrap_or_default()
        ),
    )
}

#[utoipa::path(post,
    path = "/api/{resource}",
    tag = "tenant",
    summary = "Create a row for the tenant",
    request_body = Object,
    params(("resource" = String, Path, description = "Resource name (notes by default)")),
    responses((status = 201, description = "The row", body = Object),
        super::docs::TenantRouteErrors,
        super::docs::DuplicateKey))]
pub(super) async fn create(
    State(state): State<ServerState>,
    tenant: Tenant,
    Path(params): Path<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (res, fields) = match resource(&state.app, &params)
        .and_then(|res| Ok((res, body_object(res, &headers, &body)?)))
    {
        Ok(input) => input,
        Err(r) => return r,
    };
    let t = tenant.id.as_str();
    if let Some(paused) = writes_paused(&state.app, &tenant.id).await {
        return paused;
    }
    // The tenant's row quota for this resource (`limits.rows.<resource>`).
    let limit_name = format!("rows.{}", res.name);
    let limit = match state.app.tenancy.limit(&tenant, &limit_name).await {
        Ok(limit) => limit,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the tenant's limits");
            return unavailable(
                "config_store_unavailable",
                "cannot read the tenant's limits: retry after the delay",
                1,
            );
        }
    };
    let Some(limit) = limit else {
        let result = scoped(&state.app, &tenant.id, &res.columns, async |tx: &mut Tx| {
            res.table.create(tx.conn(), t, &fields).await
        })
        .await;
        return match result {
            Ok(row) => {
                state.app.tenancy.usage().rows_created(&tenant.id, 1);
                (StatusCode::CREATED, Json(row)).into_response()
            }
            Err(r) => r,
        };
    };
    // Exactly `limit` rows under any concurrency: creates of this tenant
    // and resource are serialized (a transaction-scoped advisory lock on
    // PostgreSQL; SQLite's one writer, taken by the insert), the row is
    // written, then counted, and the transaction rolls back past the limit,
    // so nothing is left half written.
    let mut tx = match open(&state.app, &tenant.id).await {
        Ok(tx) => tx,
        Err(r) => return r,
    };
    let written = async {
        tx.serialize_creates(t, &res.name).await?;
        let row = res.table.create(tx.conn(), t, &fields).await?;
        let count = res.table.count(tx.conn(), t, &Map::new()).await?;
        Ok::<_, ServiceError>((row, u64::try_from(count).unwrap_or(0)))
    }
    .await;
    match written {
        Ok((_, count)) if count > limit => {
            drop(tx);
            tenancy::feature::quota_exceeded(&tenant, &limit_name, limit, count - 1).into_response()
        }
        Ok((row, _)) => match tx.commit().await {
            Ok(()) => {
                state.app.tenancy.usage().rows_created(&tenant.id, 1);
                (StatusCode::CREATED, Json(row)).into_response()
            }
            Err(e) => service_problem(ServiceError::Database(e), &res.columns),
        },
        Err(e) => service_problem(e, &res.columns),
    }
}

#[utoipa::path(patch,
    path = "/api/{resource}/{id}",
    tag = "tenant",
    summary = "Change one of the tenant's rows",
    request_body = Object,
    params(("resource" = String, Path, description = "Resource name (notes by default)"), ("id" = String, Path, description = "Row id")),
    responses((status = 200, description = "The row", body = Object),
        super::docs::TenantRouteErrors,
        super::docs::DuplicateKey))]
pub(super) async fn update(
    State(state): State<ServerState>,
    tenant: Tenant,
    Path(params): Path<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (res, fields) = match resource(&state.app, &params)
        .and_then(|res| Ok((res, body_object(res, &headers, &body)?)))
    {
        Ok(input) => input,
        Err(r) => return r,
    };
    let Some(id) = id_param(res, &params) else {
        return not_found(&params);
    };
    let t = tenant.id.as_str();
    if let Some(paused) = writes_paused(&state.app, &tenant.id).await {
        return paused;
    }
    let result = scoped(&state.app, &tenant.id, &res.columns, async |tx: &mut Tx| {
        res.table.update(tx.conn(), t, &id, &fields).await
    })
    .await;
    match result {
        Ok(Some(row)) => Json(row).into_response(),
        Ok(None) => not_found(&params),
        Err(r) => r,
    }
}

#[utoipa::path(delete,
    path = "/api/{resource}/{id}",
    tag = "tenant",
    summary = "Delete one of the tenant's rows",
    params(("resource" = String, Path, description = "Resource name (notes by default)"), ("id" = String, Path, description = "Row id")),
    responses((status = 204, description = "Deleted"),
        super::docs::TenantRouteErrors))]
pub(super) async fn remove(
    State(state): State<ServerState>,
    tenant: Tenant,
    Path(params): Path<HashMap<String, String>>,
) -> Response {
    let res = match resource(&state.app, &params) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(id) = id_param(res, &params) else {
        return not_found(&params);
    };
    let t = tenant.id.as_str();
    if let Some(paused) = writes_paused(&state.app, &tenant.id).await {
        return paused;
    }
    let result = scoped(&state.app, &tenant.id, &res.columns, async |tx: &mut Tx| {
        res.table.delete(tx.conn(), t, &id).await
    })
    .await;
    match result {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => not_found(&params),
        Err(r) => r,
    }
}
