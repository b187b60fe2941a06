//! Slugs, tenant ids and domains (SPEC S1, D1): parsing never panics, an
//! accepted value is in its alphabet, and normalising is idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenancy_core::{Domain, Slug, TenantId, TenantRef};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(slug) = Slug::new(&text) {
        assert!(
            slug.as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
    }
    if let Ok(id) = TenantId::new(&text) {
        assert!(!id.as_str().is_empty());
        assert!(TenantRef::new(id.as_str()).is_well_formed());
    }
    if let Ok(domain) = Domain::parse(&text) {
        let s = domain.as_str();
        assert!(s.len() <= 253 && s.contains('.'));
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        );
        assert_eq!(
            Domain::parse(s).map(|d| d.to_string()),
            Ok(s.to_owned()),
            "normalising twice changed {s}"
        );
    }
    let _ = TenantRef::new(&text).is_well_formed();
});
