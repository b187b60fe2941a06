//! Built-in bearer token verification: your own tokens (an HS256 secret
//! or an RS256 public key) and tokens of identity providers (Auth0, Okta,
//! Entra ID, Keycloak, …) whose keys are published as a JWKS behind
//! OpenID discovery. Only verified claims reach resolvers.
//!
//! - A provider's keys are fetched at the first token that needs them,
//!   kept as long as its `Cache-Control: max-age` says (between 1 minute
//!   and 24 hours; 10 minutes without it), and fetched again when a token
//!   names a `kid` they do not hold (at most once per
//!   [`jwks_min_refresh`](JwtVerifier::jwks_min_refresh)), so a key
//!   rotation needs no restart. One fetch at a time per provider: requests
//!   waiting for keys share it.
//! - No request waits longer than
//!   [`jwks_timeout`](JwtVerifier::jwks_timeout) for a provider. Keys
//!   already fetched keep serving while it is down; without any, the
//!   token is refused with [`JwtError::ProviderUnavailable`] (503).
//! - Checked: the signature, with an algorithm the issuer is configured
//!   for and that fits the key; `iss` (the issuer whose key verified it);
//!   `aud` (one of its audiences); `exp` (required) and `nbf`, with
//!   [`leeway`](JwtVerifier::leeway). RSA keys under 2048 bits, shared
//!   secrets in a key set, `alg: none` and HS* tokens from a provider are
//!   refused.
//! - A verified token is cached by its SHA-256 until its `exp`, and
//!   dropped from the cache as soon as its key leaves the provider's key
//!   set: a repeated token costs a lookup, not a signature check.

mod cache;
mod fetch;
mod issuer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::HeaderValue;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tenancy_core::VerifiedClaims;
use tenancy_core::config::{AuthConfig, ConfigError, IssuerConfig};

use cache::{Entry, TokenCache};
use fetch::Fetcher;
use issuer::{Counters, Issuer, KeyNow, KeyPolicy};

#[cfg(all(feature = "jwt-rust-crypto", feature = "jwt-aws-lc-rs"))]
compile_error!("enable only one of the features `jwt-rust-crypto` and `jwt-aws-lc-rs`");

/// Why a bearer token was refused.
///
/// Every variant but [`ProviderUnavailable`](JwtError::ProviderUnavailable)
/// is the token's fault (401 `invalid_token` from the tenant layer);
/// that one is the provider's (503 `identity_provider_unavailable`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not a JWT (three base64url parts of JSON), or its header or claims
    /// cannot be read.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Its algorithm is not accepted: `none`, one its issuer is not
    /// configured for, or one that does not fit the key.
    #[error("algorithm refused: {0}")]
    Algorithm(String),
    /// Its `iss` is not a trusted issuer.
    #[error("issuer {0:?} is not trusted")]
    UnknownIssuer(String),
    /// Its issuer publishes no usable key with its `kid` (after fetching
    /// the keys again).
    #[error("issuer {issuer} has no usable key {kid:?}")]
    UnknownKey {
        /// The issuer.
        issuer: String,
        /// The token's `kid`.
        kid: String,
    },
    /// Its signature does not verify.
    #[error("invalid signature")]
    Signature,
    /// Its `exp` has passed (beyond the leeway).
    #[error("Expired token: its `exp` has passed")]
    Expired,
    /// Its `nbf` is still to come (beyond the leeway).
    #[error("token not valid yet: its `nbf` is in the future")]
    NotYetValid,
    /// A claim is missing or wrong (`exp` absent, `iss` or `aud` not the
    /// expected ones).
    #[error("{0}")]
    Claims(String),
    /// The issuer's keys could not be fetched within the timeout and none
    /// is held: try again later.
    #[error("identity provider {issuer} is unavailable: {reason}")]
    ProviderUnavailable {
        /// The issuer.
        issuer: String,
        /// Why its keys could not be had.
        reason: String,
    },
}

impl JwtError {
    /// Whether the identity provider, not the token, is at fault (503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::ProviderUnavailable { .. })
    }
}

