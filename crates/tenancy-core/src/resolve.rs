//! Resolution (SPEC R1–R6): which tenant does this request name?
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

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::config::{ConfigError, ResolutionConfig};
use crate::tenant::TenantRef;

mod named;

use named::Name;
pub use named::Named;

/// Claims of a token whose signature and expiry were verified.
///
/// Only verified claims ever reach resolvers (SPEC R5): an authentication
/// layer inserts this type into the request extensions after verifying a
/// token, or the built-in JWT verifier of the web crate does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifiedClaims(serde_json::Map<String, serde_json::Value>);

impl VerifiedClaims {
    /// Wraps claims that the caller has verified.
    pub fn new(claims: serde_json::Map<String, serde_json::Value>) -> Self {
        Self(claims)
    }

    /// One claim.
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.get(key)
    }

    /// All claims.
    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }

    /// The tenants the user belongs to, from the claim `key` (a list of
    /// tenant ids or slugs). `None` when the claim is absent; a claim that is
    /// not a list of strings counts as an empty membership (fail closed).
    pub fn memberships<'a>(&'a self, key: &str) -> Option<Vec<&'a str>> {
        let value = self.0.get(key)?;
        Some(match value {
            serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str()).collect(),
            serde_json::Value::String(one) => vec![one.as_str()],
            _ => Vec::new(),
        })
    }
}

/// An immutable snapshot of the request that resolvers read (SPEC R1).
///
/// It borrows from the request, so building one costs nothing.
#[derive(Clone, Copy)]
pub struct ResolutionContext<'a> {
    method: &'a Method,
    target: Target<'a>,
    headers: &'a HeaderMap,
    claims: Option<&'a VerifiedClaims>,
}

/// Where the host, path and query come from: given, or read from the
/// request's URI (and `Host` header) only when a resolver asks; most
/// chains read one or none of them.
#[derive(Clone, Copy)]
enum Target<'a> {
    Given {
        host: Option<&'a str>,
        path: &'a str,
        query: Option<&'a str>,
    },
    Request(&'a Uri),
}

impl<'a> ResolutionContext<'a> {
    /// The context of an HTTP request: the host is the authority of its
    /// URI (an absolute-form target, HTTP/2), else its `Host` header, read
    /// only if a resolver asks.
    ///
    /// ```
    /// use tenancy::resolve::ResolutionContext;
    /// let req = http::Request::get("/notes").header("host", "acme.example.com").body(()).unwrap();
    /// let ctx = ResolutionContext::of_request(req.method(), req.uri(), req.headers());
    /// assert_eq!(ctx.host(), Some("acme.example.com"));
    /// assert_eq!(ctx.path(), "/notes");
    /// ```
    #[inline]
    pub fn of_request(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        Self {
            method,
            target: Target::Request(uri),
            headers,
            claims: None,
        }
    }

    /// A context for a request. `host` is the `Host` (or forwarded host)
    /// without any change; resolvers strip the port themselves.
    pub fn new(
        method: &'a Method,
        host: Option<&'a str>,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> Self {
        Self {
            method,
            target: Target::Given { host, path, query },
            headers,
            claims: None,
        }
    }

    /// Adds verified claims.
    pub fn with_claims(mut self, claims: Option<&'a VerifiedClaims>) -> Self {
        self.claims = claims;
        self
    }

    /// The HTTP method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The host the client addressed, if known.
    pub fn host(&self) -> Option<&'a str> {
        match self.target {
            Target::Given { host, .. } => host,
            // An absolute-form target's authority (HTTP/2's `:authority`
            // too) is the host, whatever `Host` says (RFC 9112 §3.2.2).
            Target::Request(uri) => uri.host().or_else(|| {
                self.headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            }),
        }
    }

    /// The path, not percent-decoded.
    pub fn path(&self) -> &'a str {
        match self.target {
            Target::Given { path, .. } => path,
            Target::Request(uri) => uri.path(),
        }
    }

    /// The query string, without `?`.
    pub fn query(&self) -> Option<&'a str> {
        match self.target {
            Target::Given { query, .. } => query,
            Target::Request(uri) => uri.query(),
        }
    }

    /// The request headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// Verified token claims, if an authentication step verified a token.
    pub fn claims(&self) -> Option<&'a VerifiedClaims> {
        self.claims
    }
}

