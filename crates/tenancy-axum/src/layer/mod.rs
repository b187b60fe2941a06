//! [`TenantLayer`]: resolve → validate → scope, on every request (SPEC M1).
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
//! use tenancy_axum::{Tenant, TenantLayer};
//! use tenancy_core::{MemoryStore, ResolverChain, Validator, resolve::HeaderResolver};
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

mod service;

use std::sync::Arc;

use tenancy_core::{ResolverChain, Validator};
use tower_layer::Layer;

pub use service::TenantService;

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
                chain,
                validator,
                membership_claim: "tenants".to_owned(),
                #[cfg(feature = "jwt")]
                jwt: None,
            }),
        }
    }

    /// Reads memberships (SPEC M4) from claim `claim` instead of `tenants`.
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
        self.shared_mut().jwt = Some(verifier);
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
            .finish_non_exhaustive()
    }
}