/// A token that verified: its claims and the issuer whose key verified
/// it.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    claims: VerifiedClaims,
    issuer: Option<Arc<str>>,
    expires_at: u64,
}

impl VerifiedToken {
    /// Its claims.
    pub fn claims(&self) -> &VerifiedClaims {
        &self.claims
    }

    /// Its claims, owned.
    pub fn into_claims(self) -> VerifiedClaims {
        self.claims
    }

    /// Its claims and the issuer that verified it.
    pub(crate) fn into_parts(self) -> (VerifiedClaims, Option<Arc<str>>) {
        (self.claims, self.issuer)
    }

    /// The identity provider whose key verified it (its configured
    /// `issuer`, equal to the token's `iss`); `None` when your own secret
    /// or key (`auth.jwt_secret`, `auth.jwt_public_key_*`) did.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// Its `exp`, in seconds since the Unix epoch.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

/// What a verifier did so far (for tests and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifierStats {
    /// Signatures checked (each token the cache did not hold).
    pub signature_checks: u64,
    /// Fetches of a provider's keys, whether they worked or not.
    pub key_fetches: u64,
    /// Tokens in the verified-token cache.
    pub cached_tokens: u64,
}

/// Decides, for an `iss` that is not in the configured issuers, whether
/// to trust it for this request and with which settings (see
/// [`JwtVerifier::issuer_lookup`]).
type IssuerLookup = Arc<dyn Fn(&str) -> Option<Arc<IssuerConfig>> + Send + Sync>;

/// Verifies bearer tokens: with your own HS256 secret or RS256 key, and
/// from identity providers' key sets.
///
/// Cloning is cheap and shares the caches.
///
/// ```
/// use tenancy::JwtVerifier;
/// let verifier = JwtVerifier::hs256(b"a long shared secret").leeway(5);
/// assert!(verifier.verify("not.a.token").is_err());
/// ```
///
/// Tokens of an identity provider (keys found through OpenID discovery):
///
/// ```
/// use tenancy::JwtVerifier;
/// use tenancy::config::IssuerConfig;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let auth0 = IssuerConfig::new("https://example.eu.auth0.com/", ["https://api.example.com"]);
/// let verifier = JwtVerifier::providers([auth0])?;
/// # let token = "a.b.c";
/// # async {
/// let verified = verifier.verify_with(token, None).await?;
/// assert_eq!(verified.issuer(), Some("https://example.eu.auth0.com/"));
/// # Ok::<_, tenancy_axum::JwtError>(()) };
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    local: Option<Arc<LocalKey>>,
    shared: Arc<Shared>,
}

/// Your own secret or key.
#[derive(Clone)]
struct LocalKey {
    key: DecodingKey,
    validation: Validation,
}

/// What clones of a verifier share: issuers with their keys, caches.
struct Shared {
    settings: Settings,
    /// The configured issuers, each with its keys.
    issuers: Vec<Arc<Issuer>>,
    /// Issuers trusted per request (`verify_with`, the lookup), by URL.
    extra: quick_cache::sync::Cache<Arc<str>, Arc<Issuer>>,
    tokens: TokenCache,
    fetcher: Arc<Fetcher>,
    counters: Arc<Counters>,
}

/// What a verifier is built from.
#[derive(Clone)]
struct Settings {
    policy: KeyPolicy,
    token_capacity: usize,
    issuers: Vec<IssuerConfig>,
    lookup: Option<IssuerLookup>,
}

impl Default for Settings {
    fn default() -> Self {
        let auth = AuthConfig::default();
        Self {
            policy: KeyPolicy {
                leeway: auth.leeway_s,
                min_refresh: Duration::from_secs(auth.jwks_min_refresh_s),
                timeout: Duration::from_millis(auth.jwks_timeout_ms),
            },
            token_capacity: DEFAULT_TOKEN_CACHE,
            issuers: Vec::new(),
            lookup: None,
        }
    }
}

/// Tokens the verified-token cache holds at most, by default.
pub const DEFAULT_TOKEN_CACHE: usize = 10_000;

/// Issuers trusted per request whose keys are kept at most.
const EXTRA_ISSUERS: usize = 1_000;

