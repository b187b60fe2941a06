//! The request rules, apart from the tower plumbing in `service.rs`:
//! which tenant a request is for (claims, names, validation, the naming
//! rule, memberships) and whether its rate limit lets it through.
//!
//! Each rule is written once, in [`Rules::step`]. It runs without waiting
//! and, when a lookup must be awaited (a resolver, a validator cache miss,
//! a shared or uncached limit), stops with that lookup [`Pending`]. The
//! hit path runs it once; the path that waits ([`Rules::verdict`]) awaits
//! what is pending, records it in the request's [`Progress`], and runs it
//! again from where it stopped.

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{Extensions, HeaderMap, Method, Request, StatusCode, Uri};
use tenancy_core::issuers::{TenantIssuer, TenantIssuers};
use tenancy_core::resolve::{Ambiguous, Named};
use tenancy_core::{
    Rejection, ResolutionContext, ResolverChain, TenantInfo, TenantRef, Validator, VerifiedClaims,
};

use crate::metrics::RequestMetrics;
use crate::outcome::TenantError;
use crate::problem::Problem;
use crate::rate_limit::{Decision, Limits};

#[cfg(feature = "jwt")]
use crate::jwt::JwtVerifier;

/// The rules a [`TenantLayer`](super::TenantLayer) applies to every
/// request, and what it needs for them.
pub(crate) struct Rules {
    pub(super) chain: ResolverChain,
    /// The 401 answer, built once from the chain.
    pub(super) not_identified: Arc<str>,
    pub(super) limits: Option<Arc<Limits>>,
    pub(super) metrics: Option<RequestMetrics>,
    /// Per-tenant usage (requests by status class).
    pub(super) usage: Option<tenancy_core::usage::UsageMeter>,
    pub(super) validator: Validator,
    pub(super) membership_claim: std::sync::Arc<str>,
    /// Every request needs a verified token (`auth.required`).
    pub(super) require_token: bool,
    /// Tenants' own identity providers (`auth.issuer`).
    pub(super) issuers: Option<TenantIssuers>,
    #[cfg(feature = "jwt")]
    pub(super) jwt: Option<JwtVerifier>,
}

/// The tenant a request is for, or why none may be served.
type Decided = Result<Arc<TenantInfo>, TenantError>;

/// What the rules decide for one request.
pub(super) enum Verdict {
    /// Served in this tenant's scope.
    Serve(Arc<TenantInfo>),
    /// The tenant is over its rate limit: the layer answers 429 itself.
    Limited {
        tenant: Arc<TenantInfo>,
        rps: u32,
        retry_after: Duration,
    },
    /// No tenant may be served: recorded for the extractor or guard.
    Refuse(TenantError),
}

/// The lookup [`Rules::step`] stopped at, to be awaited.
pub(super) enum Pending {
    /// A resolver must be awaited: ask the whole chain.
    Names,
    /// The validator's cache does not hold the `n`-th name.
    Validation(usize, TenantRef),
    /// The tenant's limit must be asked of a shared backend or of the
    /// override store.
    Limit(Arc<TenantInfo>),
    /// The index of tenants' own identity providers must be loaded.
    Issuers,
}

/// What [`Rules::step`] found out about one request so far.
pub(super) struct Progress<'a> {
    named: Option<Result<Named<'a>, Ambiguous>>,
    /// The validation of each of the names, in order.
    validated: [Option<Result<Arc<TenantInfo>, Rejection>>; 3],
    decided: Option<Decided>,
    limit: Option<Decision>,
}

impl Default for Progress<'_> {
    #[inline(always)]
    fn default() -> Self {
        Self {
            named: None,
            validated: [None, None, None],
            decided: None,
            limit: None,
        }
    }
}

/// What [`Rules::now`] tells: the verdict, or where to continue waiting.
pub(super) enum Now {
    /// The verdict, and the claims this layer verified (for handlers).
    Done(Verdict, Option<VerifiedClaims>),
    /// A lookup must be awaited: continue with [`Rules::verdict`].
    Wait(Carried),
}

