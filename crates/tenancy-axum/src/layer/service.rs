//! The request path, in one place: resolve → validate → scope → handler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{Extensions, HeaderMap, Method, Request, StatusCode, Uri};
use tenancy_core::context::{self, TenantScoped};
use tenancy_core::resolve::{Ambiguous, Named};
use tenancy_core::{Rejection, ResolutionContext, TenantInfo, TenantRef, VerifiedClaims};
use tower_service::Service;
use tracing::Instrument;
use tracing::instrument::Instrumented;

use super::Shared;
use crate::metrics::RequestMetrics;
use crate::outcome::{TenantError, TenantState};
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

/// Resolves and validates the tenant of `req`.
/// Also returns the claims when this layer verified them itself (not when
/// an upstream layer put them in the extensions already).
async fn tenant_state(shared: &Shared, req: Head<'_>) -> (TenantState, Option<VerifiedClaims>) {
    let claims = match claims_of(shared, req) {
        Ok(claims) => claims,
        Err(error) => return (TenantState::Refused(error), None),
    };
    let named = match shared.chain.named(&context_of(req, claims.get())).await {
        Ok(named) => named,
        Err(ambiguous) => return ambiguous_state(ambiguous),
    };
    let mut validated = [None, None, None];
    for (slot, name) in validated.iter_mut().zip(named.names()) {
        let result = shared.validator.validate(&TenantRef::new(name)).await;
        log_refusal(name, &result);
        *slot = Some(result);
    }
    let decided = judge(shared, claims.get(), &named, &mut validated);
    outcome(decided, claims)
}

/// [`tenant_state`] when it needs no waiting: every resolver answered at
/// once and the validator's cache held every name. `None` otherwise.
#[inline(always)]
fn tenant_state_now(
    shared: &Shared,
    req: Head<'_>,
) -> Option<(TenantState, Option<VerifiedClaims>)> {
    let claims = match claims_of(shared, req) {
        Ok(claims) => claims,
        Err(error) => return Some((TenantState::Refused(error), None)),
    };
    // Names are read in place (borrowed from the request) when the
    // resolver allows it: no copy of them on the hit path.
    let named = match shared.chain.named_now(&context_of(req, claims.get()))? {
        Ok(named) => named,
        Err(ambiguous) => return Some(ambiguous_state(ambiguous)),
    };
    let mut validated = [None, None, None];
    for (slot, name) in validated.iter_mut().zip(named.names()) {
        let result = shared.validator.validate_cached(name)?;
        log_refusal(name, &result);
        *slot = Some(result);
    }
    let decided = judge(shared, claims.get(), &named, &mut validated);
    Some(outcome(decided, claims))
}

/// The refusal of a request that repeats a header naming the tenant.
#[cold]
fn ambiguous_state(ambiguous: Ambiguous) -> (TenantState, Option<VerifiedClaims>) {
    (
        TenantState::Refused(TenantError::Ambiguous(ambiguous.to_string())),
        None,
    )
}

/// The parts of a request that resolution reads, borrowed from a whole
/// request (the hit path) or from its parts (the path that awaits).
#[derive(Clone, Copy)]
struct Head<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
}

impl<'a> Head<'a> {
    fn of<B>(req: &'a Request<B>) -> Self {
        Self {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }

    fn of_parts(parts: &'a Parts) -> Self {
        Self {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            extensions: &parts.extensions,
        }
    }
}

/// The resolvers' view of the request.
#[inline(always)]
fn context_of<'a>(req: Head<'a>, claims: Option<&'a VerifiedClaims>) -> ResolutionContext<'a> {
    ResolutionContext::of_request(req.method, req.uri, req.headers).with_claims(claims)
}

/// The tenant that resolution and validation found, by the rule of
/// [`Named::decide`] with the token's memberships.
#[inline(always)]
fn judge(
    shared: &Shared,
    claims: Option<&VerifiedClaims>,
    named: &Named<'_>,
    validated: &mut [Option<Result<Arc<TenantInfo>, Rejection>>],
) -> Result<Arc<TenantInfo>, TenantError> {
    // Most requests carry no claims: no membership list to read.
    let memberships = claims.and_then(|claims| claims.memberships(&shared.membership_claim));
    match named.decide(validated, memberships.as_deref()) {
        Some(Ok(tenant)) => Ok(tenant),
        Some(Err(rejection)) => {
            if matches!(rejection, Rejection::NotMember | Rejection::Conflict) {
                tracing::debug!(%rejection, "tenant refused");
            }
            Err(rejection.into())
        }
        None => Err(TenantError::NotIdentified(shared.not_identified.clone())),
    }
}

/// The request's state, with the claims this layer verified (for
/// handlers) when it is served.
#[inline(always)]
fn outcome(
    decided: Result<Arc<TenantInfo>, TenantError>,
    claims: Claims<'_>,
) -> (TenantState, Option<VerifiedClaims>) {
    match (decided, claims) {
        (Ok(tenant), Claims::Verified(claims)) => (TenantState::Resolved(tenant), Some(claims)),
        (Ok(tenant), Claims::None | Claims::Upstream(_)) => (TenantState::Resolved(tenant), None),
        (Err(error), _) => (TenantState::Refused(error), None),
    }
}

/// The request's verified claims: none, an upstream layer's (borrowed from
/// the extensions), or verified here (to be inserted for handlers).
enum Claims<'a> {
    None,
    Upstream(&'a VerifiedClaims),
    // Only the built-in verifier (`jwt`) makes these.
    #[cfg_attr(not(feature = "jwt"), allow(dead_code))]
    Verified(VerifiedClaims),
}

impl Claims<'_> {
    fn get(&self) -> Option<&VerifiedClaims> {
        match self {
            Self::None => None,
            Self::Upstream(claims) => Some(claims),
            Self::Verified(claims) => Some(claims),
        }
    }
}

/// Logs why the tenant `reference` names is refused, if it is: as a
/// `TenantRef` shows it, escaped and cut short.
#[inline(always)]
fn log_refusal(reference: &str, validated: &Result<Arc<TenantInfo>, Rejection>) {
    if let Err(rejection) = validated {
        tracing::debug!(tenant = %TenantRef::new(reference), %rejection, "tenant refused");
    }
}

/// Claims verified upstream (an extension), else by the built-in verifier.
#[inline(always)]
fn claims_of<'a>(shared: &Shared, req: Head<'a>) -> Result<Claims<'a>, TenantError> {
    if let Some(claims) = req.extensions.get::<VerifiedClaims>() {
        return Ok(Claims::Upstream(claims));
    }
    #[cfg(feature = "jwt")]
    if let Some(verifier) = &shared.jwt {
        let Some(value) = req.headers.get(http::header::AUTHORIZATION) else {
            return Ok(Claims::None);
        };
        let token = crate::jwt::bearer_token(value).ok_or_else(|| {
            TenantError::InvalidToken("the Authorization header is not `Bearer <token>`".into())
        })?;
        return verifier
            .verify(token)
            .map(Claims::Verified)
            .map_err(|e| TenantError::InvalidToken(e.to_string()));
    }
    #[cfg(not(feature = "jwt"))]
    let _ = shared;
    Ok(Claims::None)
}
