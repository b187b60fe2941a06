//! Config loading from YAML and the environment (X3).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use tenancy_core::config::DeprovisionPolicy;
use tenancy_core::{ConfigError, TenancyConfig};

fn yaml(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_without_file_or_env() {
    let c = TenancyConfig::load_with_env(None, env(&[])).unwrap();
    assert_eq!(c, TenancyConfig::default());
    assert_eq!(c.validation.cache_ttl_secs, 300);
    assert_eq!(c.resolution.header_name, "X-Tenant-Id");
    assert_eq!(
        c.resolution.resolvers,
        ["jwt_claim", "header", "domain", "subdomain", "path"]
    );
    assert_eq!(c.lifecycle.isolation_strategy, "row_level");
}

#[test]
fn yaml_under_tenancy_key() {
    let f = yaml(
        "tenancy:\n  resolution:\n    header_name: X-Org\n    base_domain: app.com\n    resolvers: [header, subdomain]\n  validation:\n    cache_ttl_secs: 60\n  lifecycle:\n    deprovision_policy: archive\n  overrides:\n    defaults:\n      theme: dark\n      rate_limit.rps: 5\n",
    );
    let c = TenancyConfig::load_with_env(Some(f.path()), env(&[])).unwrap();
    assert_eq!(c.resolution.header_name, "X-Org");
    assert_eq!(c.resolution.base_domain.as_deref(), Some("app.com"));
    assert_eq!(c.resolution.resolvers, ["header", "subdomain"]);
    assert_eq!(c.validation.cache_ttl_secs, 60);
    assert_eq!(
        c.validation.negative_ttl_secs, 5,
        "unset keys keep their defaults"
    );
    assert_eq!(c.lifecycle.deprovision_policy, DeprovisionPolicy::Archive);
    assert_eq!(
        c.overrides.defaults.get("theme"),
        Some(&serde_json::json!("dark"))
    );
}

#[test]
fn env_overrides_yaml() {
    let f = yaml("tenancy:\n  validation:\n    cache_ttl_secs: 60\n");
    let c = TenancyConfig::load_with_env(
        Some(f.path()),
        env(&[
            ("TENANCY__VALIDATION__CACHE_TTL_SECS", "30"),
            ("TENANCY__RESOLUTION__RESOLVERS", "header,path"),
            ("TENANCY__AUTH__JWT_SECRET", "0123456789abcdef0123"),
            ("TENANCY__LIFECYCLE__ISOLATION_STRATEGY", "schema"),
        ]),
    )
    .unwrap();
    assert_eq!(c.validation.cache_ttl_secs, 30);
    assert_eq!(c.resolution.resolvers, ["header", "path"]);
    assert_eq!(
        c.auth.jwt_secret.as_ref().map(|s| s.expose()),
        Some("0123456789abcdef0123"),
        "no numeric coercion"
    );
    assert_eq!(c.lifecycle.isolation_strategy, "schema");
    assert!(
        !format!("{c:?}").contains("0123456789abcdef0123"),
        "secrets are not printed"
    );
}

#[test]
fn bad_values_name_their_key() {
    let cases: Vec<(Vec<(String, String)>, &str)> = vec![
        (
            env(&[("TENANCY__VALIDATION__CACHE_TTL_SECS", "soon")]),
            "cache_ttl_secs",
        ),
        (
            env(&[("TENANCY__VALIDATION__CACHE_TTL_SECS", "0")]),
            "validation.cache_ttl_secs",
        ),
        (
            env(&[("TENANCY__RESOLUTION__RESOLVERS", "header,cookie")]),
            "cookie",
        ),
        (
            env(&[("TENANCY__LIFECYCLE__DEPROVISION_POLICY", "shred")]),
            "shred",
        ),
        (
            env(&[("TENANCY__VALIDATION__CACHE_TLL_SECS", "5")]),
            "cache_tll_secs",
        ),
    ];
    for (vars, needle) in cases {
        let err = TenancyConfig::load_with_env(None, vars.clone()).unwrap_err();
        assert!(err.to_string().contains(needle), "{vars:?}: {err}");
    }
}

#[test]
fn bad_yaml_and_missing_file_are_clear_errors() {
    let f = yaml("tenancy:\n  validation: [not, a, map\n");
    assert!(matches!(
        TenancyConfig::load_with_env(Some(f.path()), env(&[])),
        Err(ConfigError::Load(_))
    ));
    let err = TenancyConfig::load_with_env(Some("/nonexistent/tenancy.yaml".as_ref()), env(&[]))
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/tenancy.yaml"));
}

#[test]
fn file_without_tenancy_key_gives_defaults() {
    let f = yaml("other: 1\n");
    assert_eq!(
        TenancyConfig::load_with_env(Some(f.path()), env(&[])).unwrap(),
        TenancyConfig::default()
    );
}

#[test]
fn plans_from_yaml_and_their_bad_values() {
    let f = yaml(
        "tenancy:\n  plans:\n    pro:\n      features: [sso, exports]\n      limits:\n        requests_per_month: 100000\n        rows.notes: 500\n    free: {}\n",
    );
    let c = TenancyConfig::load_with_env(Some(f.path()), env(&[])).unwrap();
    assert_eq!(c.plans["pro"].features, ["sso", "exports"]);
    assert_eq!(c.plans["pro"].limits["rows.notes"], 500);
    assert!(c.plans["free"].features.is_empty());
    for (bad, named) in [
        (
            "tenancy:\n  plans:\n    pro:\n      limits:\n        requests_per_month: -5\n",
            "requests_per_month",
        ),
        (
            "tenancy:\n  plans:\n    pro:\n      limits:\n        seats_galore: 5\n",
            "plans.pro.limits.seats_galore",
        ),
        (
            "tenancy:\n  plans:\n    pro:\n      features: [\"no spaces\"]\n",
            "plans.pro.features",
        ),
        (
            "tenancy:\n  plans:\n    pro:\n      feature: [sso]\n",
            "feature",
        ),
    ] {
        let f = yaml(bad);
        let err = TenancyConfig::load_with_env(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(named), "{bad}: {err}");
    }
}
