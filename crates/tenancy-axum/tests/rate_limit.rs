//! Per-tenant rate limits through axum: independent buckets,
//! plan and override limits, 429 problem responses, requests without a
//! tenant untouched; and with Redis (feature `redis`, on for every test
//! build through the crate's dev-dependency on itself): one limit shared by
//! two instances, tenant-prefixed keys, fallback when Redis goes away.
//!
//! In-process tests run on tokio's paused clock, so their counts are exact.
//! Redis tests run on real time (Redis has its own clock) and assert only
//! bounds that hold however slowly the test runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tenancy_axum::{RateLimits, RequireTenantLayer, Tenant, TenantLayer};
use tenancy_core::config::RateLimitConfig;
use tenancy_core::resolve::HeaderResolver;
use tenancy_core::*;
use tower::ServiceExt;

struct Fixture {
    store: Arc<MemoryStore>,
    config: TenantConfigService,
    acme: TenantInfo,
    globex: TenantInfo,
}

/// A store with `acme` (plan `acme_plan`) and `globex` (no plan), random
/// ids, and a config service over a cached config store.
async fn fixture(acme_plan: Option<&str>, defaults: ConfigMap) -> Fixture {
    let store = Arc::new(MemoryStore::new());
    let lifecycle = LifecycleService::new(store.clone());
    let mut acme = NewTenant::new("acme", "Acme")
        .unwrap()
        .id(TenantId::generate());
    if let Some(plan) = acme_plan {
        acme = acme.plan(plan);
    }
    let acme = lifecycle.create(acme).await.unwrap();
    let globex = lifecycle
        .create(
            NewTenant::new("globex", "Globex")
                .unwrap()
                .id(TenantId::generate()),
        )
        .await
        .unwrap();
    let cached = CachedConfigStore::new(store.clone(), &Default::default());
    let config = TenantConfigService::new(Arc::new(cached), defaults);
    Fixture {
        store,
        config,
        acme,
        globex,
    }
}

fn app(f: &Fixture, limits: RateLimits) -> Router {
    let tenants = TenantLayer::new(
        ResolverChain::new().with(HeaderResolver::default()),
        Validator::new(f.store.clone(), &Default::default()),
    );
    let guarded = Router::new()
        .route("/data", get(|| async { "data" }))
        .layer(RequireTenantLayer::new());
    Router::new()
        .route("/whoami", get(whoami))
        .route("/maybe", get(maybe))
        .nest("/guarded", guarded)
        .layer(tenants.rate_limits(limits))
}

/// The tenant's slug.
async fn whoami(t: Tenant) -> String {
    t.slug.to_string()
}

/// The tenant's slug, or `anonymous` without one.
async fn maybe(t: Option<Tenant>) -> String {
    t.map_or("anonymous".to_owned(), |t| t.slug.to_string())
}

fn limits(default_rps: u32, plans: &[(&str, u32)]) -> RateLimitConfig {
    RateLimitConfig {
        default_rps,
        plans: plans.iter().map(|(p, r)| (p.to_string(), *r)).collect(),
    }
}

fn request(path: &str, tenant: Option<&TenantInfo>) -> Request<Body> {
    let mut req = Request::get(path);
    if let Some(t) = tenant {
        req = req.header("x-tenant-id", t.id.as_str());
    }
    req.body(Body::empty()).unwrap()
}

async fn status(app: &Router, tenant: &TenantInfo) -> StatusCode {
    app.clone()
        .oneshot(request("/whoami", Some(tenant)))
        .await
        .unwrap()
        .status()
}

/// How many of `n` back-to-back requests for `tenant` get 200; every other
/// answer must be 429.
async fn admitted(app: &Router, tenant: &TenantInfo, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        match status(app, tenant).await {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected status {other}"),
        }
    }
    ok
}

