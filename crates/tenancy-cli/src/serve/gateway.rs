//! `GET /resolve`: the gateway endpoint (nginx `auth_request`, Envoy
//! ext_authz). It rebuilds the original request from the forwarded headers
//! and runs it through the same [`TenantLayer`](tenancy::TenantLayer) as the
//! API, so services in any language get the same tenancy.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tenancy::TenantState;
use tower::{Layer, ServiceExt};

use super::{ServerState, problem};

const ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

pub(super) async fn resolve(State(state): State<ServerState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let uri: Uri = match parts
        .headers
        .get(&ORIGINAL_URI)
        .map(|v| v.to_str().map(str::parse::<Uri>))
    {
        None => Uri::from_static("/"),
        Some(Ok(Ok(uri))) => uri,
        Some(_) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid_original_uri",
                "X-Original-URI is not a valid request target",
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
    let Ok(forwarded) = forwarded.body(Body::empty()) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid_forwarded_request",
            "the forwarded request is malformed",
        );
    };
    let probe = tower::service_fn(|req: Request| async move {
        Ok::<_, Infallible>(req.extensions().get::<TenantState>().cloned())
    });
    let outcome = match state.layer.layer(probe).oneshot(forwarded).await {
        Ok(outcome) => outcome,
        Err(never) => match never {},
    };
    match outcome {
        Some(TenantState::Resolved(tenant)) => {
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
        Some(TenantState::Refused(error)) => error.into_response(),
        None => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "tenancy_not_configured",
            "no tenant outcome",
        ),
    }
}

/// `GET /tls/ask?domain=D` (SPEC D4), the `ask` endpoint of Caddy's
/// on-demand TLS: 200 when D is a verified domain of an active tenant, or
/// `<slug>.<base_domain>` of an active tenant; 404 for anything else, so no
/// certificate is issued. Both lookups are cached (domain resolver,
/// validator).
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
