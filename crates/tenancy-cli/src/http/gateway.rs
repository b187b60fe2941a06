//! `GET /resolve`: the gateway endpoint (nginx `auth_request`, Envoy
//! ext_authz). It rebuilds the original request from the forwarded headers
//! and asks the same [`TenantLayer`](tenancy::TenantLayer) as the API to
//! [decide](tenancy::TenantLayer::decide) it, so services in any language
//! get the same tenancy.

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tenancy::TenantState;

use super::{ServerState, problem};

const ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// An origin-form target: `/` then the characters of RFC 3986 paths and
/// queries, and `[`, `]` that browsers send unencoded in queries (as the
/// OpenAPI document's pattern says).
fn is_origin_form(target: &[u8]) -> bool {
    target.first() == Some(&b'/')
        && target.len() <= 2048
        && target
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._~!$&'()*+,;=:@/%?[]-".contains(b))
}

/// A host name with an optional port.
fn is_host(host: &[u8]) -> bool {
    let (name, port) = match host.iter().rposition(|b| *b == b':') {
        Some(i) => (&host[..i], Some(&host[i + 1..])),
        None => (host, None),
    };
    (1..=253).contains(&name.len())
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b".-".contains(b))
        && port.is_none_or(|p| (1..=5).contains(&p.len()) && p.iter().all(u8::is_ascii_digit))
}

#[utoipa::path(get,
    path = "/resolve",
    tag = "gateway",
    summary = "Resolve the tenant of a forwarded request (nginx auth_request, Envoy ext_authz)",
    params(super::docs::ForwardedHeaders),
    responses((status = 200, description = "Resolved: X-Tenant-Id, X-Tenant-Slug and X-Tenant-Plan headers"),
        (status = 400, description = "Malformed forwarded request, or a repeated header naming the tenant", body = super::docs::ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No tenant named, or an invalid token", body = super::docs::ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "The tenant is unknown, not active, not among the token's memberships, or the request names different tenants", body = super::docs::ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Over the tenant's rate limit: `Retry-After` says when to retry (nginx: see docs/gateway.md to pass it on)", body = super::docs::ProblemDoc, content_type = "application/problem+json"),
        crate::http::docs::StoreUnavailable))]
pub(super) async fn resolve(State(state): State<ServerState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    // One forwarded request, one target, one host: a repeated header
    // would leave the choice to header order.
    for name in [&FORWARDED_HOST, &ORIGINAL_URI] {
        if parts.headers.get_all(name).iter().nth(1).is_some() {
            return problem(
                StatusCode::BAD_REQUEST,
                "ambiguous_request",
                format!("the request carries more than one {name} header: send it once"),
            );
        }
    }
    if let Some(host) = parts.headers.get(&FORWARDED_HOST)
        && !is_host(host.as_bytes())
    {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid_forwarded_host",
            "X-Forwarded-Host must be a host name with an optional port",
        );
    }
    // An empty X-Original-URI is an absent one: the target is `/`.
    let uri: Uri = match parts
        .headers
        .get(&ORIGINAL_URI)
        .filter(|v| !v.is_empty())
        .map(|v| {
            (
                is_origin_form(v.as_bytes()),
                v.to_str().map(str::parse::<Uri>),
            )
        }) {
        None => Uri::from_static("/"),
        Some((true, Ok(Ok(uri)))) => uri,
        Some(_) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid_original_uri",
                "X-Original-URI must be a request target in origin form (`/path?query`)",
            );
        }
    };
    let mut forwarded = Request::builder().method(parts.method.clone()).uri(uri);
    if let Some(headers) = forwarded.headers_mut() {
        *headers = parts.headers.clone();
        if let Some(host) = parts.headers.get(&FORWARDED_HOST).cloned() {
            headers.insert(header::HOST, host);
        }
    }
    let Ok(forwarded) = forwarded.body(()) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid_forwarded_request",
            "the forwarded request is malformed",
        );
    };
    let (forwarded, ()) = forwarded.into_parts();
    match state.layer.decide(&forwarded).await {
        Ok(TenantState::Resolved(tenant)) => {
            let mut res = StatusCode::OK.into_response();
            let headers = res.headers_mut();
            for (name, value) in [
                ("x-tenant-id", Some(tenant.id.as_str())),
                ("x-tenant-slug", Some(tenant.slug.as_str())),
                ("x-tenant-plan", tenant.plan.as_deref()),
            ] {
                if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                    headers.insert(HeaderName::from_static(name), v);
                }
            }
            res
        }
        Ok(TenantState::Refused(error)) => error.into_response(),
        // The layer answers itself: 429 over the tenant's rate limit (with
        // `Retry-After`).
        Err(response) => response,
    }
}

/// `GET /tls/ask?domain=D`, the `ask` endpoint of Caddy's
/// on-demand TLS: 200 when D is a verified domain of an active tenant, or
/// `<slug>.<base_domain>` of an active tenant; 404 for anything else, so no
/// certificate is issued. Both lookups are cached (domain resolver,
/// validator).
#[utoipa::path(get,
    path = "/tls/ask",
    tag = "gateway",
    summary = "Whether a certificate may be issued for a domain (Caddy on-demand TLS)",
    params(("domain" = Option<String>, Query, description = "The domain", max_length = 1024)),
    responses((status = 200, description = "A verified domain of an active tenant"),
        (status = 404, description = "No certificate for this domain", body = super::docs::ProblemDoc, content_type = "application/problem+json")))]
pub(super) async fn tls_ask(
    State(state): State<ServerState>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let no = || {
        problem(
            StatusCode::NOT_FOUND,
            "unknown_domain",
            "not a verified domain of an active tenant: no certificate",
        )
    };
    let Some(domain) = query
        .get("domain")
        .and_then(|d| tenancy::Domain::parse(d).ok())
    else {
        return no();
    };
    let tenancy = &state.app.tenancy;
    let mut reference = match tenancy.domains() {
        Some(resolver) => resolver.tenant_of(domain.as_str()).await,
        None => None,
    };
    if reference.is_none()
        && let Some(base) = tenancy
            .config()
            .resolution
            .base_domain
            .as_deref()
            .map(|b| b.trim_matches('.').to_ascii_lowercase())
        && let Some(label) = domain
            .as_str()
            .strip_suffix(base.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
        && !label.contains('.')
        && !tenancy
            .config()
            .resolution
            .reserved_subdomains
            .iter()
            .any(|r| r.eq_ignore_ascii_case(label))
    {
        reference = Some(tenancy::TenantRef::new(label));
    }
    let Some(reference) = reference else {
        return no();
    };
    match tenancy.validator().validate(&reference).await {
        Ok(_) => (StatusCode::OK, "ok").into_response(),
        Err(_) => no(),
    }
}
