//! Plans and entitlements (SPEC E1): what a tenant may do. A tenant's
//! entitlements are its plan's features and limits (`plans.NAME` in the
//! configuration), with its own overrides on top: config keys
//! `features.<name>` (true or false) and `limits.<name>` (a whole number).
//!
//! A plan change is a tenant change and an override change is a config
//! change: the change listeners carry both to every instance at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::config::{ConfigError, PlanConfig};
use crate::store::ConfigMap;

pub use crate::config::{LIMITS, is_limit};

/// The prefix of per-tenant feature overrides (`features.sso`).
pub const FEATURE_PREFIX: &str = "features.";
/// The prefix of per-tenant limit overrides (`limits.requests_per_month`).
pub const LIMIT_PREFIX: &str = "limits.";

/// The plans of the configuration. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Plans {
    plans: Arc<BTreeMap<String, PlanConfig>>,
    /// Every feature some plan includes.
    features: Arc<BTreeSet<String>>,
}

/// What one tenant may do: its plan's features and limits with its
/// overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantEntitlements {
    plan: Option<String>,
    features: BTreeSet<String>,
    limits: BTreeMap<String, u64>,
}

impl TenantEntitlements {
    /// Whether the tenant has `feature`.
    pub fn has(&self, feature: &str) -> bool {
        self.features.contains(feature)
    }

    /// The tenant's limit `name`; `None`: unlimited.
    pub fn limit(&self, name: &str) -> Option<u64> {
        self.limits.get(name).copied()
    }

    /// The tenant's plan.
    pub fn plan(&self) -> Option<&str> {
        self.plan.as_deref()
    }

    /// Its features.
    pub fn features(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(String::as_str)
    }
}

impl Plans {
    /// The plans of `plans.*` (checked as the configuration is).
    pub fn new(plans: &BTreeMap<String, PlanConfig>) -> Result<Self, ConfigError> {
        crate::config::validate_plans(plans)?;
        let features = plans
            .values()
            .flat_map(|p| p.features.iter().cloned())
            .collect();
        Ok(Self {
            plans: Arc::new(plans.clone()),
            features: Arc::new(features),
        })
    }

    /// Whether some plan includes `feature`.
    pub fn knows_feature(&self, feature: &str) -> bool {
        self.features.contains(feature)
    }

    /// The entitlements of a tenant on `plan` with `overrides` (its config
    /// overrides; `features.*` and `limits.*` are read). A plan the
    /// configuration does not have gives nothing but the overrides.
    pub fn entitlements(
        &self,
        plan: Option<&str>,
        overrides: Option<&ConfigMap>,
    ) -> TenantEntitlements {
        let mut entitlements = TenantEntitlements {
            plan: plan.map(str::to_owned),
            ..TenantEntitlements::default()
        };
        if let Some(config) = plan.and_then(|p| self.plans.get(p)) {
            entitlements.features = config.features.iter().cloned().collect();
            entitlements.limits = config.limits.clone();
        }
        for (key, value) in overrides.into_iter().flatten() {
            if let Some(feature) = key.strip_prefix(FEATURE_PREFIX) {
                match value.as_bool() {
                    Some(true) => {
                        entitlements.features.insert(feature.to_owned());
                    }
                    Some(false) => {
                        entitlements.features.remove(feature);
                    }
                    // Refused when written; one written past the checks
                    // grants nothing (fail closed).
                    None => {
                        entitlements.features.remove(feature);
                    }
                }
            } else if let Some(limit) = key.strip_prefix(LIMIT_PREFIX) {
                // A non-number written past the checks: the limit is 0.
                entitlements
                    .limits
                    .insert(limit.to_owned(), value.as_u64().unwrap_or(0));
            }
        }
        entitlements
    }

    /// Whether a tenant on `plan` with `overrides` has `feature`: what
    /// [`Plans::entitlements`] would say, without building them (no
    /// allocation: the check of a request).
    pub fn has_feature(
        &self,
        plan: Option<&str>,
        overrides: Option<&ConfigMap>,
        feature: &str,
    ) -> bool {
        match overrides.and_then(|o| override_of(o, FEATURE_PREFIX, feature)) {
            // One written past the checks (not a boolean) grants nothing.
            Some(value) => value.as_bool() == Some(true),
            None => plan
                .and_then(|p| self.plans.get(p))
                .is_some_and(|p| p.features.iter().any(|f| f == feature)),
        }
    }

    /// A tenant's limit `name` on `plan` with `overrides` (`None`:
    /// unlimited), as [`Plans::entitlements`] would say, without building
    /// them.
    pub fn limit(
        &self,
        plan: Option<&str>,
        overrides: Option<&ConfigMap>,
        name: &str,
    ) -> Option<u64> {
        match overrides.and_then(|o| override_of(o, LIMIT_PREFIX, name)) {
            // A non-number written past the checks: the limit is 0.
            Some(value) => Some(value.as_u64().unwrap_or(0)),
            None => plan
                .and_then(|p| self.plans.get(p))
                .and_then(|p| p.limits.get(name).copied()),
        }
    }

