//! A profiling harness for the tenant layer's hit path: `n` requests
//! through one router, in a function of its own so a profiler can count
//! just them, then the mean time per request.
//!
//! ```text
//! cargo build --release -p tenancy-axum --example layer_profile
//! # instructions per request (deterministic): run n=1000 and n=11000, subtract, divide by 10000
//! valgrind --tool=callgrind --toggle-collect='layer_profile::run_measured' \
//!     target/release/examples/layer_profile layer 11000
//! # wall time per request (noisy on a shared machine: take the least of several runs)
//! target/release/examples/layer_profile noop 1000000
//! ```
//!
//! Modes: `noop` (a no-op layer, trivial handler), `noop_ext` (the same
//! with a `Method` extractor), `layer` (the tenant layer, header resolver,
//! cache hit), `layer_ext` (the same with the `Tenant` extractor).
//! `bare`/`bare_ext` have no layer; `wrapped`/`wrapped_ext` apply the
//! tenant layer around the whole router. `plain` and `plain_layer` leave
//! the router out: a tower service that extracts `Method`, against the
//! tenant layer around one that extracts `Tenant` (the layer's own cost);
//! `plain_layer_method` is the layer around the `Method` service (the
//! `Tenant` extractor's share is its difference to `plain_layer`).
//! `scripts/profile-layer.sh` runs the pairs both ways.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
use axum::Router;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::Response;
use axum::routing::get;
use http::Request;
use std::convert::Infallible;
use std::sync::Arc;
use tenancy_axum::{Tenant, TenantLayer, TenantService};
use tenancy_core::resolve::HeaderResolver;
use tenancy_core::*;
use tower::ServiceExt;
use tower::{Layer, Service};

/// Set by `--one-header`: requests carry only the tenant header, as in
/// the criterion bench (`benches/request_path.rs`).
static ONE_HEADER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn request() -> Request<Body> {
    if ONE_HEADER.load(std::sync::atomic::Ordering::Relaxed) {
        return Request::get("/notes")
            .header("x-tenant-id", "acme")
            .body(Body::empty())
            .unwrap();
    }
    // What an API client sends, the tenant header last.
    Request::get("/notes")
        .header("host", "api.example.com")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        )
        .header("accept", "application/json")
        .header("accept-encoding", "gzip, br")
        .header("authorization", "Bearer 0123456789abcdef")
        .header("x-request-id", "7f3c2a9e-1b4d-4c8e-9a6f-2d5e8b1c0a37")
        .header("x-tenant-id", "acme")
        .body(Body::empty())
        .unwrap()
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--one-header") {
        args.remove(at);
        ONE_HEADER.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = MemoryStore::new();
    let validator = Validator::new(Arc::new(store.clone()), &Default::default());
    rt.block_on(async {
        LifecycleService::new(Arc::new(store.clone()))
            .create(NewTenant::new("acme", "Acme").unwrap())
            .await
            .unwrap();
    });
    if args.first().map(String::as_str) == Some("ab") {
        // `ab BASE WITH [pairs]`: interleaved batches, see `interleaved`.
        let base = app(args.get(1).map_or("noop_ext", String::as_str), &validator);
        let with = app(args.get(2).map_or("layer_ext", String::as_str), &validator);
        let pairs = args
            .get(3)
            .map_or(400, |n| n.parse().expect("pairs: a number"));
        interleaved(&rt, &base, &with, pairs);
        return;
    }
    let mode = args.first().map_or("layer", String::as_str);
    let n: usize = args
        .get(1)
        .map_or(1_000_000, |n| n.parse().expect("n: a number of requests"));
    let app = app(mode, &validator);
    warm_up(&rt, &app);
    // Steady state: the coarse clock that cache hits read starts with the
    // first cached entry, on a thread that calibrates first.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    run_measured(&rt, &app, n);
    println!("{}", started.elapsed().as_nanos() / n as u128);
}

/// A router, or a router inside the tenant layer applied around it as a
/// whole (`TenantLayer::layer(router)`, no per-route boxing by axum).
#[derive(Clone)]
enum App {
    Routed(Router),
    Wrapped(TenantService<Router>),
    Plain(MethodHandler),
    PlainLayer(TenantService<TenantHandler>),
    PlainLayerNoExtractor(TenantService<MethodHandler>),
}

/// A handler as axum runs one: the request split into parts, the
/// extractor `E` run on them, an empty response.
struct Extracts<E>(std::marker::PhantomData<fn() -> E>);

impl<E> Clone for Extracts<E> {
    fn clone(&self) -> Self {
        Self(std::marker::PhantomData)
    }
}

/// Extracts `Method` (the baselines).
type MethodHandler = Extracts<http::Method>;
/// Extracts `Tenant` (under the tenant layer).
type TenantHandler = Extracts<Tenant>;

const fn handler<E>() -> Extracts<E> {
    Extracts(std::marker::PhantomData)
}

/// Polls an extractor's future, which answers at once.
fn extracted<F: std::future::Future>(future: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("extractors here answer at once"),
    }
}

impl<E: FromRequestParts<()>> Service<Request<Body>> for Extracts<E> {
    type Response = Response;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response, Infallible>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (mut parts, _body) = req.into_parts();
        let value = extracted(E::from_request_parts(&mut parts, &()));
        assert!(
            std::hint::black_box(&value).is_ok(),
            "the extractor succeeds"
        );
        std::future::ready(Ok(Response::new(Body::empty())))
    }
}

