//! One identity provider's signing keys: fetched from its JWKS (found
//! through OpenID discovery unless `jwks_uri` is set), kept as long as its
//! `Cache-Control` says (bounded), refetched when a token names a key it
//! does not know (at most once per `min_refresh`), with one fetch at a
//! time whatever the number of requests waiting for it.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tenancy_core::config::IssuerConfig;
use tokio::time::Instant;

use super::JwtError;
use super::fetch::{FetchError, Fetched, Fetcher};

/// RSA keys shorter than this are never used (NIST SP 800-131A).
pub(super) const MIN_RSA_BITS: usize = 2048;

/// Without any key, a failed fetch is not retried sooner than this: a
/// provider that is down answers 503 at once rather than after a timeout.
const NO_KEYS_RETRY: Duration = Duration::from_secs(1);

/// Counters shared by a verifier and its issuers.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) signature_checks: AtomicU64,
    pub(super) key_fetches: AtomicU64,
}

/// How keys are kept and fetched, for every issuer of a verifier.
#[derive(Clone)]
pub(super) struct KeyPolicy {
    pub(super) leeway: u64,
    pub(super) min_refresh: Duration,
    pub(super) timeout: Duration,
}

/// An identity provider and its keys.
pub(super) struct Issuer {
    pub(super) config: IssuerConfig,
    /// `config.issuer`, shared with every token it verified.
    pub(super) name: Arc<str>,
    /// The checks of a token, for each algorithm accepted (jsonwebtoken
    /// takes a list of algorithms of one family only).
    validations: Vec<(Algorithm, Validation)>,
    state: Mutex<KeyState>,
    /// Held by the one fetch under way.
    fetching: tokio::sync::Mutex<()>,
    /// Whether a background refresh (keys past their max-age) is under way.
    refreshing: AtomicBool,
    fetcher: Arc<Fetcher>,
    policy: KeyPolicy,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct KeyState {
    /// The last key set fetched, kept when a later fetch fails.
    keys: Option<Arc<KeySet>>,
    /// When `keys` should be fetched again (their max-age).
    fresh_until: Option<Instant>,
    /// The last fetch, whether it worked or not.
    last_attempt: Option<Instant>,
    /// Why the last fetch failed, if it did.
    last_error: Option<Arc<str>>,
    /// The `jwks_uri` discovery found.
    discovered: Option<String>,
    /// Counts fetches: a request that waited for another's fetch does not
    /// fetch again.
    generation: u64,
}

/// What is known now about the key a token names.
pub(super) enum KeyNow {
    Found(Arc<KeyHandle>),
    Refused(JwtError),
    /// The keys must be fetched first; the fetch counted so far.
    Fetch(u64),
}

impl Issuer {
    /// An issuer whose configuration was validated
    /// ([`IssuerConfig::validate`]): algorithms it does not know are left
    /// out.
    pub(super) fn new(
        config: IssuerConfig,
        fetcher: Arc<Fetcher>,
        policy: KeyPolicy,
        counters: Arc<Counters>,
    ) -> Self {
        let algorithms: Vec<Algorithm> = config
            .algorithms
            .iter()
            .filter_map(|a| Algorithm::from_str(a).ok())
            .filter(|alg| family(*alg).is_some())
            .collect();
        let validations = algorithms
            .into_iter()
            .map(|alg| {
                let mut validation = Validation::new(alg);
                validation.leeway = policy.leeway;
                validation.validate_nbf = true;
                validation.set_issuer(&[config.issuer.as_str()]);
                validation.set_audience(&config.audiences);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                (alg, validation)
            })
            .collect();
        Self {
            name: Arc::from(config.issuer.as_str()),
            config,
            validations,
            state: Mutex::new(KeyState::default()),
            fetching: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
            fetcher,
            policy,
            counters,
        }
    }

    /// The checks of a token signed with `alg`, if this issuer accepts it.
    pub(super) fn validation(&self, alg: Algorithm) -> Option<&Validation> {
        self.validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
    }

    /// The algorithms accepted, for messages.
    pub(super) fn algorithms(&self) -> String {
        self.config.algorithms.join(", ")
    }

