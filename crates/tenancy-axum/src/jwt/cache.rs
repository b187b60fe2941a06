//! The verified-token cache: a repeated bearer token costs a lookup, not
//! a signature check. Entries are keyed by the token itself (hashed with
//! the cache's per-process random seed, then compared in full: no
//! collision can serve one token's claims for another), bounded in number,
//! and never served after the token's `exp` nor once the key that
//! verified it left its issuer's key set.
//!
//! The token is kept rather than a cryptographic digest of it: a SHA-256
//! of a 1 KB token costs more than the rest of the warm request path,
//! and a token is a bearer secret already held in this process's memory
//! by every request that carries it.

use std::sync::Arc;

use super::VerifiedToken;
use super::issuer::{Issuer, KeyHandle};

/// What the cache remembers of a verified token.
pub(super) struct Entry {
    pub(super) token: VerifiedToken,
    /// The provider's key that verified it (none for the local secret or
    /// key, which never leave).
    pub(super) key: Option<Arc<KeyHandle>>,
    /// The provider that verified it, when it is not one of the
    /// configured ones (a per-request issuer): trusted again at each use.
    pub(super) extra: Option<Arc<Issuer>>,
}

/// A bounded map from token hashes to what verified them.
pub(super) struct TokenCache {
    cache: Option<quick_cache::sync::Cache<Box<str>, Arc<Entry>>>,
}

impl TokenCache {
    /// A cache of at most about `capacity` tokens; none at 0.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            cache: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)),
        }
    }

    /// The entry for `token` if it may still be served at `now` (Unix
    /// seconds): before the token's `exp`, its key still published.
    #[inline(always)]
    pub(super) fn get(&self, token: &str, now: u64) -> Option<Arc<Entry>> {
        let cache = self.cache.as_ref()?;
        let entry = cache.get(token)?;
        if now < entry.token.expires_at && !entry.key.as_ref().is_some_and(|k| k.is_retired()) {
            return Some(entry);
        }
        cache.remove(token);
        None
    }

    pub(super) fn insert(&self, token: &str, entry: Entry) {
        if let Some(cache) = &self.cache {
            cache.insert(token.into(), Arc::new(entry));
        }
    }

    pub(super) fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }
}

/// Seconds since the Unix epoch.
#[inline(always)]
pub(super) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
