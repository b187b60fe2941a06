//! Tenant domains: a tenant owns any number of domains
//! (`portal.acme.com`), one of them primary; a domain is normalised and
//! unique across all tenants, `pending` until verified, and only verified
//! domains resolve.
//!
//! ```
//! use tenancy::domain::Domain;
//! let d = Domain::parse("Portal.ACME.com.:443").unwrap();
//! assert_eq!(d.as_str(), "portal.acme.com");
//! assert_eq!(Domain::parse("bücher.example").unwrap().as_str(), "xn--bcher-kva.example");
//! assert!(Domain::parse("*.acme.com").is_err());
//! assert!(Domain::parse("10.0.0.1").is_err());
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::resolve::{Answer, ResolutionContext, Resolver};
use crate::store::StoreError;
use crate::tenant::{TenantId, TenantRef};

/// The DNS TXT record a domain's owner publishes to prove it:
/// `_tenancy-challenge.<domain>`, holding the domain's token.
pub const CHALLENGE_LABEL: &str = "_tenancy-challenge";

/// A normalised domain name: lower case, ASCII (IDNA), no trailing dot, no
/// port; 2 or more labels of letters, digits and `-`; not an IP address,
/// not a wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Domain(Arc<str>);

/// A string that is not a usable domain name; says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid domain \"{value}\": {reason}")]
pub struct InvalidDomain {
    /// The offending input, escaped and shortened.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Domain {
    /// Normalises and checks `input` (a host as typed or as sent in a
    /// `Host` header: any case, trailing dot, `:port`, Unicode).
    pub fn parse(input: &str) -> Result<Self, InvalidDomain> {
        let bad = |reason| InvalidDomain {
            value: input
                .chars()
                .take(80)
                .collect::<String>()
                .escape_debug()
                .to_string(),
            reason,
        };
        if input.len() > 1024 {
            return Err(bad("longer than 253 characters"));
        }
        if input.starts_with('[') {
            return Err(bad("an IP address is not a domain"));
        }
        let host = match input.rsplit_once(':') {
            Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                name
            }
            Some(_) => return Err(bad("only letters, digits, '-' and '.' are allowed")),
            None => input,
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.contains('*') {
            return Err(bad("wildcards are not allowed: add each domain"));
        }
        if host
            .bytes()
            .any(|b| b.is_ascii_control() || b == b'/' || b == b'\\' || b == b' ')
        {
            return Err(bad("only letters, digits, '-' and '.' are allowed"));
        }
        let ascii = if host.is_ascii() {
            host.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii(host).map_err(|_| bad("not a valid internationalised name"))?
        };
        Self::check_ascii(&ascii).map_err(bad)?;
        Ok(Self(ascii.into()))
    }

