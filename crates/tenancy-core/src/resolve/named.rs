//! [`Named`]: every tenant a request names, and the one rule that decides
//! among them (see the [module docs](super)).

use std::sync::Arc;

use super::Source;
use crate::tenant::{TenantInfo, TenantRef};
use crate::validate::Rejection;

/// One name as a resolver found it: borrowed from the request when it
/// could be (a header read in place), else copied.
#[derive(Debug)]
pub(super) enum Name<'a> {
    Borrowed(&'a str),
    Owned(TenantRef),
}

impl Name<'_> {
    fn as_str(&self) -> &str {
        match self {
            Self::Borrowed(name) => name,
            Self::Owned(name) => name.as_str(),
        }
    }
}

/// Every tenant a request names, as the resolvers of a
/// [`ResolverChain`](super::ResolverChain) found them: the credential's
/// (a token's claim), and the distinct names given by the host and by the
/// request itself (header, path). Made by
/// [`ResolverChain::named_now`](super::ResolverChain::named_now) and
/// [`ResolverChain::named`](super::ResolverChain::named); validate each of
/// [`Named::names`], then [`Named::decide`].
///
/// ```
/// use std::sync::Arc;
/// use tenancy::resolve::{HeaderResolver, PathResolver, ResolutionContext, ResolverChain};
/// use tenancy::{NewTenant, Rejection};
///
/// let chain = ResolverChain::new()
///     .with(HeaderResolver::default())
///     .with(PathResolver::default());
/// let mut headers = http::HeaderMap::new();
/// headers.insert("x-tenant-id", "acme".parse().unwrap());
/// let ctx = ResolutionContext::new(&http::Method::GET, None, "/tenants/globex/notes", None, &headers);
/// let named = chain.named_now(&ctx).unwrap().unwrap();
/// assert_eq!(named.names().collect::<Vec<_>>(), ["acme", "globex"]);
///
/// // Two different tenants, no token: 403 `tenant_conflict`.
/// let tenant = |slug: &str| Arc::new(NewTenant::new(slug, slug).unwrap().into_info(chrono::Utc::now()));
/// let mut validated = [Some(Ok(tenant("acme"))), Some(Ok(tenant("globex")))];
/// assert_eq!(named.decide(&mut validated, None), Some(Err(Rejection::Conflict)));
/// ```
#[derive(Debug, Default)]
pub struct Named<'a> {
    credential: Option<Name<'a>>,
    /// Distinct names from the host and the request, in priority order.
    chosen: [Option<Name<'a>>; 2],
    /// A third distinct name: the request names too many to agree.
    more: bool,
    /// A host resolver answered; later ones are not asked.
    host_answered: bool,
    /// The override answered: it is the only name.
    overridden: bool,
}

impl<'a> Named<'a> {
    /// Whether the answer of a resolver of `source` still matters.
    #[inline]
    pub(super) fn wants(&self, source: Source) -> bool {
        if self.overridden {
            return false;
        }
        match source {
            Source::Credential => self.credential.is_none(),
            Source::Host => !self.host_answered,
            Source::Request => true,
        }
    }

    /// Records what a resolver of `source` found.
    #[inline]
    pub(super) fn add(&mut self, source: Source, name: Name<'a>, is_override: bool) {
        if is_override {
            *self = Self {
                chosen: [Some(name), None],
                overridden: true,
                ..Self::default()
            };
            return;
        }
        match source {
            Source::Credential => self.credential = Some(name),
            Source::Host | Source::Request => {
                self.host_answered |= source == Source::Host;
                self.choose(name);
            }
        }
    }

    fn choose(&mut self, name: Name<'a>) {
        for slot in &mut self.chosen {
            match slot {
                Some(held) if held.as_str() == name.as_str() => return,
                Some(_) => {}
                None => {
                    *slot = Some(name);
                    return;
                }
            }
        }
        self.more = true;
    }

    /// The names to validate, each once: the credential's first, then the
    /// host's and the request's in priority order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.credential
            .iter()
            .chain(self.chosen.iter().flatten())
            .map(Name::as_str)
    }

    /// How many [`Named::names`] there are.
    pub fn len(&self) -> usize {
        usize::from(self.credential.is_some()) + self.chosen.iter().flatten().count()
    }

    /// Whether the request names no tenant at all.
    pub fn is_empty(&self) -> bool {
        self.credential.is_none() && self.chosen[0].is_none()
    }

    /// Which tenant the request is for, given the validation of each of
    /// [`Named::names`] (`validated[i]` for the `i`-th; the chosen one is
    /// taken out) and the memberships of a verified token, if it lists
    /// any. `None` when nothing names a tenant (401).
    ///
    /// The rule (see the [module docs](super) for its table):
    /// - with memberships (or, without a list, the credential's own
    ///   tenant), every name must be a member, by its literal value or by
    ///   the validated tenant's id or slug, else [`Rejection::NotMember`]:
    ///   before anything about that tenant's existence or state is told;
    /// - the host's and the request's names must be one tenant, else
    ///   [`Rejection::Conflict`]; that tenant is served, and the
    ///   credential's only when nothing else names one.
    ///
    /// A name without a validation is refused (fail closed).
    pub fn decide(
        &self,
        validated: &mut [Option<Result<Arc<TenantInfo>, Rejection>>],
        memberships: Option<&[&str]>,
    ) -> Option<Result<Arc<TenantInfo>, Rejection>> {
        if self.is_empty() {
            return None;
        }
        let count = self.len();
        if validated.len() < count || validated[..count].iter().any(Option::is_none) {
            return Some(Err(Rejection::Unknown));
        }
        let own;
        let members = match (memberships, &self.credential) {
            (Some(members), _) => Some(members),
            (None, Some(credential)) => {
                own = [credential.as_str()];
                Some(&own[..])
            }
            (None, None) => None,
        };
        if let Some(members) = members {
            let all_members = self.names().zip(validated.iter()).all(|(name, v)| {
                members.contains(&name)
                    || matches!(v, Some(Ok(t)) if members.iter().any(|m| t.is_named_by(m)))
            });
            if !all_members {
                return Some(Err(Rejection::NotMember));
            }
        }
        let first_chosen = usize::from(self.credential.is_some());
        match &mut validated[first_chosen..count] {
            [] => validated[0].take(),
            _ if self.more => Some(Err(Rejection::Conflict)),
            [one] => one.take(),
            [a, b] => match (&*a, &*b) {
                (Some(Ok(x)), Some(Ok(y))) if x.id == y.id => a.take(),
                (Some(Err(Rejection::StoreUnavailable)), _)
                | (_, Some(Err(Rejection::StoreUnavailable))) => {
                    Some(Err(Rejection::StoreUnavailable))
                }
                _ => Some(Err(Rejection::Conflict)),
            },
            _ => Some(Err(Rejection::Conflict)),
        }
    }
}
