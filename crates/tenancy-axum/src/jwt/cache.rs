//! The verified-token cache: a repeated bearer token costs a lookup, not
//! a signature check. Entries are keyed by the SHA-256 of the token (the
//! token itself is not kept), bounded in number, and never served after
//! the token's `exp` nor once the key that verified it left its issuer's
//! key set.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::VerifiedToken;
use super::issuer::{Issuer, KeyHandle};

/// The SHA-256 of a token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct TokenHash([u8; 32]);

impl TokenHash {
    #[inline(always)]
    pub(super) fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

impl Hash for TokenHash {
    #[inline(always)]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already uniform: eight of its bytes are hash enough.
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(word));
    }
}

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
    cache: Option<quick_cache::sync::Cache<TokenHash, Arc<Entry>>>,
}

impl TokenCache {
    /// A cache of at most about `capacity` tokens; none at 0.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            cache: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)),
        }
    }

    /// The entry for `hash` if it may still be served at `now` (Unix
    /// seconds): before the token's `exp`, its key still published.
    #[inline(always)]
    pub(super) fn get(&self, hash: &TokenHash, now: u64) -> Option<Arc<Entry>> {
        let cache = self.cache.as_ref()?;
        let entry = cache.get(hash)?;
        if now < entry.token.expires_at && !entry.key.as_ref().is_some_and(|k| k.is_retired()) {
            return Some(entry);
        }
        cache.remove(hash);
        None
    }

    pub(super) fn insert(&self, hash: TokenHash, entry: Entry) {
        if let Some(cache) = &self.cache {
            cache.insert(hash, Arc::new(entry));
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
