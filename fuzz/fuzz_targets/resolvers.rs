//! The resolver chain (SPEC R1–R4, D2) on hostile requests: never panics,
//! and whatever it resolves is a reference the validator would accept to
//! look up, or nothing.
#![no_main]

use std::sync::{Arc, OnceLock};

use futures_util::FutureExt;
use libfuzzer_sys::fuzz_target;
use tenancy_core::config::ResolutionConfig;
use tenancy_core::*;

fn chain() -> &'static ResolverChain {
    static CHAIN: OnceLock<ResolverChain> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let config = ResolutionConfig {
            base_domain: Some("app.com".into()),
            ..Default::default()
        };
        let store = MemoryStore::new();
        let domains = DomainResolver::new(Arc::new(store), Default::default());
        let mut chain = ResolverChain::from_config(&config).unwrap_or_default();
        chain.push(Arc::new(domains));
        chain
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let host = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("/");
    let header = parts.next().unwrap_or("");
    let query = parts.next();
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_str(header) {
        headers.insert("x-tenant-id", value);
    }
    let method = http::Method::GET;
    let ctx = ResolutionContext::new(&method, Some(host), path, query, &headers);
    // Every built-in resolver answers at once (no I/O on these inputs).
    if let Some(Some(found)) = chain().resolve(&ctx).now_or_never() {
        let _ = found.is_well_formed();
    }
    let _ = Domain::parse(host);
});