/// What the hit path hands to the path that waits: the claims it verified
/// (so a token is verified once), and its progress when that borrows
/// nothing from the request.
#[derive(Default)]
pub(super) struct Carried {
    verified: Option<Token>,
    /// The token's identity provider must be asked for its keys first.
    token: bool,
    decided: Option<Decided>,
    pending: Option<Pending>,
}

impl Rules {
    /// The verdict for `req` when it needs no waiting; otherwise what the
    /// path that waits ([`Rules::verdict`]) continues from.
    #[inline(always)]
    pub(super) fn now(&self, req: Head<'_>) -> Now {
        let Some((claims, refused)) = self.claims_of(req) else {
            return Now::Wait(Carried {
                token: true,
                ..Carried::default()
            });
        };
        let mut progress = Progress {
            decided: refused,
            ..Progress::default()
        };
        let step = self.step(req, &claims, &mut progress);
        let pending = match step {
            Ok(verdict) => {
                drop(progress);
                return Now::Done(verdict, verified(claims).map(|(claims, _)| claims));
            }
            Err(pending) => pending,
        };
        let decided = progress.decided.take();
        drop(progress);
        Now::Wait(Carried {
            verified: verified(claims),
            token: false,
            decided,
            // A validation is asked again with the names it belongs to.
            pending: match pending {
                Pending::Validation(..) => None,
                pending => Some(pending),
            },
        })
    }

    /// The verdict for `req`, awaiting every lookup [`Rules::step`] needs,
    /// starting from what the hit path `carried` over.
    pub(super) async fn verdict(
        &self,
        req: Head<'_>,
        carried: Carried,
    ) -> (Verdict, Option<VerifiedClaims>) {
        let (claims, refused) = match carried.verified {
            Some((verified, issuer)) => (Claims::Verified(verified, issuer), None),
            None => match (!carried.token).then(|| self.claims_of(req)).flatten() {
                Some(claims) => claims,
                None => self.claims_awaited(req).await,
            },
        };
        let verdict = {
            let claims = &claims;
            let mut progress = Progress {
                decided: carried.decided.or(refused),
                ..Progress::default()
            };
            let mut pending = carried.pending;
            loop {
                if let Some(pending) = pending.take() {
                    self.settle(req, claims, &mut progress, pending).await;
                }
                match self.step(req, claims, &mut progress) {
                    Ok(verdict) => break verdict,
                    Err(next) => pending = Some(next),
                }
            }
        };
        (verdict, verified(claims).map(|(claims, _)| claims))
    }

