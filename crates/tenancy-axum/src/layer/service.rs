//! The request path, in one place: resolve → validate → scope → handler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{Request, StatusCode};
use tenancy_core::context::{self, TenantScoped};
use tenancy_core::{TenantInfo, VerifiedClaims};
use tower_service::Service;
use tracing::Instrument;
use tracing::instrument::Instrumented;

use super::Shared;
use super::rules::{Head, tenant_state, tenant_state_now};
use crate::metrics::RequestMetrics;
use crate::outcome::TenantState;
use crate::problem::Problem;
use crate::rate_limit::Decision;

/// A resolved tenant's request, allowed by its limit: the extension, the
/// span, and the inner service's future in the tenant's scope, as a
/// [`TenantFuture`].
///
/// A macro rather than a function, and the whole future built in one
/// expression: the request and the inner future (hundreds of bytes each)
/// are then moved straight to where they live; through a function's
/// by-value parameter the request is copied once more (measured).
macro_rules! serve_tenant {
    ($shared:expr, $tenant:ident, $verified:expr, $req:ident, $inner:expr, $timer:expr) => {{
        if let Some(metrics) = &$shared.metrics {
            // Counts as resolved too (`RequestMetrics::outcomes`).
            metrics.tenant(&$tenant.id);
        }
        let span = tenant_span(&$tenant);
        $req.extensions_mut()
            .insert(TenantState::Resolved($tenant.clone()));
        // Claims this layer verified, for handlers (`Extension<VerifiedClaims>`).
        if let Some(claims) = $verified {
            $req.extensions_mut().insert(claims);
        }
        if span.is_disabled() {
            // No subscriber wants it: no span to enter on every poll.
            TenantFuture {
                kind: Kind::Scoped {
                    fut: context::with_tenant_info($tenant, $inner.call($req)),
                },
                timer: $timer,
            }
        } else {
            TenantFuture {
                kind: Kind::Served {
                    fut: context::with_tenant_info($tenant, $inner.call($req)).instrument(span),
                },
                timer: $timer,
            }
        }
    }};
}

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
    type Future = TenantFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let timer = self
            .shared
            .metrics
            .as_ref()
            .filter(|_| crate::metrics::timed())
            .map(|metrics| (metrics.clone(), quanta::Instant::now()));
        // The hit path: every resolver answered at once, the validator's
        // cache held the tenant, and no limit needs waiting for. It reads
        // the request in place (no split into parts and back) and nothing
        // here allocates but the extension M1 requires.
        let Some((state, verified)) = tenant_state_now(&self.shared, Head::of(&req)) else {
            return TenantFuture::slow(self.shared.clone(), req, self.take_ready(), timer, None);
        };
        let decision = match (&state, &self.shared.limits) {
            (TenantState::Resolved(tenant), Some(limits)) => limits.check_now(tenant),
            _ => Some(Decision::Allow),
        };
        let Some(decision) = decision else {
            let known = Some((state, verified));
            return TenantFuture::slow(self.shared.clone(), req, self.take_ready(), timer, known);
        };
        match (state, decision) {
            (TenantState::Resolved(tenant), Decision::Allow) => {
                // Called now, on the service that was polled ready: no
                // clone of it (an axum route clone is an allocation).
                serve_tenant!(self.shared, tenant, verified, req, self.inner, timer)
            }
            (state, decision) => {
                let kind = serve(
                    &self.shared,
                    state,
                    verified,
                    decision,
                    req,
                    &mut self.inner,
                );
                TenantFuture { kind, timer }
            }
        }
    }
}

impl<S: Clone> TenantService<S> {
    /// The service that was polled ready, for a future that calls it later;
    /// a fresh clone stays behind.
    fn take_ready(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }
}