    fn check_ascii(name: &str) -> Result<(), &'static str> {
        if name.is_empty() {
            return Err("empty");
        }
        if name.len() > 253 {
            return Err("longer than 253 characters");
        }
        let labels: Vec<&str> = name.split('.').collect();
        if labels.len() < 2 {
            return Err("needs at least two labels (e.g. acme.com)");
        }
        for label in &labels {
            if label.is_empty() {
                return Err("has an empty label (`..`)");
            }
            if label.len() > 63 {
                return Err("has a label longer than 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err("only letters, digits, '-' and '.' are allowed");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err("a label cannot start or end with '-'");
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err("an IP address is not a domain");
        }
        Ok(())
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The TXT record name that proves ownership:
    /// `_tenancy-challenge.<domain>`.
    pub fn challenge_name(&self) -> String {
        format!("{CHALLENGE_LABEL}.{}", self.0)
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Domain {
    type Err = InvalidDomain;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for Domain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::borrow::Borrow<str> for Domain {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Whether a domain proved its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainStatus {
    /// Added, not verified: it does not resolve.
    Pending,
    /// Verified (DNS TXT or by an operator): it resolves.
    Verified,
}

impl DomainStatus {
    /// `pending` or `verified`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Verified => "verified",
        }
    }
}

impl fmt::Display for DomainStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DomainStatus {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        match s {
            "pending" => Ok(Self::Pending),
            "verified" => Ok(Self::Verified),
            other => Err(StoreError::Unavailable(format!(
                "stored domain status \"{other}\" is unknown"
            ))),
        }
    }
}

/// A domain of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantDomain {
    /// The domain.
    pub domain: Domain,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Whether it is the tenant's primary domain (at most one is).
    pub primary: bool,
    /// Pending or verified.
    pub status: DomainStatus,
    /// The value to publish in the TXT record [`Domain::challenge_name`].
    pub token: String,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// When it was verified.
    pub verified_at: Option<DateTime<Utc>>,
}

impl TenantDomain {
    /// A new domain of `tenant`, with a fresh random token.
    pub fn new(domain: Domain, tenant: TenantId, primary: bool, verified: bool) -> Self {
        let now = Utc::now();
        Self {
            domain,
            tenant_id: tenant,
            primary,
            status: if verified {
                DomainStatus::Verified
            } else {
                DomainStatus::Pending
            },
            token: format!("tenancy-{}", uuid::Uuid::new_v4().simple()),
            created_at: now,
            verified_at: verified.then_some(now),
        }
    }

    /// Whether it resolves.
    pub fn is_verified(&self) -> bool {
        self.status == DomainStatus::Verified
    }
}

/// Where domains are kept. Implemented by every store of the
/// toolkit; a domain is unique across all tenants.
#[async_trait]
pub trait DomainStore: Send + Sync + 'static {
    /// Adds a domain; [`StoreError::DomainTaken`] when any tenant (this one
    /// included) already has it. A primary domain makes the tenant's other
    /// domains non-primary.
    async fn add_domain(&self, domain: TenantDomain) -> Result<TenantDomain, StoreError>;

    /// One domain, whoever owns it.
    async fn get_domain(&self, domain: &str) -> Result<Option<TenantDomain>, StoreError>;

    /// A tenant's domains, primary first, then by name.
    async fn list_domains(&self, tenant: &TenantId) -> Result<Vec<TenantDomain>, StoreError>;

    /// Marks a domain verified; `None` when there is no such domain.
    async fn verify_domain(&self, domain: &str) -> Result<Option<TenantDomain>, StoreError>;

    /// Removes a domain; `None` when there was none.
    async fn remove_domain(&self, domain: &str) -> Result<Option<TenantDomain>, StoreError>;
}

/// How long a host found (or not) stays cached by [`DomainResolver`].
#[derive(Debug, Clone, Copy)]
pub struct DomainCacheTtl {
    /// A known domain (default 300 s; changes invalidate at once).
    pub known: Duration,
    /// An unknown host (default 5 s), so floods of bogus hosts do not reach
    /// the store.
    pub unknown: Duration,
}

impl Default for DomainCacheTtl {
    fn default() -> Self {
        Self {
            known: Duration::from_secs(300),
            unknown: Duration::from_secs(5),
        }
    }
}

#[derive(Clone)]
struct Entry {
    /// The tenant of a verified domain; `None`: unknown or not verified.
    tenant: Option<TenantRef>,
    until: std::time::Instant,
}

/// The `domain` resolver (priority 25): the request's host looked
/// up exactly among verified domains. Lookups are cached (bounded, misses
/// for one host coalesced, unknown hosts cached briefly); a hit never
/// touches the store. Changes invalidate at once:
/// [`DomainResolver::invalidate`] in process, `NOTIFY` across processes
/// (`tenancy::sql::ChangeTargets::domains`, or `Tenancy::listen`).
#[derive(Clone)]
pub struct DomainResolver {
    inner: Arc<ResolverInner>,
}

struct ResolverInner {
    store: Arc<dyn DomainStore>,
    cache: quick_cache::sync::Cache<Domain, Entry>,
    ttl: DomainCacheTtl,
    /// Bumped by every invalidation, so a lookup racing one is not cached.
    generation: std::sync::atomic::AtomicU64,
}

impl DomainResolver {
    /// Name in config.
    pub const NAME: &'static str = "domain";
    /// Default priority: after `header` (20), before `subdomain` (30).
    pub const PRIORITY: i32 = 25;

