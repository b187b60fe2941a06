//! The request rules: which tenant a request is for (claims, names,
//! validation, the naming rule, memberships), apart from the tower
//! plumbing in `service.rs`. The hit path ([`tenant_state_now`]) answers
//! without waiting or gives up; the path that waits ([`tenant_state`])
//! does the same steps awaiting what must be awaited.

use std::sync::Arc;

use http::request::Parts;
use http::{Extensions, HeaderMap, Method, Request, Uri};
use tenancy_core::resolve::{Ambiguous, Named};
use tenancy_core::{Rejection, ResolutionContext, TenantInfo, TenantRef, VerifiedClaims};

use super::Shared;
use crate::outcome::{TenantError, TenantState};

/// Resolves and validates the tenant of `req`.
/// Also returns the claims when this layer verified them itself (not when
/// an upstream layer put them in the extensions already).
pub(super) async fn tenant_state(
    shared: &Shared,
    req: Head<'_>,
) -> (TenantState, Option<VerifiedClaims>) {
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
pub(super) fn tenant_state_now(
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
