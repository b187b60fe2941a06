//! Tokens of identity providers, on the tenant layer's request path: a
//! real OpenID provider (node-oidc-provider, `tests/oidc/op.mjs`; scripts/
//! test.sh installs it) with key rotation, key sets the test serves itself
//! for the algorithms that provider does not issue, every bad input with
//! its status and code, and the verified-token cache.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tenancy::config::{IssuerConfig, TenancyConfig};
use tenancy::resolve::{HeaderResolver, JwtClaimResolver};
use tenancy::{MemoryStore, NewTenant, ResolverChain, Tenancy, Tenant, TenantLayer, Validator};
use tenancy_axum::{JwtError, JwtVerifier};
use tower::ServiceExt;

// ---------------------------------------------------------------- provider

/// The directory holding `node_modules/oidc-provider`.
fn provider_dir() -> PathBuf {
    let dir = std::env::var_os("TENANCY_OIDC_PROVIDER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tenancy-oidc")
        });
    assert!(
        dir.join("node_modules/oidc-provider/package.json").exists(),
        "node-oidc-provider is required for this test and is not in {}: run scripts/test.sh \
         (it runs `npm install oidc-provider@9` there), or set TENANCY_OIDC_PROVIDER",
        dir.display()
    );
    dir
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/oidc")
        .join(name)
}

/// A running `op.mjs`: killed when dropped, and exits by itself when the
/// test process ends (its stdin closes) or after five minutes.
struct Op {
    child: Child,
    issuer: String,
}

