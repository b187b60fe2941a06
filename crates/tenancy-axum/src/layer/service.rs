//! The tower plumbing of [`TenantLayer`](super::TenantLayer): the service
//! runs the [rules](super::rules) on each request, then scopes the inner
//! service's future to the tenant, or records the refusal, or answers 429.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::Response;
use http::Request;
use tenancy_core::context::{self, TenantScoped};
use tenancy_core::{TenantInfo, VerifiedClaims};
use tower_service::Service;
use tracing::Instrument;
use tracing::instrument::Instrumented;

use super::Rules;
use super::rules::{Carried, Head, Now, Verdict, rate_limited};
use crate::metrics::RequestMetrics;
use crate::outcome::TenantState;

/// The service made by [`TenantLayer`](super::TenantLayer).
#[derive(Clone)]
pub struct TenantService<S> {
    inner: S,
    rules: Arc<Rules>,
}

impl<S> TenantService<S> {
    pub(super) fn new(inner: S, rules: Arc<Rules>) -> Self {
        Self { inner, rules }
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
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let timer = self
            .rules
            .metrics
            .as_ref()
            .filter(|_| crate::metrics::timed())
            .map(|metrics| (metrics.clone(), quanta::Instant::now()));
        // The hit path: every resolver answered at once, the validator's
        // cache held the tenant, and no limit needs waiting for. It reads
        // the request in place (no split into parts and back) and nothing
        // here allocates but the `TenantState` extension.
        match self.rules.now(Head::of(&req)) {
            // Called now, on the service that was polled ready: no clone
            // of it (an axum route clone is an allocation).
            Now::Done(verdict, verified) => {
                respond(&self.rules, verdict, verified, req, &mut self.inner, timer)
            }
            Now::Wait(carried) => {
                let inner = self.take_ready();
                ResponseFuture::slow(self.rules.clone(), req, inner, timer, carried)
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

/// What happens once the rules gave their verdict: the tenant's request
/// in its scope and span (with the claims this layer verified, for
/// handlers), a refusal recorded for the extractor or guard, or the 429.
#[inline(always)]
fn respond<S, B>(
    rules: &Rules,
    verdict: Verdict,
    verified: Option<VerifiedClaims>,
    mut req: Request<B>,
    inner: &mut S,
    timer: Option<(RequestMetrics, quanta::Instant)>,
) -> ResponseFuture<S::Future>
where
    S: Service<Request<B>, Response = Response>,
{
    rules.record(&verdict);
    let mut usage = None;
    let kind = match verdict {
        Verdict::Serve(tenant) => {
            if let Some(meter) = &rules.usage {
                let counters = meter.tenant(&tenant.id);
                counters.admit();
                usage = Some(counters);
            }
            let span = tenant_span(&tenant);
            req.extensions_mut()
                .insert(TenantState::Resolved(tenant.clone()));
            // Claims this layer verified, for handlers (`Extension<VerifiedClaims>`).
            let has_claims = match verified {
                Some(claims) => {
                    req.extensions_mut().insert(claims);
                    true
                }
                None => req.extensions().get::<VerifiedClaims>().is_some(),
            };
            // Where the memberships are, for the `Principal` extractor.
            if has_claims {
                req.extensions_mut().insert(crate::extract::MembershipPath(
                    rules.membership_claim.clone(),
                ));
            }
            if span.is_disabled() {
                // No subscriber wants it: no span to enter on every poll.
                Kind::Scoped {
                    fut: context::with_tenant_info(tenant, inner.call(req)),
                }
            } else {
                Kind::Served {
                    fut: context::with_tenant_info(tenant, inner.call(req)).instrument(span),
                }
            }
        }
        Verdict::Limited {
            tenant,
            rps,
            retry_after,
        } => Kind::Answered {
            response: Some(rate_limited(&tenant, rps, retry_after)),
        },
        Verdict::Refuse(error) => {
            req.extensions_mut().insert(TenantState::Refused(error));
            Kind::Refused {
                fut: inner.call(req),
            }
        }
    };
    ResponseFuture { kind, timer, usage }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project_lite::pin_project! {
    /// The response future of [`TenantService`]. On the hit path (tenant
    /// answered at once, cached, no limit to wait for) it is the inner
    /// service's future in the tenant's scope, without boxing.
    ///
    /// # Panics
    ///
    /// Polled again after it returned its answer, as tower-http's futures do.
    pub struct ResponseFuture<F: Future> {
        #[pin]
        kind: Kind<F>,
        // Metrics to record the latency into, and when the request began.
        timer: Option<(RequestMetrics, quanta::Instant)>,
        // The tenant's usage counters, for the answer's status class.
        usage: Option<&'static tenancy_core::usage::TenantUsage>,
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
        // The answer was returned.
        Done,
    }
}

impl<F, E> ResponseFuture<F>
where
    F: Future<Output = Result<Response, E>> + Send + 'static,
{
    /// The path that awaits, from what the hit path `carried` over.
    fn slow<S, B>(
        rules: Arc<Rules>,
        req: Request<B>,
        inner: S,
        timer: Option<(RequestMetrics, quanta::Instant)>,
        carried: Carried,
    ) -> Self
    where
        S: Service<Request<B>, Response = Response, Error = E, Future = F> + Send + 'static,
        B: Send + 'static,
    {
        // Awaited on parts: the body need not be `Sync`.
        let (parts, body) = req.into_parts();
        let fut = Box::pin(async move {
            let mut inner = inner;
            let (verdict, verified) = rules.verdict(Head::of_parts(&parts), carried).await;
            let req = Request::from_parts(parts, body);
            respond(&rules, verdict, verified, req, &mut inner, None).await
        });
        Self {
            kind: Kind::Slow { fut },
            timer,
            usage: None,
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let polled = match this.kind.as_mut().project() {
            KindProj::Served { fut } => fut.poll(cx),
            KindProj::Scoped { fut } => fut.poll(cx),
            KindProj::Refused { fut } => fut.poll(cx),
            KindProj::Answered { response } => Poll::Ready(Ok(response.take().unwrap_or_default())),
            KindProj::Slow { fut } => fut.as_mut().poll(cx),
            // A programming error, as with tower-http's futures.
            KindProj::Done => panic!("the tenant layer's ResponseFuture polled after completion"),
        };
        if polled.is_ready() {
            this.kind.set(Kind::Done);
            // Usually no timer: the answer is returned as it is.
            if let Some((metrics, started)) = this.timer.take() {
                metrics.latency(started.elapsed());
            }
            if let (Some(usage), Poll::Ready(Ok(response))) = (this.usage.take(), &polled) {
                usage.responded(response.status().as_u16());
            }
        }
        polled
    }
}

impl<F: Future> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
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
    record_tenant_on_span(tenant);
    tracing::info_span!("tenant", tenant_id = %tenant.id)
}

/// Records `tenant_id` on the current span (a `TraceLayer`'s, when it
/// declares the field).
#[inline(always)]
pub(super) fn record_tenant_on_span(tenant: &TenantInfo) {
    if tracing::dispatcher::has_been_set() {
        tracing::Span::current().record("tenant_id", tenant.id.as_str());
    }
}