    fn state(&self) -> MutexGuard<'_, KeyState> {
        // A panic while holding it leaves a consistent state (every
        // update is one assignment): keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key for a token's `kid` and `alg`, if known without waiting.
    pub(super) fn key_now(self: &Arc<Self>, kid: Option<&str>, alg: Algorithm) -> KeyNow {
        let now = Instant::now();
        let state = self.state();
        let may_fetch = state
            .last_attempt
            .is_none_or(|at| now.duration_since(at) >= self.policy.min_refresh);
        let Some(keys) = &state.keys else {
            let retry = state
                .last_attempt
                .is_none_or(|at| now.duration_since(at) >= NO_KEYS_RETRY);
            return if retry {
                KeyNow::Fetch(state.generation)
            } else {
                KeyNow::Refused(self.unavailable(&state))
            };
        };
        match keys.find(kid, alg) {
            Ok(key) => {
                if state.fresh_until.is_some_and(|at| now >= at) && may_fetch {
                    let generation = state.generation;
                    drop(state);
                    self.refresh_in_background(generation);
                }
                KeyNow::Found(key)
            }
            Err(Missing::Unknown) if may_fetch => KeyNow::Fetch(state.generation),
            Err(missing) => KeyNow::Refused(self.missing(&state, missing, kid, alg)),
        }
    }

    /// The refusal of a token no held key fits. A `kid` the keys lack
    /// while the provider cannot be reached is the provider's fault (503):
    /// it may have rotated its keys meanwhile.
    fn missing(
        &self,
        state: &KeyState,
        missing: Missing,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> JwtError {
        match missing {
            Missing::Unknown if state.last_error.is_some() => self.unavailable(state),
            missing => missing.error(self, kid, alg),
        }
    }

    /// The key for a token's `kid` and `alg` after one fetch (waiting at
    /// most until `deadline`).
    pub(super) async fn key(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
        generation: u64,
        deadline: Instant,
    ) -> Result<Arc<KeyHandle>, JwtError> {
        self.refresh(generation, deadline).await;
        let state = self.state();
        match &state.keys {
            Some(keys) => keys
                .find(kid, alg)
                .map_err(|m| self.missing(&state, m, kid, alg)),
            None => Err(self.unavailable(&state)),
        }
    }

    /// Fetches the keys unless a fetch was made since `generation` (by
    /// another request: then its result is used). Gives up at `deadline`;
    /// a failure is recorded, and keys already held are kept.
    pub(super) async fn refresh(&self, generation: u64, deadline: Instant) {
        let Ok(_fetching) = tokio::time::timeout_at(deadline, self.fetching.lock()).await else {
            return;
        };
        if self.state().generation != generation {
            return;
        }
        self.counters.key_fetches.fetch_add(1, Ordering::Relaxed);
        let fetched = match tokio::time::timeout_at(deadline, self.fetch()).await {
            Ok(fetched) => fetched,
            Err(_) => Err(FetchError(format!(
                "{} did not answer within {} ms",
                self.name,
                self.policy.timeout.as_millis()
            ))),
        };
        let mut state = self.state();
        state.generation += 1;
        state.last_attempt = Some(Instant::now());
        match fetched {
            Ok((keys, ttl)) => {
                if let Some(old) = &state.keys {
                    old.retire_missing(&keys);
                }
                tracing::debug!(issuer = %self.name, keys = keys.keys.len(), ttl_s = ttl.as_secs(), "identity provider keys fetched");
                state.keys = Some(Arc::new(keys));
                state.fresh_until = Some(Instant::now() + ttl);
                state.last_error = None;
            }
            Err(FetchError(why)) => {
                tracing::warn!(issuer = %self.name, error = %why, "cannot fetch the identity provider's keys");
                if self.config.jwks_uri.is_none() {
                    // Discover again next time: the provider may have moved it.
                    state.discovered = None;
                }
                state.last_error = Some(Arc::from(why));
            }
        }
    }

    /// Fetches the keys now, whatever their age; the error when none
    /// could be had.
    pub(super) async fn fetch_now(&self, deadline: Instant) -> Result<(), JwtError> {
        let generation = self.state().generation;
        self.refresh(generation, deadline).await;
        let state = self.state();
        match (&state.keys, &state.last_error) {
            (Some(_), None) => Ok(()),
            _ => Err(self.unavailable(&state)),
        }
    }

    fn refresh_in_background(self: &Arc<Self>, generation: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let issuer = self.clone();
        runtime.spawn(async move {
            let deadline = Instant::now() + issuer.policy.timeout;
            issuer.refresh(generation, deadline).await;
            issuer.refreshing.store(false, Ordering::Release);
        });
    }

    /// The provider's key set, through discovery unless `jwks_uri` is set.
    async fn fetch(&self) -> Result<(KeySet, Duration), FetchError> {
        let configured = self.config.jwks_uri.clone();
        let discovered = self.state().discovered.clone();
        let uri = match configured.or(discovered) {
            Some(uri) => uri,
            None => {
                let uri = self.fetcher.discover(&self.name).await?;
                self.state().discovered = Some(uri.clone());
                uri
            }
        };
        let Fetched { keys, ttl } = self.fetcher.jwks(&uri).await?;
        let old = self.state().keys.clone();
        let mut set = KeySet { keys: Vec::new() };
        for value in keys {
            match KeyHandle::parse(value) {
                Ok(key) => {
                    // A key held already stays the same key: tokens it
                    // verified stay cached.
                    let same = old
                        .as_ref()
                        .and_then(|old| old.keys.iter().find(|o| o.same_as(&key)));
                    set.keys
                        .push(same.cloned().unwrap_or_else(|| Arc::new(key)));
                }
                Err(why) => {
                    tracing::warn!(issuer = %self.name, jwks_uri = %uri, "key ignored: {why}")
                }
            }
        }
        Ok((set, ttl))
    }

    fn unavailable(&self, state: &KeyState) -> JwtError {
        JwtError::ProviderUnavailable {
            issuer: self.name.to_string(),
            reason: state
                .last_error
                .as_deref()
                .unwrap_or("its keys could not be fetched in time")
                .to_owned(),
        }
    }

    /// Counts one signature check.
    pub(super) fn counted(&self) {
        self.counters
            .signature_checks
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// The usable keys of one fetch.
pub(super) struct KeySet {
    keys: Vec<Arc<KeyHandle>>,
}

/// Why no key fits a token.
enum Missing {
    /// No key with its `kid` (or, without a `kid`, for its algorithm).
    Unknown,
    /// The key named is not one for the token's algorithm.
    Mismatch,
    /// No `kid`, and several keys would do.
    Ambiguous,
}

impl Missing {
    fn error(self, issuer: &Issuer, kid: Option<&str>, alg: Algorithm) -> JwtError {
        let issuer = issuer.name.to_string();
        match self {
            Self::Unknown => JwtError::UnknownKey {
                issuer,
                kid: kid.unwrap_or("(none)").to_owned(),
            },
            Self::Mismatch => JwtError::Algorithm(format!(
                "key {:?} of {issuer} is not a key for {alg:?}",
                kid.unwrap_or("(none)")
            )),
            Self::Ambiguous => JwtError::UnknownKey {
                issuer,
                kid: "(none; the issuer publishes several keys, so the token must name one)"
                    .to_owned(),
            },
        }
    }
}

impl KeySet {
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<KeyHandle>, Missing> {
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if named.peek().is_none() {
                    return Err(Missing::Unknown);
                }
                named
                    .find(|k| k.fits(alg))
                    .cloned()
                    .ok_or(Missing::Mismatch)
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Ok(key.clone()),
                    (None, _) => Err(Missing::Unknown),
                    (Some(_), Some(_)) => Err(Missing::Ambiguous),
                }
            }
        }
    }