impl Op {
    fn start() -> Op {
        let mut child = Command::new("node")
            .arg(script("op.mjs"))
            .env("TENANCY_OIDC_PROVIDER", provider_dir())
            .env("TENANCY_OIDC_LIFETIME_S", "300")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node is required for this test (apt-get install nodejs)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("op.mjs did not start within 20 s");
        let started: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("op.mjs did not start: {e}: {line:?}"));
        Op {
            child,
            issuer: started["issuer"].as_str().unwrap().to_owned(),
        }
    }

    /// An access token for `client` (client credentials), for `resource`.
    async fn token(&self, client: &str, resource: Option<&str>) -> String {
        let mut body = "grant_type=client_credentials&scope=api".to_owned();
        if let Some(resource) = resource {
            body.push_str("&resource=");
            body.push_str(&resource.replace(':', "%3A").replace('/', "%2F"));
        }
        let res = http_client()
            .post(format!("{}/token", self.issuer))
            .basic_auth(client, Some(format!("{client}-secret")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Runs an admin action of op.mjs; the key ids published after it.
    async fn admin(&self, action: &str) -> Vec<String> {
        let res = http_client()
            .post(format!("{}/admin/{action}", self.issuer))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        serde_json::from_value(body["kids"].clone()).unwrap()
    }

    /// Its published key set.
    async fn jwks(&self) -> Value {
        let res = http_client()
            .get(format!("{}/jwks", self.issuer))
            .send()
            .await
            .unwrap();
        serde_json::from_slice(&res.bytes().await.unwrap()).unwrap()
    }

    fn issuer_config(&self, algorithms: &[&str]) -> IssuerConfig {
        let mut config = IssuerConfig::new(&self.issuer, ["https://api.test", "https://es.test"]);
        config.algorithms = algorithms.iter().map(|a| a.to_string()).collect();
        config
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The provider shared by the tests that do not change its keys.
fn shared_op() -> &'static Op {
    static OP: OnceLock<Op> = OnceLock::new();
    OP.get_or_init(Op::start)
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

// ---------------------------------------------------------------- the app

/// A `Tenancy` with tenants acme and globex and `config`, and a route
/// answering the tenant's slug under its layer.
async fn tenancy_app(config: TenancyConfig) -> Router {
    let tenancy = Tenancy::builder()
        .config(config)
        .store(MemoryStore::new())
        .build()
        .unwrap();
    for slug in ["acme", "globex"] {
        tenancy
            .lifecycle()
            .create(NewTenant::new(slug, slug).unwrap())
            .await
            .unwrap();
    }
    Router::new()
        .route(
            "/whoami",
            get(|t: Tenant| async move { t.slug.to_string() }),
        )
        .layer(tenancy.layer())
}

/// The same route under a layer with `verifier` (to watch its stats),
/// resolving with the `tenant_id` claim, then the header.
async fn verifier_app(verifier: JwtVerifier) -> Router {
    let store = MemoryStore::new();
    let lifecycle = tenancy::LifecycleService::new(Arc::new(store.clone()));
    for slug in ["acme", "globex"] {
        lifecycle
            .create(NewTenant::new(slug, slug).unwrap())
            .await
            .unwrap();
    }
    let layer = TenantLayer::new(
        ResolverChain::new()
            .with(JwtClaimResolver::new("tenant_id"))
            .with(HeaderResolver::default()),
        Validator::new(Arc::new(store), &Default::default()),
    )
    .jwt(verifier);
    Router::new()
        .route(
            "/whoami",
            get(|t: Tenant| async move { t.slug.to_string() }),
        )
        .layer(layer)
}

fn config_with(issuers: Vec<IssuerConfig>) -> TenancyConfig {
    let mut config = TenancyConfig::default();
    config.auth.issuers = issuers;
    config
}

/// The answer to `GET /whoami` with `token`, and `X-Tenant-Id: acme` when
/// `header` (a refused token must never fall through to the header).
async fn whoami(app: &Router, token: &str, header: bool) -> (StatusCode, Value) {
    let mut req = Request::get("/whoami")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    if header {
        req.headers_mut()
            .insert("x-tenant-id", http::HeaderValue::from_static("acme"));
    }
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let retry_after = res.headers().get("retry-after").cloned();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let mut body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(retry_after.is_some(), "a 503 says when to retry");
    }
    if let Value::Object(map) = &mut body {
        map.insert("status".into(), json!(status.as_u16()));
    }
    (status, body)
}

/// Asserts `GET /whoami` with `token` is refused with `status` and `code`,
/// even with a header naming a tenant.
async fn refused(app: &Router, token: &str, status: u16, code: &str) -> String {
    let (got, body) = whoami(app, token, true).await;
    assert_eq!(got.as_u16(), status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    body["detail"].as_str().unwrap_or_default().to_owned()
}

/// The tenant `GET /whoami` with `token` is served for.
async fn served(app: &Router, token: &str) -> String {
    let (status, body) = whoami(app, token, false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_str().unwrap().to_owned()
}

// ------------------------------------------------------------ own key sets

/// Key pairs from `tests/oidc/keys.mjs` (node's crypto), by name.
fn keys() -> &'static Value {
    static KEYS: OnceLock<Value> = OnceLock::new();
    KEYS.get_or_init(|| {
        let out = Command::new("node")
            .arg(script("keys.mjs"))
            .output()
            .expect("node is required for this test");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token signed with key `name` of [`keys`], with `claims`.
fn sign(name: &str, claims: &Value) -> String {
    let key = &keys()[name];
    let alg: Algorithm = key["alg"].as_str().unwrap().parse().unwrap();
    let pem = key["private_pem"].as_str().unwrap().as_bytes();
    let encoding = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = Some(name.to_owned());
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

/// A key set and discovery document served by the test: what it serves
/// can be changed, and its requests are counted.
#[derive(Clone)]
struct OwnProvider {
    base: String,
    jwks: Arc<Mutex<String>>,
    /// The `issuer` its discovery document names (default: itself).
    claims_issuer: Arc<Mutex<Option<String>>>,
    jwks_hits: Arc<AtomicUsize>,
    delay: Arc<Mutex<Duration>>,
}

impl OwnProvider {
    async fn start(keys: &[&str]) -> OwnProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let jwks: Vec<Value> = keys
            .iter()
            .map(|k| crate::keys()[*k]["jwk"].clone())
            .collect();
        let own = OwnProvider {
            base,
            jwks: Arc::new(Mutex::new(json!({ "keys": jwks }).to_string())),
            claims_issuer: Arc::default(),
            jwks_hits: Arc::default(),
            delay: Arc::default(),
        };
        let (a, b) = (own.clone(), own.clone());
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move {
                    let issuer = a.claims_issuer.lock().unwrap().clone();
                    axum::Json(json!({
                        "issuer": issuer.unwrap_or_else(|| a.base.clone()),
                        "jwks_uri": format!("{}/jwks", a.base),
                    }))
                }),
            )
            .route(
                "/jwks",
                get(move || async move {
                    b.jwks_hits.fetch_add(1, Ordering::SeqCst);
                    let delay = *b.delay.lock().unwrap();
                    tokio::time::sleep(delay).await;
                    b.jwks.lock().unwrap().clone()
                }),
            );
        tokio::spawn(async move { axum::serve(listener, router).await });
        own
    }

    fn issuer_config(&self, algorithms: &[&str]) -> IssuerConfig {
        let mut config = IssuerConfig::new(&self.base, ["https://api.test"]);
        config.algorithms = algorithms.iter().map(|a| a.to_string()).collect();
        config
    }

    /// Claims for a token of this provider, expiring in `exp_in` seconds.
    fn claims(&self, exp_in: i64) -> Value {
        json!({
            "iss": self.base, "aud": "https://api.test", "sub": "u1",
            "tenant_id": "acme", "exp": now() + exp_in,
        })
    }
}

/// A server that accepts connections and never answers.
async fn hanging_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    base
}

fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn provider_tokens_verify_on_the_request_path() {
    let op = shared_op();
    let app = tenancy_app(config_with(vec![op.issuer_config(&["RS256", "ES256"])])).await;
    // RS256 (the default resource) and ES256 tokens, for two clients: the
    // tenant comes from the token's `tenant_id` claim, not the header.
    let acme = op.token("app", None).await;
    assert_eq!(served(&app, &acme).await, "acme");
    let globex = op.token("other", Some("https://es.test")).await;
    assert_eq!(served(&app, &globex).await, "globex");
    assert_eq!(
        jsonwebtoken::decode_header(&globex).unwrap().alg,
        Algorithm::ES256
    );

    // An algorithm the issuer is not configured for.
    let rs_only = tenancy_app(config_with(vec![op.issuer_config(&["RS256"])])).await;
    let detail = refused(&rs_only, &globex, 401, "invalid_token").await;
    assert!(detail.contains("ES256 is not accepted"), "{detail}");

    // A token for another audience.
    let mut other_aud = op.issuer_config(&["RS256"]);
    other_aud.audiences = vec!["https://billing.test".into()];
    let other_aud = tenancy_app(config_with(vec![other_aud])).await;
    let detail = refused(&other_aud, &acme, 401, "invalid_token").await;
    assert!(detail.contains("aud"), "{detail}");

    // An issuer that is not configured (only this one is, by another app).
    let own = OwnProvider::start(&["ps256"]).await;
    let stranger = sign("ps256", &own.claims(300));
    let detail = refused(&app, &stranger, 401, "invalid_token").await;
    assert!(detail.contains("not trusted"), "{detail}");
}

#[tokio::test]
async fn forged_tokens_naming_the_provider_are_refused() {
    let op = shared_op();
    let app = tenancy_app(config_with(vec![op.issuer_config(&["RS256", "ES256"])])).await;
    let genuine = op.token("app", None).await;
    assert_eq!(served(&app, &genuine).await, "acme");
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(&genuine).unwrap();
    let kid = jsonwebtoken::decode_header(&genuine).unwrap().kid.unwrap();

    // HS256 signed with the provider's public key (algorithm confusion),
    // as the JWK's JSON and as the modulus bytes.
    let jwks = op.jwks().await;
    let public = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == json!(kid))
        .unwrap()
        .clone();
    let modulus = URL_SAFE_NO_PAD
        .decode(public["n"].as_str().unwrap())
        .unwrap();
    for secret in [public.to_string().into_bytes(), modulus] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        let confused =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).unwrap();
        let detail = refused(&app, &confused, 401, "invalid_token").await;
        assert!(detail.contains("HS256 is not accepted"), "{detail}");
    }

    // `alg: none`, with and without a kid.
    for header in [
        json!({"alg": "none", "typ": "JWT"}),
        json!({"alg": "none", "kid": kid}),
        json!({"alg": "None"}),
    ] {
        let detail = refused(&app, &unsigned(&header, &claims), 401, "invalid_token").await;
        assert!(detail.contains("none"), "{detail}");
    }

    // The genuine token with its claims changed (a tenant it was not
    // issued for): the signature no longer verifies.
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let mut tampered_claims = claims.clone();
    tampered_claims["tenant_id"] = json!("globex");
    let payload = URL_SAFE_NO_PAD.encode(tampered_claims.to_string());
    parts[1] = &payload;
    let detail = refused(&app, &parts.join("."), 401, "invalid_token").await;
    assert!(detail.contains("signature"), "{detail}");

    // Garbage.
    for bad in ["garbage", "a.b.c", "..."] {
        refused(&app, bad, 401, "invalid_token").await;
    }
}

#[tokio::test]
async fn rotation_needs_no_restart_and_a_removed_key_ends_its_cached_tokens() {
    let op = Op::start();
    let verifier = JwtVerifier::providers([op.issuer_config(&["RS256"])])
        .unwrap()
        .jwks_min_refresh(Duration::ZERO);
    let app = verifier_app(verifier.clone()).await;

    let old = op.token("app", None).await;
    assert_eq!(kid_of(&old), "rsa-1");
    assert_eq!(served(&app, &old).await, "acme");
    assert_eq!(verifier.stats().key_fetches, 1);

    // A new key first, the old one kept: a token of the new key names a
    // kid the cached set lacks, and the keys are fetched again.
    assert_eq!(op.admin("rotate").await, ["rsa-2", "rsa-1", "ec-1"]);
    let new = op.token("app", None).await;
    assert_eq!(kid_of(&new), "rsa-2");
    assert_eq!(served(&app, &new).await, "acme");
    assert_eq!(verifier.stats().key_fetches, 2);
    // The old key is still published: its token is still served (from
    // the cache: no signature check).
    let checks = verifier.stats().signature_checks;
    assert_eq!(served(&app, &old).await, "acme");
    assert_eq!(verifier.stats().signature_checks, checks);

    // The old key removed. The next fetch (here: a token naming a kid the
    // provider never had) finds it gone, and its cached token is no longer
    // served.
    assert_eq!(op.admin("retire").await, ["rsa-2", "ec-1"]);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-99".into());
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(&new).unwrap();
    let pem = keys()["rs512"]["private_pem"].as_str().unwrap();
    let unknown = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let detail = refused(&app, &unknown, 401, "invalid_token").await;
    assert!(detail.contains("no usable key \"rsa-99\""), "{detail}");
    assert_eq!(verifier.stats().key_fetches, 3);
    let detail = refused(&app, &old, 401, "invalid_token").await;
    assert!(detail.contains("rsa-1"), "{detail}");
    assert_eq!(served(&app, &new).await, "acme");

    // The provider down: cached keys keep serving a token not seen yet,
    // and cached tokens are still served.
    let unseen = op.token("app", None).await;
    drop(op);
    assert_eq!(served(&app, &unseen).await, "acme");
    assert_eq!(served(&app, &new).await, "acme");
    // A kid the held keys lack, while the provider cannot be asked: the
    // provider's fault (it may have rotated), 503; the held keys still
    // serve.
    let detail = refused(&app, &unknown, 503, "identity_provider_unavailable").await;
    assert!(detail.contains("cannot fetch"), "{detail}");
    assert_eq!(served(&app, &unseen).await, "acme");
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test]
async fn an_unknown_kid_refetches_at_most_once_per_interval() {
    let own = OwnProvider::start(&["ps256"]).await;
    let verifier = JwtVerifier::providers([own.issuer_config(&["PS256", "RS512"])]).unwrap();
    let app = verifier_app(verifier.clone()).await;
    assert_eq!(served(&app, &sign("ps256", &own.claims(300))).await, "acme");
    assert_eq!(own.jwks_hits.load(Ordering::SeqCst), 1);
    // A kid the set lacks, just after a fetch: refused without fetching
    // again (at most one fetch per `jwks_min_refresh`, default 30 s).
    let unknown = sign("rs512", &own.claims(300));
    for _ in 0..3 {
        let detail = refused(&app, &unknown, 401, "invalid_token").await;
        assert!(detail.contains("no usable key \"rs512\""), "{detail}");
    }
    assert_eq!(own.jwks_hits.load(Ordering::SeqCst), 1);
    assert_eq!(verifier.stats().key_fetches, 1);
}

#[tokio::test]
async fn algorithms_the_provider_does_not_issue() {
    let own = OwnProvider::start(&["ps256", "rs512", "es384", "eddsa", "rs256_short"]).await;
    let algorithms = ["PS256", "RS512", "ES384", "EdDSA", "RS256"];
    let mut config = config_with(vec![own.issuer_config(&algorithms)]);
    config.auth.leeway_s = 5;
    let app = tenancy_app(config).await;
    for key in ["ps256", "rs512", "es384", "eddsa"] {
        let token = sign(key, &own.claims(300));
        assert_eq!(served(&app, &token).await, "acme", "{key}");
    }

    // A 512-bit RSA key in the set verifies nothing.
    let short = sign("rs256_short", &own.claims(300));
    let detail = refused(&app, &short, 401, "invalid_token").await;
    assert!(detail.contains("no usable key \"rs256_short\""), "{detail}");

    // Time and audience claims, with 5 s of leeway.
    let expired = sign("es384", &own.claims(-60));
    let detail = refused(&app, &expired, 401, "invalid_token").await;
    assert!(detail.contains("Expired"), "{detail}");
    assert_eq!(served(&app, &sign("es384", &own.claims(-2))).await, "acme");
    let mut early = own.claims(300);
    early["nbf"] = json!(now() + 120);
    refused(&app, &sign("eddsa", &early), 401, "invalid_token").await;
    let mut no_exp = own.claims(300);
    no_exp.as_object_mut().unwrap().remove("exp");
    let detail = refused(&app, &sign("eddsa", &no_exp), 401, "invalid_token").await;
    assert!(detail.contains("exp"), "{detail}");
    let mut wrong_aud = own.claims(300);
    wrong_aud["aud"] = json!("https://billing.test");
    refused(&app, &sign("ps256", &wrong_aud), 401, "invalid_token").await;

    // A key used for an algorithm it is not for (the RSA key of PS256 with
    // RS512; the JWK names its alg).
    let mut header = Header::new(Algorithm::RS512);
    header.kid = Some("ps256".into());
    let pem = keys()["ps256"]["private_pem"].as_str().unwrap();
    let mismatched = jsonwebtoken::encode(
        &header,
        &own.claims(300),
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let detail = refused(&app, &mismatched, 401, "invalid_token").await;
    assert!(detail.contains("not a key for RS512"), "{detail}");
}

#[tokio::test]
async fn broken_providers_answer_503_without_keys() {
    // A key set that is not JSON.
    let own = OwnProvider::start(&["ps256"]).await;
    *own.jwks.lock().unwrap() = "<html>maintenance</html>".into();
    let app = tenancy_app(config_with(vec![own.issuer_config(&["PS256"])])).await;
    let token = sign("ps256", &own.claims(300));
    let detail = refused(&app, &token, 503, "identity_provider_unavailable").await;
    assert!(detail.contains("not a JSON Web Key Set"), "{detail}");

    // A discovery document naming another issuer.
    let liar = OwnProvider::start(&["ps256"]).await;
    *liar.claims_issuer.lock().unwrap() = Some("https://evil.test".into());
    let app = tenancy_app(config_with(vec![liar.issuer_config(&["PS256"])])).await;
    let detail = refused(
        &app,
        &sign("ps256", &liar.claims(300)),
        503,
        "identity_provider_unavailable",
    )
    .await;
    assert!(
        detail.contains("names issuer \"https://evil.test\""),
        "{detail}"
    );

    // A provider that never answers: the request is answered within the
    // timeout, and every request waiting shares one fetch.
    let hanging = hanging_server().await;
    let mut config = config_with(vec![IssuerConfig::new(&hanging, ["https://api.test"])]);
    config.auth.jwks_timeout_ms = 400;
    let app = tenancy_app(config).await;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k".into());
    let claims = json!({"iss": hanging, "aud": "https://api.test", "exp": now() + 300});
    let pem = keys()["rs512"]["private_pem"].as_str().unwrap();
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let started = Instant::now();
    let answers = together(4, &app, &token, |app, token| async move {
        refused(&app, &token, 503, "identity_provider_unavailable").await
    })
    .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(350) && elapsed < Duration::from_millis(1400),
        "answered after {elapsed:?}, the timeout is 400 ms"
    );
    assert!(answers[0].contains("400 ms"), "{}", answers[0]);
    // Just after, without waiting again.
    let started = Instant::now();
    refused(&app, &token, 503, "identity_provider_unavailable").await;
    assert!(started.elapsed() < Duration::from_millis(200));
}

/// Runs `n` requests at once, each `request(app, token)`.
async fn together<F, Fut>(n: usize, app: &Router, token: &str, request: F) -> Vec<String>
where
    F: Fn(Router, String) -> Fut,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        set.spawn(request(app.clone(), token.to_owned()));
    }
    set.join_all().await
}