impl fmt::Debug for ResolutionContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolutionContext")
            .field("method", self.method)
            .field("host", &self.host())
            .field("path", &self.path())
            .field("has_claims", &self.claims.is_some())
            .finish_non_exhaustive()
    }
}

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

/// Finds a tenant reference in a request (SPEC R1).
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
fn answer(found: Option<TenantRef>) -> Answer {
    found.map_or(Answer::NotFound, Answer::Found)
}

/// Reads the tenant from a claim of a verified token (`tenant_id` by
/// default; priority 10).
#[derive(Debug, Clone)]
pub struct JwtClaimResolver {
    claim: String,
}

impl JwtClaimResolver {
    /// Name in config.
    pub const NAME: &'static str = "jwt_claim";

    /// Reads claim `claim`.
    pub fn new(claim: impl Into<String>) -> Self {
        Self {
            claim: claim.into(),
        }
    }
}

impl Default for JwtClaimResolver {
    fn default() -> Self {
        Self::new("tenant_id")
    }
}

impl JwtClaimResolver {
    fn find(&self, ctx: &ResolutionContext<'_>) -> Option<TenantRef> {
        match ctx.claims()?.get(&self.claim)? {
            serde_json::Value::String(s) if !s.is_empty() => Some(TenantRef::new(s)),
            serde_json::Value::Number(n) => Some(TenantRef::new(&n.to_string())),
            _ => None,
        }
    }
}

impl Resolver for JwtClaimResolver {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn priority(&self) -> i32 {
        10
    }
    fn resolve_now(&self, ctx: &ResolutionContext<'_>) -> Answer {
        answer(self.find(ctx))
    }
    fn source(&self) -> Source {
        Source::Credential
    }
    fn hint(&self) -> Option<String> {
        Some(format!("a bearer token with a `{}` claim", self.claim))
    }
}

/// Reads the tenant from a header (`X-Tenant-Id` by default; priority 20).
///
/// A header that is present but not visible ASCII still counts as a
/// (malformed) answer, so it is refused rather than skipped.
#[derive(Debug, Clone)]
pub struct HeaderResolver {
    header: HeaderName,
}

impl HeaderResolver {
    /// Name in config.
    pub const NAME: &'static str = "header";

    /// Reads header `header`.
    pub fn new(header: HeaderName) -> Self {
        Self { header }
    }
}

impl Default for HeaderResolver {
    fn default() -> Self {
        Self::new(HeaderName::from_static("x-tenant-id"))
    }
}

/// What [`HeaderResolver`] reads from a request's headers.
enum HeaderRead<'a> {
    /// No such header, or an empty one.
    Absent,
    /// The value, trimmed, borrowed from the request.
    Text(&'a str),
    /// A value that is not visible ASCII: a malformed answer.
    NotText(&'a HeaderValue),
    /// The header more than once: the request is ambiguous.
    Repeated,
}

impl HeaderResolver {
    fn ambiguous(&self) -> Ambiguous {
        Ambiguous {
            header: self.header.clone(),
        }
    }

    #[inline]
    fn read<'a>(&self, headers: &'a HeaderMap) -> HeaderRead<'a> {
        let Some(value) = header_value(headers, &self.header) else {
            return HeaderRead::Absent;
        };
        if is_repeated(headers, &self.header) {
            return HeaderRead::Repeated;
        }
        match value.to_str() {
            Ok("") => HeaderRead::Absent,
            Ok(s) => HeaderRead::Text(s.trim_ascii()),
            Err(_) => HeaderRead::NotText(value),
        }
    }

    fn find(&self, ctx: &ResolutionContext<'_>) -> Option<TenantRef> {
        match self.read(ctx.headers()) {
            HeaderRead::Absent => None,
            HeaderRead::Text(found) => Some(TenantRef::new(found)),
            HeaderRead::NotText(value) => Some(not_text(value)),
            // Read through a chain, this is `Ambiguous`; alone, an answer
            // no tenant can match (refused as malformed).
            HeaderRead::Repeated => Some(TenantRef::new("")),
        }
    }
}