    /// Whether some plan sets limit `name` (when none does, only a
    /// tenant's override can).
    pub fn any_plan_limits(&self, name: &str) -> bool {
        self.plans.values().any(|p| p.limits.contains_key(name))
    }

    /// What is wrong with an override `key = value`, if it is one of
    /// `features.*` or `limits.*`: a feature no plan has, a value that is
    /// not true/false, a limit the toolkit does not know, a value that is
    /// not a whole number of 0 or more.
    pub fn check_override(&self, key: &str, value: &serde_json::Value) -> Result<(), String> {
        if let Some(feature) = key.strip_prefix(FEATURE_PREFIX) {
            if !self.knows_feature(feature) {
                return Err(format!(
                    "no plan has the feature \"{}\": add it to a plan's features first",
                    feature.escape_debug()
                ));
            }
            if !value.is_boolean() {
                return Err(format!("{value} is not true or false"));
            }
        } else if let Some(limit) = key.strip_prefix(LIMIT_PREFIX) {
            if !is_limit(limit) {
                return Err(format!(
                    "unknown limit \"{}\": one of {}, or rows.<resource>",
                    limit.escape_debug(),
                    LIMITS.join(", ")
                ));
            }
            if value.as_u64().is_none() {
                return Err(format!("{value} is not a whole number of 0 or more"));
            }
        }
        Ok(())
    }
}

/// The override `prefix` + `name` of `overrides`, looked up without
/// allocating for names that fit 128 bytes.
fn override_of<'a>(
    overrides: &'a ConfigMap,
    prefix: &str,
    name: &str,
) -> Option<&'a serde_json::Value> {
    let mut key = arrayvec::ArrayString::<128>::new();
    if key.try_push_str(prefix).is_ok() && key.try_push_str(name).is_ok() {
        overrides.get(key.as_str())
    } else {
        overrides.get(&format!("{prefix}{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plans() -> Plans {
        let mut config = BTreeMap::new();
        config.insert(
            "pro".to_owned(),
            PlanConfig {
                features: vec!["sso".into(), "exports".into()],
                limits: [("requests_per_month".to_owned(), 1000)].into(),
            },
        );
        config.insert("free".to_owned(), PlanConfig::default());
        Plans::new(&config).unwrap()
    }

    #[test]
    fn a_plan_with_overrides() {
        let plans = plans();
        let pro = plans.entitlements(Some("pro"), None);
        assert!(pro.has("sso") && !pro.has("audit"));
        assert_eq!(pro.limit("requests_per_month"), Some(1000));
        assert_eq!(pro.limit("storage_mb"), None);
        let overrides: ConfigMap = [
            ("features.sso".to_owned(), json!(false)),
            ("limits.requests_per_month".to_owned(), json!(5)),
            ("theme".to_owned(), json!("dark")),
        ]
        .into();
        let changed = plans.entitlements(Some("pro"), Some(&overrides));
        assert!(!changed.has("sso") && changed.has("exports"));
        assert_eq!(changed.limit("requests_per_month"), Some(5));
        // The allocation-free lookups say the same.
        for (plan, o) in [
            (Some("pro"), None),
            (Some("pro"), Some(&overrides)),
            (None, None),
        ] {
            let built = plans.entitlements(plan, o);
            for feature in ["sso", "exports", "audit"] {
                assert_eq!(plans.has_feature(plan, o, feature), built.has(feature));
            }
            for limit in ["requests_per_month", "storage_mb"] {
                assert_eq!(plans.limit(plan, o, limit), built.limit(limit));
            }
        }
        let free = plans.entitlements(
            Some("free"),
            Some(&[("features.sso".to_owned(), json!(true))].into()),
        );
        assert!(free.has("sso"));
        assert_eq!(
            plans.entitlements(None, None),
            TenantEntitlements::default()
        );
    }

    #[test]
    fn bad_names_and_values_are_refused() {
        let plans = plans();
        assert!(plans.check_override("features.sso", &json!(true)).is_ok());
        assert!(plans.check_override("features.sso", &json!("yes")).is_err());
        assert!(
            plans
                .check_override("features.unknown", &json!(true))
                .is_err()
        );
        assert!(
            plans
                .check_override("limits.rows.notes", &json!(10))
                .is_ok()
        );
        assert!(
            plans
                .check_override("limits.rows.notes", &json!(-1))
                .is_err()
        );
        assert!(
            plans
                .check_override("limits.requests_per_month", &json!("many"))
                .is_err()
        );
        assert!(
            plans
                .check_override("limits.seats_galore", &json!(1))
                .is_err()
        );
        assert!(plans.check_override("theme", &json!("dark")).is_ok());
        let mut config = BTreeMap::new();
        config.insert(
            "x".to_owned(),
            PlanConfig {
                features: vec![],
                limits: [("bogus".to_owned(), 1)].into(),
            },
        );
        let err = Plans::new(&config).unwrap_err().to_string();
        assert!(err.contains("plans.x.limits.bogus"), "{err}");
    }
}
