//! Built-in JWT verification: HS256 or RS256, expiry required and
//! checked. Only verified claims reach resolvers.

use std::path::Path;

use http::HeaderValue;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tenancy_core::VerifiedClaims;
use tenancy_core::config::{AuthConfig, ConfigError};

#[cfg(all(feature = "jwt-rust-crypto", feature = "jwt-aws-lc-rs"))]
compile_error!("enable only one of the features `jwt-rust-crypto` and `jwt-aws-lc-rs`");

/// A token that failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JwtError(String);

/// Verifies bearer tokens.
///
/// ```
/// use tenancy::JwtVerifier;
/// let verifier = JwtVerifier::hs256(b"a long shared secret").leeway(5);
/// assert!(verifier.verify("not.a.token").is_err());
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// RS256 with a PEM public key.
    pub fn rs256_pem(pem: &[u8]) -> Result<Self, ConfigError> {
        let key = DecodingKey::from_rsa_pem(pem).map_err(|e| ConfigError::Invalid {
            key: "auth.jwt_public_key_pem".into(),
            reason: format!("not an RSA public key in PEM form: {e}"),
        })?;
        Ok(Self::with(key, Algorithm::RS256))
    }

    fn with(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.validate_nbf = true;
        Self { key, validation }
    }

    /// Requires `iss` to equal `issuer`.
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.validation.set_issuer(&[issuer]);
        self
    }

    /// Requires `aud` to contain `audience`.
    pub fn audience(mut self, audience: &str) -> Self {
        self.validation.set_audience(&[audience]);
        self.validation.validate_aud = true;
        self
    }

    /// Allows `seconds` of clock skew on `exp` and `nbf`.
    pub fn leeway(mut self, seconds: u64) -> Self {
        self.validation.leeway = seconds;
        self
    }

    /// The verifier `auth.*` describes, or `None` when no key is set.
    /// Setting both an HS256 secret and an RS256 key is an error.
    pub fn from_config(auth: &AuthConfig) -> Result<Option<Self>, ConfigError> {
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
            (None, None) => return Ok(None),
        };
        let mut verifier = verifier.leeway(auth.leeway_s);
        if let Some(iss) = &auth.issuer {
            verifier = verifier.issuer(iss);
        }
        if let Some(aud) = &auth.audience {
            verifier = verifier.audience(aud);
        }
        Ok(Some(verifier))
    }

    /// Verifies signature, algorithm, `exp` (required), `nbf`, and `iss`/
    /// `aud` when configured; returns the claims.
    pub fn verify(&self, token: &str) -> Result<VerifiedClaims, JwtError> {
        jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &self.key,
            &self.validation,
        )
        .map(|data| VerifiedClaims::new(data.claims))
        .map_err(|e| JwtError(e.to_string()))
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
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
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
