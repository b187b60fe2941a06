//! Tenant events reach NATS (subject `tenancy.events.<kind>`, JSON payload),
//! against the machine's NATS server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use serde_json::Value;
use tenancy::nats::NatsEventSink;
use tenancy::*;

use common::create;

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
    let acme = create(&tenancy, "acme", "Acme").await;
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

/// A nats-server of this test's own (the machine's stays up), with its
/// monitoring port.
struct OwnNats {
    child: std::process::Child,
}

impl OwnNats {
    fn start(port: u16, monitor: u16) -> Self {
        let bin = [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nats-server is required (scripts/test.sh checks for it)");
        let child = std::process::Command::new(bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-m",
                &monitor.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Messages the server received from clients (`/varz` `in_msgs`).
fn in_msgs(monitor: u16) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", monitor)).unwrap();
    s.write_all(b"GET /varz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("{}");
    let varz: Value = serde_json::from_str(body).unwrap();
    varz["in_msgs"].as_u64().unwrap()
}

/// NATS down. Lifecycle changes never wait on it; their events
/// are buffered (bounded) and sent once NATS is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_never_blocks_and_events_are_sent_on_reconnect() {
    let (port, monitor) = (free_port(), free_port());
    let nats = OwnNats::start(port, monitor);
    let sink = NatsEventSink::connect(&format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap();
    let bus = EventBus::new().with_sink(sink);
    let tenancy = Tenancy::builder()
        .store(MemoryStore::new())
        .event_bus(bus.clone())
        .build()
        .unwrap();
    drop(nats);

    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let started = std::time::Instant::now();
        let t = tenancy
            .lifecycle()
            .create(NewTenant::new(&format!("down-{i}"), "D").unwrap())
            .await
            .unwrap();
        tenancy.lifecycle().suspend(&t.id, None).await.unwrap();
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(200),
        "a change waited {slowest:?} on NATS"
    );
    assert!(bus.pending() > 0, "events wait for NATS");
    assert_eq!(bus.dropped(), 0);

    let _nats = OwnNats::start(port, monitor);
    assert!(
        bus.flush(Duration::from_secs(20)).await,
        "{} events still pending",
        bus.pending()
    );
    assert_eq!(
        in_msgs(monitor),
        20,
        "every buffered event reached the new server"
    );
    assert_eq!(bus.dropped(), 0);
}
