//! The service made by [`RateLimitLayer`](super::RateLimitLayer).

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use http::{Request, StatusCode};
use tower_service::Service;

use super::future::RateLimitFuture;
use super::{Decision, Limits};
use crate::outcome::TenantState;
use crate::problem::Problem;

/// Takes one token from the resolved tenant's bucket per request; answers
/// 429 when it is empty. Made by [`RateLimitLayer`](super::RateLimitLayer).
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limits: Arc<Limits>,
}

impl<S> RateLimit<S> {
    pub(super) fn new(inner: S, limits: Arc<Limits>) -> Self {
        Self { inner, limits }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RateLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // No resolved tenant: not ours to answer (the extractor or guard
        // does), and nothing to count it against.
        let Some(TenantState::Resolved(tenant)) = req.extensions().get::<TenantState>() else {
            return RateLimitFuture::inner(self.inner.call(req));
        };
        let tenant = tenant.clone();
        // Take the service that was polled ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.limits.clone();
        RateLimitFuture::checking(Box::pin(async move {
            match limits.check(&tenant).await {
                Decision::Allow => Ok(inner.call(req)),
                Decision::Deny { rps, retry_after } => {
                    // Whole seconds, rounded up, at least 1 (RFC 9110).
                    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                    let secs = secs.max(1);
                    tracing::debug!(tenant_id = %tenant.id, rps, retry_after = secs, "rate limited");
                    Err(Problem::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        format!(
                            "tenant {} is over its limit of {rps} requests per second: retry after {secs} s",
                            tenant.id
                        ),
                    )
                    .retry_after(secs)
                    .into_response())
                }
            }
        }))
    }
}
