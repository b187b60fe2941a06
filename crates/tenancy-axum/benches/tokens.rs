//! The tenant layer's request path with bearer tokens: HS256 (your own
//! secret), RS256 and ES256 (an identity provider's key set, served by
//! the bench on loopback and fetched once), each with the verified-token
//! cache cold (every request checks the signature: the cache is off) and
//! warm (the same token again: a cache hit), beside the same route with
//! the header resolver and no token.
//!
//! `cargo bench -p tenancy-axum --bench tokens`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Request};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tenancy_axum::{JwtVerifier, Tenant, TenantLayer};
use tenancy_core::config::IssuerConfig;
use tenancy_core::resolve::{HeaderResolver, JwtClaimResolver};
use tenancy_core::*;
use tower::ServiceExt;

#[path = "common/alloc.rs"]
mod alloc;
use alloc::ALLOCATIONS;

#[global_allocator]
static GLOBAL: alloc::CountingAlloc = alloc::CountingAlloc;

/// Bench-only keys (made with `openssl genpkey`), used nowhere else.
const RSA_PRIVATE: &str = r"-----BEGIN PRIVATE KEY-----
MIIEvwIBADANBgkqhkiG9w0BAQEFAASCBKkwggSlAgEAAoIBAQC70/joajPDTM97
i8f6ARqnN64zleyscvR7OG3edVFes3tOD7eK04fQ13IQb41h7Q4U/CY8JSKJtXco
aioRdIaBhNtpchWDwt78xDRHngDoCYinhHwRUuwUTM/pawCT1Vk/oVSxP+MivGbN
lpChXBsYj7CpS8vO8/jm29UGJc893C1iJEjeDfrHQyded9yVusK8edy3jE/PjeMR
N1Cf3NV8YXrxgWmNKbIOQDDtjs9hgVcCBlydOfKb9qsLsWW9Zov+At+yy3uD7AJ3
axNuIjPLe05ScTT4uYqoQvpjLGxXN0lNWNY01wk3jO77gtf5u+Esq8PBphz1ZTfw
4Yy/n24tAgMBAAECggEAB0OK2D4nM1HYolAFE1OQms/p8j/Fj+PANbW4dgZ2d6Gc
TqgH8pv8oCR82kreHl/jEAeyWNgczlOQwKTebJ9jhkXDkH/jeh2CrybNWMmxAkhA
Gy5h9++LhrtzvPSw6IazNWVBV7t/Rrwfg6rjfAIKYDhKXjm6r4263f65bcvviFZX
Au9IV0icDgq0KvbsIzs1E1YXbRoCJnsk1z1YeXoWYB4H4HH+KADFW4Tjtiv1vhep
i4SK77dRHFRwwoyjMAnoRXigliIMNewSciu7o4guIPhcwcoqEtcFgfZ1m9/MolxE
pPQ8FBoAmExlZY27d4MUWD2jNAbVYgF0C5QAfKg5FwKBgQDpGbDafVqpUZ72JmMG
1LsShNUmjdfq8DyaYbPi64B0BuJ+Y4KNLbNTMgjLpDXtS7fbzAmIvXyNxxZAa6bW
jaKwY868aYlc7+dDkBtK1mRPtDshTgm1zxWY+vz4L5NPClfU41FLPBt0scJfb1+A
s5IVoFUgbi/1ui3T5+n6OzSScwKBgQDOR7bTLNa8tnYP0c23YtOEhx5L4o1uRFgr
m4u9apHT7cDX12PBdIeOQNgStTRT3PsPuOH28o1ILnbBShhseSLse478rPARWXT6
EZCMNv8GEG8FDc5IxTsQiSrHvF6hjTk/qqKVfidVduTNeCA1KOrVD5kBMdKiLAgQ
cwTMLPm03wKBgQCBMkAXmYr6dcbJX5VbX+Uf6ofJiqy2BtlQJ/7wMt9Lb9Vxf+4I
GeBeqEi/thA9qc4KARj3tS6n1kS7B++801vssCURwNzlqgJgLCs0W4fVtWtglkRD
hLfPxq0XUicvk+gCksuoC3ScRToaczxXtS+u1OLZyrjCVaK45L2Gd/I3iQKBgQCw
Mitkx9kISmYf7xpjeUOo4O0s7m/V7wTNAsji22OCfYOKGg24Ubvz80lc+XCf7ZJ5
hHdmwxmQvTdstMiV5wbArm2dQG6ysxGrBFPOoK9G08SwsXExUV65KiDjiO/f2Ew9
KJhFTwN0CeE37FK+dZvYr8EGdzMumKOuwUAo0oXcSwKBgQDZBL+G+Lc6luSHWvCQ
AlnVh3BNdwX+w378aOqoh1njktVZ5lwCc3GlmUH4OBDu56pUoJbjwwhqftasDlCE
GEzP0aAU3LENuDxoYN/jJjTMrLZHCp64m5x1+jH4A/w57ku0oNBLGg/mviuxDHoh
wrh/w2QDI1L3SvLjAUTAtDMMUw==
-----END PRIVATE KEY-----";
const EC_PRIVATE: &str = r"-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg3mvu0BRDSqlhKRW7
Hcw5d4Gebjca+dJ5tk0V/t0psJKhRANCAAS+hjDu4v2PB/H4QYboWAQnbFP9hg2h
LoUyaiUaiWWMXd46etybmaAdbADVbhaFvgqN0zPF1kbEywi7VyvlbtpB
-----END PRIVATE KEY-----";
const SECRET: &[u8] = b"a bench secret of at least 16 bytes";
const AUDIENCE: &str = "https://api.bench";

