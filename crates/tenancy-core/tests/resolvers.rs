//! Resolvers, their order, custom resolvers and the override (R1–R6).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::json;
use tenancy_core::config::ResolutionConfig;
use tenancy_core::resolve::*;
use tenancy_core::{ConfigError, TenantRef};

struct Req {
    host: Option<&'static str>,
    path: &'static str,
    query: Option<&'static str>,
    headers: HeaderMap,
    claims: Option<VerifiedClaims>,
}

impl Req {
    fn new() -> Self {
        Req {
            host: None,
            path: "/",
            query: None,
            headers: HeaderMap::new(),
            claims: None,
        }
    }
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers
            .insert(name, HeaderValue::from_str(value).unwrap());
        self
    }
    fn host(mut self, host: &'static str) -> Self {
        self.host = Some(host);
        self
    }
    fn path(mut self, path: &'static str) -> Self {
        self.path = path;
        self
    }
    fn claims(mut self, claims: serde_json::Value) -> Self {
        self.claims = Some(VerifiedClaims::new(claims.as_object().unwrap().clone()));
        self
    }
    async fn run(&self, resolver: &dyn Resolver) -> Option<String> {
        let ctx = ResolutionContext::new(
            &Method::GET,
            self.host,
            self.path,
            self.query,
            &self.headers,
        )
        .with_claims(self.claims.as_ref());
        resolver.resolve(&ctx).await.map(|r| r.as_str().to_owned())
    }
    /// Every name the chain gathers, in order (credential first).
    async fn chain(&self, chain: &ResolverChain) -> Vec<String> {
        let ctx = ResolutionContext::new(
            &Method::GET,
            self.host,
            self.path,
            self.query,
            &self.headers,
        )
        .with_claims(self.claims.as_ref());
        let named = chain.named(&ctx).await.unwrap();
        let names: Vec<String> = named.names().map(str::to_owned).collect();
        assert_eq!(named.len(), names.len());
        // The tenant layer's hit path reads the chain without waiting:
        // whenever that answers, it must agree.
        if let Some(now) = chain.named_now(&ctx) {
            let now: Vec<String> = now.unwrap().names().map(str::to_owned).collect();
            assert_eq!(now, names, "named_now disagrees with named");
        }
        names
    }
}

#[tokio::test]
async fn jwt_claim_reads_configured_claim_from_verified_claims_only() {
    let r = JwtClaimResolver::default();
    assert_eq!(r.priority(), 10);
    assert_eq!(
        Req::new()
            .claims(json!({"tenant_id": "acme"}))
            .run(&r)
            .await
            .as_deref(),
        Some("acme")
    );
    assert_eq!(
        Req::new()
            .claims(json!({"tenant_id": 42}))
            .run(&r)
            .await
            .as_deref(),
        Some("42")
    );
    assert_eq!(Req::new().claims(json!({"sub": "u1"})).run(&r).await, None);
    assert_eq!(
        Req::new().claims(json!({"tenant_id": ""})).run(&r).await,
        None
    );
    assert_eq!(
        Req::new().claims(json!({"tenant_id": ["a"]})).run(&r).await,
        None
    );
    // A raw (unverified) bearer token is never read by the resolver.
    assert_eq!(
        Req::new()
            .header("authorization", "Bearer x.y.z")
            .run(&r)
            .await,
        None
    );
    let org = JwtClaimResolver::new("org");
    assert_eq!(
        Req::new()
            .claims(json!({"org": "globex"}))
            .run(&org)
            .await
            .as_deref(),
        Some("globex")
    );
}

#[tokio::test]
async fn header_resolver_reads_configured_header() {
    let r = HeaderResolver::default();
    assert_eq!(r.priority(), 20);
    assert_eq!(
        Req::new()
            .header("x-tenant-id", "acme")
            .run(&r)
            .await
            .as_deref(),
        Some("acme")
    );
    assert_eq!(
        Req::new()
            .header("X-Tenant-ID", " acme ")
            .run(&r)
            .await
            .as_deref(),
        Some("acme")
    );
    assert_eq!(Req::new().header("x-tenant-id", "").run(&r).await, None);
    assert_eq!(Req::new().run(&r).await, None);
    let custom = HeaderResolver::new(http::HeaderName::from_static("x-org"));
    assert_eq!(
        Req::new()
            .header("x-org", "acme")
            .run(&custom)
            .await
            .as_deref(),
        Some("acme")
    );
    assert_eq!(
        Req::new().header("x-tenant-id", "acme").run(&custom).await,
        None
    );
}

