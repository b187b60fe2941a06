//! Tenant events reach NATS (subject `tenancy.events.<kind>`, JSON payload),
//! against the machine's NATS server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use tenancy::nats::NatsEventSink;
use tenancy::*;

#[tokio::test]
async fn lifecycle_events_are_published_to_nats() {
    let url = std::env::var("TENANCY_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = async_nats::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("NATS is required at {url} ({e}); start nats-server"));
    // A unique prefix keeps parallel runs apart.
    let prefix = format!("test.{}.events", uuid::Uuid::new_v4().simple());
    let mut sub = client.subscribe(format!("{prefix}.>")).await.unwrap();
    client.flush().await.unwrap();
    let sink = NatsEventSink::connect(&url)
        .await
        .unwrap()
        .subject_prefix(prefix.clone());
    let tenancy = Tenancy::builder()
        .store(MemoryStore::new())
        .event_bus(EventBus::new().with_sink(sink))
        .build()
        .unwrap();
    let acme = tenancy
        .lifecycle()
        .create(NewTenant::new("acme", "Acme").unwrap())
        .await
        .unwrap();
    tenancy
        .lifecycle()
        .suspend(&acme.id, Some("unpaid"))
        .await
        .unwrap();
    tenancy
        .overrides()
        .set(&acme.id, "theme", serde_json::json!("dark"))
        .await
        .unwrap();

    let mut seen = Vec::new();
    for _ in 0..3 {
        let msg = tokio::time::timeout(Duration::from_secs(5), futures_next(&mut sub))
            .await
            .expect("event within 5 s");
        let body: Value = serde_json::from_slice(&msg.payload).unwrap();
        seen.push((msg.subject.to_string(), body));
    }
    assert_eq!(seen[0].0, format!("{prefix}.created"));
    assert_eq!(seen[0].1["tenant"]["slug"], "acme");
    assert_eq!(seen[1].0, format!("{prefix}.suspended"));
    assert_eq!(seen[1].1["reason"], "unpaid");
    assert_eq!(seen[1].1["tenant"]["status"], "suspended");
    assert_eq!(seen[2].0, format!("{prefix}.config_changed"));
    assert_eq!(seen[2].1["key"], "theme");
}

#[tokio::test]
async fn unreachable_nats_is_a_clear_error() {
    let err = NatsEventSink::connect("nats://127.0.0.1:1")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot connect to NATS"), "{err}");
}

async fn futures_next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    use std::future::poll_fn;
    use std::pin::Pin;
    poll_fn(|cx| futures_core_poll(Pin::new(&mut *sub), cx))
        .await
        .expect("subscription open")
}

fn futures_core_poll(
    sub: std::pin::Pin<&mut async_nats::Subscriber>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Option<async_nats::Message>> {
    futures_util::Stream::poll_next(sub, cx)
}