/// Whether header `name` appears more than once. Free when no header at
/// all is repeated (the usual request): the map counts values and names.
#[inline]
fn is_repeated(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.len() != headers.keys_len() && headers.get_all(name).iter().nth(1).is_some()
}

/// A header value that is not visible ASCII, kept (lossily) to be refused
/// as malformed.
fn not_text(value: &HeaderValue) -> TenantRef {
    TenantRef::new(&String::from_utf8_lossy(value.as_bytes()))
}

impl Resolver for HeaderResolver {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn priority(&self) -> i32 {
        20
    }
    fn resolve_now(&self, ctx: &ResolutionContext<'_>) -> Answer {
        answer(self.find(ctx))
    }
    fn hint(&self) -> Option<String> {
        Some(format!(
            "the {} header",
            canonical_header(self.header.as_str())
        ))
    }
}

/// The first value of header `name`. A request carries a handful of
/// headers, most of them standard ones that differ from a custom name at
/// the first comparison, so a scan beats hashing the name; a large map
/// is looked up by hash.
#[inline]
fn header_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    const SCAN_UP_TO: usize = 24;
    if headers.keys_len() > SCAN_UP_TO {
        return headers.get(name);
    }
    headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// `x-tenant-id` → `X-Tenant-Id`, as people write it.
fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Reads the tenant from the first label of the host under a base domain:
/// `acme.app.com` → `acme` with base `app.com` (priority 30).
///
/// Hosts outside the base domain, the bare base domain and reserved labels
/// (`www` by default) give no answer. A deeper name (`a.b.app.com`) answers
/// `a.b`, which no tenant can match, so it is refused.
#[derive(Debug, Clone)]
pub struct SubdomainResolver {
    suffix: String,
    reserved: Vec<String>,
}

impl SubdomainResolver {
    /// Name in config.
    pub const NAME: &'static str = "subdomain";

    /// Resolves under `base_domain` (such as `app.com`).
    pub fn new(base_domain: &str) -> Self {
        Self {
            suffix: format!(".{}", base_domain.trim_matches('.').to_ascii_lowercase()),
            reserved: vec!["www".to_owned()],
        }
    }

    /// Replaces the labels that never name a tenant.
    pub fn reserved<I: IntoIterator<Item = S>, S: Into<String>>(mut self, labels: I) -> Self {
        self.reserved = labels.into_iter().map(Into::into).collect();
        self
    }
}

impl SubdomainResolver {
    fn find(&self, ctx: &ResolutionContext<'_>) -> Option<TenantRef> {
        let host = ctx.host()?;
        if host.starts_with('[') {
            return None; // an IPv6 literal has no subdomain
        }
        let host = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.len() <= self.suffix.len() {
            return None;
        }
        let split = host.len() - self.suffix.len();
        if !host.is_char_boundary(split) || !host[split..].eq_ignore_ascii_case(&self.suffix) {
            return None;
        }
        let label = &host[..split];
        if self.reserved.iter().any(|r| r.eq_ignore_ascii_case(label)) {
            return None;
        }
        if label.bytes().any(|b| b.is_ascii_uppercase()) {
            Some(TenantRef::new(&label.to_ascii_lowercase()))
        } else {
            Some(TenantRef::new(label))
        }
    }
}

impl Resolver for SubdomainResolver {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn priority(&self) -> i32 {
        30
    }
    fn resolve_now(&self, ctx: &ResolutionContext<'_>) -> Answer {
        answer(self.find(ctx))
    }
    fn source(&self) -> Source {
        Source::Host
    }
    fn hint(&self) -> Option<String> {
        Some(format!("a subdomain of {}", &self.suffix[1..]))
    }
}

