//! What resolvers read: [`ResolutionContext`], a borrowed view of the
//! request, and the [`VerifiedClaims`] of its token.

use std::fmt;

use http::{HeaderMap, Method, Uri};

/// Claims of a token whose signature and expiry were verified.
///
/// Only verified claims ever reach resolvers: an authentication
/// layer inserts this type into the request extensions after verifying a
/// token, or the built-in JWT verifier of the web crate does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifiedClaims(serde_json::Map<String, serde_json::Value>);

impl VerifiedClaims {
    /// Wraps claims that the caller has verified.
    pub fn new(claims: serde_json::Map<String, serde_json::Value>) -> Self {
        Self(claims)
    }

    /// One claim.
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.get(key)
    }

    /// All claims.
    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }

    /// The tenants the user belongs to, from the claim `key` (a list of
    /// tenant ids or slugs). `None` when the claim is absent; a claim that is
    /// not a list of strings counts as an empty membership (fail closed).
    pub fn memberships<'a>(&'a self, key: &str) -> Option<Vec<&'a str>> {
        let value = self.0.get(key)?;
        Some(match value {
            serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str()).collect(),
            serde_json::Value::String(one) => vec![one.as_str()],
            _ => Vec::new(),
        })
    }
}

/// An immutable snapshot of the request that resolvers read.
///
/// It borrows from the request, so building one costs nothing.
#[derive(Clone, Copy)]
pub struct ResolutionContext<'a> {
    method: &'a Method,
    target: Target<'a>,
    headers: &'a HeaderMap,
    claims: Option<&'a VerifiedClaims>,
}

/// Where the host, path and query come from: given, or read from the
/// request's URI (and `Host` header) only when a resolver asks; most
/// chains read one or none of them.
#[derive(Clone, Copy)]
enum Target<'a> {
    Given {
        host: Option<&'a str>,
        path: &'a str,
        query: Option<&'a str>,
    },
    Request(&'a Uri),
}

impl<'a> ResolutionContext<'a> {
    /// The context of an HTTP request: the host is the authority of its
    /// URI (an absolute-form target, HTTP/2), else its `Host` header, read
    /// only if a resolver asks.
    ///
    /// ```
    /// use tenancy::resolve::ResolutionContext;
    /// let req = http::Request::get("/notes").header("host", "acme.example.com").body(()).unwrap();
    /// let ctx = ResolutionContext::of_request(req.method(), req.uri(), req.headers());
    /// assert_eq!(ctx.host(), Some("acme.example.com"));
    /// assert_eq!(ctx.path(), "/notes");
    /// ```
    #[inline]
    pub fn of_request(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        Self {
            method,
            target: Target::Request(uri),
            headers,
            claims: None,
        }
    }

    /// A context for a request. `host` is the `Host` (or forwarded host)
    /// without any change; resolvers strip the port themselves.
    pub fn new(
        method: &'a Method,
        host: Option<&'a str>,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> Self {
        Self {
            method,
            target: Target::Given { host, path, query },
            headers,
            claims: None,
        }
    }

    /// Adds verified claims.
    pub fn with_claims(mut self, claims: Option<&'a VerifiedClaims>) -> Self {
        self.claims = claims;
        self
    }

    /// The HTTP method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The host the client addressed, if known.
    pub fn host(&self) -> Option<&'a str> {
        match self.target {
            Target::Given { host, .. } => host,
            // An absolute-form target's authority (HTTP/2's `:authority`
            // too) is the host, whatever `Host` says (RFC 9112 §3.2.2).
            Target::Request(uri) => uri.host().or_else(|| {
                self.headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            }),
        }
    }

    /// The path, not percent-decoded.
    pub fn path(&self) -> &'a str {
        match self.target {
            Target::Given { path, .. } => path,
            Target::Request(uri) => uri.path(),
        }
    }

    /// The query string, without `?`.
    pub fn query(&self) -> Option<&'a str> {
        match self.target {
            Target::Given { query, .. } => query,
            Target::Request(uri) => uri.query(),
        }
    }

    /// The request headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// Verified token claims, if an authentication step verified a token.
    pub fn claims(&self) -> Option<&'a VerifiedClaims> {
        self.claims
    }
}

impl fmt::Debug for ResolutionContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolutionContext")
            .field("method", self.method)
            .field("host", &self.host())
            .field("path", &self.path())
            .field("has_claims", &self.claims.is_some())
            .finish_non_exhaustive()
    }
}
