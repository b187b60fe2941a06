//! JWT verification (SPEC R5): no input that was not signed with the key
//! is ever accepted, and nothing panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tenancy_axum::JwtVerifier;

fuzz_target!(|data: &[u8]| {
    static VERIFIER: OnceLock<JwtVerifier> = OnceLock::new();
    let verifier =
        VERIFIER.get_or_init(|| JwtVerifier::hs256(b"fuzzing-secret-that-no-input-knows"));
    let token = String::from_utf8_lossy(data);
    assert!(
        verifier.verify(&token).is_err(),
        "an unsigned token was accepted: {token:?}"
    );
});
