//! [`TenantLayer`]: resolve → validate → scope, on every request.
//!
//! The layer never rejects. It resolves the tenant the request names,
//! validates it, checks it against the verified memberships, and records
//! the outcome as a [`TenantState`] in the request
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
//!
//! The rules (claims, resolution, validation, the naming rule,
//! memberships, rate limits) are written once, apart from the tower
//! plumbing ([`TenantService`], [`ResponseFuture`]). A gateway that only
//! asks where a request may go applies the same rules with
//! [`TenantLayer::decide`].

mod rules;
mod service;

use std::sync::Arc;

use axum::response::Response;
use http::request::Parts;
use tenancy_core::{ResolverChain, Validator};
use tower_layer::Layer;

use crate::metrics::RequestMetrics;
use crate::outcome::TenantState;
use crate::rate_limit::RateLimits;
use rules::{Carried, Head, Verdict};

pub(crate) use rules::Rules;
pub use service::{ResponseFuture, TenantService};

#[cfg(feature = "jwt")]
use crate::jwt::JwtVerifier;
use tenancy_core::issuers::TenantIssuers;

/// The tower layer that resolves and validates each request's tenant.
///
/// Cloning is cheap (one `Arc`).
#[derive(Clone)]
pub struct TenantLayer {
    pub(crate) rules: Arc<Rules>,
}

impl TenantLayer {
    /// A layer resolving with `chain` and validating with `validator`.
    /// Memberships are read from the `tenants` claim.
    pub fn new(chain: ResolverChain, validator: Validator) -> Self {
        Self {
            rules: Arc::new(Rules {
                // Tokens are offered only once a verifier is set (`jwt`).
                not_identified: Arc::from(
                    chain.hint_without(&[tenancy_core::resolve::JwtClaimResolver::NAME]),
                ),
                limits: None,
                metrics: None,
                usage: None,
                chain,
                validator,
                membership_claim: std::sync::Arc::from("tenants"),
                require_token: false,
                issuers: None,
                #[cfg(feature = "jwt")]
                jwt: None,
            }),
        }
    }

    /// Makes every request need a verified token (claims verified
    /// upstream, or a bearer token this layer verifies): one without is
    /// refused with 401 `token_required`, before any tenant is resolved.
    /// `auth.required` in the configuration.
    ///
    /// ```
    /// # let chain = tenancy::ResolverChain::new();
    /// # let validator = tenancy::Validator::new(std::sync::Arc::new(tenancy::MemoryStore::new()), &Default::default());
    /// let layer = tenancy::TenantLayer::new(chain, validator).require_token(true);
    /// # let _ = layer;
    /// ```
    pub fn require_token(mut self, required: bool) -> Self {
        self.rules_mut().require_token = required;
        self
    }

    /// Reads memberships from claim `claim` instead of `tenants`.
    pub fn membership_claim(mut self, claim: impl Into<String>) -> Self {
        self.rules_mut().membership_claim = std::sync::Arc::from(claim.into());
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
        let rules = self.rules_mut();
        rules.jwt = Some(match &rules.issuers {
            Some(issuers) => trusting(verifier, issuers.clone()),
            None => verifier,
        });
        rules.not_identified = Arc::from(rules.chain.hint());
        self
    }

    /// Lets tenants bring their own identity provider (config key
    /// `auth.issuer`, SPEC K2). A token verified with a tenant's own
    /// provider (its keys fetched like `auth.issuers`') enters only the
    /// tenants that named it; a tenant that names one accepts no other
    /// token, nor a request without one: 403 `issuer_not_allowed` (401
    /// `token_required` without a token).
    ///
    /// The index is loaded before the first request is decided and kept
    /// current by the change listeners (`ChangeTargets::tenant_issuers`).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # let store = Arc::new(tenancy::MemoryStore::new());
    /// # let chain = tenancy::ResolverChain::new();
    /// # let validator = tenancy::Validator::new(store.clone(), &Default::default());
    /// let issuers = tenancy::issuers::TenantIssuers::new(store, &Default::default());
    /// let layer = tenancy::TenantLayer::new(chain, validator).tenant_issuers(issuers);
    /// # let _ = layer;
    /// ```
    pub fn tenant_issuers(mut self, issuers: TenantIssuers) -> Self {
        let rules = self.rules_mut();
        #[cfg(feature = "jwt")]
        if let Some(verifier) = rules.jwt.take() {
            rules.jwt = Some(trusting(verifier, issuers.clone()));
        }
        rules.issuers = Some(issuers);
        self
    }

    /// Applies per-tenant rate limits to every request whose tenant this
    /// layer resolved: over the limit, the answer is 429 `rate_limited`
    /// and the handler does not run.
    pub fn rate_limits(mut self, limits: RateLimits) -> Self {
        self.rules_mut().limits = Some(limits.limits);
        self
    }

