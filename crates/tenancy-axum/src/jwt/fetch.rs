//! Fetching what identity providers publish: their OpenID discovery
//! document and their key set (JWKS), over http or https, bounded in
//! size and time, without following redirects.
//!
//! The client is hyper's own (`hyper-util`), with TLS through rustls and
//! the crypto provider the crate's `jwt-*` feature picks (ring or
//! aws-lc-rs), and the platform's trusted roots. Not reqwest: its rustls
//! support either builds in aws-lc-rs (a second C crypto library next to
//! ring) or, without a provider, makes every reqwest client built with
//! default settings in the same program panic (cargo unifies features).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;

/// Bodies larger than this are refused (a key set is a few kilobytes).
pub(super) const MAX_BODY: usize = 1 << 20;

/// How long keys are kept when the provider does not say (`Cache-Control`).
pub(super) const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// The bounds put on the provider's `Cache-Control: max-age`.
pub(super) const MIN_TTL: Duration = Duration::from_secs(60);
/// See [`MIN_TTL`].
pub(super) const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a provider's document could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(super) struct FetchError(pub(super) String);

/// An HTTP client for providers, made at the first fetch (a verifier
/// with only a shared secret never builds one).
pub(super) struct Fetcher {
    client: OnceLock<Result<HttpClient, String>>,
    timeout: Duration,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A key set as fetched: its keys (each still to be checked) and how long
/// it may be kept.
pub(super) struct Fetched {
    pub(super) keys: Vec<serde_json::Value>,
    pub(super) ttl: Duration,
}

impl Fetcher {
    pub(super) fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            client: OnceLock::new(),
            timeout,
        })
    }

    fn client(&self) -> Result<&HttpClient, FetchError> {
        self.client
            .get_or_init(|| build_client(self.timeout))
            .as_ref()
            .map_err(|e| FetchError(e.clone()))
    }

    /// The `jwks_uri` of `issuer`'s OpenID discovery document, which must
    /// name the same `issuer`.
    pub(super) async fn discover(&self, issuer: &str) -> Result<String, FetchError> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: Option<String>,
            jwks_uri: Option<String>,
        }
        let url = discovery_url(issuer);
        let (body, _) = self.get(&url).await?;
        let doc: Discovery = serde_json::from_slice(&body)
            .map_err(|e| FetchError(format!("the discovery document {url} is not JSON: {e}")))?;
        match doc.issuer.as_deref() {
            Some(found) if found == issuer => {}
            found => {
                return Err(FetchError(format!(
                    "the discovery document {url} names issuer {:?}, not {issuer:?}: refused",
                    found.unwrap_or("(none)")
                )));
            }
        }
        let jwks_uri = doc
            .jwks_uri
            .ok_or_else(|| FetchError(format!("the discovery document {url} has no jwks_uri")))?;
        if !is_http_url(&jwks_uri) {
            return Err(FetchError(format!(
                "the discovery document {url} names a jwks_uri that is not http or https: {jwks_uri:?}"
            )));
        }
        Ok(jwks_uri)
    }

    /// The key set at `uri`, with how long to keep it.
    pub(super) async fn jwks(&self, uri: &str) -> Result<Fetched, FetchError> {
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<serde_json::Value>,
        }
        let (body, headers) = self.get(uri).await?;
        let set: Set = serde_json::from_slice(&body).map_err(|e| {
            FetchError(format!(
                "the key set {uri} is not a JSON Web Key Set ({{\"keys\": [...]}}): {e}"
            ))
        })?;
        Ok(Fetched {
            keys: set.keys,
            ttl: ttl(&headers),
        })
    }

    /// GETs `url`: a 2xx answer of at most [`MAX_BODY`] bytes, within the
    /// timeout.
    async fn get(&self, url: &str) -> Result<(Vec<u8>, HeaderMap), FetchError> {
        match tokio::time::timeout(self.timeout, self.get_now(url)).await {
            Ok(got) => got,
            Err(_) => Err(FetchError(format!(
                "{url} did not answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    async fn get_now(&self, url: &str) -> Result<(Vec<u8>, HeaderMap), FetchError> {
        if !is_http_url(url) {
            return Err(FetchError(format!("{url:?} is not an http or https URL")));
        }
        let failed = |what: &str, e: &dyn std::error::Error| {
            // The sources say why (refused, DNS, TLS); the error itself
            // often only "client error (Connect)".
            let mut why = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            FetchError(format!("cannot {what} {url}: {why}"))
        };
        let request = Request::get(url)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("tenancy/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| failed("request", &e))?;
        let res = self
            .client()?
            .request(request)
            .await
            .map_err(|e| failed("fetch", &e))?;
        let status = res.status();
        if status.is_redirection() {
            return Err(FetchError(format!(
                "{url} answered {status} (a redirect, not followed): configure the final URL"
            )));
        }
        if !status.is_success() {
            return Err(FetchError(format!(
                "{url} answered {status} instead of 200"
            )));
        }
        let (parts, body) = res.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchError(format!("{url} sent more than {MAX_BODY} bytes"))
                } else {
                    failed("read", &*e)
                }
            })?
            .to_bytes();
        Ok((body.to_vec(), parts.headers))
    }
}

fn build_client(timeout: Duration) -> Result<HttpClient, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    #[cfg(feature = "jwt-aws-lc-rs")]
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    #[cfg(all(feature = "jwt-rust-crypto", not(feature = "jwt-aws-lc-rs")))]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // `jwt` alone: the program chose its providers itself (as it must for
    // jsonwebtoken too).
    #[cfg(not(any(feature = "jwt-rust-crypto", feature = "jwt-aws-lc-rs")))]
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .ok_or_else(|| {
            "no TLS crypto provider: enable the feature jwt-rust-crypto or jwt-aws-lc-rs, \
             or install a rustls default provider"
                .to_owned()
        })?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| format!("cannot set up TLS for identity providers: {e}"))?
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https))
}