impl Shared {
    fn new(settings: Settings) -> Self {
        let fetcher = Fetcher::new(settings.policy.timeout);
        let counters = Arc::new(Counters::default());
        let issuers = settings
            .issuers
            .iter()
            .map(|config| {
                Arc::new(Issuer::new(
                    config.clone(),
                    fetcher.clone(),
                    settings.policy.clone(),
                    counters.clone(),
                ))
            })
            .collect();
        Self {
            tokens: TokenCache::new(settings.token_capacity),
            extra: quick_cache::sync::Cache::new(EXTRA_ISSUERS),
            issuers,
            fetcher,
            counters,
            settings,
        }
    }
}

/// Where a token goes to be verified.
enum Route {
    Local(Arc<LocalKey>),
    /// A provider; `true` when trusted for this request only.
    Issuer(Arc<Issuer>, bool),
}

/// How far [`JwtVerifier::verify_now`] got.
enum Step {
    Done(Result<VerifiedToken, JwtError>),
    /// The provider's keys must be fetched first.
    Fetch {
        issuer: Arc<Issuer>,
        extra: bool,
        kid: Option<String>,
        alg: Algorithm,
        generation: u64,
    },
}

impl JwtVerifier {
    /// HS256 with a shared secret (your own tokens).
    pub fn hs256(secret: &[u8]) -> Self {
        Self::local(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// RS256 with a PEM public key (your own tokens).
    pub fn rs256_pem(pem: &[u8]) -> Result<Self, ConfigError> {
        let key = DecodingKey::from_rsa_pem(pem).map_err(|e| ConfigError::Invalid {
            key: "auth.jwt_public_key_pem".into(),
            reason: format!("not an RSA public key in PEM form: {e}"),
        })?;
        Ok(Self::local(key, Algorithm::RS256))
    }

    /// Tokens of these identity providers only.
    pub fn providers(issuers: impl IntoIterator<Item = IssuerConfig>) -> Result<Self, ConfigError> {
        let mut settings = Settings::default();
        for (i, issuer) in issuers.into_iter().enumerate() {
            issuer.validate(&format!("auth.issuers[{i}]"))?;
            settings.issuers.push(issuer);
        }
        Ok(Self {
            local: None,
            shared: Arc::new(Shared::new(settings)),
        })
    }

    fn local(key: DecodingKey, algorithm: Algorithm) -> Self {
        let settings = Settings::default();
        let mut validation = Validation::new(algorithm);
        validation.leeway = settings.policy.leeway;
        validation.validate_aud = false;
        validation.validate_nbf = true;
        Self {
            local: Some(Arc::new(LocalKey { key, validation })),
            shared: Arc::new(Shared::new(settings)),
        }
    }

    /// Also accepts tokens of the identity provider `issuer`.
    pub fn with_provider(self, issuer: IssuerConfig) -> Result<Self, ConfigError> {
        let key = format!("auth.issuers[{}]", self.shared.settings.issuers.len());
        issuer.validate(&key)?;
        if self
            .shared
            .settings
            .issuers
            .iter()
            .any(|i| i.issuer == issuer.issuer)
        {
            return Err(ConfigError::Invalid {
                key: format!("{key}.issuer"),
                reason: format!("issuer {:?} is listed twice", issuer.issuer),
            });
        }
        Ok(self.rebuilt(|s| s.issuers.push(issuer)))
    }

    /// Requires `iss` to equal `issuer` in tokens verified with your own
    /// secret or key.
    pub fn issuer(mut self, issuer: &str) -> Self {
        if let Some(local) = &mut self.local {
            Arc::make_mut(local).validation.set_issuer(&[issuer]);
        }
        self
    }

    /// Requires `aud` to contain `audience` in tokens verified with your
    /// own secret or key.
    pub fn audience(mut self, audience: &str) -> Self {
        if let Some(local) = &mut self.local {
            let local = Arc::make_mut(local);
            local.validation.set_audience(&[audience]);
            local.validation.validate_aud = true;
        }
        self
    }

    /// Allows `seconds` of clock skew on `exp` and `nbf` (default 30).
    pub fn leeway(mut self, seconds: u64) -> Self {
        if let Some(local) = &mut self.local {
            Arc::make_mut(local).validation.leeway = seconds;
        }
        self.rebuilt(|s| s.policy.leeway = seconds)
    }

    /// No request waits longer than this for an identity provider
    /// (default 2 s).
    pub fn jwks_timeout(self, timeout: Duration) -> Self {
        self.rebuilt(|s| s.policy.timeout = timeout.max(Duration::from_millis(1)))
    }

    /// A token naming a `kid` its issuer's keys do not hold fetches them
    /// again at most this often (default 30 s).
    pub fn jwks_min_refresh(self, interval: Duration) -> Self {
        self.rebuilt(|s| s.policy.min_refresh = interval)
    }

    /// Holds at most about `capacity` verified tokens (default
    /// [`DEFAULT_TOKEN_CACHE`]); 0 turns the cache off.
    pub fn token_cache(self, capacity: usize) -> Self {
        self.rebuilt(|s| s.token_capacity = capacity)
    }

    /// Trusts, for a token whose `iss` is none of the configured issuers,
    /// the issuer `lookup` returns for that `iss` (such as a tenant's own
    /// identity provider), with its keys fetched and cached like the
    /// others'. It is asked again each time a token of that issuer is
    /// served from the cache, so an issuer it no longer returns is no
    /// longer trusted.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tenancy::JwtVerifier;
    /// use tenancy::config::IssuerConfig;
    /// let okta = Arc::new(IssuerConfig::new("https://acme.okta.com", ["api://acme"]));
    /// let verifier = JwtVerifier::hs256(b"our own secret, 16+ bytes")
    ///     .issuer_lookup(move |iss| (iss == okta.issuer).then(|| okta.clone()));
    /// ```
    pub fn issuer_lookup(
        self,
        lookup: impl Fn(&str) -> Option<Arc<IssuerConfig>> + Send + Sync + 'static,
    ) -> Self {
        self.rebuilt(|s| s.lookup = Some(Arc::new(lookup)))
    }

    fn rebuilt(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = self.shared.settings.clone();
        change(&mut settings);
        self.shared = Arc::new(Shared::new(settings));
        self
    }

    /// The verifier `auth.*` describes, or `None` when it sets no secret,
    /// key or issuer. Setting both an HS256 secret and an RS256 key is an
    /// error.
    pub fn from_config(auth: &AuthConfig) -> Result<Option<Self>, ConfigError> {
        auth.validate()?;
        let pem = match (&auth.jwt_public_key_pem, &auth.jwt_public_key_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "auth.jwt_public_key_file".into(),
                    reason: "set jwt_public_key_pem or jwt_public_key_file, not both".into(),
                });
            }
            (Some(pem), None) => Some(pem.clone().into_bytes()),
            (None, Some(path)) => Some(read_key(path)?),
            (None, None) => None,
        };
        let verifier = match (&auth.jwt_secret, pem) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "auth.jwt_secret".into(),
                    reason: "set either an HS256 secret or an RS256 public key, not both".into(),
                });
            }
            (Some(secret), None) => {
                if secret.expose().len() < 16 {
                    return Err(ConfigError::Invalid {
                        key: "auth.jwt_secret".into(),
                        reason: "an HS256 secret must be at least 16 bytes".into(),
                    });
                }
                Self::hs256(secret.expose().as_bytes())
            }
            (None, Some(pem)) => Self::rs256_pem(&pem)?,
            (None, None) if auth.issuers.is_empty() => return Ok(None),
            (None, None) => Self {
                local: None,
                shared: Arc::new(Shared::new(Settings::default())),
            },
        };
        let mut verifier = verifier;
        if let Some(iss) = &auth.issuer {
            verifier = verifier.issuer(iss);
        }
        if let Some(aud) = &auth.audience {
            verifier = verifier.audience(aud);
        }
        if let Some(local) = &mut verifier.local {
            Arc::make_mut(local).validation.leeway = auth.leeway_s;
        }
        // One build of the shared part, with every setting.
        Ok(Some(verifier.rebuilt(|s| {
            s.policy = KeyPolicy {
                leeway: auth.leeway_s,
                min_refresh: Duration::from_secs(auth.jwks_min_refresh_s),
                timeout: Duration::from_millis(auth.jwks_timeout_ms),
            };
            s.issuers = auth.issuers.clone();
        })))
    }

    /// Verifies `token` with what is known now, never waiting: your own
    /// secret or key, or a provider's keys fetched already. A provider
    /// token whose keys must be fetched first is refused with
    /// [`JwtError::ProviderUnavailable`]: use
    /// [`verify_with`](Self::verify_with) for those.
    pub fn verify(&self, token: &str) -> Result<VerifiedClaims, JwtError> {
        match self.step(token, None) {
            Step::Done(result) => result.map(VerifiedToken::into_claims),
            Step::Fetch { issuer, .. } => Err(JwtError::ProviderUnavailable {
                issuer: issuer.name.to_string(),
                reason: "its keys are not fetched yet".into(),
            }),
        }
    }

    /// Verifies `token`, fetching its provider's keys when needed (within
    /// [`jwks_timeout`](Self::jwks_timeout)). `extra_issuer` is one more
    /// provider trusted for this call only, such as the current tenant's
    /// own identity provider: a token whose `iss` is that issuer is
    /// verified with its keys.
    pub async fn verify_with(
        &self,
        token: &str,
        extra_issuer: Option<&IssuerConfig>,
    ) -> Result<VerifiedToken, JwtError> {
        match self.step(token, extra_issuer) {
            Step::Done(result) => result,
            Step::Fetch {
                issuer,
                extra,
                kid,
                alg,
                generation,
            } => {
                let deadline = tokio::time::Instant::now() + self.shared.settings.policy.timeout;
                let key = issuer
                    .key(kid.as_deref(), alg, generation, deadline)
                    .await?;
                self.check(&issuer, extra, (&key, alg), token)
            }
        }
    }

    /// The tenant layer's hit path: the verdict if no fetch is needed.
    #[inline(always)]
    pub(crate) fn verify_now(&self, token: &str) -> Option<Result<VerifiedToken, JwtError>> {
        match self.step(token, None) {
            Step::Done(result) => Some(result),
            Step::Fetch { .. } => None,
        }
    }

    /// Fetches the keys of every configured issuer now (such as at
    /// start, so the first requests do not wait); the first failure is
    /// returned, the other issuers are fetched all the same.
    pub async fn fetch_keys(&self) -> Result<(), JwtError> {
        let mut first = Ok(());
        for issuer in &self.shared.issuers {
            let deadline = tokio::time::Instant::now() + self.shared.settings.policy.timeout;
            if let Err(e) = issuer.fetch_now(deadline).await
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    /// What this verifier (and its clones) did so far.
    pub fn stats(&self) -> VerifierStats {
        let counters = &self.shared.counters;
        VerifierStats {
            signature_checks: counters.signature_checks.load(Ordering::Relaxed),
            key_fetches: counters.key_fetches.load(Ordering::Relaxed),
            cached_tokens: self.shared.tokens.len() as u64,
        }
    }

    /// The `iss` a token claims, read without verifying anything: to
    /// route a token (to pick a tenant's provider for
    /// [`verify_with`](Self::verify_with)), never to trust it.
    pub fn claimed_issuer(token: &str) -> Option<String> {
        peek_issuer(token).ok().flatten()
    }

    #[inline(always)]
    fn step(&self, token: &str, extra: Option<&IssuerConfig>) -> Step {
        if let Some(entry) = self.shared.tokens.get(token, cache::now())
            && entry
                .extra
                .as_ref()
                .is_none_or(|issuer| self.trusts(issuer, extra))
        {
            return Step::Done(Ok(entry.token.clone()));
        }
        self.step_uncached(token, extra)
    }

    #[cold]
    fn step_uncached(&self, token: &str, extra: Option<&IssuerConfig>) -> Step {
        let header = match jsonwebtoken::decode_header(token) {
            Ok(header) => header,
            Err(e) => return Step::Done(Err(header_error(token, &e))),
        };
        let route = peek_issuer(token).and_then(|iss| self.route(iss.as_deref(), extra));
        let (issuer, extra) = match route {
            Err(e) => return Step::Done(Err(e)),
            Ok(Route::Local(local)) => return Step::Done(self.check_local(&local, token)),
            Ok(Route::Issuer(issuer, extra)) => (issuer, extra),
        };
        if issuer.validation(header.alg).is_none() {
            return Step::Done(Err(JwtError::Algorithm(format!(
                "{:?} is not accepted from {} (accepted: {})",
                header.alg,
                issuer.name,
                issuer.algorithms()
            ))));
        }
        match issuer.key_now(header.kid.as_deref(), header.alg) {
            KeyNow::Found(key) => Step::Done(self.check(&issuer, extra, (&key, header.alg), token)),
            KeyNow::Refused(e) => Step::Done(Err(e)),
            KeyNow::Fetch(generation) => Step::Fetch {
                issuer,
                extra,
                kid: header.kid,
                alg: header.alg,
                generation,
            },
        }
    }

    /// Who verifies a token claiming `iss`: a configured issuer, the one
    /// trusted for this call, the lookup's, else your own secret or key.
    fn route(&self, iss: Option<&str>, extra: Option<&IssuerConfig>) -> Result<Route, JwtError> {
        if let Some(iss) = iss {
            if let Some(issuer) = self.shared.issuers.iter().find(|i| &*i.name == iss) {
                return Ok(Route::Issuer(issuer.clone(), false));
            }
            if let Some(config) = extra.filter(|c| c.issuer == iss) {
                return self.extra_issuer(config).map(|i| Route::Issuer(i, true));
            }
            if let Some(config) = self
                .shared
                .settings
                .lookup
                .as_ref()
                .and_then(|lookup| lookup(iss))
                .filter(|c| c.issuer == iss)
            {
                return self.extra_issuer(&config).map(|i| Route::Issuer(i, true));
            }
        }
        match &self.local {
            Some(local) => Ok(Route::Local(local.clone())),
            None => Err(JwtError::UnknownIssuer(iss.unwrap_or("(none)").to_owned())),
        }
    }

    /// The issuer (with its keys) of a configuration trusted per request.
    fn extra_issuer(&self, config: &IssuerConfig) -> Result<Arc<Issuer>, JwtError> {
        if let Some(issuer) = self.shared.extra.get(config.issuer.as_str())
            && issuer.config == *config
        {
            return Ok(issuer);
        }
        config
            .validate("issuer")
            .map_err(|e| JwtError::UnknownIssuer(format!("{} ({e})", config.issuer)))?;
        let shared = &self.shared;
        let issuer = Arc::new(Issuer::new(
            config.clone(),
            shared.fetcher.clone(),
            shared.settings.policy.clone(),
            shared.counters.clone(),
        ));
        shared.extra.insert(issuer.name.clone(), issuer.clone());
        Ok(issuer)
    }

    /// Whether `issuer`, trusted for the request that cached a token, is
    /// trusted for this one too.
    fn trusts(&self, issuer: &Issuer, extra: Option<&IssuerConfig>) -> bool {
        extra.is_some_and(|c| *c == issuer.config)
            || self
                .shared
                .settings
                .lookup
                .as_ref()
                .and_then(|lookup| lookup(&issuer.name))
                .is_some_and(|c| *c == issuer.config)
    }

    /// Checks `token` (whose header says `alg`) with `key` of `issuer`,
    /// and caches it when it verifies.
    fn check(
        &self,
        issuer: &Arc<Issuer>,
        extra: bool,
        (key, alg): (&Arc<issuer::KeyHandle>, Algorithm),
        token: &str,
    ) -> Result<VerifiedToken, JwtError> {
        let validation = issuer.validation(alg).ok_or_else(|| {
            JwtError::Algorithm(format!("{alg:?} is not accepted from {}", issuer.name))
        })?;
        issuer.counted();
        let claims = decode(token, &key.key, validation)?;
        tracing::trace!(issuer = %issuer.name, kid = key.kid(), "token verified");
        let verified = VerifiedToken {
            expires_at: expiry(&claims),
            claims,
            issuer: Some(issuer.name.clone()),
        };
        self.shared.tokens.insert(
            token,
            Entry {
                token: verified.clone(),
                key: Some(key.clone()),
                extra: extra.then(|| issuer.clone()),
            },
        );
        Ok(verified)
    }

    fn check_local(&self, local: &LocalKey, token: &str) -> Result<VerifiedToken, JwtError> {
        self.shared
            .counters
            .signature_checks
            .fetch_add(1, Ordering::Relaxed);
        let claims = decode(token, &local.key, &local.validation)?;
        let verified = VerifiedToken {
            expires_at: expiry(&claims),
            claims,
            issuer: None,
        };
        self.shared.tokens.insert(
            token,
            Entry {
                token: verified.clone(),
                key: None,
                extra: None,
            },
        );
        Ok(verified)
    }
}

fn decode(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<VerifiedClaims, JwtError> {
    jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, validation)
        .map(|data| VerifiedClaims::new(data.claims))
        .map_err(|e| claims_error(&e))
}

/// The `exp` of verified claims (required, so present).
fn expiry(claims: &VerifiedClaims) -> u64 {
    match claims.get("exp") {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .unwrap_or(0),
        _ => 0,
    }
}

/// The `iss` a token claims, unverified.
fn peek_issuer(token: &str) -> Result<Option<String>, JwtError> {
    #[derive(serde::Deserialize)]
    struct Peek {
        iss: Option<serde_json::Value>,
    }
    let peek: Peek = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|e| JwtError::Malformed(format!("its claims cannot be read: {e}")))?;
    match peek.iss {
        None => Ok(None),
        Some(serde_json::Value::String(iss)) => Ok(Some(iss)),
        Some(_) => Err(JwtError::Claims("`iss` is not a string".into())),
    }
}