fn app(mode: &str, validator: &Validator) -> App {
    let layer = || {
        TenantLayer::new(
            ResolverChain::new().with(HeaderResolver::default()),
            validator.clone(),
        )
    };
    App::Routed(match mode {
        "plain" => return App::Plain(handler()),
        "plain_layer" => return App::PlainLayer(layer().layer(handler())),
        "plain_layer_method" => {
            return App::PlainLayerNoExtractor(layer().layer(handler()));
        }
        "bare" => Router::new()
            .route("/notes", get(|| async { "ok" }))
            .with_state(()),
        "bare_ext" => Router::new()
            .route("/notes", get(|_m: http::Method| async { "ok" }))
            .with_state(()),
        "wrapped" => {
            return App::Wrapped(
                layer().layer(
                    Router::new()
                        .route("/notes", get(|| async { "ok" }))
                        .with_state(()),
                ),
            );
        }
        "wrapped_ext" => {
            return App::Wrapped(
                layer().layer(
                    Router::new()
                        .route("/notes", get(|_t: Tenant| async { "ok" }))
                        .with_state(()),
                ),
            );
        }
        "noop" => Router::new()
            .route("/notes", get(|| async { "ok" }))
            .layer(tower::layer::util::Identity::new())
            .with_state(()),
        "noop_ext" => Router::new()
            .route("/notes", get(|_m: http::Method| async { "ok" }))
            .layer(tower::layer::util::Identity::new())
            .with_state(()),
        "layer" => Router::new()
            .route("/notes", get(|| async { "ok" }))
            .layer(layer())
            .with_state(()),
        "layer_ext" => Router::new()
            .route("/notes", get(|_t: Tenant| async { "ok" }))
            .layer(layer())
            .with_state(()),
        other => panic!(
            "unknown mode {other:?}: bare, bare_ext, noop, noop_ext, layer, layer_ext, \
             wrapped, wrapped_ext, plain, plain_layer or plain_layer_method"
        ),
    })
}

/// The difference between two routers measured in interleaved batches
/// (base, with, base, with, …): whatever slows the machine for a while
/// slows both sides of a pair alike, so the median of the per-pair
/// differences is steadier than two separate runs.
fn interleaved(rt: &tokio::runtime::Runtime, base: &App, with: &App, pairs: usize) {
    const BATCH: usize = 2_000;
    warm_up(rt, base);
    warm_up(rt, with);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let timed = |app: &App| {
        let started = std::time::Instant::now();
        run(rt, app, BATCH);
        started.elapsed().as_nanos() as f64 / BATCH as f64
    };
    let mut bases = Vec::with_capacity(pairs);
    let mut diffs = Vec::with_capacity(pairs);
    for i in 0..pairs {
        // Alternate which side goes first, so neither is always second.
        let (b, w) = if i % 2 == 0 {
            let b = timed(base);
            (b, timed(with))
        } else {
            let w = timed(with);
            (timed(base), w)
        };
        bases.push(b);
        diffs.push(w - b);
    }
    let quantile = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    println!(
        "base {:.0} ns; difference median {:.0} ns (quartiles {:.0} to {:.0}) over {pairs} pairs of {BATCH} requests",
        quantile(&mut bases, 0.5),
        quantile(&mut diffs, 0.5),
        quantile(&mut diffs, 0.25),
        quantile(&mut diffs, 0.75),
    );
}

/// The requests a profiler counts (`--toggle-collect` names this function).
#[inline(never)]
fn run_measured(rt: &tokio::runtime::Runtime, app: &App, n: usize) {
    run(rt, app, n);
}

/// The requests before: caches filled, the coarse clock started.
#[inline(never)]
fn warm_up(rt: &tokio::runtime::Runtime, app: &App) {
    run(rt, app, 100);
}

#[inline(always)]
fn run(rt: &tokio::runtime::Runtime, app: &App, n: usize) {
    match app {
        App::Routed(router) => run_service(rt, router, n),
        App::Wrapped(service) => run_service(rt, service, n),
        App::Plain(service) => run_plain(rt, service, n),
        App::PlainLayer(service) => run_plain(rt, service, n),
        App::PlainLayerNoExtractor(service) => run_plain(rt, service, n),
    }
}

/// An extension every plain request carries, as every request has one by
/// the time an axum handler sees it (axum inserts the matched path and
/// the URL parameters): the map exists, on both sides alike.
#[derive(Clone)]
struct Routed;

/// The plain services are called in place (made ready, called, awaited),
/// with no clone per request: a clone of the layer's service is a
/// reference count the baseline does not pay.
#[inline(always)]
fn run_plain<S>(rt: &tokio::runtime::Runtime, app: &S, n: usize)
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone,
{
    let mut service = app.clone();
    rt.block_on(async {
        for _ in 0..n {
            let ready = service.ready().await.unwrap_or_else(|e| match e {});
            let mut req = request();
            req.extensions_mut().insert(Routed);
            assert_ok(ready.call(req).await);
        }
    });
}

#[inline(always)]
fn run_service<S>(rt: &tokio::runtime::Runtime, app: &S, n: usize)
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone,
{
    rt.block_on(async {
        for _ in 0..n {
            assert_ok(app.clone().oneshot(request()).await);
        }
    });
}

/// Asserts the (infallible) answer is 200.
fn assert_ok(res: Result<Response, Infallible>) {
    let res = res.unwrap_or_else(|e| match e {});
    assert_eq!(res.status(), 200);
}