    /// Looks hosts up in `store`, caching up to 10,000 hosts.
    pub fn new(store: Arc<dyn DomainStore>, ttl: DomainCacheTtl) -> Self {
        Self {
            inner: Arc::new(ResolverInner {
                store,
                cache: quick_cache::sync::Cache::new(10_000),
                ttl,
                generation: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Forgets one domain (after it was added, verified or removed).
    pub fn invalidate(&self, domain: &str) {
        self.inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.cache.remove(domain);
    }

    /// Forgets every domain.
    pub fn clear(&self) {
        self.inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.cache.clear();
    }

    /// The tenant a host resolves to (verified domains only); `None` for
    /// unknown, pending or malformed hosts, and when the store fails (not
    /// cached then).
    pub async fn tenant_of(&self, host: &str) -> Option<TenantRef> {
        if let Some(cached) = self.cached(host) {
            return cached;
        }
        self.look_up(host).await
    }

    /// The cached answer for a host already in normal form (a port
    /// aside), found without allocating; `None` when the cache must be
    /// asked the slow way (a miss, an expired entry, a host to normalise).
    fn cached(&self, host: &str) -> Option<Option<TenantRef>> {
        if host.starts_with('[') {
            return Some(None); // an IPv6 literal is not a domain
        }
        let bare = match host.rsplit_once(':') {
            Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                name
            }
            _ => host,
        };
        let normal = bare
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bare.ends_with('.');
        if !normal {
            return None;
        }
        // What can never be a domain (`Domain::parse` refuses it) is known
        // at once: a single label (`localhost`) or an IPv4 address.
        if bare
            .rsplit_once('.')
            .is_none_or(|(_, tld)| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Some(None);
        }
        let entry = self.inner.cache.get(bare)?;
        (entry.until > std::time::Instant::now()).then_some(entry.tenant)
    }

    /// The miss path: normalise, then one store lookup per host however
    /// many requests wait for it.
    async fn look_up(&self, host: &str) -> Option<TenantRef> {
        let inner = &self.inner;
        let domain = Domain::parse(host).ok()?;
        // Concurrent misses for one host wait for the first lookup.
        let guard = loop {
            match inner.cache.get_value_or_guard_async(&domain).await {
                Ok(entry) if entry.until > std::time::Instant::now() => return entry.tenant,
                Ok(_) => {
                    inner.cache.remove(domain.as_str());
                }
                Err(guard) => break guard,
            }
        };
        let generation = inner.generation.load(std::sync::atomic::Ordering::SeqCst);
        let found = match inner.store.get_domain(domain.as_str()).await {
            Ok(found) => found,
            Err(e) => {
                // Not cached: the next request asks the store again.
                tracing::warn!(error = %e, "domain lookup failed");
                return None;
            }
        };
        let tenant = found
            .filter(TenantDomain::is_verified)
            .map(|d| TenantRef::new(d.tenant_id.as_str()));
        let ttl = if tenant.is_some() {
            inner.ttl.known
        } else {
            inner.ttl.unknown
        };
        // A lookup that raced an invalidation is answered, not cached.
        if inner.generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
            let _ = guard.insert(Entry {
                tenant: tenant.clone(),
                until: std::time::Instant::now() + ttl,
            });
        }
        tenant
    }
}

impl fmt::Debug for DomainResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainResolver")
            .field("cached", &self.inner.cache.len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Resolver for DomainResolver {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn priority(&self) -> i32 {
        Self::PRIORITY
    }
    fn resolve_now(&self, ctx: &ResolutionContext<'_>) -> Answer {
        let Some(host) = ctx.host() else {
            return Answer::NotFound;
        };
        match self.cached(host) {
            Some(Some(tenant)) => Answer::Found(tenant),
            Some(None) => Answer::NotFound,
            None => Answer::Wait,
        }
    }
    async fn resolve(&self, ctx: &ResolutionContext<'_>) -> Option<TenantRef> {
        self.tenant_of(ctx.host()?).await
    }
    fn hint(&self) -> Option<String> {
        Some("a verified domain of the tenant".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        for (input, want) in [
            ("portal.acme.com", "portal.acme.com"),
            ("Portal.ACME.com", "portal.acme.com"),
            ("portal.acme.com.", "portal.acme.com"),
            ("portal.acme.com:8443", "portal.acme.com"),
            ("PORTAL.acme.com.:80", "portal.acme.com"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("a-b.c0.io", "a-b.c0.io"),
        ] {
            assert_eq!(
                Domain::parse(input).map(|d| d.to_string()),
                Ok(want.into()),
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_hostile_input_with_a_reason() {
        let long = format!("{}.com", "a".repeat(300));
        let label = format!("{}.com", "a".repeat(64));
        for bad in [
            "",
            "a..b",
            "acme",
            &long,
            &label,
            "*.x.com",
            "evil.com/../",
            "a\u{0}b.com",
            "a\nb.com",
            "10.0.0.1",
            "10.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "-a.com",
            "a-.com",
            "a b.com",
            "a_b.com",
            "acme.com:",
            "acme.com:http",
            ".",
            "..",
            "x.com..",
        ] {
            let err = Domain::parse(bad).expect_err(bad);
            assert!(!err.reason.is_empty());
        }
    }
}