    /// Every rule, in order, on what is known without waiting: the claims,
    /// the names the resolvers find, their validation, the naming rule
    /// with the token's memberships, then the tenant's rate limit. Steps
    /// already in `progress` are not run again.
    #[inline(always)]
    fn step<'a>(
        &self,
        req: Head<'a>,
        claims: &'a Claims<'a>,
        progress: &mut Progress<'a>,
    ) -> Result<Verdict, Pending> {
        let decided = match progress.decided.take() {
            Some(decided) => decided,
            None => self.tenant_of(req, claims, progress)?,
        };
        let decision = match (&decided, &self.limits) {
            (Ok(tenant), Some(limits)) => match progress.limit.take() {
                Some(decision) => decision,
                None => match limits.check_now(tenant) {
                    Some(decision) => decision,
                    None => {
                        let tenant = tenant.clone();
                        progress.decided = Some(decided);
                        return Err(Pending::Limit(tenant));
                    }
                },
            },
            _ => Decision::Allow,
        };
        Ok(match (decided, decision) {
            (Ok(tenant), Decision::Allow) => Verdict::Serve(tenant),
            (Ok(tenant), Decision::Deny { rps, retry_after }) => Verdict::Limited {
                tenant,
                rps,
                retry_after,
            },
            (Err(error), _) => Verdict::Refuse(error),
        })
    }

    /// The tenant the request is for, or why none may be served.
    #[inline(always)]
    fn tenant_of<'a>(
        &self,
        req: Head<'a>,
        claims: &'a Claims<'a>,
        progress: &mut Progress<'a>,
    ) -> Result<Decided, Pending> {
        // Names are read in place (borrowed from the request) when the
        // resolver allows it: no copy of them on the hit path.
        let named = match &mut progress.named {
            Some(named) => named,
            slot @ None => slot.insert(
                self.chain
                    .named_now(&context_of(req, claims.get()))
                    .ok_or(Pending::Names)?,
            ),
        };
        let named = match named {
            Ok(named) => &*named,
            Err(ambiguous) => return Ok(Err(ambiguous_error(ambiguous))),
        };
        for (index, (slot, name)) in progress.validated.iter_mut().zip(named.names()).enumerate() {
            if slot.is_none() {
                let cached = self.validator.validate_cached(name);
                *slot =
                    Some(cached.ok_or_else(|| Pending::Validation(index, TenantRef::new(name)))?);
            }
        }
        for (name, validated) in named.names().zip(&progress.validated) {
            if let Some(Err(rejection)) = validated {
                tracing::debug!(tenant = %TenantRef::new(name), %rejection, "tenant refused");
            }
        }
        self.judge(claims, named, &mut progress.validated)
    }

    /// Awaits the lookup `step` stopped at and records its answer.
    async fn settle<'a>(
        &self,
        req: Head<'a>,
        claims: &'a Claims<'a>,
        progress: &mut Progress<'a>,
        pending: Pending,
    ) {
        match pending {
            Pending::Names => {
                progress.named = Some(self.chain.named(&context_of(req, claims.get())).await);
            }
            Pending::Issuers => {
                if let Some(issuers) = &self.issuers
                    && let Err(e) = issuers.ensure_loaded().await
                {
                    tracing::warn!(error = %e, "cannot load the tenants' identity providers");
                    progress.decided = Some(Err(Rejection::StoreUnavailable.into()));
                }
            }
            Pending::Validation(index, name) => {
                if let Some(slot) = progress.validated.get_mut(index) {
                    *slot = Some(self.validator.validate(&name).await);
                }
            }
            Pending::Limit(tenant) => {
                if let Some(limits) = &self.limits {
                    progress.limit = Some(limits.check(&tenant).await);
                }
            }
        }
    }

    /// The tenant that resolution and validation found, by the rule of
    /// [`Named::decide`] with the token's memberships, then the tenant's
    /// own identity provider, if it has one.
    #[inline(always)]
    fn judge(
        &self,
        claims: &Claims<'_>,
        named: &Named<'_>,
        validated: &mut [Option<Result<Arc<TenantInfo>, Rejection>>],
    ) -> Result<Decided, Pending> {
        // Most deployments have no tenant with its own provider: nothing
        // more is read then.
        let issuers = match &self.issuers {
            Some(issuers) if !issuers.is_loaded() => return Err(Pending::Issuers),
            Some(issuers) if issuers.any() => Some(issuers.view()),
            _ => None,
        };
        let issuer = claims.issuer();
        // A token of a tenant's own provider admits the tenants that named
        // it, whatever its claims say.
        let bound: Option<Vec<&str>> = issuers
            .as_ref()
            .zip(issuer)
            .and_then(|(view, iss)| view.tenants_of(iss))
            .map(|tenants| tenants.iter().map(|t| t.as_str()).collect());
        let claims = claims.get();
        // Most requests carry no claims: no membership list to read. A
        // membership claim of a shape no membership has refuses the token
        // (never read as "no claim").
        let memberships = match (
            &bound,
            claims.map(|c| c.membership_list(&self.membership_claim)),
        ) {
            (Some(bound), _) => Some(bound.clone()),
            (None, Some(Err(wrong))) => {
                return Ok(Err(TenantError::InvalidToken(wrong.to_string())));
            }
            (None, Some(Ok(list))) => {
                list.map(|list| list.into_iter().map(|m| m.tenant).collect::<Vec<_>>())
            }
            (None, None) => None,
        };
        let tenant = match named.decide(validated, memberships.as_deref()) {
            Some(Ok(tenant)) => tenant,
            Some(Err(Rejection::NotMember)) if bound.is_some() => {
                return Ok(Err(not_allowed(format!(
                    "tokens of {} admit only the tenants that made it their own identity provider",
                    issuer.unwrap_or_default()
                ))));
            }
            Some(Err(rejection)) => {
                if matches!(rejection, Rejection::NotMember | Rejection::Conflict) {
                    tracing::debug!(%rejection, "tenant refused");
                }
                return Ok(Err(rejection.into()));
            }
            None => return Ok(Err(TenantError::NotIdentified(self.not_identified.clone()))),
        };
        if let Some(view) = issuers {
            match view.tenant_issuer(&tenant.id) {
                TenantIssuer::Any => {}
                TenantIssuer::Only(own) if issuer == Some(&*own) => {}
                TenantIssuer::Only(_) if claims.is_none() => {
                    return Ok(Err(TenantError::TokenRequired));
                }
                TenantIssuer::Only(_) => {
                    return Ok(Err(not_allowed(format!(
                        "tenant {} accepts tokens only from its own identity provider",
                        tenant.slug
                    ))));
                }
                TenantIssuer::Unusable => {
                    return Ok(Err(not_allowed(format!(
                        "tenant {} names an identity provider that cannot be used: fix its \
                         auth.issuer (`tenancy config get {} auth.issuer`)",
                        tenant.slug, tenant.slug
                    ))));
                }
            }
        }
        Ok(Ok(tenant))
    }

    /// Claims verified upstream (an extension), else by the built-in
    /// verifier; with the request's refusal when its token fails
    /// verification. `None` when the token's identity provider must be
    /// asked for its keys first ([`Rules::claims_awaited`]).
    #[inline(always)]
    fn claims_of<'a>(&self, req: Head<'a>) -> Option<(Claims<'a>, Option<Decided>)> {
        Some(match self.verify(req)? {
            Ok(claims) => (claims, None),
            Err(error) => (Claims::None, Some(Err(error))),
        })
    }

    #[inline(always)]
    fn verify<'a>(&self, req: Head<'a>) -> Option<Result<Claims<'a>, TenantError>> {
        if let Some(claims) = req.extensions.get::<VerifiedClaims>() {
            return Some(Ok(Claims::Upstream(claims)));
        }
        #[cfg(feature = "jwt")]
        if let Some(verifier) = &self.jwt {
            let token = match bearer(req) {
                Ok(Some(token)) => token,
                Ok(None) => return Some(self.no_token()),
                Err(error) => return Some(Err(error)),
            };
            return verifier.verify_now(token).map(|verified| {
                verified
                    .map(|token| {
                        let (claims, issuer) = token.into_parts();
                        Claims::Verified(claims, issuer)
                    })
                    .map_err(token_error)
            });
        }
        Some(self.no_token())
    }

    /// A request without a token: served without claims, or refused with
    /// 401 `token_required` when every request needs one.
    #[inline(always)]
    fn no_token<'a>(&self) -> Result<Claims<'a>, TenantError> {
        if self.require_token {
            Err(TenantError::TokenRequired)
        } else {
            Ok(Claims::None)
        }
    }

    /// [`Rules::claims_of`], waiting for the token's identity provider
    /// (at most its timeout).
    async fn claims_awaited<'a>(&self, req: Head<'a>) -> (Claims<'a>, Option<Decided>) {
        #[cfg(feature = "jwt")]
        if let (Some(verifier), Ok(Some(token))) = (&self.jwt, bearer(req)) {
            return match verifier.verify_with(token, None).await {
                Ok(token) => {
                    let (claims, issuer) = token.into_parts();
                    (Claims::Verified(claims, issuer), None)
                }
                Err(error) => (Claims::None, Some(Err(token_error(error)))),
            };
        }
        self.claims_of(req).unwrap_or((Claims::None, None))
    }

    /// Counts the verdict into the metrics, if any.
    #[inline(always)]
    pub(super) fn record(&self, verdict: &Verdict) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        match verdict {
            // Counts as resolved too (`RequestMetrics::outcomes`).
            Verdict::Serve(tenant) => metrics.tenant(&tenant.id),
            Verdict::Limited { tenant, .. } => {
                metrics.outcome(crate::metrics::RATE_LIMITED);
                metrics.tenant(&tenant.id);
            }
            Verdict::Refuse(error) => metrics.outcome(crate::metrics::refusal_index(error)),
        }
    }
}