/// `<issuer>/.well-known/openid-configuration` (OpenID Connect Discovery
/// 1.0, section 4: a trailing `/` of the issuer is dropped first).
pub(super) fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// How long a key set may be kept: its `Cache-Control: max-age`, within
/// [`MIN_TTL`]..=[`MAX_TTL`]; `no-cache`/`no-store` mean the least;
/// [`DEFAULT_TTL`] without either.
pub(super) fn ttl(headers: &HeaderMap) -> Duration {
    let mut ttl = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(str::trim) {
            let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
            if name.eq_ignore_ascii_case("max-age") {
                if let Ok(secs) = arg.trim_matches('"').parse::<u64>() {
                    ttl = Some(ttl.map_or(secs, |t: u64| t.min(secs)));
                }
            } else if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store")
            {
                ttl = Some(0);
            }
        }
    }
    ttl.map_or(DEFAULT_TTL, |secs| {
        Duration::from_secs(secs).clamp(MIN_TTL, MAX_TTL)
    })
}

/// Whether `url` is an absolute `http://` or `https://` URL.
pub(super) fn is_http_url(url: &str) -> bool {
    let lower = url
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    (lower.starts_with("https://") || lower.starts_with("http://"))
        && url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(cache_control: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in cache_control {
            headers.append(header::CACHE_CONTROL, HeaderValue::from_static(v));
        }
        headers
    }

    #[test]
    fn max_age_is_honoured_within_bounds() {
        assert_eq!(ttl(&with(&[])), DEFAULT_TTL);
        assert_eq!(
            ttl(&with(&["public, max-age=3600"])),
            Duration::from_secs(3600)
        );
        assert_eq!(ttl(&with(&["max-age=5"])), MIN_TTL);
        assert_eq!(ttl(&with(&["max-age=99999999"])), MAX_TTL);
        assert_eq!(ttl(&with(&["no-store"])), MIN_TTL);
        assert_eq!(ttl(&with(&["max-age=oops"])), DEFAULT_TTL);
        assert_eq!(
            ttl(&with(&["max-age=7200", "max-age=600"])),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn discovery_drops_a_trailing_slash() {
        assert_eq!(
            discovery_url("https://x.auth0.com/"),
            "https://x.auth0.com/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://login.example.com/realms/acme"),
            "https://login.example.com/realms/acme/.well-known/openid-configuration"
        );
    }

    #[test]
    fn only_http_urls() {
        assert!(is_http_url("https://x.auth0.com/.well-known/jwks.json"));
        assert!(is_http_url("http://127.0.0.1:8080/jwks"));
        assert!(!is_http_url("file:///etc/passwd"));
        assert!(!is_http_url("ftp://x/jwks"));
        assert!(!is_http_url("https://"));
        assert!(!is_http_url("jwks.json"));
    }
}
