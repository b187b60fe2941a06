//! What the [`TenantLayer`](crate::TenantLayer) found out about a request,
//! stored in its extensions for extractors and guards.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tenancy_core::{Rejection, TenantInfo};

use crate::problem::Problem;

/// The tenancy outcome of one request.
#[derive(Debug, Clone)]
pub enum TenantState {
    /// A valid, active tenant (and, if the request carried memberships, one
    /// the user belongs to).
    Resolved(Arc<TenantInfo>),
    /// The request did not name a tenant, or it named one that may not be
    /// served, or its token failed verification.
    Refused(TenantError),
}

impl TenantState {
    /// The tenant, if resolved.
    pub fn tenant(&self) -> Option<&Arc<TenantInfo>> {
        match self {
            Self::Resolved(t) => Some(t),
            Self::Refused(_) => None,
        }
    }
}

/// Why a request has no usable tenant. Converts into its response: 401 when no tenant was named or the token is
/// invalid, 403 when the tenant may not be served (or the request names
/// several), 400 when a header naming it is repeated, 503 when the store
/// or the token's identity provider is down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TenantError {
    /// No resolver found a tenant in the request. The text names only the
    /// ways the configured resolvers accept ([`ResolverChain::hint`](tenancy_core::ResolverChain::hint)).
    #[error("{0}")]
    NotIdentified(Arc<str>),
    /// A bearer token was present but failed verification.
    #[error("invalid bearer token: {0}")]
    InvalidToken(String),
    /// The route needs a verified token and the request has none.
    #[error("a bearer token is required: send Authorization: Bearer <token>")]
    TokenRequired,
    /// The token's identity provider may not enter the tenant: the tenant
    /// accepts only its own provider (`auth.issuer`), or the token comes
    /// from another tenant's own provider. 403 `issuer_not_allowed`.
    #[error("{0}")]
    IssuerNotAllowed(String),
    /// The identity provider that issued the bearer token could not be
    /// reached in time and none of its keys is held: 503, retry later.
    #[error("{0}")]
    IdentityProviderUnavailable(String),
    /// The request repeats a header that names the tenant (`Host`, or one
    /// a resolver reads): 400, nothing is guessed.
    #[error("{0}")]
    Ambiguous(String),
    /// The named tenant may not be served.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The route needs a tenant but the [`TenantLayer`](crate::TenantLayer)
    /// is not installed in front of it (a programming error).
    #[error("tenancy is not set up for this route: add TenantLayer to the router")]
    LayerMissing,
}

impl TenantError {
    /// The problem this error answers with.
    pub fn to_problem(&self) -> Problem {
        let (status, code) = match self {
            Self::NotIdentified(_) => (StatusCode::UNAUTHORIZED, "tenant_required"),
            Self::InvalidToken(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Self::TokenRequired => (StatusCode::UNAUTHORIZED, "token_required"),
            Self::IssuerNotAllowed(_) => (StatusCode::FORBIDDEN, "issuer_not_allowed"),
            Self::IdentityProviderUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "identity_provider_unavailable",
            ),
            Self::Rejected(Rejection::Malformed) => (StatusCode::FORBIDDEN, "malformed_tenant"),
            Self::Rejected(Rejection::Unknown) => (StatusCode::FORBIDDEN, "unknown_tenant"),
            Self::Rejected(Rejection::NotActive(_)) => (StatusCode::FORBIDDEN, "tenant_not_active"),
            Self::Ambiguous(_) => (StatusCode::BAD_REQUEST, "ambiguous_request"),
            Self::Rejected(Rejection::NotMember) => (StatusCode::FORBIDDEN, "not_a_member"),
            Self::Rejected(Rejection::Conflict) => (StatusCode::FORBIDDEN, "tenant_conflict"),
            Self::Rejected(Rejection::TrialExpired) => (StatusCode::FORBIDDEN, "trial_expired"),
            Self::Rejected(Rejection::StoreUnavailable) => {
                (StatusCode::SERVICE_UNAVAILABLE, "tenant_store_unavailable")
            }
            Self::Rejected(_) => (StatusCode::FORBIDDEN, "tenant_refused"),
            Self::LayerMissing => (StatusCode::INTERNAL_SERVER_ERROR, "tenancy_not_configured"),
        };
        let problem = Problem::new(status, code, self.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            problem.retry_after(1)
        } else {
            problem
        }
    }
}

impl IntoResponse for TenantError {
    fn into_response(self) -> Response {
        self.to_problem().into_response()
    }
}
