//! Isolation strategies: how a tenant's data is kept apart.
//!
//! This crate has no SQL, so [`IsolationStrategy`] covers the lifecycle
//! side: provisioning and deprovisioning a tenant's schema or database and
//! checking health. The SQL crate's strategies implement it and add the
//! per-transaction scoping (`TenantDb::begin`).
//!
//! [`RowLevel`] (shared tables, a `tenant_id` column) is the default and
//! needs nothing per tenant.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{ConfigError, DeprovisionPolicy};
use crate::tenant::TenantInfo;

/// A provisioning step that failed, and why.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{strategy}: {step} failed: {reason}")]
pub struct IsolationError {
    /// The strategy's name.
    pub strategy: String,
    /// The step (`create schema`, `migrate`, …).
    pub step: String,
    /// What went wrong.
    pub reason: String,
}

impl IsolationError {
    /// A failure of `step` in `strategy`.
    pub fn new(strategy: &str, step: &str, reason: impl std::fmt::Display) -> Self {
        Self {
            strategy: strategy.to_owned(),
            step: step.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// How one kind of isolation provisions and removes a tenant.
///
/// `provision` must be all-or-nothing: when it fails, it removes whatever
/// it made before returning the error.
#[async_trait]
pub trait IsolationStrategy: Send + Sync + 'static {
    /// `row_level`, `schema`, `database`, …
    fn name(&self) -> &str;

    /// Makes the tenant's isolation ready (create and migrate its schema or
    /// database). Must be idempotent.
    async fn provision(&self, tenant: &TenantInfo) -> Result<(), IsolationError>;

    /// Applies `policy` to the tenant's isolation.
    async fn deprovision(
        &self,
        tenant: &TenantInfo,
        policy: DeprovisionPolicy,
    ) -> Result<(), IsolationError>;

    /// The migration version `provision` brings a tenant to, when the
    /// strategy applies versioned migrations (`None`: unknown). A pending
    /// pool member provisioned at this version is claimed without
    /// re-checking its migrations.
    fn migration_version(&self) -> Option<i64> {
        None
    }

    /// Whether the strategy's backend answers.
    async fn check(&self) -> Result<(), IsolationError> {
        Ok(())
    }
}

/// Shared tables filtered by a tenant column: nothing to provision per
/// tenant. The SQL crate scopes each transaction (RLS or the interceptor).
#[derive(Debug, Clone, Copy, Default)]
pub struct RowLevel;

impl RowLevel {
    /// Name in config.
    pub const NAME: &'static str = "row_level";
}

#[async_trait]
impl IsolationStrategy for RowLevel {
    fn name(&self) -> &str {
        Self::NAME
    }
    async fn provision(&self, _tenant: &TenantInfo) -> Result<(), IsolationError> {
        Ok(())
    }
    async fn deprovision(
        &self,
        _tenant: &TenantInfo,
        _policy: DeprovisionPolicy,
    ) -> Result<(), IsolationError> {
        Ok(())
    }
}

/// Strategies by name. `row_level` is always registered.
#[derive(Clone)]
pub struct IsolationRegistry {
    strategies: HashMap<String, Arc<dyn IsolationStrategy>>,
}

impl IsolationRegistry {
    /// A registry holding [`RowLevel`].
    pub fn new() -> Self {
        let mut registry = Self {
            strategies: HashMap::new(),
        };
        registry.register(Arc::new(RowLevel));
        registry
    }

    /// Adds (or replaces) a strategy under its name.
    pub fn register(&mut self, strategy: Arc<dyn IsolationStrategy>) {
        self.strategies.insert(strategy.name().to_owned(), strategy);
    }

    /// The strategy called `name`, or a config error naming the setting.
    pub fn get(&self, name: &str) -> Result<Arc<dyn IsolationStrategy>, ConfigError> {
        self.strategies
            .get(name)
            .cloned()
            .ok_or_else(|| ConfigError::Invalid {
                key: "lifecycle.isolation_strategy".into(),
                reason: format!(
                    "no strategy \"{name}\" is registered (known: {})",
                    self.names().join(", ")
                ),
            })
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.strategies.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

impl Default for IsolationRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for IsolationRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsolationRegistry")
            .field("strategies", &self.names())
            .finish()
    }
}

/// Runs a strategy for the lifecycle service, with the `auto_provision`
/// switch and the deprovision policy.
#[derive(Clone)]
pub struct Provisioner {
    strategy: Arc<dyn IsolationStrategy>,
    auto_provision: bool,
    policy: DeprovisionPolicy,
}

impl Provisioner {
    /// Provisions with `strategy` automatically, keeping data on deprovision.
    pub fn new(strategy: Arc<dyn IsolationStrategy>) -> Self {
        Self {
            strategy,
            auto_provision: true,
            policy: DeprovisionPolicy::Keep,
        }
    }

    /// Whether new tenants are provisioned at creation.
    pub fn auto_provision(mut self, on: bool) -> Self {
        self.auto_provision = on;
        self
    }

    /// What deactivation and deletion do.
    pub fn policy(mut self, policy: DeprovisionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The strategy.
    pub fn strategy(&self) -> &Arc<dyn IsolationStrategy> {
        &self.strategy
    }

    /// Whether creation provisions.
    pub fn is_auto(&self) -> bool {
        self.auto_provision
    }

    /// The deprovision policy.
    pub fn deprovision_policy(&self) -> DeprovisionPolicy {
        self.policy
    }
}

impl Default for Provisioner {
    fn default() -> Self {
        Self::new(Arc::new(RowLevel))
    }
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("strategy", &self.strategy.name())
            .field("auto_provision", &self.auto_provision)
            .field("policy", &self.policy)
            .finish()
    }
}
