//! [`ResolverChain`]: the resolvers in priority order, asked together.

use std::fmt;
use std::sync::Arc;

use http::HeaderName;

use super::builtin::{HeaderRead, is_repeated, not_text};
use super::named::Name;
use super::{
    Answer, HeaderResolver, JwtClaimResolver, Named, PathResolver, ResolutionContext, Resolver,
    Source, SubdomainResolver,
};
use crate::config::{ConfigError, ResolutionConfig};

/// Resolvers in priority order. The chain asks each and
/// gathers the tenants they name into [`Named`]; the [module
/// docs](super) give the rule that decides among them.
#[derive(Clone, Default)]
pub struct ResolverChain {
    resolvers: Vec<Link>,
    override_hook: Option<Link>,
}

/// A resolver of a chain. When it is the built-in [`HeaderResolver`] (known
/// when it is added), the chain reads its header itself, in place: the
/// value is borrowed from the request, not copied into a [`TenantRef`].
#[derive(Clone)]
pub(super) struct Link {
    resolver: Arc<dyn Resolver>,
    pub(super) source: Source,
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
    /// `base_domain` is skipped (disabled).
    pub fn from_config(config: &ResolutionConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut chain = Self::new();
        for name in &config.resolvers {
            match name.as_str() {
                JwtClaimResolver::NAME => {
                    chain = chain.with(JwtClaimResolver::new(&config.jwt_claim));
                }
                HeaderResolver::NAME => {
                    let header = config.header()?;
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
                // `domain` needs the store: `Tenancy::builder` adds it. No
                // other name passes `validate`.
                _ => {}
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

    /// Sets the override hook: it runs before every resolver, and
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
            if !named.wants(link.source) {
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
            named.add(link.source, name, self.is_override(link));
        }
        Some(Ok(named))
    }

    /// Every tenant the request names, awaiting the resolvers that need it.
    /// Each resolver is asked once: its answer without waiting, else its
    /// awaited one (the tenant layer calls this after
    /// [`ResolverChain::named_now`] gave up, so trying that again would
    /// repeat the work).
    pub async fn named<'a>(&self, ctx: &ResolutionContext<'a>) -> Result<Named<'a>, Ambiguous> {
        self.unambiguous(ctx)?;
        let mut named = Named::default();
        for link in self.in_order() {
            if !named.wants(link.source) {
                continue;
            }
            let found = match link.resolver.resolve_now(ctx) {
                Answer::Found(found) => Some(found),
                Answer::NotFound => None,
                Answer::Wait => link.resolver.resolve(ctx).await,
            };
            if let Some(found) = found {
                named.add(link.source, Name::Owned(found), self.is_override(link));
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

    /// The override hook, then the resolvers by priority.
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