/// What happens once the tenant is known and the limit decided (the
/// path that awaited, and the hit path's refusals and 429s).
fn serve<S, B>(
    shared: &Shared,
    state: TenantState,
    verified: Option<VerifiedClaims>,
    decision: Decision,
    mut req: Request<B>,
    inner: &mut S,
) -> Kind<S::Future>
where
    S: Service<Request<B>, Response = Response>,
{
    match state {
        TenantState::Resolved(tenant) => {
            if let Decision::Deny { rps, retry_after } = decision {
                if let Some(metrics) = &shared.metrics {
                    metrics.outcome(crate::metrics::RATE_LIMITED);
                    metrics.tenant(&tenant.id);
                }
                return Kind::Answered {
                    response: Some(rate_limited(&tenant, rps, retry_after)),
                };
            }
            serve_tenant!(shared, tenant, verified, req, inner, None).kind
        }
        TenantState::Refused(error) => {
            if let Some(metrics) = &shared.metrics {
                metrics.outcome(crate::metrics::refusal_index(&error));
            }
            req.extensions_mut().insert(TenantState::Refused(error));
            Kind::Refused {
                fut: inner.call(req),
            }
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project_lite::pin_project! {
    /// The response future of [`TenantService`]. On the hit path (tenant
    /// answered at once, cached, no limit to wait for) it is the inner
    /// service's future in the tenant's scope, without boxing.
    pub struct TenantFuture<F: Future> {
        #[pin]
        kind: Kind<F>,
        // Metrics to record the latency into, and when the request began.
        timer: Option<(RequestMetrics, quanta::Instant)>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F: Future> {
        // The tenant's request, in its scope and span.
        Served { #[pin] fut: Instrumented<TenantScoped<F>> },
        // The same when no subscriber takes the span.
        Scoped { #[pin] fut: TenantScoped<F> },
        // No valid tenant: the handler or guard answers 401/403.
        Refused { #[pin] fut: F },
        // Answered by the layer itself (429).
        Answered { response: Option<Response> },
        // Something had to be awaited first (a resolver, a cache miss, a
        // shared limit): the whole path, boxed.
        Slow { fut: BoxFuture<F::Output> },
    }
}

impl<F, E> TenantFuture<F>
where
    F: Future<Output = Result<Response, E>> + Send + 'static,
{
    /// The path that awaits: `known` when the tenant was known at once
    /// and only the limit must be waited for.
    fn slow<S, B>(
        shared: Arc<Shared>,
        req: Request<B>,
        inner: S,
        timer: Option<(RequestMetrics, quanta::Instant)>,
        known: Option<(TenantState, Option<VerifiedClaims>)>,
    ) -> Self
    where
        S: Service<Request<B>, Response = Response, Error = E, Future = F> + Send + 'static,
        B: Send + 'static,
    {
        // Awaited on parts: the body need not be `Sync`.
        let (parts, body) = req.into_parts();
        let fut = Box::pin(async move {
            let mut inner = inner;
            let (state, verified) = match known {
                Some(known) => known,
                None => tenant_state(&shared, Head::of_parts(&parts)).await,
            };
            let decision = match (&state, &shared.limits) {
                (TenantState::Resolved(tenant), Some(limits)) => limits.check(tenant).await,
                _ => Decision::Allow,
            };
            let req = Request::from_parts(parts, body);
            let kind = serve(&shared, state, verified, decision, req, &mut inner);
            match kind {
                Kind::Served { fut } => fut.await,
                Kind::Scoped { fut } => fut.await,
                Kind::Refused { fut } => fut.await,
                Kind::Answered { response } => Ok(response.unwrap_or_default()),
                Kind::Slow { fut } => fut.await,
            }
        });
        Self {
            kind: Kind::Slow { fut },
            timer,
        }
    }
}

impl<F, E> Future for TenantFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let polled = match this.kind.project() {
            KindProj::Served { fut } => fut.poll(cx),
            KindProj::Scoped { fut } => fut.poll(cx),
            KindProj::Refused { fut } => fut.poll(cx),
            KindProj::Answered { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // A programming error, as with tower-http's futures.
                None => panic!("TenantFuture polled after completion"),
            },
            KindProj::Slow { fut } => fut.as_mut().poll(cx),
        };
        // Usually no timer: the answer is returned as it is.
        if this.timer.is_some() && polled.is_ready() {
            if let Some((metrics, started)) = this.timer.take() {
                metrics.latency(started.elapsed());
            }
        }
        polled
    }
}

impl<F: Future> std::fmt::Debug for TenantFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantFuture").finish_non_exhaustive()
    }
}

/// The span the tenant's request runs in, with `tenant_id` also recorded
/// on the current span (a `TraceLayer`'s, when it declares the field).
/// When no subscriber was ever installed nothing can record a span, and
/// the hit path skips the work.
#[inline(always)]
fn tenant_span(tenant: &TenantInfo) -> tracing::Span {
    if !tracing::dispatcher::has_been_set() {
        return tracing::Span::none();
    }
    tracing::Span::current().record("tenant_id", tenant.id.as_str());
    tracing::info_span!("tenant", tenant_id = %tenant.id)
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