/// `GET /notes`, with `authorization` if given, else `X-Tenant-Id: acme`.
fn request(authorization: Option<&HeaderValue>) -> Request<Body> {
    let mut req = Request::get("/notes").body(Body::empty()).unwrap();
    match authorization {
        Some(value) => req.headers_mut().insert("authorization", value.clone()),
        None => req
            .headers_mut()
            .insert("x-tenant-id", HeaderValue::from_static("acme")),
    };
    req
}

fn app(layer: TenantLayer) -> Router {
    Router::new()
        .route("/notes", get(|_t: Tenant| async { "ok" }))
        .layer(layer)
        .with_state(())
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
}

/// Serves `jwks` at `/jwks` on a thread of its own; the issuer's URL.
fn serve_jwks(jwks: JwkSet) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}", listener.local_addr().unwrap()))
                .unwrap();
            let body = serde_json::to_string(&jwks).unwrap();
            let router = Router::new().route("/jwks", get(move || async move { body }));
            axum::serve(listener, router).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// Allocations made by one request (the smallest of 10).
fn allocations(
    rt: &tokio::runtime::Runtime,
    app: &Router,
    authorization: Option<&HeaderValue>,
) -> usize {
    (0..10)
        .map(|_| {
            let req = request(authorization);
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            rt.block_on(async { assert_ok(app.clone().oneshot(req).await) });
            ALLOCATIONS.load(Ordering::Relaxed) - before
        })
        .min()
        .unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = MemoryStore::new();
    rt.block_on(async {
        LifecycleService::new(Arc::new(store.clone()))
            .create(NewTenant::new("acme", "Acme").unwrap())
            .await
            .unwrap();
    });
    let validator = Validator::new(Arc::new(store), &Default::default());
    let chain = || {
        ResolverChain::new()
            .with(JwtClaimResolver::new("tenant_id"))
            .with(HeaderResolver::default())
    };

    // The provider's keys: one RSA, one EC (P-256).
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    let ec = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
    let mut keys = Vec::new();
    for (key, alg, kid) in [
        (&rsa, Algorithm::RS256, "rsa"),
        (&ec, Algorithm::ES256, "ec"),
    ] {
        let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        keys.push(jwk);
    }
    let issuer = serve_jwks(JwkSet { keys });
    let mut provider = IssuerConfig::new(&issuer, [AUDIENCE]);
    provider.jwks_uri = Some(format!("{issuer}/jwks"));
    provider.algorithms = vec!["RS256".into(), "ES256".into()];

    let exp = jsonwebtoken::get_current_timestamp() + 24 * 3600;
    let sign = |alg: Algorithm, kid: Option<&str>, key: &EncodingKey, iss: Option<&str>| {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        let mut claims = json!({
            "sub": "user-1", "tenant_id": "acme", "tenants": ["acme"],
            "exp": exp, "aud": AUDIENCE, "scope": "notes:read notes:write",
        });
        if let Some(iss) = iss {
            claims["iss"] = json!(iss);
        }
        bearer(&jsonwebtoken::encode(&header, &claims, key).unwrap())
    };
    let hs256 = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET),
        None,
    );
    let rs256 = sign(Algorithm::RS256, Some("rsa"), &rsa, Some(&issuer));
    let es256 = sign(Algorithm::ES256, Some("ec"), &ec, Some(&issuer));

    let header_app = app(TenantLayer::new(chain(), validator.clone()));
    let layer =
        |verifier: JwtVerifier| app(TenantLayer::new(chain(), validator.clone()).jwt(verifier));
    let hs = JwtVerifier::hs256(SECRET);
    let providers = JwtVerifier::providers([provider]).unwrap();
    let cases = [
        ("hs256", &hs256, hs.clone()),
        ("rs256", &rs256, providers.clone()),
        ("es256", &es256, providers.clone()),
    ];

    // Every app answers 200 once before timing (keys fetched, validator
    // and token caches filled).
    let mut apps = Vec::new();
    for (name, token, verifier) in &cases {
        let cold = layer(verifier.clone().token_cache(0));
        let warm = layer(verifier.clone());
        for app in [&cold, &warm] {
            rt.block_on(async { assert_ok(app.clone().oneshot(request(Some(token))).await) });
        }
        apps.push((*name, *token, cold, warm));
    }
    rt.block_on(async { assert_ok(header_app.clone().oneshot(request(None)).await) });

    let mut line = format!(
        "allocations per request: {} with the header",
        allocations(&rt, &header_app, None)
    );
    for (name, token, cold, warm) in &apps {
        line.push_str(&format!(
            ", {name} {} cold / {} warm",
            allocations(&rt, cold, Some(token)),
            allocations(&rt, warm, Some(token))
        ));
    }
    println!("{line}");

    let mut group = c.benchmark_group("tokens");
    let mut run = |name: &str, app: &Router, token: Option<&HeaderValue>| {
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { app.clone().oneshot(request(token)).await })
        });
    };
    run("header_no_token", &header_app, None);
    for (name, token, cold, warm) in &apps {
        run(&format!("{name}_cold"), cold, Some(token));
        run(&format!("{name}_warm"), warm, Some(token));
    }
    // The baseline again: the drift within one run.
    run("header_no_token_again", &header_app, None);
    group.finish();

    // Where a warm token's time goes: the verifier's cache hit alone (the
    // token's SHA-256, the lookup, a copy of its claims), and the two
    // parts of it that cost most.
    let rs_token = rs256
        .to_str()
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_owned();
    let claims = providers.verify(&rs_token).unwrap();
    let mut group = c.benchmark_group("token_parts");
    group.bench_function("verify_cache_hit_rs256", |b| {
        b.iter(|| providers.verify(std::hint::black_box(&rs_token)))
    });
    group.bench_function("claims_copy", |b| {
        b.iter(|| std::hint::black_box(&claims).clone())
    });
    group.finish();
    println!("rs256 token: {} bytes", rs_token.len());
}

criterion_group!(benches, bench);
criterion_main!(benches);

/// Asserts the (infallible) answer is 200.
fn assert_ok(res: Result<Response, Infallible>) {
    let res = res.unwrap_or_else(|e| match e {});
    assert_eq!(res.status(), 200);
}
