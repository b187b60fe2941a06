//! Tenant-aware CRUD resources (SPEC W1), scoped by the isolation strategy
//! and, on shared tables, by the query interceptor.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use sqlx::{Postgres, Sqlite, Transaction};
use tenancy::{Tenant, TenantId};
use tenancy_interceptor::service::{Object, ServiceError};

use super::{ServerState, problem};
use crate::app::{App, Resource};

pub(super) fn routes() -> Router<ServerState> {
    Router::new()
        .route("/{resource}", get(list).post(create))
        .route("/{resource}/{id}", get(show).patch(update).delete(remove))
}

const MAX_LIMIT: i64 = 1000;

enum Tx {
    Pg(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

async fn open(app: &App, tenant: &TenantId) -> Result<Tx, Response> {
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "cannot open a scoped transaction");
        unavailable(
            "database_unavailable",
            "the tenant database is unavailable: retry after the delay",
            1,
        )
    };
    match &app.db {
        crate::app::Db::Postgres(db) => db
            .begin_for(tenant)
            .await
            .map(Tx::Pg)
            .map_err(|e| unavailable(&e)),
        _ => match app.sqlite_tx(tenant).await {
            Ok(Some(tx)) => Ok(Tx::Sqlite(tx)),
            Ok(None) => Err(unavailable(&"no SQLite transaction")),
            Err(e) => Err(unavailable(&e)),
        },
    }
}

/// Runs `$pg` or `$sqlite` with `$conn` on a scoped transaction and commits
/// when it succeeded.
macro_rules! scoped {
    ($app:expr, $tenant:expr, |$conn:ident| pg: $pg:expr, sqlite: $sq:expr) => {{
        match open($app, $tenant).await {
            Err(response) => Err(response),
            Ok(Tx::Pg(mut tx)) => {
                let $conn = &mut *tx;
                match $pg {
                    Ok(v) => tx
                        .commit()
                        .await
                        .map(|()| v)
                        .map_err(|e| service_problem(ServiceError::Database(e))),
                    Err(e) => Err(service_problem(e)),
                }
            }
            Ok(Tx::Sqlite(mut tx)) => {
                let $conn = &mut *tx;
                match $sq {
                    Ok(v) => tx
                        .commit()
                        .await
                        .map(|()| v)
                        .map_err(|e| service_problem(ServiceError::Database(e))),
                    Err(e) => Err(service_problem(e)),
                }
            }
        }
    }};
}

/// The config override `tenancy move` sets while a tenant's data is copied.
pub(crate) const MOVING_KEY: &str = "tenancy.moving";

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

fn service_problem(err: ServiceError) -> Response {
    match &err {
        ServiceError::Database(db) => {
            if let Some(code) = db.as_database_error().and_then(|d| d.code()) {
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
                    tracing::error!(error = %db, "database unavailable");
                    return unavailable(
                        "database_unavailable",
                        "the database is unavailable: retry after the delay",
                        1,
                    );
                }
            }
            if db
                .as_database_error()
                .is_some_and(|d| d.is_unique_violation())
            {
                return problem(
                    StatusCode::CONFLICT,
                    "duplicate",
                    "a row with this key already exists",
                );
            }
            if db.as_database_error().is_some() {
                return problem(StatusCode::UNPROCESSABLE_ENTITY, "rejected_by_database", db);
            }
            tracing::error!(error = %db, "database error");
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

fn id_param(params: &HashMap<String, String>) -> Value {
    typed(params.get("id").map(String::as_str).unwrap_or_default())
}

fn body_object(
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Object, Response> {
    match body {
        Ok(Json(Value::Object(map))) => Ok(map),
        Ok(_) => Err(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "the body must be a JSON object",
        )),
        Err(e) => Err(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            e.body_text(),
        )),
    }
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
        let number = |v: &str| {
            v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_query",
                    format!("`{k}` must be a non-negative integer"),
                )
            })
        };
        match k.as_str() {
            "limit" => page.limit = number(&v)?.min(MAX_LIMIT),
            "offset" => page.offset = number(&v)?,
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
    params(("resource" = String, Path, description = "Resource name (notes by default)"), ("limit" = Option<i64>, Query, description = "Page size (at most 1000)"), ("offset" = Option<i64>, Query, description = "Page start"), ("q" = Option<String>, Query, description = "Text search")),
    responses((status = 200, description = "Rows", body = super::openapi::RowsDoc),
        (status = 401, description = "No tenant named, or an invalid token", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The tenant is unknown, not active, or not among the token's memberships", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource or row", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body, filter or column", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the tenant's rate limit", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Store or database unavailable, or the tenant's writes are paused; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")))]
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
    let result = scoped!(app, tenant, |conn| pg: async {
        match &p.search {
            Some(q) => {
                let items = res.table.search_pg(&mut *conn, t, q, &search_cols, p.limit).await?;
                let total = i64::try_from(items.len()).unwrap_or(i64::MAX);
                Ok((items, total))
            }
            None => {
                let items = res.table.list_pg(&mut *conn, t, &p.filters, p.limit, p.offset).await?;
                let total = res.table.count_pg(&mut *conn, t, &p.filters).await?;
                Ok((items, total))
            }
        }
    }.await, sqlite: async {
        match &p.search {
            Some(q) => {
                let items = res.table.search_sqlite(&mut *conn, t, q, &search_cols, p.limit).await?;
                let total = i64::try_from(items.len()).unwrap_or(i64::MAX);
                Ok((items, total))
            }
            None => {
                let items = res.table.list_sqlite(&mut *conn, t, &p.filters, p.limit, p.offset).await?;
                let total = res.table.count_sqlite(&mut *conn, t, &p.filters).await?;
                Ok((items, total))
            }
        }
    }.await);
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
        (status = 401, description = "No tenant named, or an invalid token", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The tenant is unknown, not active, or not among the token's memberships", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource or row", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body, filter or column", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the tenant's rate limit", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Store or database unavailable, or the tenant's writes are paused; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")))]