/// Asserts the next request for `tenant` is refused with the 429 problem;
/// its Retry-After seconds.
async fn retry_after(app: &Router, tenant: &TenantInfo) -> u64 {
    let res = app
        .clone()
        .oneshot(request("/whoami", Some(tenant)))
        .await
        .unwrap();
    assert_rate_limited(res, tenant).await
}

/// Asserts `res` is the 429 problem and returns its Retry-After seconds.
async fn assert_rate_limited(res: http::Response<Body>, tenant: &TenantInfo) -> u64 {
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        res.headers()["content-type"],
        tenancy_axum::PROBLEM_JSON,
        "429 must be problem+json"
    );
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After must be whole seconds");
    assert!(retry_after >= 1);
    let body: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["status"], 429);
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(body["title"], "Too Many Requests");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains(tenant.id.as_str()),
        "{body}"
    );
    retry_after
}

#[tokio::test(start_paused = true)]
async fn tenants_have_independent_buckets() {
    let f = fixture(None, ConfigMap::new()).await;
    let app = app(&f, RateLimits::new(&limits(3, &[])));

    assert_eq!(
        admitted(&app, &f.acme, 3).await,
        3,
        "a full bucket admits the burst"
    );
    assert_eq!(retry_after(&app, &f.acme).await, 1);

    // The other tenant is not affected.
    assert_eq!(admitted(&app, &f.globex, 3).await, 3);
    assert_eq!(status(&app, &f.globex).await, StatusCode::TOO_MANY_REQUESTS);

    // One interval later (1/3 s), exactly one more request fits.
    tokio::time::advance(std::time::Duration::from_millis(334)).await;
    assert_eq!(admitted(&app, &f.acme, 5).await, 1);
    // A full second refills the whole burst, never more.
    tokio::time::advance(std::time::Duration::from_secs(5)).await;
    assert_eq!(admitted(&app, &f.acme, 10).await, 3);
}

