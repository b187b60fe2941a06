//! The audit log of admin actions: who did what to which tenant,
//! when, with the record before and after.
//!
//! Entries live in the same store as the tenants ([`AuditStore`]; every
//! store of the toolkit implements it) and are never changed or removed by
//! the toolkit: deleting a tenant keeps its entries.
//!
//! ```
//! use tenancy::audit::{AuditQuery, NewAuditEntry};
//! use tenancy::{MemoryStore, Tenancy};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tenancy = Tenancy::builder().store(MemoryStore::new()).build()?;
//! let audit = tenancy.audit().ok_or("this store keeps no audit log")?;
//! audit.record(NewAuditEntry::new("alice", "tenant.suspend").tenant("acme-id".parse()?)).await?;
//! let recent = audit.audit(AuditQuery::default().tenant("acme-id".parse()?)).await?;
//! assert_eq!(recent[0].actor, "alice");
//! # Ok(()) }
//! ```

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;
use crate::tenant::TenantId;

/// One recorded admin action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Increasing with time; use it to page (`AuditQuery::before`).
    pub id: i64,
    /// When the action was recorded.
    pub at: DateTime<Utc>,
    /// Who acted (`admin`, `admin:alice`, `cli:root`, …).
    pub actor: String,
    /// What was done (`tenant.create`, `tenant.suspend`, `config.set`, …).
    pub action: String,
    /// The tenant acted on, if any.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub tenant_id: Option<TenantId>,
    /// The state before (the tenant record, the old value…).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub before: Option<serde_json::Value>,
    /// The state after.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub after: Option<serde_json::Value>,
}

/// An action to record. The store stamps the id and the time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    /// Who acted.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// The tenant acted on, if any.
    pub tenant_id: Option<TenantId>,
    /// The state before.
    pub before: Option<serde_json::Value>,
    /// The state after.
    pub after: Option<serde_json::Value>,
}

impl NewAuditEntry {
    /// `actor` did `action`.
    pub fn new(actor: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            tenant_id: None,
            before: None,
            after: None,
        }
    }

    /// To tenant `id`.
    pub fn tenant(mut self, id: TenantId) -> Self {
        self.tenant_id = Some(id);
        self
    }

    /// With the state before and after (either may be absent).
    pub fn change(
        mut self,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> Self {
        self.before = before;
        self.after = after;
        self
    }
}

/// Which entries to read: newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this tenant's entries.
    pub tenant_id: Option<TenantId>,
    /// Only entries older than this id (the next page).
    pub before: Option<i64>,
    /// At most this many (default 50, at most [`AuditQuery::MAX_LIMIT`]).
    pub limit: u32,
}

impl AuditQuery {
    /// The most entries one query returns.
    pub const MAX_LIMIT: u32 = 1000;

    /// Only tenant `id`'s entries.
    pub fn tenant(mut self, id: TenantId) -> Self {
        self.tenant_id = Some(id);
        self
    }

    /// At most `limit` entries (clamped to 1..=[`AuditQuery::MAX_LIMIT`]).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit.clamp(1, Self::MAX_LIMIT);
        self
    }

    /// The effective limit.
    pub fn effective_limit(&self) -> u32 {
        self.limit.clamp(1, Self::MAX_LIMIT)
    }
}

impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            tenant_id: None,
            before: None,
            limit: 50,
        }
    }
}

/// Where audit entries are kept: beside the tenants.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends an entry.
    async fn record(&self, entry: NewAuditEntry) -> Result<AuditEntry, StoreError>;

    /// Entries matching `query`, newest first.
    async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;
}
