//! Tenant events beyond the process: a NATS [`EventSink`] (feature `nats`).
//!
//! Every event published on the [`EventBus`](crate::EventBus) is sent to
//! subject `tenancy.events.<kind>` (`created`, `suspended`,
//! `config_changed`, …) as the event's JSON, so other services (billing,
//! search) can react to a suspension or a new tenant.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tenancy::{EventBus, MemoryStore, Tenancy};
//! use tenancy::nats::NatsEventSink;
//! let bus = EventBus::new().with_sink(NatsEventSink::connect("nats://127.0.0.1:4222").await?);
//! let tenancy = Tenancy::builder().store(MemoryStore::new()).event_bus(bus).build()?;
//! # Ok(()) }
//! ```

use async_trait::async_trait;
use tenancy_core::{EventSink, TenantEvent};

/// Connecting to NATS failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot connect to NATS at {url}: {reason} (is nats-server running? set integration.nats_url)"
)]
pub struct NatsConnectError {
    url: String,
    reason: String,
}

/// Publishes tenant events to NATS.
#[derive(Clone, Debug)]
pub struct NatsEventSink {
    client: async_nats::Client,
    prefix: String,
}

impl NatsEventSink {
    /// The subject prefix used unless changed.
    pub const DEFAULT_PREFIX: &'static str = "tenancy.events";

    /// Connects to the NATS server at `url`.
    pub async fn connect(url: &str) -> Result<Self, NatsConnectError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| NatsConnectError {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self::new(client))
    }

    /// Uses an existing client.
    pub fn new(client: async_nats::Client) -> Self {
        Self {
            client,
            prefix: Self::DEFAULT_PREFIX.to_owned(),
        }
    }

    /// Publishes under `<prefix>.<kind>` instead of `tenancy.events.<kind>`.
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The subject an event goes to.
    pub fn subject_of(&self, event: &TenantEvent) -> String {
        format!("{}.{}", self.prefix, event.kind())
    }
}

#[async_trait]
impl EventSink for NatsEventSink {
    async fn deliver(
        &self,
        event: &TenantEvent,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let payload = serde_json::to_vec(event)?;
        self.client
            .publish(self.subject_of(event), payload.into())
            .await?;
        // Make delivery prompt: events are rare and consumers react to them.
        self.client.flush().await?;
        tracing::trace!(kind = event.kind(), "tenant event published to NATS");
        Ok(())
    }
}