/// Reads the tenant from a path segment, by a pattern such as
/// `/tenants/{tenant_id}/` (the default; priority 40).
#[derive(Debug, Clone)]
pub struct PathResolver {
    prefix: String,
}

impl PathResolver {
    /// Name in config.
    pub const NAME: &'static str = "path";
    /// The placeholder a pattern must contain once.
    pub const PLACEHOLDER: &'static str = "{tenant_id}";

    /// Parses a pattern: a path that starts with `/` and contains
    /// `{tenant_id}` once, as a whole segment.
    pub fn new(pattern: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            key: "resolution.path_pattern".into(),
            reason: format!("{reason} (got \"{pattern}\"; example: \"/tenants/{{tenant_id}}/\")"),
        };
        let Some((prefix, rest)) = pattern.split_once(Self::PLACEHOLDER) else {
            return Err(invalid("the pattern must contain {tenant_id}"));
        };
        if !prefix.starts_with('/') || !prefix.ends_with('/') {
            return Err(invalid(
                "{tenant_id} must be a whole path segment after a leading '/'",
            ));
        }
        if rest.contains(Self::PLACEHOLDER) {
            return Err(invalid("{tenant_id} may appear only once"));
        }
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(invalid("{tenant_id} must be followed by '/' or the end"));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }
}

impl Default for PathResolver {
    fn default() -> Self {
        Self {
            prefix: "/tenants/".to_owned(),
        }
    }
}

impl PathResolver {
    fn find(&self, ctx: &ResolutionContext<'_>) -> Option<TenantRef> {
        let rest = ctx.path().strip_prefix(self.prefix.as_str())?;
        let segment = rest.split('/').next().unwrap_or(rest);
        (!segment.is_empty()).then(|| TenantRef::new(segment))
    }
}

impl Resolver for PathResolver {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn priority(&self) -> i32 {
        40
    }
    fn resolve_now(&self, ctx: &ResolutionContext<'_>) -> Answer {
        answer(self.find(ctx))
    }
    fn hint(&self) -> Option<String> {
        Some(format!("a {}{{tenant}}/… path", self.prefix))
    }
}

/// Resolvers in priority order (SPEC R3). The chain asks each and
/// gathers the tenants they name into [`Named`]; the [module
/// docs](self) give the rule that decides among them.
#[derive(Clone, Default)]
pub struct ResolverChain {
    resolvers: Vec<Link>,
    override_hook: Option<Link>,
}

/// A resolver of a chain. When it is the built-in [`HeaderResolver`] (known
/// when it is added), the chain reads its header itself, in place: the
/// value is borrowed from the request, not copied into a [`TenantRef`].
#[derive(Clone)]
struct Link {
    resolver: Arc<dyn Resolver>,
    source: Source,
    header: Option<HeaderResolver>,
}

impl Link {
    fn new<R: Resolver>(resolver: R) -> Self {
        let header = (&resolver as &dyn std::any::Any)
            .downcast_ref::<HeaderResolver>()
            .cloned();
        Self {
            source: resolver.source(),
            resolver: Arc::new(resolver),
            header,
        }
    }

    fn shared(resolver: Arc<dyn Resolver>) -> Self {
        Self {
            source: resolver.source(),
            resolver,
            header: None,
        }
    }
}

/// A request that names its tenant ambiguously: a header that must appear
/// once (`Host`, or one a resolver reads) appears more than once. Answered
/// with 400 (RFC 9112 §3.2 for `Host`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the request carries more than one {header} header: send it once")]
pub struct Ambiguous {
    /// The repeated header.
    pub header: HeaderName,
}

impl ResolverChain {
    /// An empty chain (it never resolves anything).
    pub fn new() -> Self {
        Self::default()
    }

