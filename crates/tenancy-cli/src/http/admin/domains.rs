//! A tenant's custom domains.

use super::*;

/// `POST /admin/tenants/{id}/domains` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct AddDomain {
    /// The domain (ASCII labels of letters, digits and `-`, at least two).
    #[schema(
        pattern = r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
    )]
    domain: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}

fn domain_problem(err: crate::ops::domains::DomainError) -> Response {
    use crate::ops::domains::DomainError as E;
    match err {
        E::Invalid(e) => problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_domain", e),
        E::Store(e) => store_problem(e),
        e @ E::Unknown(_) => problem(StatusCode::NOT_FOUND, "domain_not_found", e),
        e @ E::UnknownTenant(_) => problem(StatusCode::NOT_FOUND, "tenant_not_found", e),
        // The request is right; the DNS record is not there yet.
        e @ E::NotVerified(_) => problem(StatusCode::CONFLICT, "domain_not_verified", e),
        e @ E::Dns(_) => problem(StatusCode::SERVICE_UNAVAILABLE, "dns_unavailable", e),
    }
}

#[utoipa::path(post,
    path = "/admin/tenants/{tenant}/domains",
    tag = "admin",
    summary = "Add a domain to a tenant",
    request_body = AddDomain,
    params(crate::http::docs::TenantPath, crate::http::docs::ActorHeader),
    responses((status = 201, description = "The domain, with its TXT challenge", body = Object),
        crate::http::docs::TenantChangeErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn add_domain(
    State(state): State<ServerState>,
    actor: Actor,
    Path(reference): Path<String>,
    body: Result<Json<AddDomain>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return bad_body(e),
    };
    match crate::ops::domains::add(
        &state.app,
        &actor.0,
        &reference,
        &body.domain,
        body.primary,
        body.verified,
    )
    .await
    {
        Ok(d) => (
            StatusCode::CREATED,
            Json(crate::ops::domains::domain_json(&d)),
        )
            .into_response(),
        Err(e) => domain_problem(e),
    }
}

#[utoipa::path(get,
    path = "/admin/tenants/{tenant}/domains",
    tag = "admin",
    summary = "A tenant's domains",
    params(crate::http::docs::TenantPath),
    responses((status = 200, description = "{items}", body = Object),
        crate::http::docs::TenantReadErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn list_domains(
    State(state): State<ServerState>,
    Path(reference): Path<String>,
) -> Response {
    match crate::ops::domains::list(&state.app, &reference).await {
        Ok(all) => {
            let items: Vec<Value> = all.iter().map(crate::ops::domains::domain_json).collect();
            Json(serde_json::json!({ "items": items })).into_response()
        }
        Err(e) => domain_problem(e),
    }
}

#[utoipa::path(post,
    path = "/admin/domains/{domain}/verify",
    tag = "admin",
    summary = "Verify a domain by its DNS TXT record",
    params(crate::http::docs::DomainPath, crate::http::docs::ActorHeader),
    responses((status = 200, description = "The verified domain", body = Object),
        crate::http::docs::DomainChangeErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn verify_domain(
    State(state): State<ServerState>,
    actor: Actor,
    Path(domain): Path<String>,
) -> Response {
    match crate::ops::domains::verify(&state.app, &actor.0, &domain).await {
        Ok(d) => Json(crate::ops::domains::domain_json(&d)).into_response(),
        Err(e) => domain_problem(e),
    }
}

#[utoipa::path(delete,
    path = "/admin/domains/{domain}",
    tag = "admin",
    summary = "Remove a domain",
    params(crate::http::docs::DomainPath, crate::http::docs::ActorHeader),
    responses((status = 200, description = "The removed domain", body = Object),
        crate::http::docs::DomainChangeErrors),
    security(("admin_token" = [])))]
pub(in crate::http) async fn remove_domain(
    State(state): State<ServerState>,
    actor: Actor,
    Path(domain): Path<String>,
) -> Response {
    match crate::ops::domains::remove(&state.app, &actor.0, &domain).await {
        Ok(d) => Json(crate::ops::domains::domain_json(&d)).into_response(),
        Err(e) => domain_problem(e),
    }
}