#[tokio::test]
async fn concurrent_requests_share_one_fetch() {
    let own = OwnProvider::start(&["es384"]).await;
    *own.delay.lock().unwrap() = Duration::from_millis(200);
    let verifier = JwtVerifier::providers([own.issuer_config(&["ES384"])]).unwrap();
    let app = verifier_app(verifier.clone()).await;
    let tokens: Vec<String> = (0..6)
        .map(|i| {
            let mut claims = own.claims(300);
            claims["n"] = json!(i);
            sign("es384", &claims)
        })
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for token in tokens {
        let app = app.clone();
        set.spawn(async move { served(&app, &token).await });
    }
    for answer in set.join_all().await {
        assert_eq!(answer, "acme");
    }
    assert_eq!(own.jwks_hits.load(Ordering::SeqCst), 1);
    assert_eq!(verifier.stats().key_fetches, 1);
}

#[tokio::test]
async fn a_repeated_token_is_served_from_the_cache_until_its_exp() {
    let own = OwnProvider::start(&["eddsa"]).await;
    let verifier = JwtVerifier::providers([own.issuer_config(&["EdDSA"])])
        .unwrap()
        .leeway(0);
    let app = verifier_app(verifier.clone()).await;
    // Expiring at the start of the second after next.
    let token = sign("eddsa", &own.claims(2));
    assert_eq!(served(&app, &token).await, "acme");
    let checks = verifier.stats().signature_checks;
    for _ in 0..5 {
        assert_eq!(served(&app, &token).await, "acme");
    }
    assert_eq!(
        verifier.stats().signature_checks,
        checks,
        "served from the cache"
    );
    assert_eq!(verifier.stats().cached_tokens, 1);
    // The provider's keys are not asked again either.
    *own.jwks.lock().unwrap() = "down".into();

    // Past its `exp`: never served from the cache (no leeway here).
    let exp = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(&token).unwrap()["exp"]
        .as_i64()
        .unwrap();
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let detail = refused(&app, &token, 401, "invalid_token").await;
    assert!(detail.contains("Expired"), "{detail}");
    assert_eq!(verifier.stats().signature_checks, checks + 1);
}

