//! The built-in resolvers: a token's claim, a header, a subdomain, a path.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{Ambiguous, Answer, ResolutionContext, Resolver, Source, answer};
use crate::config::ConfigError;
use crate::tenant::TenantRef;

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
        // A nested claim by its dotted path too (`o.id`, `org.id`).
        match ctx.claims()?.claim_at(&self.claim)? {
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
    pub(super) header: HeaderName,
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
pub(super) enum HeaderRead<'a> {
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
    pub(super) fn ambiguous(&self) -> Ambiguous {
        Ambiguous {
            header: self.header.clone(),
        }
    }

    #[inline]
    pub(super) fn read<'a>(&self, headers: &'a HeaderMap) -> HeaderRead<'a> {
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
pub(super) fn is_repeated(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers.len() != headers.keys_len() && headers.get_all(name).iter().nth(1).is_some()
}

/// A header value that is not visible ASCII, kept (lossily) to be refused
/// as malformed.
pub(super) fn not_text(value: &HeaderValue) -> TenantRef {
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
    pub const PLACEHOLDER: &'static str = crate::config::PATH_PLACEHOLDER;

    /// Parses a pattern: a path that starts with `/` and contains
    /// `{tenant_id}` once, as a whole segment.
    pub fn new(pattern: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            prefix: crate::config::path_prefix(pattern)?.to_owned(),
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