#[tokio::test(start_paused = true)]
async fn retry_after_rounds_up_the_wait() {
    let f = fixture(None, ConfigMap::new()).await;
    // 1 request per second: after one request the wait is exactly 1 s.
    let app = app(&f, RateLimits::new(&limits(1, &[])));
    assert_eq!(status(&app, &f.acme).await, StatusCode::OK);
    assert_eq!(retry_after(&app, &f.acme).await, 1);
    tokio::time::advance(std::time::Duration::from_millis(999)).await;
    assert_eq!(status(&app, &f.acme).await, StatusCode::TOO_MANY_REQUESTS);
    tokio::time::advance(std::time::Duration::from_millis(1)).await;
    assert_eq!(status(&app, &f.acme).await, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn plans_choose_the_limit() {
    let f = fixture(Some("pro"), ConfigMap::new()).await;
    let layer = RateLimits::new(&limits(2, &[("pro", 5), ("free", 1)]));
    assert_eq!(layer.rps_for(&f.acme).await.get(), 5);
    assert_eq!(layer.rps_for(&f.globex).await.get(), 2, "no plan: default");
    let app = app(&f, layer);
    assert_eq!(admitted(&app, &f.acme, 12).await, 5);
    assert_eq!(admitted(&app, &f.globex, 12).await, 2);
}

#[tokio::test(start_paused = true)]
async fn an_override_applies_at_the_next_request() {
    let f = fixture(Some("free"), ConfigMap::new()).await;
    let layer = RateLimits::new(&limits(3, &[("free", 1)])).overrides(f.config.clone());
    let app = app(&f, layer.clone());
    assert_eq!(admitted(&app, &f.acme, 5).await, 1, "plan free: 1 rps");

    f.config
        .set(&f.acme.id, "rate_limit.rps", json!(4))
        .await
        .unwrap();
    assert_eq!(layer.rps_for(&f.acme).await.get(), 4);
    assert_eq!(
        admitted(&app, &f.acme, 10).await,
        4,
        "the override must apply at once, with a bucket of the new size"
    );
    // Other tenants keep their own limit.
    assert_eq!(admitted(&app, &f.globex, 10).await, 3);

    // Removing the override brings the plan back at once.
    assert!(f.config.delete(&f.acme.id, "rate_limit.rps").await.unwrap());
    tokio::time::advance(std::time::Duration::from_secs(10)).await;
    assert_eq!(admitted(&app, &f.acme, 5).await, 1);
}

/// Counts reads of a tenant's whole override map (what the cache loads).
struct CountingConfig(Arc<MemoryStore>, Arc<std::sync::atomic::AtomicUsize>);

#[async_trait::async_trait]
impl ConfigStore for CountingConfig {
    async fn get_config(&self, t: &TenantId, key: &str) -> Result<Option<Value>, StoreError> {
        self.0.get_config(t, key).await
    }
    async fn all_config(&self, t: &TenantId) -> Result<ConfigMap, StoreError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.all_config(t).await
    }
    async fn set_config(&self, t: &TenantId, key: &str, value: Value) -> Result<(), StoreError> {
        self.0.set_config(t, key, value).await
    }
    async fn delete_config(&self, t: &TenantId, key: &str) -> Result<bool, StoreError> {
        self.0.delete_config(t, key).await
    }
}

/// Requests for a tenant whose overrides are cached read them without the
/// store (the layer's path that does not wait), and a change made through
/// the service applies at the very next request, a bad value included.
#[tokio::test(start_paused = true)]
async fn cached_overrides_serve_requests_and_changes_apply_at_once() {
    let f = fixture(Some("free"), ConfigMap::new()).await;
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counting = CountingConfig(f.store.clone(), reads.clone());
    let cached = CachedConfigStore::new(Arc::new(counting), &Default::default());
    let config = TenantConfigService::new(Arc::new(cached), ConfigMap::new());
    let app = app(
        &f,
        RateLimits::new(&limits(3, &[("free", 1)])).overrides(config.clone()),
    );
    let reads_now = || reads.load(std::sync::atomic::Ordering::SeqCst);

    assert_eq!(admitted(&app, &f.acme, 5).await, 1, "plan free: 1 rps");
    assert_eq!(reads_now(), 1, "one read, then the cache answers");
    for (value, expected) in [
        (json!(4), 4),
        (json!("fast"), 1),
        (json!(0), 1),
        (json!(2), 2),
    ] {
        tokio::time::advance(std::time::Duration::from_secs(10)).await;
        let before = reads_now();
        config
            .set(&f.acme.id, "rate_limit.rps", value.clone())
            .await
            .unwrap();
        assert_eq!(admitted(&app, &f.acme, 10).await, expected, "after {value}");
        assert_eq!(reads_now(), before + 1, "a change is read once, at once");
    }
}

#[tokio::test(start_paused = true)]
async fn bad_overrides_are_ignored() {
    let f = fixture(Some("free"), ConfigMap::new()).await;
    let layer = RateLimits::new(&limits(3, &[("free", 2)])).overrides(f.config.clone());
    for bad in [
        json!(0),
        json!(-5),
        json!("fast"),
        json!(1.5),
        json!(u64::MAX),
    ] {
        f.config
            .set(&f.acme.id, "rate_limit.rps", bad.clone())
            .await
            .unwrap();
        assert_eq!(
            layer.rps_for(&f.acme).await.get(),
            2,
            "{bad} must be ignored"
        );
    }
    let app = app(&f, layer);
    assert_eq!(admitted(&app, &f.acme, 6).await, 2);
}

#[tokio::test]
async fn application_default_ranks_below_plans() {
    let defaults: ConfigMap = [("rate_limit.rps".to_owned(), json!(7))]
        .into_iter()
        .collect();
    let f = fixture(Some("free"), defaults).await;
    let layer = RateLimits::new(&limits(3, &[("free", 2)])).overrides(f.config.clone());
    assert_eq!(
        layer.rps_for(&f.acme).await.get(),
        2,
        "plan beats the app default"
    );
    assert_eq!(
        layer.rps_for(&f.globex).await.get(),
        7,
        "app default beats default_rps"
    );
    f.config
        .set(&f.acme.id, "rate_limit.rps", json!(9))
        .await
        .unwrap();
    assert_eq!(
        layer.rps_for(&f.acme).await.get(),
        9,
        "the tenant's override wins"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_tenant_are_untouched() {
    let f = fixture(None, ConfigMap::new()).await;
    let app = app(&f, RateLimits::new(&limits(1, &[])));
    for _ in 0..20 {
        let res = app.clone().oneshot(request("/maybe", None)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = app
            .clone()
            .oneshot(request("/guarded/data", None))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "the guard answers");
        let res = app
            .clone()
            .oneshot(
                Request::get("/whoami")
                    .header("x-tenant-id", "no-such-tenant")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::FORBIDDEN,
            "unknown tenants: 403, never 429"
        );
    }
    // And they did not use any tenant's bucket.
    assert_eq!(status(&app, &f.acme).await, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn clones_of_a_layer_share_buckets() {
    let f = fixture(None, ConfigMap::new()).await;
    let layer = RateLimits::new(&limits(2, &[]));
    let (a, b) = (app(&f, layer.clone()), app(&f, layer));
    assert_eq!(status(&a, &f.acme).await, StatusCode::OK);
    assert_eq!(status(&b, &f.acme).await, StatusCode::OK);
    assert_eq!(status(&a, &f.acme).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(status(&b, &f.acme).await, StatusCode::TOO_MANY_REQUESTS);
}

#[cfg(feature = "redis")]
mod redis_backend {
    use std::time::{Duration, Instant};

    use redis::AsyncCommands;
    use tenancy_axum::RedisBackend;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn redis_url() -> String {
        std::env::var("TENANCY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    /// Fails (never skips) when Redis is not there.
    async fn backend(url: &str, scope: &str) -> RedisBackend {
        RedisBackend::connect(url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the Redis rate-limit tests need Redis at {url}: {e}. Start it with \
                     `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no` \
                     (or set TENANCY_TEST_REDIS_URL)"
                )
            })
            .scope(scope)
    }

    async fn redis() -> redis::aio::MultiplexedConnection {
        redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("Redis is required at {}: {e}", redis_url()))
    }

    /// Every Redis key that mentions `t`'s id.
    async fn keys_of(conn: &mut redis::aio::MultiplexedConnection, t: &TenantInfo) -> Vec<String> {
        conn.keys(format!("*{}*", t.id)).await.unwrap()
    }

    async fn cleanup(conn: &mut redis::aio::MultiplexedConnection, tenants: &[&TenantInfo]) {
        for t in tenants {
            let keys = keys_of(conn, t).await;
            if !keys.is_empty() {
                let _: () = conn.del(keys).await.unwrap();
            }
        }
    }

    fn scope() -> String {
        format!("test-{}", TenantId::generate())
    }

    /// GCRA's bound: in `elapsed`, at most `burst + ⌊elapsed × rps⌋`
    /// requests conform (whatever the speed of the test).
    fn bound(rps: u32, elapsed: Duration) -> usize {
        rps as usize + (elapsed.as_secs_f64() * f64::from(rps) + 0.01).floor() as usize
    }

    #[tokio::test]
    async fn two_instances_share_one_limit_per_tenant() {
        let f = fixture(None, ConfigMap::new()).await;
        let scope = scope();
        // Two routers with their own layers and connections: two processes.
        let a = app(
            &f,
            RateLimits::new(&limits(2, &[])).redis(backend(&redis_url(), &scope).await),
        );
        let b = app(
            &f,
            RateLimits::new(&limits(2, &[])).redis(backend(&redis_url(), &scope).await),
        );
        let started = Instant::now();
        let (mut ok, mut refused_a, mut refused_b) = (0, 0, 0);
        for i in 0..20 {
            let (router, refused) = if i % 2 == 0 {
                (&a, &mut refused_a)
            } else {
                (&b, &mut refused_b)
            };
            match status(router, &f.acme).await {
                StatusCode::OK => ok += 1,
                StatusCode::TOO_MANY_REQUESTS => *refused += 1,
                other => panic!("unexpected {other}"),
            }
        }
        let elapsed = started.elapsed();
        assert!(ok >= 2, "the first burst (2) must pass, got {ok}");
        assert!(
            ok <= bound(2, elapsed),
            "{ok} admitted in {elapsed:?}: the two instances did not share one bucket"
        );
        if elapsed < Duration::from_millis(500) {
            // Fast enough to be sure: separate buckets would admit 4.
            assert_eq!(ok, 2);
            assert!(refused_a > 0 && refused_b > 0);
        }
        // The other tenant has its own shared bucket.
        assert_eq!(status(&b, &f.globex).await, StatusCode::OK);

        let mut conn = redis().await;
        let key = format!("t:{}:ratelimit:{scope}", f.acme.id);
        assert_eq!(keys_of(&mut conn, &f.acme).await, vec![key.clone()]);
        let ttl: i64 = conn.pttl(&key).await.unwrap();
        assert!(ttl > 0, "keys expire on their own (PTTL {ttl})");
        cleanup(&mut conn, &[&f.acme, &f.globex]).await;
    }

    #[tokio::test]
    async fn redis_limits_answer_429_problems_and_follow_overrides() {
        let f = fixture(Some("free"), ConfigMap::new()).await;
        let scope = scope();
        let backend = backend(&redis_url(), &scope).await;
        assert_eq!(
            backend.key(&f.acme.id),
            format!("t:{}:ratelimit:{scope}", f.acme.id)
        );
        let app = app(
            &f,
            RateLimits::new(&limits(3, &[("free", 1)]))
                .overrides(f.config.clone())
                .redis(backend),
        );
        let started = Instant::now();
        let ok = admitted(&app, &f.acme, 10).await;
        assert!((1..=bound(1, started.elapsed())).contains(&ok), "{ok}");
        let res = app
            .clone()
            .oneshot(request("/whoami", Some(&f.acme)))
            .await
            .unwrap();
        // Unless a whole second passed, this one is refused.
        if res.status() != StatusCode::OK {
            assert_rate_limited(res, &f.acme).await;
        }

        // Raise the tenant's limit. The shared bucket keeps what was used
        // (no reset ping-pong between instances whose config caches
        // disagree for a moment); once that has drained, the new rate and
        // burst apply: at the old 1 rps, 20 requests could not all pass.
        f.config
            .set(&f.acme.id, "rate_limit.rps", json!(50))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let ok = admitted(&app, &f.acme, 20).await;
        assert_eq!(ok, 20, "the new limit (50, burst 50) must apply");

        let mut conn = redis().await;
        for t in [&f.acme, &f.globex] {
            for key in keys_of(&mut conn, t).await {
                assert!(key.starts_with(&format!("t:{}:", t.id)), "{key}");
            }
        }
        cleanup(&mut conn, &[&f.acme, &f.globex]).await;
    }

    /// A TCP proxy to Redis that the test can pull the plug on.
    async fn proxy(target: &str) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = target.to_owned();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        (format!("redis://{addr}"), task)
    }

    #[tokio::test]
    async fn falls_back_to_in_process_limits_when_redis_goes_away() {
        let f = fixture(None, ConfigMap::new()).await;
        let scope = scope();
        let target = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let (url, plug) = proxy(&target).await;
        let app = app(
            &f,
            RateLimits::new(&limits(1, &[])).redis(backend(&url, &scope).await),
        );
        assert_eq!(status(&app, &f.acme).await, StatusCode::OK);
        let mut conn = redis().await;
        assert_eq!(
            keys_of(&mut conn, &f.acme).await.len(),
            1,
            "the first request went through Redis"
        );

        // Redis goes away: the proxy stops and drops every connection.
        plug.abort();
        let _ = plug.await;

        let started = Instant::now();
        let mut ok = 0;
        for _ in 0..10 {
            match status(&app, &f.globex).await {
                StatusCode::OK => ok += 1,
                StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("Redis down must not fail requests: {other}"),
            }
        }
        assert!(
            (1..=bound(1, started.elapsed())).contains(&ok),
            "the in-process limit applies while Redis is away: {ok} admitted"
        );
        assert!(
            keys_of(&mut conn, &f.globex).await.is_empty(),
            "nothing reached Redis"
        );
        cleanup(&mut conn, &[&f.acme, &f.globex]).await;
    }

    /// A Redis of this test's own on a free port (the machine's stays up).
    struct OwnRedis {
        child: std::process::Child,
    }

    impl OwnRedis {
        fn start(port: u16) -> Self {
            let child = std::process::Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is required (scripts/test.sh checks for it)");
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Self { child }
        }

        fn signal(&self, sig: &str) {
            std::process::Command::new("kill")
                .args([sig, &self.child.id().to_string()])
                .status()
                .unwrap();
        }
    }

    impl Drop for OwnRedis {
        fn drop(&mut self) {
            self.signal("-CONT");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    async fn keys_in(port: u16, t: &TenantInfo) -> usize {
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = conn.keys(format!("*{}*", t.id)).await.unwrap();
        keys.len()
    }

    /// Redis frozen (SIGSTOP: connections open, no answers) and
    /// then killed under load; every request is answered within a small
    /// bound by the in-process limit; once Redis is back the shared limit
    /// is used again.
    #[tokio::test]
    async fn redis_frozen_or_killed_never_blocks_requests_and_sharing_resumes() {
        let f = fixture(None, ConfigMap::new()).await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let redis = OwnRedis::start(port);
        let url = format!("redis://127.0.0.1:{port}");
        let app = app(
            &f,
            RateLimits::new(&limits(50, &[])).redis(backend(&url, &scope()).await),
        );
        assert_eq!(status(&app, &f.acme).await, StatusCode::OK);
        assert_eq!(keys_in(port, &f.acme).await, 1, "through Redis");

        let mut slowest = Duration::ZERO;
        let mut answered = std::collections::BTreeMap::<u16, usize>::new();
        let mut load = async |app: &Router, n: usize| {
            for _ in 0..n {
                let started = Instant::now();
                let s = status(app, &f.globex).await;
                slowest = slowest.max(started.elapsed());
                *answered.entry(s.as_u16()).or_default() += 1;
            }
        };
        redis.signal("-STOP");
        load(&app, 30).await;
        redis.signal("-CONT");
        drop(redis);
        load(&app, 30).await;
        assert!(
            answered.keys().all(|s| *s == 200 || *s == 429),
            "Redis down must not fail requests: {answered:?}"
        );
        assert!(
            slowest < Duration::from_millis(500),
            "a request waited {slowest:?} on Redis"
        );

        // Back on the same port: after the retry pause, Redis is used again.
        let redis = OwnRedis::start(port);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while keys_in(port, &f.globex).await == 0 {
            assert!(Instant::now() < deadline, "the shared limit did not resume");
            let _ = status(&app, &f.globex).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("Redis down: answers {answered:?}, slowest {slowest:?}");
        drop(redis);
    }

    #[tokio::test]
    async fn connecting_to_nothing_is_a_clear_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let error = RedisBackend::connect(&format!("redis://{addr}"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("cannot reach Redis"), "{error}");
        let error = RedisBackend::connect("http://nope").await.unwrap_err();
        assert!(error.to_string().contains("invalid Redis URL"), "{error}");
    }
}
