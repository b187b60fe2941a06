//! The web side of the `tenancy` toolkit, for axum and tower.
//!
//! - [`TenantLayer`]: resolves and validates the tenant of every request,
//!   never rejects, records the outcome, scopes the task-local tenant and
//!   the tracing span.
//! - [`Tenant`]: the extractor (`Option<Tenant>` too).
//! - [`RequireTenantLayer`]: a guard for whole routers.
//! - [`RateLimits`]: per-tenant rate limits, applied by the tenant layer,
//!   in process or shared through Redis (feature `redis`).
//! - [`Problem`]: RFC 9457 problem+json bodies for every error.
//! - [`JwtVerifier`] (feature `jwt`): bearer token verification, with
//!   your own HS256 secret or RS256 key and identity providers' key sets
//!   (OpenID discovery, JWKS, key rotation), and a verified-token cache.
//!
//! | Situation | Status | `code` |
//! |---|---|---|
//! | no tenant named | 401 | `tenant_required` |
//! | bearer token invalid or expired | 401 | `invalid_token` |
//! | malformed reference | 403 | `malformed_tenant` |
//! | unknown tenant | 403 | `unknown_tenant` |
//! | inactive / suspended / provisioning | 403 | `tenant_not_active` |
//! | not among the token's memberships | 403 | `not_a_member` |
//! | the request names different tenants (host, header, path) | 403 | `tenant_conflict` |
//! | a header naming the tenant (`Host`, `X-Tenant-Id`) is repeated | 400 | `ambiguous_request` |
//! | tenant store down | 503 | `tenant_store_unavailable` |
//! | the token's identity provider unreachable and none of its keys held | 503 | `identity_provider_unavailable` |
//! | over the tenant's rate limit | 429 | `rate_limited` |
//!
//! See the `tenancy` facade crate for the one-call setup.

mod extract;
pub mod feature;
pub mod guard;
#[cfg(feature = "jwt")]
mod jwt;
pub mod layer;
pub mod metrics;
mod outcome;
mod problem;
pub mod rate_limit;

pub use extract::{Principal, Tenant};
pub use feature::RequireFeatureLayer;
pub use guard::{RequireTenant, RequireTenantLayer};
#[cfg(feature = "jwt")]
pub use jwt::{DEFAULT_TOKEN_CACHE, JwtError, JwtVerifier, VerifiedToken, VerifierStats};
pub use layer::{TenantLayer, TenantService};
pub use metrics::RequestMetrics;
pub use outcome::{TenantError, TenantState};
pub use problem::{PROBLEM_JSON, Problem};
pub use rate_limit::RateLimits;
#[cfg(feature = "redis")]
pub use rate_limit::RedisBackend;
