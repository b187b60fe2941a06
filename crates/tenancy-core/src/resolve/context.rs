//! What resolvers read: [`ResolutionContext`], a borrowed view of the
//! request, and the [`VerifiedClaims`] of its token.

use std::fmt;

use http::{HeaderMap, Method, Uri};

/// Claims of a token whose signature and expiry were verified.
///
/// Only verified claims ever reach resolvers: an authentication
/// layer inserts this type into the request extensions after verifying a
/// token, or the built-in JWT verifier of the web crate does.
///
/// Cheap to clone (shared): the verified-token cache hands the same claims
/// to every request that repeats a token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifiedClaims(std::sync::Arc<serde_json::Map<String, serde_json::Value>>);

impl VerifiedClaims {
    /// Wraps claims that the caller has verified.
    pub fn new(claims: serde_json::Map<String, serde_json::Value>) -> Self {
        Self(std::sync::Arc::new(claims))
    }

    /// One claim.
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.get(key)
    }

    /// All claims.
    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }

    /// The claim at `path`: the top-level claim of that exact name when
    /// there is one (names such as `https://example.com/tenants` hold
    /// dots), else the nested claim the dots walk to (`o.id`, `org.id`).
    ///
    /// ```
    /// use tenancy::VerifiedClaims;
    /// let claims = VerifiedClaims::new(serde_json::json!({
    ///     "o": {"id": "org_1", "rol": "admin"},
    ///     "https://example.com/tenants": ["acme"],
    /// }).as_object().unwrap().clone());
    /// assert_eq!(claims.claim_at("o.id"), Some(&serde_json::json!("org_1")));
    /// assert_eq!(claims.claim_at("https://example.com/tenants"), Some(&serde_json::json!(["acme"])));
    /// assert_eq!(claims.claim_at("o.missing"), None);
    /// ```
    pub fn claim_at(&self, path: &str) -> Option<&serde_json::Value> {
        if let Some(value) = self.0.get(path) {
            return Some(value);
        }
        let mut segments = path.split('.');
        let mut value = self.0.get(segments.next()?)?;
        for segment in segments {
            value = value.as_object()?.get(segment)?;
        }
        Some(value)
    }

    /// The tenants the user belongs to, from the claim at `path` (see
    /// [`VerifiedClaims::claim_at`]). `None` when the claim is absent; a
    /// claim of another shape counts as an empty membership (fail closed:
    /// [`VerifiedClaims::membership_list`] tells it apart).
    pub fn memberships<'a>(&'a self, path: &str) -> Option<Vec<&'a str>> {
        match self.membership_list(path) {
            Ok(list) => list.map(|list| list.into_iter().map(|m| m.tenant).collect()),
            Err(_) => Some(Vec::new()),
        }
    }

    /// The memberships at `path`, with their roles: a tenant id or slug,
    /// a list of them, an object `{tenant, role}` (`id` for `tenant`, `rol`
    /// for `role` are read too), or a list of such objects. A single
    /// value's role is its parent object's `role` or `rol` claim (Clerk's
    /// `o.id` beside `o.rol`, WorkOS's `org_id` beside `role`). `Ok(None)`
    /// when the claim is absent; [`MembershipClaimError`] when it has any
    /// other shape (the token is then refused, never read as no claim).
    ///
    /// ```
    /// use tenancy::VerifiedClaims;
    /// let claims = VerifiedClaims::new(serde_json::json!({
    ///     "tenants": [{"tenant": "acme", "role": "admin"}, {"tenant": "globex", "role": "viewer"}],
    ///     "o": {"id": "org_1", "rol": "member"},
    ///     "bad": [1, 2],
    /// }).as_object().unwrap().clone());
    /// let list = claims.membership_list("tenants").unwrap().unwrap();
    /// assert_eq!((list[1].tenant, list[1].role), ("globex", Some("viewer")));
    /// let clerk = claims.membership_list("o.id").unwrap().unwrap();
    /// assert_eq!((clerk[0].tenant, clerk[0].role), ("org_1", Some("member")));
    /// assert!(claims.membership_list("bad").is_err());
    /// assert!(claims.membership_list("absent").unwrap().is_none());
    /// ```
    pub fn membership_list<'a>(
        &'a self,
        path: &str,
    ) -> Result<Option<Vec<Membership<'a>>>, MembershipClaimError> {
        let Some(value) = self.claim_at(path) else {
            return Ok(None);
        };
        let wrong = || MembershipClaimError {
            path: path.to_owned(),
        };
        let object = |v: &'a serde_json::Value| -> Option<Membership<'a>> {
            let o = v.as_object()?;
            let tenant = o.get("tenant").or_else(|| o.get("id"))?.as_str()?;
            let role = match o.get("role").or_else(|| o.get("rol")) {
                None | Some(serde_json::Value::Null) => None,
                Some(r) => Some(r.as_str()?),
            };
            Some(Membership { tenant, role })
        };
        Ok(Some(match value {
            serde_json::Value::String(tenant) => vec![Membership {
                tenant,
                role: self.sibling_role(path),
            }],
            serde_json::Value::Object(_) => vec![object(value).ok_or_else(wrong)?],
            serde_json::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    serde_json::Value::String(tenant) => Some(Membership { tenant, role: None }),
                    other => object(other),
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(wrong)?,
            _ => return Err(wrong()),
        }))
    }

    /// The `role` (or `rol`) string beside the claim at `path`.
    fn sibling_role(&self, path: &str) -> Option<&str> {
        let parent = match path.rsplit_once('.') {
            Some((parent, _)) if !self.0.contains_key(path) => {
                self.claim_at(parent)?.as_object()?
            }
            _ => &*self.0,
        };
        parent.get("role").or_else(|| parent.get("rol"))?.as_str()
    }
}

/// One tenant a token's user belongs to, and the user's role there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership<'a> {
    /// The tenant's id or slug.
    pub tenant: &'a str,
    /// The role, when the claim gives one.
    pub role: Option<&'a str>,
}

/// The membership claim has a shape no membership has (a number, a list
/// of numbers, an object without `tenant`…).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the membership claim `{path}` is not a tenant id or slug, a list of them, or a list of {{tenant, role}} objects"
)]
pub struct MembershipClaimError {
    /// The claim's path.
    pub path: String,
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
