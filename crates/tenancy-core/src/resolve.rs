//! Resolution: which tenant does this request name?
//!
//! A [`ResolutionContext`] is an immutable, borrowed snapshot of the
//! request. Each [`Resolver`] looks at it and may answer a [`TenantRef`]
//! (an id or a slug, still unverified). A [`ResolverChain`] asks every
//! resolver, in priority order (lower first), and gathers what they name
//! into [`Named`]; an optional override runs before all of them and, when
//! it answers, is the only name.
//!
//! # One answer to "which tenant?"
//!
//! A request may name tenants in several ways at once. Each resolver has a
//! [`Source`]: a verified **credential** (the token's claim), the **host**
//! the client addressed (a verified domain, then a subdomain: the first of
//! them that answers speaks for the host), or an explicit **request**
//! choice (the header, the path, custom resolvers). The rule, applied by
//! [`Named::decide`] once every name is validated:
//!
//! | the request names | with a token listing memberships (or a claim alone: its one tenant) | without a token |
//! |---|---|---|
//! | nothing | — | 401 `tenant_required` |
//! | one tenant, one way or several | served if a member, else 403 `not_a_member` | served |
//! | the claim's tenant only | served (the token's default) | — |
//! | the claim's tenant and another by host, header or path | the other one, if both are members; else 403 `not_a_member` | — |
//! | two different tenants by host, header or path | 403 `not_a_member` if either is not a member, else 403 `tenant_conflict` | 403 `tenant_conflict` |
//! | a tenant that is unknown or not active | 403 `not_a_member` unless the token names it literally (then its state: `unknown_tenant`, `tenant_not_active`) | its state |
//! | two `Host` headers, or two of a header a resolver reads | 400 `ambiguous_request` | 400 `ambiguous_request` |
//!
//! One tenant named in different ways (its id by the header, its slug by
//! the subdomain) is one tenant. Membership is decided before anything
//! about a non-member's existence or state is told. The host of an
//! absolute-form target (`GET http://acme.example.com/notes`) is its
//! authority, whatever the `Host` header says (RFC 9112).
//!
//! ```
//! use tenancy::resolve::{HeaderResolver, ResolutionContext, ResolverChain};
//! let chain = ResolverChain::new().with(HeaderResolver::default());
//! let mut headers = http::HeaderMap::new();
//! headers.insert("x-tenant-id", "acme".parse().unwrap());
//! let ctx = ResolutionContext::new(&http::Method::GET, None, "/notes", None, &headers);
//! let named = chain.named_now(&ctx).unwrap().unwrap();
//! assert_eq!(named.names().collect::<Vec<_>>(), ["acme"]);
//! ```

use async_trait::async_trait;

use crate::tenant::TenantRef;

mod builtin;
mod chain;
mod context;
mod named;

pub use builtin::{HeaderResolver, JwtClaimResolver, PathResolver, SubdomainResolver};
pub use chain::{Ambiguous, ResolverChain};
pub use context::{Membership, MembershipClaimError, ResolutionContext, VerifiedClaims};
pub use named::Named;

/// What a resolver can tell from the request alone, without waiting
/// ([`Resolver::resolve_now`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The request names this tenant.
    Found(TenantRef),
    /// This resolver finds no tenant in the request.
    NotFound,
    /// Only [`Resolver::resolve`] can tell (it needs I/O, such as a lookup).
    Wait,
}

impl Answer {
    /// The reference found, if any.
    pub fn found(self) -> Option<TenantRef> {
        match self {
            Self::Found(found) => Some(found),
            Self::NotFound | Self::Wait => None,
        }
    }
}

/// Finds a tenant reference in a request.
///
/// Implement it for your own sources (a query parameter, a cookie, an API
/// key table) and add it with [`ResolverChain::with`]. A resolver that
/// reads only the request implements [`Resolver::resolve_now`]; one that
/// needs I/O implements the async [`Resolver::resolve`] (and may still
/// answer cached cases in `resolve_now`). The tenant layer asks
/// `resolve_now` first, so a request that every resolver answers at once
/// never waits or allocates for resolution.
///
/// ```
/// use tenancy::resolve::{Answer, ResolutionContext, Resolver};
/// use tenancy::TenantRef;
///
/// /// `?tenant=acme`
/// struct QueryParam;
///
/// impl Resolver for QueryParam {
///     fn name(&self) -> &str { "query" }
///     fn priority(&self) -> i32 { 50 }
///     fn resolve_now(&self, ctx: &ResolutionContext<'_>) -> Answer {
///         ctx.query()
///             .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("tenant=")))
///             .map_or(Answer::NotFound, |value| Answer::Found(TenantRef::new(value)))
///     }
/// }
/// ```
///
/// One that looks API keys up in a table:
///
/// ```
/// use async_trait::async_trait;
/// use tenancy::resolve::{ResolutionContext, Resolver};
/// use tenancy::TenantRef;
///
/// struct ApiKeys; // holds a pool in real code
///
/// #[async_trait]
/// impl Resolver for ApiKeys {
///     fn name(&self) -> &str { "api_key" }
///     fn priority(&self) -> i32 { 15 }
///     async fn resolve(&self, ctx: &ResolutionContext<'_>) -> Option<TenantRef> {
///         let key = ctx.headers().get("x-api-key")?.to_str().ok()?;
///         // SELECT tenant_id FROM api_keys WHERE key_hash = $1 …
///         (key == "k-123").then(|| TenantRef::new("acme"))
///     }
/// }
/// ```
#[async_trait]
pub trait Resolver: Send + Sync + 'static {
    /// A short name for logs and config (`"header"`).
    fn name(&self) -> &str;

    /// Order in the chain: lower runs first.
    fn priority(&self) -> i32;

    /// The answer from the request alone, without waiting. When it is
    /// [`Answer::Found`] or [`Answer::NotFound`] it must be what
    /// [`Resolver::resolve`] would answer. The default is [`Answer::Wait`]:
    /// ask `resolve`.
    fn resolve_now(&self, _ctx: &ResolutionContext<'_>) -> Answer {
        Answer::Wait
    }

    /// The tenant this request names, if this resolver finds one. The
    /// default is [`Resolver::resolve_now`]'s answer.
    async fn resolve(&self, ctx: &ResolutionContext<'_>) -> Option<TenantRef> {
        self.resolve_now(ctx).found()
    }

    /// What this resolver reads, which decides how its answer weighs
    /// against the others' (see the [module docs](self)). The default is
    /// [`Source::Request`].
    fn source(&self) -> Source {
        Source::Request
    }

    /// How a client names a tenant to this resolver, for the 401 detail
    /// when no resolver found one ("the X-Tenant-Id header"). `None` (the
    /// default) leaves it out of the detail.
    fn hint(&self) -> Option<String> {
        None
    }
}

/// Where a resolver finds the tenant, which decides how its answer weighs
/// against the others' (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A verified credential, such as a token's claim: the tenant the
    /// credential is for (its membership when it lists none), used when
    /// the request names no other.
    Credential,
    /// The host the client addressed (a verified domain, a subdomain): the
    /// first host resolver that answers speaks for the host.
    Host,
    /// The client's explicit choice: a header, the path, a parameter.
    Request,
}

/// `Some(found)` → `Found`, `None` → `NotFound`.
pub(crate) fn answer(found: Option<TenantRef>) -> Answer {
    found.map_or(Answer::NotFound, Answer::Found)
}
