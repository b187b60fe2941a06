//! Tenant events: every change to a tenant or its config is
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
/// Sinks (NATS, webhooks) never hold up the caller: each has a bounded
/// queue (10,000 events) drained by a background task, which retries a
/// failed or slow delivery (5 s timeout, backoff up to 5 s) in order until
/// it succeeds, so events published while the sink's server is down are
/// sent on reconnect. When the queue is full an event is dropped, counted
/// ([`EventBus::dropped`]) and logged. One-shot programs call
/// [`EventBus::flush`] before exiting.
///
/// Cloning shares the bus.
///
/// ```
/// use tenancy::EventBus;
/// let bus = EventBus::new();
/// let mut events = bus.subscribe();
/// # drop(events);
/// ```
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<TenantEvent>,
    sinks: Arc<[Arc<SinkQueue>]>,
}

/// Events queued per sink before new ones are dropped.
const SINK_QUEUE: usize = 10_000;
/// How long one delivery may take before it is retried.
const DELIVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

struct SinkQueue {
    sink: Arc<dyn EventSink>,
    queue: std::sync::OnceLock<tokio::sync::mpsc::Sender<TenantEvent>>,
    /// Queued or being delivered (shared with the delivery task, which
    /// holds no reference to the queue: dropping the bus ends the task once
    /// it has delivered what was queued).
    pending: Arc<std::sync::atomic::AtomicUsize>,
    dropped: std::sync::atomic::AtomicU64,
}

impl SinkQueue {
    fn new(sink: Arc<dyn EventSink>) -> Arc<Self> {
        Arc::new(Self {
            sink,
            queue: std::sync::OnceLock::new(),
            pending: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            dropped: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Queues `event`; the delivery task starts with the first event (so a
    /// runtime is there).
    fn push(&self, event: TenantEvent) {
        use std::sync::atomic::Ordering;
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(SINK_QUEUE);
            tokio::spawn(Self::drain(self.sink.clone(), self.pending.clone(), rx));
            tx
        });
        self.pending.fetch_add(1, Ordering::SeqCst);
        if let Err(err) = queue.try_send(event) {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            let total = self.dropped.fetch_add(1, Ordering::SeqCst) + 1;
            let event = match &err {
                tokio::sync::mpsc::error::TrySendError::Full(e)
                | tokio::sync::mpsc::error::TrySendError::Closed(e) => e,
            };
            tracing::error!(
                kind = event.kind(),
                tenant_id = %event.tenant_id(),
                dropped = total,
                "event sink queue full: event dropped"
            );
        }
    }

    async fn drain(
        sink: Arc<dyn EventSink>,
        pending: Arc<std::sync::atomic::AtomicUsize>,
        mut rx: tokio::sync::mpsc::Receiver<TenantEvent>,
    ) {
        use std::sync::atomic::Ordering;
        while let Some(event) = rx.recv().await {
            let mut backoff = std::time::Duration::from_millis(100);
            let mut failures = 0u32;
            loop {
                let outcome = tokio::time::timeout(DELIVERY_TIMEOUT, sink.deliver(&event)).await;
                match outcome {
                    Ok(Ok(())) => {
                        if failures > 0 {
                            tracing::info!(
                                kind = event.kind(),
                                failures,
                                "event sink delivers again"
                            );
                        }
                        break;
                    }
                    Ok(Err(err)) => {
                        if failures == 0 {
                            tracing::warn!(kind = event.kind(), error = %err, "event sink failed; retrying");
                        }
                    }
                    Err(_) => {
                        if failures == 0 {
                            tracing::warn!(kind = event.kind(), "event sink timed out; retrying");
                        }
                    }
                }
                failures += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
            pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
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

    /// Adds a sink that receives every event, in order, from a background
    /// task (see the type's docs).
    pub fn with_sink(mut self, sink: impl EventSink) -> Self {
        let mut sinks = self.sinks.to_vec();
        sinks.push(SinkQueue::new(Arc::new(sink)));
        self.sinks = Arc::from(sinks);
        self
    }

    /// Receives every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TenantEvent> {
        self.sender.subscribe()
    }

    /// Publishes `event` to subscribers and queues it for every sink;
    /// never waits on a sink.
    pub async fn publish(&self, event: TenantEvent) {
        tracing::debug!(kind = event.kind(), tenant_id = %event.tenant_id(), "tenant event");
        for sink in self.sinks.iter() {
            sink.push(event.clone());
        }
        // No subscriber is not an error.
        let _ = self.sender.send(event);
    }

    /// Events dropped because a sink's queue was full, since the start.
    pub fn dropped(&self) -> u64 {
        self.sinks
            .iter()
            .map(|s| s.dropped.load(std::sync::atomic::Ordering::SeqCst))
            .sum()
    }

    /// Events queued for sinks and not delivered yet.
    pub fn pending(&self) -> usize {
        self.sinks
            .iter()
            .map(|s| s.pending.load(std::sync::atomic::Ordering::SeqCst))
            .sum()
    }

    /// Waits until every queued event is delivered, at most `within`;
    /// `false` when some are still pending then.
    pub async fn flush(&self, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.pending() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
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
