//! The request path, in one place: resolve → validate → scope → handler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{Request, StatusCode, header};
use tenancy_core::{Rejection, ResolutionContext, TenantInfo, VerifiedClaims, context};
use tower_service::Service;
use tracing::Instrument;

use super::Shared;
use crate::outcome::{TenantError, TenantState};
use crate::problem::Problem;
use crate::rate_limit::Decision;

/// The service made by [`TenantLayer`](super::TenantLayer).
#[derive(Clone)]
pub struct TenantService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> TenantService<S> {
    pub(super) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for TenantService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for TenantService<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Take the service that was polled ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let started = shared
                .metrics
                .as_ref()
                .filter(|_| crate::metrics::timed())
                .map(|_| quanta::Instant::now());
            // Work on the parts: the body need not be `Sync`.
            let (mut parts, body) = req.into_parts();
            let (state, verified) = tenant_state(&shared, &parts).await;
            let response = match state {
                TenantState::Resolved(tenant) => {
                    if let Some(limits) = &shared.limits
                        && let Decision::Deny { rps, retry_after } = limits.check(&tenant).await
                    {
                        if let Some(metrics) = &shared.metrics {
                            metrics.outcome(crate::metrics::RATE_LIMITED);
                            metrics.tenant(&tenant.id);
                        }
                        return Ok(rate_limited(&tenant, rps, retry_after));
                    }
                    if let Some(metrics) = &shared.metrics {
                        // Counts as resolved too (`RequestMetrics::outcomes`).
                        metrics.tenant(&tenant.id);
                    }
                    let span = tracing::info_span!("tenant", tenant_id = %tenant.id);
                    tracing::Span::current().record("tenant_id", tenant.id.as_str());
                    parts
                        .extensions
                        .insert(TenantState::Resolved(tenant.clone()));
                    // Claims this layer verified, for handlers (`Extension<VerifiedClaims>`).
                    if let Some(claims) = verified {
                        parts.extensions.insert(claims);
                    }
                    let req = Request::from_parts(parts, body);
                    context::with_tenant_info(tenant, inner.call(req))
                        .instrument(span)
                        .await
                }
                TenantState::Refused(error) => {
                    if let Some(metrics) = &shared.metrics {
                        metrics.outcome(crate::metrics::refusal_index(&error));
                    }
                    parts.extensions.insert(TenantState::Refused(error));
                    inner.call(Request::from_parts(parts, body)).await
                }
            };
            if let (Some(metrics), Some(started)) = (&shared.metrics, started) {
                metrics.latency(started.elapsed());
            }
            response
        })
    }
}

/// The 429 for a tenant over its limit.
fn rate_limited(tenant: &TenantInfo, rps: u32, retry_after: Duration) -> Response {
    // Whole seconds, rounded up, at least 1 (RFC 9110).
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let secs = secs.max(1);
    tracing::debug!(tenant_id = %tenant.id, rps, retry_after = secs, "rate limited");
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "tenant {} is over its limit of {rps} requests per second: retry after {secs} s",
            tenant.id
        ),
    )
    .retry_after(secs)
    .into_response()
}

/// Resolves and validates the tenant of `req`.
/// Also returns the claims when this layer verified them itself (not when
/// an upstream layer put them in the extensions already).
async fn tenant_state(shared: &Shared, req: &Parts) -> (TenantState, Option<VerifiedClaims>) {
    let claims = match verified_claims(shared, req) {
        Ok(claims) => claims,
        Err(error) => return (TenantState::Refused(error), None),
    };
    let (parts_uri, headers, method) = (&req.uri, &req.headers, &req.method);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts_uri.host());
    let ctx = ResolutionContext::new(method, host, parts_uri.path(), parts_uri.query(), headers)
        .with_claims(claims.as_ref());

    let Some(reference) = shared.chain.resolve(&ctx).await else {
        return (
            TenantState::Refused(TenantError::NotIdentified(shared.not_identified.clone())),
            None,
        );
    };
    let tenant = match shared.validator.validate(&reference).await {
        Ok(tenant) => tenant,
        Err(rejection) => {
            tracing::debug!(tenant = %reference, %rejection, "tenant refused");
            return (TenantState::Refused(rejection.into()), None);
        }
    };
    if !is_member(claims.as_ref(), &shared.membership_claim, &tenant) {
        tracing::debug!(tenant_id = %tenant.id, "tenant is not among the token's memberships");
        return (TenantState::Refused(Rejection::NotMember.into()), None);
    }
    let verified_here = claims.filter(|_| req.extensions.get::<VerifiedClaims>().is_none());
    (TenantState::Resolved(tenant), verified_here)
}

/// SPEC M4: when verified claims list memberships, the tenant must be one
/// of them, whichever resolver named it.
fn is_member(claims: Option<&VerifiedClaims>, claim: &str, tenant: &TenantInfo) -> bool {
    match claims.and_then(|c| c.memberships(claim)) {
        None => true,
        Some(members) => members.iter().any(|m| tenant.is_named_by(m)),
    }
}

/// Claims verified upstream (an extension), else by the built-in verifier.
fn verified_claims(shared: &Shared, req: &Parts) -> Result<Option<VerifiedClaims>, TenantError> {
    if let Some(claims) = req.extensions.get::<VerifiedClaims>() {
        return Ok(Some(claims.clone()));
    }
    #[cfg(feature = "jwt")]
    if let Some(verifier) = &shared.jwt {
        let Some(value) = req.headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let token = crate::jwt::bearer_token(value).ok_or_else(|| {
            TenantError::InvalidToken("the Authorization header is not `Bearer <token>`".into())
        })?;
        return verifier
            .verify(token)
            .map(Some)
            .map_err(|e| TenantError::InvalidToken(e.to_string()));
    }
    #[cfg(not(feature = "jwt"))]
    let _ = shared;
    Ok(None)
}