    /// Marks every key of this set that `newer` no longer holds: tokens
    /// it verified are no longer served from the cache.
    fn retire_missing(&self, newer: &KeySet) {
        for key in &self.keys {
            if !newer.keys.iter().any(|n| Arc::ptr_eq(n, key)) {
                key.retired.store(true, Ordering::Release);
            }
        }
    }
}

/// The kinds of public keys used to verify tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    P256,
    P384,
    Ed25519,
}

/// The family of keys `alg` needs; `None` for algorithms never accepted
/// from a provider (shared secrets).
fn family(alg: Algorithm) -> Option<Family> {
    Some(match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Family::Rsa,
        Algorithm::ES256 => Family::P256,
        Algorithm::ES384 => Family::P384,
        Algorithm::EdDSA => Family::Ed25519,
        // Shared secrets (HS*), and whatever a later version adds.
        _ => return None,
    })
}

/// One public key of a provider.
pub(super) struct KeyHandle {
    kid: Option<String>,
    params: AlgorithmParameters,
    family: Family,
    /// The JWK's own `alg`, when it names one: then only that.
    alg: Option<Algorithm>,
    pub(super) key: DecodingKey,
    /// Set once a fetch no longer finds it.
    retired: AtomicBool,
}

impl KeyHandle {
    /// A key of a JWKS, if it is a usable public signing key: RSA of at
    /// least [`MIN_RSA_BITS`], EC P-256/P-384 or Ed25519; never a
    /// symmetric key.
    fn parse(value: serde_json::Value) -> Result<Self, String> {
        let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("not a JWK: {e}"))?;
        let kid = jwk.common.key_id.clone();
        let named = || format!("key {:?}", kid.as_deref().unwrap_or("(no kid)"));
        if let Some(usage) = &jwk.common.public_key_use
            && *usage != PublicKeyUse::Signature
        {
            return Err(format!("{} is not for signatures", named()));
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(KeyAlgorithm::UNKNOWN_ALGORITHM) => {
                return Err(format!("{} has an unknown alg", named()));
            }
            Some(alg) => Some(
                Algorithm::try_from(alg)
                    .map_err(|_| format!("{} is for {alg}, not for signatures", named()))?,
            ),
        };
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let bits = rsa_bits(&rsa.n).ok_or_else(|| format!("{} has no valid n", named()))?;
                if bits < MIN_RSA_BITS {
                    return Err(format!(
                        "{} is an RSA key of {bits} bits; at least {MIN_RSA_BITS} are required",
                        named()
                    ));
                }
                Family::Rsa
            }
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => Family::P256,
                EllipticCurve::P384 => Family::P384,
                _ => return Err(format!("{} is on an unsupported curve", named())),
            },
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                Family::Ed25519
            }
            AlgorithmParameters::OctetKey(_) => {
                return Err(format!(
                    "{} is a shared secret: never accepted from a key set",
                    named()
                ));
            }
            _ => return Err(format!("{} is of an unsupported type", named())),
        };
        if alg.is_some_and(|alg| family(alg) != Some(kind)) {
            return Err(format!("{} does not fit its own alg", named()));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("{}: {e}", named()))?;
        Ok(Self {
            kid,
            params: jwk.algorithm,
            family: kind,
            alg,
            key,
            retired: AtomicBool::new(false),
        })
    }

    /// Whether this key verifies `alg` signatures.
    fn fits(&self, alg: Algorithm) -> bool {
        family(alg) == Some(self.family) && self.alg.is_none_or(|own| own == alg)
    }

    fn same_as(&self, other: &KeyHandle) -> bool {
        self.kid == other.kid && self.alg == other.alg && self.params == other.params
    }

    /// Whether a later fetch of its issuer's keys no longer found it.
    #[inline(always)]
    pub(super) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// The key's `kid`, if it has one.
    pub(super) fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }
}