#[tokio::test]
async fn a_per_request_issuer_is_trusted_only_where_given() {
    // An issuer that is not configured, given for one call (as a tenant's
    // own provider is): its tokens verify there, and the claims say which
    // issuer verified them.
    let own = OwnProvider::start(&["es384"]).await;
    let tenant_issuer = own.issuer_config(&["ES384"]);
    let verifier = JwtVerifier::hs256(b"our own secret of 16+ bytes");
    let token = sign("es384", &own.claims(300));
    let verified = verifier
        .verify_with(&token, Some(&tenant_issuer))
        .await
        .unwrap();
    assert_eq!(verified.issuer(), Some(own.base.as_str()));
    assert_eq!(verified.claims().get("sub"), Some(&json!("u1")));
    // Without it, the same (now cached) token is not trusted: it goes to
    // our own HS256 key, which refuses it.
    let refused = verifier.verify_with(&token, None).await.unwrap_err();
    assert!(matches!(refused, JwtError::Algorithm(_)), "{refused}");
    let providers_only = JwtVerifier::providers([]).unwrap();
    let refused = providers_only.verify_with(&token, None).await.unwrap_err();
    assert!(matches!(refused, JwtError::UnknownIssuer(_)), "{refused}");
    let other = IssuerConfig::new("https://other.test", ["https://api.test"]);
    assert!(verifier.verify_with(&token, Some(&other)).await.is_err());
    assert_eq!(
        JwtVerifier::claimed_issuer(&token).as_deref(),
        Some(own.base.as_str())
    );

    // Through a lookup (such as tenants' issuers held in memory).
    let trusted = Arc::new(tenant_issuer.clone());
    let verifier = JwtVerifier::hs256(b"our own secret of 16+ bytes")
        .issuer_lookup(move |iss| (iss == trusted.issuer).then(|| trusted.clone()));
    let app = verifier_app(verifier).await;
    assert_eq!(served(&app, &token).await, "acme");
}

