//! The resolver chain on hostile requests: never panics, the names it
//! gathers are at most three, and the answer without waiting agrees with
//! the one that waits.
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
    // The domain resolver waits on a host it has not seen; with the
    // memory store the lookup finishes at once.
    if let Some(Ok(named)) = chain().named(&ctx).now_or_never() {
        assert!(named.len() <= 3);
        for name in named.names() {
            let _ = TenantRef::new(name).is_well_formed();
        }
        if let Some(Ok(now)) = chain().named_now(&ctx) {
            assert!(now.names().eq(named.names()));
        }
    }
    let _ = Domain::parse(host);
});