pub(super) async fn show(
    State(state): State<ServerState>,
    tenant: Tenant,
    Path(params): Path<HashMap<String, String>>,
) -> Response {
    let res = match resource(&state.app, &params) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (id, t) = (id_param(&params), tenant.id.as_str());
    let result = scoped!(&state.app, &tenant.id, |conn| pg: res.table.get_pg(conn, t, &id).await,
        sqlite: res.table.get_sqlite(conn, t, &id).await);
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
            id_param(params)
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
        (status = 401, description = "No tenant named, or an invalid token", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The tenant is unknown, not active, or not among the token's memberships", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource or row", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Duplicate key", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body, filter or column", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the tenant's rate limit", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Store or database unavailable, or the tenant's writes are paused; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")))]
pub(super) async fn create(
    State(state): State<ServerState>,
    tenant: Tenant,
    Path(params): Path<HashMap<String, String>>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let res = match resource(&state.app, &params) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let fields = match body_object(body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let t = tenant.id.as_str();
    if let Some(paused) = writes_paused(&state.app, &tenant.id).await {
        return paused;
    }
    let result = scoped!(&state.app, &tenant.id, |conn| pg: res.table.create_pg(conn, t, &fields).await,
        sqlite: res.table.create_sqlite(conn, t, &fields).await);
    match result {
        Ok(row) => (StatusCode::CREATED, Json(row)).into_response(),
        Err(r) => r,
    }
}

#[utoipa::path(patch,
    path = "/api/{resource}/{id}",
    tag = "tenant",
    summary = "Change one of the tenant's rows",
    request_body = Object,
    params(("resource" = String, Path, description = "Resource name (notes by default)"), ("id" = String, Path, description = "Row id")),
    responses((status = 200, description = "The row", body = Object),
        (status = 401, description = "No tenant named, or an invalid token", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The tenant is unknown, not active, or not among the token's memberships", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource or row", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Duplicate key", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body, filter or column", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the tenant's rate limit", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Store or database unavailable, or the tenant's writes are paused; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")))]
pub(super) async fn update(
    State(state): State<ServerState>,
    tenant: Tenant,
    Path(params): Path<HashMap<String, String>>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let res = match resource(&state.app, &params) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let fields = match body_object(body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let (id, t) = (id_param(&params), tenant.id.as_str());
    if let Some(paused) = writes_paused(&state.app, &tenant.id).await {
        return paused;
    }
    let result = scoped!(&state.app, &tenant.id, |conn| pg: res.table.update_pg(conn, t, &id, &fields).await,
        sqlite: res.table.update_sqlite(conn, t, &id, &fields).await);
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
        (status = 401, description = "No tenant named, or an invalid token", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The tenant is unknown, not active, or not among the token's memberships", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such resource or row", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body, filter or column", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the tenant's rate limit", body = super::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "Store or database unavailable, or the tenant's writes are paused; retry", body = super::openapi::ProblemDoc, content_type = "application/problem+json")))]
pub(super) async fn remove(
    State(state): State<ServerState>,
    tenant: Tenant,
    Path(params): Path<HashMap<String, String>>,
) -> Response {
    let res = match resource(&state.app, &params) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (id, t) = (id_param(&params), tenant.id.as_str());
    if let Some(paused) = writes_paused(&state.app, &tenant.id).await {
        return paused;
    }
    let result = scoped!(&state.app, &tenant.id, |conn| pg: res.table.delete_pg(conn, t, &id).await,
        sqlite: res.table.delete_sqlite(conn, t, &id).await);
    match result {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => not_found(&params),
        Err(r) => r,
    }
}