#[tokio::test]
async fn header_with_non_utf8_bytes_is_an_answer_that_cannot_validate() {
    let r = HeaderResolver::default();
    let mut req = Req::new();
    req.headers
        .insert("x-tenant-id", HeaderValue::from_bytes(b"ac\xffme").unwrap());
    let found = req.run(&r).await.unwrap();
    assert!(!TenantRef::new(&found).is_well_formed());
}

#[tokio::test]
async fn subdomain_resolver_reads_the_label_under_the_base_domain() {
    let r = SubdomainResolver::new("app.com");
    assert_eq!(r.priority(), 30);
    let cases = [
        ("acme.app.com", Some("acme")),
        ("ACME.App.Com", Some("acme")),
        ("acme.app.com:8080", Some("acme")),
        ("acme.app.com.", Some("acme")),
        ("app.com", None),
        ("www.app.com", None),
        ("acme.other.com", None),
        ("acmeapp.com", None),
        ("a.b.app.com", Some("a.b")),
        ("[::1]:8080", None),
        ("127.0.0.1:3000", None),
    ];
    for (host, expected) in cases {
        assert_eq!(
            Req::new().host(host).run(&r).await.as_deref(),
            expected,
            "{host}"
        );
    }
    assert_eq!(Req::new().run(&r).await, None);
}

#[tokio::test]
async fn path_resolver_reads_the_pattern_segment() {
    let r = PathResolver::default();
    assert_eq!(r.priority(), 40);
    assert_eq!(
        Req::new()
            .path("/tenants/acme/notes")
            .run(&r)
            .await
            .as_deref(),
        Some("acme")
    );
    assert_eq!(
        Req::new().path("/tenants/acme").run(&r).await.as_deref(),
        Some("acme")
    );
    assert_eq!(Req::new().path("/tenants/").run(&r).await, None);
    assert_eq!(Req::new().path("/notes").run(&r).await, None);
    assert_eq!(Req::new().path("/x/tenants/acme/").run(&r).await, None);
    let custom = PathResolver::new("/t/{tenant_id}/").unwrap();
    assert_eq!(
        Req::new().path("/t/globex/a").run(&custom).await.as_deref(),
        Some("globex")
    );
}

#[test]
fn bad_path_patterns_are_config_errors() {
    for bad in [
        "/tenants/",
        "tenants/{tenant_id}/",
        "/t{tenant_id}/",
        "/t/{tenant_id}x",
        "/{tenant_id}/{tenant_id}/",
    ] {
        let err = PathResolver::new(bad).unwrap_err();
        assert!(
            err.to_string().contains("resolution.path_pattern"),
            "{bad}: {err}"
        );
    }
}

