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