    /// The chain named by `config.resolvers`, with their settings.
    ///
    /// An unknown name is an error that names it. `subdomain` without a
    /// `base_domain` is skipped (disabled), as the SPEC says.
    pub fn from_config(config: &ResolutionConfig) -> Result<Self, ConfigError> {
        let mut chain = Self::new();
        for name in &config.resolvers {
            match name.as_str() {
                JwtClaimResolver::NAME => {
                    chain = chain.with(JwtClaimResolver::new(&config.jwt_claim));
                }
                HeaderResolver::NAME => {
                    let header =
                        HeaderName::try_from(config.header_name.as_str()).map_err(|_| {
                            ConfigError::Invalid {
                                key: "resolution.header_name".into(),
                                reason: format!(
                                    "\"{}\" is not a valid HTTP header name",
                                    config.header_name
                                ),
                            }
                        })?;
                    chain = chain.with(HeaderResolver::new(header));
                }
                SubdomainResolver::NAME => {
                    if let Some(base) = config.base_domain.as_deref().filter(|b| !b.is_empty()) {
                        chain = chain.with(
                            SubdomainResolver::new(base)
                                .reserved(config.reserved_subdomains.iter().cloned()),
                        );
                    }
                }
                PathResolver::NAME => {
                    chain = chain.with(PathResolver::new(&config.path_pattern)?);
                }
                // Needs the store: `Tenancy::builder` adds it.
                crate::domain::DomainResolver::NAME => {}
                other => {
                    return Err(ConfigError::Invalid {
                        key: "resolution.resolvers".into(),
                        reason: format!(
                            "unknown resolver \"{other}\": expected jwt_claim, header, domain, subdomain or path \
                             (add custom resolvers in code with ResolverChain::with)"
                        ),
                    });
                }
            }
        }
        Ok(chain)
    }

    /// Adds a resolver, keeping priority order (stable for equal priorities).
    pub fn with(mut self, resolver: impl Resolver) -> Self {
        self.insert(Link::new(resolver));
        self
    }

    /// Adds a shared resolver, keeping priority order.
    pub fn push(&mut self, resolver: Arc<dyn Resolver>) {
        self.insert(Link::shared(resolver));
    }

    fn insert(&mut self, link: Link) {
        let priority = link.resolver.priority();
        let at = self
            .resolvers
            .partition_point(|l| l.resolver.priority() <= priority);
        self.resolvers.insert(at, link);
    }

    /// Sets the override hook (SPEC R6): it runs before every resolver, and
    /// its answer, when it gives one, wins whatever the priorities.
    pub fn override_with(mut self, resolver: impl Resolver) -> Self {
        self.override_hook = Some(Link::new(resolver));
        self
    }

    /// The resolvers' names in the order they run.
    pub fn names(&self) -> Vec<&str> {
        self.resolvers.iter().map(|l| l.resolver.name()).collect()
    }

    /// The detail of a 401 when no resolver found a tenant: what the
    /// configured resolvers accept, in the order they run, so a client is
    /// told only about ways that work.
    ///
    /// ```
    /// use tenancy::{ResolverChain, config::ResolutionConfig};
    /// let config = ResolutionConfig {
    ///     resolvers: vec!["header".into(), "subdomain".into()],
    ///     base_domain: Some("app.example".into()),
    ///     ..Default::default()
    /// };
    /// assert_eq!(
    ///     ResolverChain::from_config(&config)?.hint(),
    ///     "no tenant identified: send the X-Tenant-Id header or a subdomain of app.example",
    /// );
    /// # Ok::<(), tenancy::ConfigError>(())
    /// ```
    pub fn hint(&self) -> String {
        self.hint_without(&[])
    }

    /// [`ResolverChain::hint`] leaving out the resolvers named in `skip`:
    /// the tenant layer leaves out `jwt_claim` when it verifies no tokens
    /// itself, since the client could not use that way.
    pub fn hint_without(&self, skip: &[&str]) -> String {
        let mut ways: Vec<String> = Vec::new();
        for hint in self
            .in_order()
            .map(|l| &l.resolver)
            .filter(|r| !skip.contains(&r.name()))
            .filter_map(|r| r.hint())
        {
            if !ways.contains(&hint) {
                ways.push(hint);
            }
        }
        match ways.as_slice() {
            [] => "no tenant identified".to_owned(),
            [one] => format!("no tenant identified: send {one}"),
            [init @ .., last] => {
                format!("no tenant identified: send {} or {last}", init.join(", "))
            }
        }
    }