/// The request's bearer token, if it has an `Authorization` header.
#[cfg(feature = "jwt")]
#[inline(always)]
fn bearer(req: Head<'_>) -> Result<Option<&str>, TenantError> {
    let Some(value) = req.headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    crate::jwt::bearer_token(value).map(Some).ok_or_else(|| {
        TenantError::InvalidToken("the Authorization header is not `Bearer <token>`".into())
    })
}

/// The refusal of a token that failed verification: 503 when its
/// provider is at fault, else 401.
#[cfg(feature = "jwt")]
#[cold]
fn token_error(error: crate::jwt::JwtError) -> TenantError {
    if error.is_unavailable() {
        TenantError::IdentityProviderUnavailable(error.to_string())
    } else {
        TenantError::InvalidToken(error.to_string())
    }
}

/// The refusal of a token whose identity provider may not enter the tenant.
#[cold]
fn not_allowed(detail: String) -> TenantError {
    tracing::debug!(%detail, "issuer not allowed");
    TenantError::IssuerNotAllowed(detail)
}

/// The refusal of a request that repeats a header naming the tenant.
#[cold]
fn ambiguous_error(ambiguous: &Ambiguous) -> TenantError {
    TenantError::Ambiguous(ambiguous.to_string())
}

/// The claims this layer verified itself, to be given to handlers (not an
/// upstream layer's: those are in the extensions already), with the
/// issuer that verified them.
#[inline(always)]
fn verified(claims: Claims<'_>) -> Option<Token> {
    match claims {
        Claims::Verified(claims, issuer) => Some((claims, issuer)),
        Claims::None | Claims::Upstream(_) => None,
    }
}