/// Why a token's header was refused; `alg: none` named as such.
#[cold]
fn header_error(token: &str, e: &jsonwebtoken::errors::Error) -> JwtError {
    use base64::Engine;
    let alg = token
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()
        })
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .and_then(|h| h.get("alg").and_then(|a| a.as_str()).map(str::to_owned));
    match alg {
        Some(alg) if alg.eq_ignore_ascii_case("none") => {
            JwtError::Algorithm("`none`: unsigned tokens are never accepted".into())
        }
        Some(alg)
            if matches!(
                e.kind(),
                ErrorKind::Json(_) | ErrorKind::InvalidAlgorithmName
            ) =>
        {
            JwtError::Algorithm(format!("{alg:?} is not a supported signature algorithm"))
        }
        _ => JwtError::Malformed(format!("its header cannot be read: {e}")),
    }
}

/// The error of a failed [`jsonwebtoken::decode`].
#[cold]
fn claims_error(e: &jsonwebtoken::errors::Error) -> JwtError {
    match e.kind() {
        ErrorKind::InvalidSignature => JwtError::Signature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::Claims("`iss` is not the expected issuer".into()),
        ErrorKind::InvalidAudience => {
            JwtError::Claims("`aud` names none of the accepted audiences".into())
        }
        ErrorKind::MissingRequiredClaim(claim) => {
            JwtError::Claims(format!("the required claim `{claim}` is missing"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            JwtError::Claims(format!("the claim `{claim}` has the wrong type"))
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            JwtError::Algorithm("not the algorithm of the key".into())
        }
        _ => JwtError::Malformed(e.to_string()),
    }
}

fn read_key(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::Invalid {
        key: "auth.jwt_public_key_file".into(),
        reason: format!("cannot read {}: {e}", path.display()),
    })
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let issuers: Vec<&str> = self.shared.issuers.iter().map(|i| &*i.name).collect();
        f.debug_struct("JwtVerifier")
            .field(
                "local_algorithms",
                &self.local.as_ref().map(|l| &l.validation.algorithms),
            )
            .field("issuers", &issuers)
            .finish_non_exhaustive()
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub(crate) fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