    /// Every tenant the request names, without waiting: `None` as soon
    /// as a resolver must be awaited (then use [`ResolverChain::named`]).
    /// Values of headers the built-in [`HeaderResolver`] reads are
    /// borrowed from the request, not copied. The tenant layer's hit path
    /// uses it.
    ///
    /// ```
    /// use tenancy::resolve::{HeaderResolver, ResolutionContext, ResolverChain};
    /// let chain = ResolverChain::new().with(HeaderResolver::default());
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("x-tenant-id", " acme ".parse().unwrap());
    /// let ctx = ResolutionContext::new(&http::Method::GET, None, "/notes", None, &headers);
    /// let named = chain.named_now(&ctx).unwrap().unwrap();
    /// assert_eq!(named.names().collect::<Vec<_>>(), ["acme"]);
    /// ```
    #[inline]
    pub fn named_now<'a>(
        &self,
        ctx: &ResolutionContext<'a>,
    ) -> Option<Result<Named<'a>, Ambiguous>> {
        let mut named = Named::default();
        if let Err(ambiguous) = self.unambiguous(ctx) {
            return Some(Err(ambiguous));
        }
        for link in self.in_order() {
            if !named.wants(link) {
                continue;
            }
            let name = match &link.header {
                Some(header) => match header.read(ctx.headers()) {
                    HeaderRead::Absent => continue,
                    HeaderRead::Text(found) => Name::Borrowed(found),
                    HeaderRead::NotText(value) => Name::Owned(not_text(value)),
                    HeaderRead::Repeated => return Some(Err(header.ambiguous())),
                },
                None => match link.resolver.resolve_now(ctx) {
                    Answer::NotFound => continue,
                    Answer::Wait => return None,
                    Answer::Found(found) => Name::Owned(found),
                },
            };
            named.add(link, name, self.is_override(link));
        }
        Some(Ok(named))
    }

    /// Every tenant the request names, awaiting the resolvers that need it.
    pub async fn named<'a>(&self, ctx: &ResolutionContext<'a>) -> Result<Named<'a>, Ambiguous> {
        if let Some(named) = self.named_now(ctx) {
            return named;
        }
        self.unambiguous(ctx)?;
        let mut named = Named::default();
        for link in self.in_order() {
            if !named.wants(link) {
                continue;
            }
            let found = match link.resolver.resolve_now(ctx) {
                Answer::Found(found) => Some(found),
                Answer::NotFound => None,
                Answer::Wait => link.resolver.resolve(ctx).await,
            };
            if let Some(found) = found {
                named.add(link, Name::Owned(found), self.is_override(link));
            }
        }
        Ok(named)
    }

    /// Refuses a request with more than one `Host` header or more than one
    /// of a header a built-in [`HeaderResolver`] reads. Free for the usual
    /// request, where no header is repeated.
    #[inline]
    fn unambiguous(&self, ctx: &ResolutionContext<'_>) -> Result<(), Ambiguous> {
        let headers = ctx.headers();
        if headers.len() == headers.keys_len() {
            return Ok(());
        }
        if is_repeated(headers, &http::header::HOST) {
            return Err(Ambiguous {
                header: http::header::HOST,
            });
        }
        for header in self.in_order().filter_map(|l| l.header.as_ref()) {
            if is_repeated(headers, &header.header) {
                return Err(header.ambiguous());
            }
        }
        Ok(())
    }

    fn is_override(&self, link: &Link) -> bool {
        self.override_hook
            .as_ref()
            .is_some_and(|hook| std::ptr::eq(hook, link))
    }

    /// The override hook (SPEC R6), then the resolvers by priority.
    fn in_order(&self) -> impl Iterator<Item = &Link> {
        self.override_hook.iter().chain(&self.resolvers)
    }
}

impl fmt::Debug for ResolverChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolverChain")
            .field("resolvers", &self.names())
            .field(
                "override",
                &self.override_hook.as_ref().map(|h| h.resolver.name()),
            )
            .finish()
    }
}