fn all_four() -> ResolverChain {
    ResolverChain::from_config(&ResolutionConfig {
        base_domain: Some("app.com".into()),
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test]
async fn chain_gathers_every_name_in_priority_order() {
    let chain = all_four();
    assert_eq!(chain.names(), ["jwt_claim", "header", "subdomain", "path"]);
    let everything = Req::new()
        .claims(json!({"tenant_id": "from-jwt"}))
        .header("x-tenant-id", "from-header")
        .host("from-sub.app.com")
        .path("/tenants/from-path/x");
    // The credential first; then two distinct names: a third one is
    // only remembered as "more" (the request cannot name one tenant).
    assert_eq!(
        everything.chain(&chain).await,
        ["from-jwt", "from-header", "from-sub"]
    );
    let sub_and_path = Req::new()
        .host("from-sub.app.com")
        .path("/tenants/from-path/x");
    assert_eq!(sub_and_path.chain(&chain).await, ["from-sub", "from-path"]);
    // One tenant named three ways is one name.
    let agreeing = Req::new()
        .header("x-tenant-id", "acme")
        .host("acme.app.com")
        .path("/tenants/acme/x");
    assert_eq!(agreeing.chain(&chain).await, ["acme"]);
    assert_eq!(
        Req::new().path("/tenants/from-path/x").chain(&chain).await,
        ["from-path"]
    );
    assert!(Req::new().chain(&chain).await.is_empty());
}

#[tokio::test]
async fn config_order_does_not_override_priorities() {
    let chain = ResolverChain::from_config(&ResolutionConfig {
        resolvers: vec!["path".into(), "header".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(chain.names(), ["header", "path"]);
}

#[test]
fn unknown_resolver_name_is_an_error_naming_it() {
    let err = ResolverChain::from_config(&ResolutionConfig {
        resolvers: vec!["header".into(), "cookie".into()],
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(&err, ConfigError::Invalid { key, .. } if key == "resolution.resolvers"));
    assert!(err.to_string().contains("\"cookie\""), "{err}");
}

#[test]
fn subdomain_without_base_domain_is_disabled() {
    let chain = ResolverChain::from_config(&ResolutionConfig::default()).unwrap();
    assert_eq!(chain.names(), ["jwt_claim", "header", "path"]);
}

#[test]
fn invalid_header_name_is_a_config_error() {
    let err = ResolverChain::from_config(&ResolutionConfig {
        header_name: "bad header".into(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("resolution.header_name"));
}

/// `?tenant=acme`
struct QueryParam;

#[async_trait]
impl Resolver for QueryParam {
    fn name(&self) -> &str {
        "query"
    }
    fn priority(&self) -> i32 {
        25
    }
    async fn resolve(&self, ctx: &ResolutionContext<'_>) -> Option<TenantRef> {
        ctx.query()?
            .split('&')
            .find_map(|p| p.strip_prefix("tenant="))
            .map(TenantRef::new)
    }
}

#[tokio::test]
async fn custom_resolver_slots_in_by_priority() {
    let chain = all_four().with(QueryParam);
    assert_eq!(
        chain.names(),
        ["jwt_claim", "header", "query", "subdomain", "path"]
    );
    let mut req = Req::new().host("from-sub.app.com");
    req.query = Some("x=1&tenant=from-query");
    assert_eq!(req.chain(&chain).await, ["from-query", "from-sub"]);
    let req = req.header("x-tenant-id", "from-header");
    assert_eq!(req.chain(&chain).await[..2], ["from-header", "from-query"]);
}

struct Fixed(&'static str);

#[async_trait]
impl Resolver for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }
    fn priority(&self) -> i32 {
        1000
    }
    async fn resolve(&self, _: &ResolutionContext<'_>) -> Option<TenantRef> {
        Some(TenantRef::new(self.0))
    }
}

#[tokio::test]
async fn override_runs_before_everything() {
    let chain = all_four().override_with(Fixed("forced"));
    let req = Req::new()
        .claims(json!({"tenant_id": "from-jwt"}))
        .header("x-tenant-id", "from-header");
    assert_eq!(req.chain(&chain).await, ["forced"]);
}

#[test]
fn memberships_fail_closed_on_odd_shapes() {
    let c = VerifiedClaims::new(
        json!({"tenants": ["a", "b", 3]})
            .as_object()
            .unwrap()
            .clone(),
    );
    // One odd item spoils the claim: nothing is granted, and the layer
    // refuses the token (membership_list tells the shape is wrong).
    assert_eq!(c.memberships("tenants"), Some(vec![]));
    assert!(c.membership_list("tenants").is_err());
    let c = VerifiedClaims::new(json!({"tenants": {"a": true}}).as_object().unwrap().clone());
    assert_eq!(c.memberships("tenants"), Some(vec![]));
    let c = VerifiedClaims::new(json!({"sub": "x"}).as_object().unwrap().clone());
    assert_eq!(c.memberships("tenants"), None);
}

/// `of_request` reads the host only when asked: an absolute-form target's
/// authority first (RFC 9112: it wins over `Host`; HTTP/2 requests carry
/// it as `:authority`), else the `Host` header; a subdomain resolver sees
/// the same host either way.
#[tokio::test]
async fn a_request_context_takes_its_host_from_the_target_then_the_header() {
    let resolver = SubdomainResolver::new("example.com");
    let with_header = http::Request::get("/notes?x=1")
        .header("host", "acme.example.com:8080")
        .body(())
        .unwrap();
    let ctx = ResolutionContext::of_request(
        with_header.method(),
        with_header.uri(),
        with_header.headers(),
    );
    assert_eq!(ctx.host(), Some("acme.example.com:8080"));
    assert_eq!((ctx.path(), ctx.query()), ("/notes", Some("x=1")));
    assert_eq!(resolver.resolve(&ctx).await.unwrap().as_str(), "acme");

    let http2 = http::Request::get("https://globex.example.com/notes")
        .body(())
        .unwrap();
    let ctx = ResolutionContext::of_request(http2.method(), http2.uri(), http2.headers());
    assert_eq!(ctx.host(), Some("globex.example.com"));
    assert_eq!(resolver.resolve(&ctx).await.unwrap().as_str(), "globex");

    // The target's authority wins over the header.
    let both = http::Request::get("http://globex.example.com/")
        .header("host", "acme.example.com")
        .body(())
        .unwrap();
    let ctx = ResolutionContext::of_request(both.method(), both.uri(), both.headers());
    assert_eq!(ctx.host(), Some("globex.example.com"));
    assert_eq!(resolver.resolve(&ctx).await.unwrap().as_str(), "globex");

    let neither = http::Request::get("/").body(()).unwrap();
    let ctx = ResolutionContext::of_request(neither.method(), neither.uri(), neither.headers());
    assert_eq!(ctx.host(), None);
    assert_eq!(resolver.resolve(&ctx).await, None);
}

#[tokio::test]
async fn repeated_headers_that_name_the_tenant_are_ambiguous() {
    fn ctx(headers: &HeaderMap) -> ResolutionContext<'_> {
        ResolutionContext::new(&Method::GET, None, "/", None, headers)
    }
    let chain = all_four();
    for name in ["x-tenant-id", "host"] {
        let mut headers = HeaderMap::new();
        headers.append(name, HeaderValue::from_static("acme.app.com"));
        headers.append(name, HeaderValue::from_static("globex.app.com"));
        let refused = chain.named_now(&ctx(&headers)).unwrap().unwrap_err();
        assert_eq!(refused.header.as_str(), name);
        assert!(refused.to_string().contains("more than one"), "{refused}");
        assert_eq!(chain.named(&ctx(&headers)).await.unwrap_err(), refused);
    }
    // Other repeated headers are not the chain's business.
    let mut headers = HeaderMap::new();
    headers.append("accept", HeaderValue::from_static("a/b"));
    headers.append("accept", HeaderValue::from_static("c/d"));
    headers.insert("x-tenant-id", HeaderValue::from_static("acme"));
    let named = chain.named_now(&ctx(&headers)).unwrap().unwrap();
    assert_eq!(named.names().collect::<Vec<_>>(), ["acme"]);
    // A header resolver added as a shared trait object cannot be read in
    // place: a repeated header is then an answer no tenant matches.
    let mut shared = ResolverChain::new();
    shared.push(std::sync::Arc::new(HeaderResolver::default()));
    headers.append("x-tenant-id", HeaderValue::from_static("globex"));
    let named = shared.named(&ctx(&headers)).await.unwrap();
    let names: Vec<&str> = named.names().collect();
    assert_eq!(names, [""]);
    assert!(!TenantRef::new(names[0]).is_well_formed());
}

#[tokio::test]
async fn a_header_is_read_in_place_only_when_it_is_text() {
    fn ctx(headers: &HeaderMap) -> ResolutionContext<'_> {
        ResolutionContext::new(&Method::GET, None, "/", None, headers)
    }
    let chain = all_four();
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant-id", HeaderValue::from_static("  acme "));
    // Trimmed, borrowed from the request.
    let named = chain.named_now(&ctx(&headers)).unwrap().unwrap();
    assert_eq!(named.names().collect::<Vec<_>>(), ["acme"]);
    // Not visible ASCII: a (malformed) answer, not a skipped header.
    let mut bad = HeaderMap::new();
    bad.insert("x-tenant-id", HeaderValue::from_bytes(b"ac\xffme").unwrap());
    let named = chain.named_now(&ctx(&bad)).unwrap().unwrap();
    let names: Vec<&str> = named.names().collect();
    assert_eq!(names.len(), 1);
    assert!(!TenantRef::new(names[0]).is_well_formed());
    // Present but empty: no answer from the header.
    let mut empty = HeaderMap::new();
    empty.insert("x-tenant-id", HeaderValue::from_static(""));
    assert!(chain.named_now(&ctx(&empty)).unwrap().unwrap().is_empty());
    // The override, when it answers, is the only name.
    let overridden = all_four().override_with(HeaderResolver::new(http::HeaderName::from_static(
        "x-forced",
    )));
    headers.insert("x-forced", HeaderValue::from_static("forced"));
    let named = overridden.named_now(&ctx(&headers)).unwrap().unwrap();
    assert_eq!(named.names().collect::<Vec<_>>(), ["forced"]);
}