    /// Counts every request by outcome, its latency and its tenant into
    /// `metrics` (read them with an exporter such as `tenancy serve`'s
    /// `GET /metrics`).
    pub fn metrics(mut self, metrics: RequestMetrics) -> Self {
        self.rules_mut().metrics = Some(metrics);
        self
    }

    /// Meters every served request into `meter`: counted in when the
    /// tenant is validated, and by the status class of its answer (SPEC
    /// E4). Two atomic additions and a lookup of the tenant's counters;
    /// nothing touches a database.
    pub fn usage(mut self, meter: tenancy_core::usage::UsageMeter) -> Self {
        self.rules_mut().usage = Some(meter);
        self
    }

    /// The validator (to invalidate it, or share it with a lifecycle).
    pub fn validator(&self) -> &Validator {
        &self.rules.validator
    }

    /// What the layer decides for a request with this head, without
    /// running anything behind it: the [`TenantState`] it would record
    /// (the tenant, or why none may be served), or the answer it would
    /// give itself (429 `rate_limited`, with `Retry-After`). It counts into
    /// the [metrics](TenantLayer::metrics) as a request through the layer
    /// does.
    ///
    /// For gateways that ask where a request may go (such as `tenancy
    /// serve`'s `GET /resolve`), so they apply the same rules as the API.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tenancy::{MemoryStore, ResolverChain, TenantLayer, TenantState, Validator};
    /// use tenancy::resolve::HeaderResolver;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let layer = TenantLayer::new(
    ///     ResolverChain::new().with(HeaderResolver::default()),
    ///     Validator::new(Arc::new(MemoryStore::new()), &Default::default()),
    /// );
    /// let (parts, ()) = http::Request::get("/notes").body(())?.into_parts();
    /// // No tenant named: refused (401 `tenant_required` once a handler asks).
    /// assert!(matches!(layer.decide(&parts).await, Ok(TenantState::Refused(_))));
    /// # Ok(()) }
    /// ```
    pub async fn decide(&self, parts: &Parts) -> Result<TenantState, Response> {
        let started = self
            .rules
            .metrics
            .as_ref()
            .filter(|_| crate::metrics::timed())
            .map(|metrics| (metrics, quanta::Instant::now()));
        let (verdict, _) = self
            .rules
            .verdict(Head::of_parts(parts), Carried::default())
            .await;
        self.rules.record(&verdict);
        if let Verdict::Serve(tenant) = &verdict {
            service::record_tenant_on_span(tenant);
        }
        if let Some((metrics, started)) = started {
            metrics.latency(started.elapsed());
        }
        match verdict {
            Verdict::Serve(tenant) => Ok(TenantState::Resolved(tenant)),
            Verdict::Refuse(error) => Ok(TenantState::Refused(error)),
            Verdict::Limited {
                tenant,
                rps,
                retry_after,
            } => Err(rules::rate_limited(&tenant, rps, retry_after)),
        }
    }

    fn rules_mut(&mut self) -> &mut Rules {
        // Builder methods run before the layer is cloned into services; if
        // it was cloned already, copy-on-write keeps the clones unchanged.
        if Arc::get_mut(&mut self.rules).is_none() {
            self.rules = Arc::new(Rules {
                not_identified: self.rules.not_identified.clone(),
                limits: self.rules.limits.clone(),
                metrics: self.rules.metrics.clone(),
                usage: self.rules.usage.clone(),
                chain: self.rules.chain.clone(),
                validator: self.rules.validator.clone(),
                membership_claim: self.rules.membership_claim.clone(),
                require_token: self.rules.require_token,
                issuers: self.rules.issuers.clone(),
                #[cfg(feature = "jwt")]
                jwt: self.rules.jwt.clone(),
            });
        }
        Arc::get_mut(&mut self.rules).unwrap_or_else(|| unreachable!("just made unique"))
    }
}

/// `verifier`, also trusting the tenants' own providers.
#[cfg(feature = "jwt")]
fn trusting(verifier: JwtVerifier, issuers: TenantIssuers) -> JwtVerifier {
    verifier.issuer_lookup(move |iss| issuers.config_for(iss))
}

impl<S> Layer<S> for TenantLayer {
    type Service = TenantService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantService::new(inner, self.rules.clone())
    }
}

impl std::fmt::Debug for TenantLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantLayer")
            .field("chain", &self.rules.chain)
            .field("membership_claim", &self.rules.membership_claim)
            .field("rate_limits", &self.rules.limits.is_some())
            .finish_non_exhaustive()
    }
}
