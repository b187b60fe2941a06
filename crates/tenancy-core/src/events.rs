//! Tenant events (SPEC L2): every change to a tenant or its config is
//! published on an [`EventBus`].
//!
//! The bus is an in-process broadcast: subscribe with
//! [`EventBus::subscribe`]. Adapters that carry events beyond the process
//! (NATS, a webhook) implement [`EventSink`] and are added with
//! [`EventBus::with_sink`].

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::tenant::{TenantId, TenantInfo};

/// Something that happened to a tenant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TenantEvent {
    /// A tenant was created and provisioned (it is now active).
    Created {
        /// The tenant after the change.
        tenant: TenantInfo,
    },
    /// A tenant's fields changed.
    Updated {
        /// The tenant after the change.
        tenant: TenantInfo,
        /// The tenant before the change.
        previous: TenantInfo,
    },
    /// A tenant became active.
    Activated {
        /// The tenant after the change.
        tenant: TenantInfo,
    },
    /// A tenant was deactivated.
    Deactivated {
        /// The tenant after the change.
        tenant: TenantInfo,
    },
    /// A tenant was suspended.
    Suspended {
        /// The tenant after the change.
        tenant: TenantInfo,
        /// Why.
        reason: Option<String>,
    },
    /// A tenant was deleted.
    Deleted {
        /// The tenant as it was.
        tenant: TenantInfo,
    },
    /// One of a tenant's config overrides was set or removed.
    ConfigChanged {
        /// The tenant.
        tenant_id: TenantId,
        /// The key.
        key: String,
        /// The new value; `None` when the override was removed.
        value: Option<serde_json::Value>,
    },
}

impl TenantEvent {
    /// The event's kind, as in its JSON `kind` field and NATS subject
    /// (`created`, `suspended`, `config_changed`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Created { .. } => "created",
            Self::Updated { .. } => "updated",
            Self::Activated { .. } => "activated",
            Self::Deactivated { .. } => "deactivated",
            Self::Suspended { .. } => "suspended",
            Self::Deleted { .. } => "deleted",
            Self::ConfigChanged { .. } => "config_changed",
        }
    }

    /// The tenant the event is about.
    pub fn tenant_id(&self) -> &TenantId {
        match self {
            Self::Created { tenant }
            | Self::Updated { tenant, .. }
            | Self::Activated { tenant }
            | Self::Deactivated { tenant }
            | Self::Suspended { tenant, .. }
            | Self::Deleted { tenant } => &tenant.id,
            Self::ConfigChanged { tenant_id, .. } => tenant_id,
        }
    }
}

/// Carries events out of the process. Failures are logged, never returned
/// to the operation that caused the event.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Delivers one event.
    async fn deliver(
        &self,
        event: &TenantEvent,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// The in-process event bus (a tokio broadcast), plus optional sinks.
///
/// Cloning shares the bus.
///
/// ```
/// use tenancy_core::EventBus;
/// let bus = EventBus::new();
/// let mut events = bus.subscribe();
/// # drop(events);
/// ```
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<TenantEvent>,
    sinks: Arc<[Arc<dyn EventSink>]>,
}

impl EventBus {
    /// A bus that keeps up to 1024 undelivered events per subscriber.
    pub fn new() -> Self {
        Self::with_capacity(1024)
    }

    /// A bus with room for `capacity` undelivered events per subscriber. A
    /// slower subscriber gets `RecvError::Lagged` and must assume it missed
    /// events (a cache should then clear itself).
    pub fn with_capacity(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            sender,
            sinks: Arc::from(Vec::new()),
        }
    }

    /// Adds a sink that receives every event after the subscribers.
    pub fn with_sink(mut self, sink: impl EventSink) -> Self {
        let mut sinks = self.sinks.to_vec();
        sinks.push(Arc::new(sink));
        self.sinks = Arc::from(sinks);
        self
    }

    /// Receives every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TenantEvent> {
        self.sender.subscribe()
    }

    /// Publishes `event` to subscribers and sinks.
    pub async fn publish(&self, event: TenantEvent) {
        tracing::debug!(kind = event.kind(), tenant_id = %event.tenant_id(), "tenant event");
        for sink in self.sinks.iter() {
            if let Err(err) = sink.deliver(&event).await {
                tracing::warn!(kind = event.kind(), error = %err, "event sink failed");
            }
        }
        // No subscriber is not an error.
        let _ = self.sender.send(event);
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("subscribers", &self.sender.receiver_count())
            .field("sinks", &self.sinks.len())
            .finish()
    }
}
