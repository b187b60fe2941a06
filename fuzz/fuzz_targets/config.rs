//! Configuration loading (SPEC X3): any YAML file and any `TENANCY__…`
//! environment either loads a config that validates or is an error that
//! names what is wrong; nothing panics.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use tenancy_core::TenancyConfig;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (yaml, env) = text.split_once("\n---env\n").unwrap_or((&text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("TENANCY__{}", k.to_ascii_uppercase()), v.to_owned()))
        .collect();
    let Ok(mut file) = tempfile::Builder::new().suffix(".yaml").tempfile() else {
        return;
    };
    if file.write_all(yaml.as_bytes()).is_err() {
        return;
    }
    match TenancyConfig::load_with_env(Some(file.path()), env) {
        Ok(config) => assert!(config.validate().is_ok()),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
