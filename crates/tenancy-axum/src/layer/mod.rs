//! [`TenantLayer`]: resolve → validate → scope, on every request.
//!
//! The layer never rejects. It resolves the tenant the request names,
//! validates it, checks it against the verified memberships, and records
//! the outcome as a [`TenantState`](crate::TenantState) in the request
//! extensions. When the tenant is valid, the rest of the request runs with
//! it as the task-local current tenant and with `tenant_id` on the tracing
//! span. Extractors ([`Tenant`](crate::Tenant)) and the
//! [`RequireTenantLayer`](crate::RequireTenantLayer) guard turn a missing or
//! refused tenant into a 401/403 problem response.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use tenancy::{Tenant, TenantLayer};
//! use tenancy::{MemoryStore, ResolverChain, Validator, resolve::HeaderResolver};
//!
//! async fn hello(tenant: Tenant) -> String {
//!     format!("hello, {}", tenant.name)
//! }
//!
//! let store = Arc::new(MemoryStore::new());
//! let layer = TenantLayer::new(
//!     ResolverChain::new().with(HeaderResolver::default()),
//!     Validator::new(store, &Default::default()),
//! );
//! let app: Router = Router::new().route("/hello", get(hello)).layer(layer);
//! ```

mod rules;
mod service;

use std::sync::Arc;

use tenancy_core::{ResolverChain, Validator};
use tower_layer::Layer;

use crate::metrics::RequestMetrics;
use crate::rate_limit::{Limits, RateLimits};

pub use service::{TenantFuture, TenantService};

#[cfg(feature = "jwt")]
use crate::jwt::JwtVerifier;

/// The tower layer that resolves and validates each request's tenant.
///
/// Cloning is cheap (one `Arc`).
#[derive(Clone)]
pub struct TenantLayer {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) chain: ResolverChain,
    /// The 401 answer, built once from the chain.
    pub(crate) not_identified: Arc<str>,
    pub(crate) limits: Option<Arc<Limits>>,
    pub(crate) metrics: Option<RequestMetrics>,
    pub(crate) validator: Validator,
    pub(crate) membership_claim: String,
    #[cfg(feature = "jwt")]
    pub(crate) jwt: Option<JwtVerifier>,
}

impl TenantLayer {
    /// A layer resolving with `chain` and validating with `validator`.
    /// Memberships are read from the `tenants` claim.
    pub fn new(chain: ResolverChain, validator: Validator) -> Self {
        Self {
            shared: Arc::new(Shared {
                // Tokens are offered only once a verifier is set (`jwt`).
                not_identified: Arc::from(
                    chain.hint_without(&[tenancy_core::resolve::JwtClaimResolver::NAME]),
                ),
                limits: None,
                metrics: None,
                chain,
                validator,
                membership_claim: "tenants".to_owned(),
                #[cfg(feature = "jwt")]
                jwt: None,
            }),
        }
    }

    /// Reads memberships from claim `claim` instead of `tenants`.
    pub fn membership_claim(mut self, claim: impl Into<String>) -> Self {
        self.shared_mut().membership_claim = claim.into();
        self
    }

    /// Verifies `Authorization: Bearer` tokens with `verifier` and exposes
    /// their claims to resolvers. Without it, claims come only from a
    /// [`VerifiedClaims`](tenancy_core::VerifiedClaims) extension that an
    /// upstream authentication layer inserted.
    ///
    /// With a verifier, a bearer token that fails verification (bad
    /// signature, expired, wrong algorithm) refuses the request with 401:
    /// it never falls back to other resolvers.
    #[cfg(feature = "jwt")]
    pub fn jwt(mut self, verifier: JwtVerifier) -> Self {
        let shared = self.shared_mut();
        shared.jwt = Some(verifier);
        shared.not_identified = Arc::from(shared.chain.hint());
        self
    }

    /// Applies per-tenant rate limits to every request whose tenant this
    /// layer resolved: over the limit, the answer is 429 `rate_limited`
    /// and the handler does not run.
    pub fn rate_limits(mut self, limits: RateLimits) -> Self {
        self.shared_mut().limits = Some(limits.limits);
        self
    }

    /// Counts every request by outcome, its latency and its tenant into
    /// `metrics` (read them with an exporter such as `tenancy serve`'s
    /// `GET /metrics`).
    pub fn metrics(mut self, metrics: RequestMetrics) -> Self {
        self.shared_mut().metrics = Some(metrics);
        self
    }

    /// The validator (to invalidate it, or share it with a lifecycle).
    pub fn validator(&self) -> &Validator {
        &self.shared.validator
    }

    fn shared_mut(&mut self) -> &mut Shared {
        // Builder methods run before the layer is cloned into services; if
        // it was cloned already, copy-on-write keeps the clones unchanged.
        if Arc::get_mut(&mut self.shared).is_none() {
            self.shared = Arc::new(Shared {
                not_identified: self.shared.not_identified.clone(),
                limits: self.shared.limits.clone(),
                metrics: self.shared.metrics.clone(),
                chain: self.shared.chain.clone(),
                validator: self.shared.validator.clone(),
                membership_claim: self.shared.membership_claim.clone(),
                #[cfg(feature = "jwt")]
                jwt: self.shared.jwt.clone(),
            });
        }
        Arc::get_mut(&mut self.shared).unwrap_or_else(|| unreachable!("just made unique"))
    }
}

impl<S> Layer<S> for TenantLayer {
    type Service = TenantService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantService::new(inner, self.shared.clone())
    }
}

impl std::fmt::Debug for TenantLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantLayer")
            .field("chain", &self.shared.chain)
            .field("membership_claim", &self.shared.membership_claim)
            .field("rate_limits", &self.shared.limits.is_some())
            .finish_non_exhaustive()
    }
}