/// Claims this layer verified, and the identity provider that verified
/// them (`None`: the application's own secret or key).
pub(super) type Token = (VerifiedClaims, Option<Arc<str>>);

/// The 429 for a tenant over its limit.
pub(super) fn rate_limited(tenant: &TenantInfo, rps: u32, retry_after: Duration) -> Response {
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

/// The parts of a request that resolution reads, borrowed from a whole
/// request (the hit path) or from its parts (the path that awaits).
#[derive(Clone, Copy)]
pub(super) struct Head<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
}

impl<'a> Head<'a> {
    pub(super) fn of<B>(req: &'a Request<B>) -> Self {
        Self {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }

    pub(super) fn of_parts(parts: &'a Parts) -> Self {
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

/// The request's verified claims: none, an upstream layer's (borrowed from
/// the extensions), or verified here (to be inserted for handlers).
enum Claims<'a> {
    None,
    Upstream(&'a VerifiedClaims),
    // Only the built-in verifier (`jwt`) makes these.
    #[cfg_attr(not(feature = "jwt"), allow(dead_code))]
    Verified(VerifiedClaims, Option<Arc<str>>),
}

impl Claims<'_> {
    fn get(&self) -> Option<&VerifiedClaims> {
        match self {
            Self::None => None,
            Self::Upstream(claims) => Some(claims),
            Self::Verified(claims, _) => Some(claims),
        }
    }

    /// The identity provider the claims come from: the one whose key
    /// verified them here, or the `iss` an upstream layer verified.
    fn issuer(&self) -> Option<&str> {
        match self {
            Self::None => None,
            Self::Upstream(claims) => claims.get("iss").and_then(|iss| iss.as_str()),
            Self::Verified(_, issuer) => issuer.as_deref(),
        }
    }
}