#[test]
fn issuers_are_configured_and_checked() {
    let dir = std::env::temp_dir().join(format!("tenancy-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let load = |yaml: &str| {
        let file = dir.join("tenancy.yaml");
        std::fs::write(&file, yaml).unwrap();
        TenancyConfig::load_with_env(Some(&file), Vec::new())
    };
    let config = load(
        "tenancy:\n  auth:\n    issuers:\n      - issuer: https://example.eu.auth0.com/\n        \
         audiences: [https://api.example.com]\n      - issuer: https://login.example.com/realms/acme\n        \
         jwks_uri: https://login.example.com/realms/acme/protocol/openid-connect/certs\n        \
         audiences: [account]\n        algorithms: [RS256, ES256]\n    leeway_secs: 10\n",
    )
    .unwrap();
    let auth = &config.auth;
    assert_eq!(auth.issuers.len(), 2);
    assert_eq!(auth.issuers[0].algorithms, ["RS256"], "the default");
    assert_eq!(auth.leeway_s, 10, "the older name is read");
    assert_eq!((auth.jwks_min_refresh_s, auth.jwks_timeout_ms), (30, 2000));
    assert!(JwtVerifier::from_config(auth).unwrap().is_some());
    assert_eq!(TenancyConfig::default().auth.leeway_s, 30);

    for (bad, key) in [
        ("algorithms: [HS256]", "auth.issuers[0].algorithms"),
        ("algorithms: [none]", "auth.issuers[0].algorithms"),
        ("algorithms: [RS1024]", "auth.issuers[0].algorithms"),
        ("audiences: []", "auth.issuers[0].audiences"),
        ("jwks_uri: file:///etc/keys", "auth.issuers[0].jwks_uri"),
    ] {
        let audiences = if bad.starts_with("audiences") {
            ""
        } else {
            "\n        audiences: [api]"
        };
        let yaml = format!(
            "tenancy:\n  auth:\n    issuers:\n      - issuer: https://idp.test\n        {bad}{audiences}\n"
        );
        let err = load(&yaml).unwrap_err().to_string();
        assert!(err.contains(key), "{bad}: {err}");
    }
    let err = load("tenancy:\n  auth:\n    issuers:\n      - {issuer: idp.test, audiences: [a]}\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("auth.issuers[0].issuer"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

// ------------------------------------------------- tenants' own providers

/// The status and problem code of `GET /whoami` naming `tenant` in the
/// header, with `token` when given.
async fn ask(app: &Router, token: Option<&str>, tenant: &str) -> (u16, String) {
    let mut req = Request::get("/whoami").header("x-tenant-id", tenant);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let code = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    (status, code)
}

#[tokio::test]
async fn a_tenants_own_provider_admits_only_that_tenant() {
    // The application trusts one provider for every tenant (its own
    // sign-in); acme brings its own: the real OpenID provider.
    let op = shared_op();
    let shared = OwnProvider::start(&["es384"]).await;
    let stranger = OwnProvider::start(&["rs512"]).await;
    let tenancy = Tenancy::builder()
        .config(config_with(vec![shared.issuer_config(&["ES384"])]))
        .store(MemoryStore::new())
        .build()
        .unwrap();
    let mut ids = Vec::new();
    for slug in ["acme", "globex"] {
        let tenant = tenancy
            .lifecycle()
            .create(NewTenant::new(slug, slug).unwrap())
            .await
            .unwrap();
        ids.push(tenant.id);
    }
    let (acme, globex) = (&ids[0], &ids[1]);
    let app = Router::new()
        .route(
            "/whoami",
            get(|t: Tenant| async move { t.slug.to_string() }),
        )
        .layer(tenancy.layer());
    let overrides = tenancy.overrides();
    let own = json!({"issuer": op.issuer, "audiences": ["https://api.test", "https://es.test"],
                     "algorithms": ["RS256", "ES256"]});
    overrides
        .set(acme, "auth.issuer", own.clone())
        .await
        .unwrap();

    let acme_user = op.token("app", None).await; // tenant_id: acme
    let acme_user_for_globex = op.token("other", Some("https://es.test")).await; // tenant_id: globex
    let mut shared_claims = shared.claims(300);
    shared_claims["tenant_id"] = json!("globex");
    let shared_user = sign("es384", &shared_claims);
    let stranger_token = sign("rs512", &stranger.claims(300));

    // Acme's provider enters acme, and only acme.
    assert_eq!(
        ask(&app, Some(&acme_user), "acme").await,
        (200, "acme".into())
    );
    assert_eq!(
        ask(&app, Some(&acme_user_for_globex), "globex").await,
        (403, "issuer_not_allowed".into())
    );
    // The shared provider still enters globex, but no longer acme.
    let mut for_acme = shared.claims(300);
    for_acme["tenant_id"] = json!("acme");
    let shared_for_acme = sign("es384", &for_acme);
    assert_eq!(
        ask(&app, Some(&shared_user), "globex").await,
        (200, "globex".into())
    );
    assert_eq!(
        ask(&app, Some(&shared_for_acme), "acme").await,
        (403, "issuer_not_allowed".into())
    );
    // A provider nobody trusts, and no token at all.
    assert_eq!(
        ask(&app, Some(&stranger_token), "acme").await,
        (401, "invalid_token".into())
    );
    assert_eq!(
        ask(&app, None, "acme").await,
        (401, "token_required".into())
    );

    // Bad values are refused before they are written, and change nothing.
    for bad in [
        json!(42),
        json!({"issuer": "ftp://acme.test", "audiences": ["a"]}),
        json!({"issuer": shared.base, "audiences": ["https://api.test"]}),
        json!({"issuer": "https://acme.okta.test", "audiences": ["a"], "algorithms": ["HS256"]}),
        json!({"issuer": "https://acme.okta.test", "unknown": 1}),
    ] {
        let err = overrides
            .set(globex, "auth.issuer", bad.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, tenancy::StoreError::InvalidConfigValue { .. }),
            "{bad}: {err}"
        );
    }
    assert_eq!(
        ask(&app, Some(&shared_user), "globex").await,
        (200, "globex".into())
    );

    // Removed: at once, acme takes the shared provider's tokens again, and
    // its own provider's token (verified and cached before) enters nothing.
    overrides.delete(acme, "auth.issuer").await.unwrap();
    assert_eq!(
        ask(&app, Some(&shared_for_acme), "acme").await,
        (200, "acme".into())
    );
    assert_eq!(
        ask(&app, Some(&acme_user), "acme").await,
        (401, "invalid_token".into())
    );

    // A bare URL takes the application's audiences; given to globex, the
    // same provider now enters globex and not acme.
    overrides
        .set(globex, "auth.issuer", json!(op.issuer))
        .await
        .unwrap();
    assert_eq!(
        ask(&app, Some(&acme_user_for_globex), "globex").await,
        (401, "invalid_token".into()),
        "an ES256 token for https://es.test: the bare URL accepts RS256 for https://api.test"
    );
    let rs256_for_globex = op.token("other", None).await;
    assert_eq!(
        ask(&app, Some(&rs256_for_globex), "globex").await,
        (200, "globex".into())
    );
    assert_eq!(
        ask(&app, Some(&acme_user), "acme").await,
        (403, "issuer_not_allowed".into())
    );
}

#[tokio::test]
async fn an_unusable_issuer_written_past_the_checks_closes_the_tenant() {
    // A value written straight into the store (an older version, a hand
    // edit): the tenant admits no token until it is fixed.
    let shared = OwnProvider::start(&["es384"]).await;
    let store = MemoryStore::new();
    let tenancy = Tenancy::builder()
        .config(config_with(vec![shared.issuer_config(&["ES384"])]))
        .store(store.clone())
        .build()
        .unwrap();
    let acme = tenancy
        .lifecycle()
        .create(NewTenant::new("acme", "acme").unwrap())
        .await
        .unwrap();
    use tenancy::ConfigStore;
    store
        .set_config(&acme.id, "auth.issuer", json!({"issuer": 7}))
        .await
        .unwrap();
    let app = Router::new()
        .route(
            "/whoami",
            get(|t: Tenant| async move { t.slug.to_string() }),
        )
        .layer(tenancy.layer());
    let token = sign("es384", &shared.claims(300));
    assert_eq!(
        ask(&app, Some(&token), "acme").await,
        (403, "issuer_not_allowed".into())
    );
    store.delete_config(&acme.id, "auth.issuer").await.unwrap();
    tenancy.tenant_issuers().refresh(&acme.id).await;
    assert_eq!(ask(&app, Some(&token), "acme").await, (200, "acme".into()));
}