impl std::fmt::Debug for KeyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyHandle")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("alg", &self.alg)
            .field("retired", &self.is_retired())
            .finish_non_exhaustive()
    }
}

/// The length in bits of an RSA modulus (base64url, big-endian).
pub(super) fn rsa_bits(n: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(n.trim_end_matches('=')).ok()?;
    let start = bytes.iter().position(|b| *b != 0)?;
    let first = bytes.get(start)?;
    Some((bytes.len() - start - 1) * 8 + (8 - first.leading_zeros() as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_length_counts_bits_not_bytes() {
        let n = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(rsa_bits(&n(&[0x80; 256])), Some(2048));
        assert_eq!(rsa_bits(&n(&[0x7f; 256])), Some(2047));
        // A leading zero byte (as some encoders add) does not count.
        let mut padded = vec![0u8];
        padded.extend([0xff; 64]);
        assert_eq!(rsa_bits(&n(&padded)), Some(512));
        assert_eq!(rsa_bits(&n(&[0, 0])), None);
        assert_eq!(rsa_bits("!!"), None);
    }

    #[test]
    fn symmetric_and_short_keys_are_refused() {
        let oct = serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "kid": "s"});
        assert!(KeyHandle::parse(oct).unwrap_err().contains("shared secret"));
        let short = serde_json::json!({
            "kty": "RSA", "kid": "short", "e": "AQAB",
            "n": URL_SAFE_NO_PAD.encode([0xc1; 64]),
        });
        assert!(KeyHandle::parse(short).unwrap_err().contains("512 bits"));
        let enc = serde_json::json!({
            "kty": "RSA", "kid": "enc", "use": "enc", "e": "AQAB",
            "n": URL_SAFE_NO_PAD.encode([0xc1; 256]),
        });
        assert!(
            KeyHandle::parse(enc)
                .unwrap_err()
                .contains("not for signatures")
        );
        let ok = serde_json::json!({
            "kty": "RSA", "kid": "ok", "alg": "RS256", "e": "AQAB",
            "n": URL_SAFE_NO_PAD.encode([0xc1; 256]),
        });
        let key = KeyHandle::parse(ok).unwrap();
        assert!(key.fits(Algorithm::RS256));
        assert!(!key.fits(Algorithm::PS256), "its own alg is RS256");
        assert!(!key.fits(Algorithm::HS256));
        assert!(!key.fits(Algorithm::ES256));
    }
}
