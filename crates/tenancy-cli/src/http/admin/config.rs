//! A tenant's configuration overrides.

use super::*;
use crate::ops::config::{self, ConfigError};

#[utoipa::path(get,
    path = "/admin/tenants/{tenant}/config",
    tag = "admin",
    summary = "The tenant's effective config (defaults and overrides)",
    params(crate::http::docs::TenantPath),
    responses((status = 200, description = "Key → value", body = Object),
        crate::http::docs::TenantReadErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn effective_config(
    State(state): State<ServerState>,
    Path(reference): Path<String>,
) -> Response {
    let tenant = match find(&state, &reference).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match state.app.tenancy.overrides().effective(&tenant.id).await {
        Ok(map) => Json(map).into_response(),
        Err(e) => store_problem(e),
    }
}

#[utoipa::path(get,
    path = "/admin/tenants/{tenant}/config/{key}",
    tag = "admin",
    summary = "One config value",
    params(crate::http::docs::ConfigPath),
    responses((status = 200, description = "{key, value}", body = Object),
        crate::http::docs::TenantInputErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn get_config(
    State(state): State<ServerState>,
    Path((reference, key)): Path<(String, String)>,
) -> Response {
    let tenant = match find(&state, &reference).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match state.app.tenancy.overrides().get(&tenant.id, &key).await {
        Ok(Some(v)) => Json(serde_json::json!({"key": key, "value": v})).into_response(),
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "config_key_not_found",
            format!("no config key `{key}` for this tenant"),
        ),
        Err(e) => store_problem(e),
    }
}

#[utoipa::path(put,
    path = "/admin/tenants/{tenant}/config/{key}",
    tag = "admin",
    summary = "Set a config override (any JSON value)",
    request_body(content = Value, description = "Any JSON value (at most 64 KiB of JSON)"),
    params(crate::http::docs::ConfigPath, crate::http::docs::ActorHeader),
    responses((status = 200, description = "{key, value}", body = Object),
        crate::http::docs::TenantInputErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn put_config(
    State(state): State<ServerState>,
    actor: Actor,
    Path((reference, key)): Path<(String, String)>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(value) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e.body_text()),
    };
    let tenant = match find(&state, &reference).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let size = value.to_string().len();
    if size > MAX_CONFIG_VALUE_BYTES {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!(
                "the value is {size} bytes of JSON, more than the {MAX_CONFIG_VALUE_BYTES} allowed"
            ),
        );
    }
    let existing = match state.app.tenancy.config_store().overrides(&tenant.id).await {
        Ok(map) => map,
        Err(e) => return store_problem(e),
    };
    if !existing.contains_key(&key) && existing.len() >= MAX_CONFIG_KEYS {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_keys",
            format!(
                "this tenant already has {MAX_CONFIG_KEYS} config overrides, the most allowed: delete one first"
            ),
        );
    }
    match config::set(&state.app, &actor.0, &tenant, &key, value.clone()).await {
        Ok(()) => Json(serde_json::json!({"key": key, "value": value})).into_response(),
        Err(e) => config_problem(e),
    }
}

/// Maps a configuration operation's error to a problem response.
fn config_problem(err: ConfigError) -> Response {
    match err {
        ConfigError::Store(e) => store_problem(e),
        e @ ConfigError::NoValue { .. } => {
            problem(StatusCode::NOT_FOUND, "config_key_not_found", e)
        }
    }
}
