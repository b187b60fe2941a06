//! The pending pool (`lifecycle.pending_pool`): provisioned tenants
//! waiting for a signup.

use tenancy::PendingPool;

use crate::app::App;

/// Why a pending-pool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// This deployment has no pending pool.
    #[error(
        "no pending pool: set lifecycle.pending_pool (TENANCY__LIFECYCLE__PENDING_POOL=20) with the schema or \
         database strategy (current: {strategy}, pending_pool {size})"
    )]
    NotConfigured {
        /// The isolation strategy.
        strategy: String,
        /// `lifecycle.pending_pool`.
        size: u32,
    },
    /// The pool failed.
    #[error(transparent)]
    Pool(#[from] tenancy::pool::PoolError),
}

/// The app's pending pool.
pub fn pool_of(app: &App) -> Result<&PendingPool, PoolError> {
    app.tenancy
        .pending_pool()
        .ok_or_else(|| PoolError::NotConfigured {
            strategy: app.config.lifecycle.isolation_strategy.clone(),
            size: app.config.lifecycle.pending_pool,
        })
}
