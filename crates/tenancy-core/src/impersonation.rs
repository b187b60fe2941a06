//! Impersonation grants: an operator lets support act as one
//! user of one tenant, once, for a few minutes.
//!
//! The store keeps each grant under a key derived from its token (a hash:
//! the store never holds a usable token) and hands it out at most once:
//! [`ImpersonationStore::redeem`] marks it used in the same step, so two
//! instances racing on one token cannot both accept it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;
use crate::tenant::TenantId;

/// The longest a grant may live.
pub const MAX_TTL_SECS: u64 = 300;

/// One grant: who may act as whom, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpersonationGrant {
    /// The hash of the token (what the store is keyed by).
    pub key: String,
    /// The tenant the token resolves.
    pub tenant_id: TenantId,
    /// The user acted as.
    pub user: String,
    /// The operator who issued it.
    pub issued_by: String,
    /// After this the token is refused.
    pub expires_at: DateTime<Utc>,
}

/// Where grants are kept: beside the tenants, shared by every instance.
#[async_trait]
pub trait ImpersonationStore: Send + Sync + 'static {
    /// Stores a new grant.
    async fn issue(&self, grant: ImpersonationGrant) -> Result<(), StoreError>;

    /// The grant under `key` if it exists, is unexpired and unused, marking
    /// it used; `None` otherwise (unknown, expired or already used).
    async fn redeem(&self, key: &str) -> Result<Option<ImpersonationGrant>, StoreError>;
}
