//! Issue 14: every `PgStore` write (tenant create, update, status change,
//! delete; config set and delete; domain add, verify and remove) costs ONE
//! round trip to PostgreSQL, its `NOTIFY` included, and a write that fails
//! notifies nothing.
//!
//! The store talks to the server through a small TCP proxy that parses the
//! client's protocol messages and groups them into exchanges: an exchange is
//! everything the client sends between two server replies, i.e. one round
//! trip. An exchange made only of `Sync` is sqlx's pool health check (a ping
//! when a connection is taken or given back, on the pool's own schedule):
//! it is not the store's work and is not counted. Every other exchange is.
//!
//! Statements are warmed up first, so the counts are those of a connection
//! whose statement cache already holds them (the first use of a statement
//! on a connection adds a Parse/Describe round trip).
//!
//! `cargo test -p tenancy-sql --test round_trips -- --nocapture` prints
//! what each write sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgSslMode};
use tenancy_core::*;
use tenancy_sql::{CHANGES_CHANNEL, PgStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{PgTestDb, migrated, name_update, new_tenant, slug_update};

/// The client's messages, one string of message type bytes per exchange
/// (`0` for an untyped startup message), over every proxied connection.
type Log = Arc<Mutex<Vec<String>>>;

/// A TCP proxy in front of the test server that logs what clients send.
struct Proxy {
    addr: SocketAddr,
    log: Log,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Log::default();
        let shared = log.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(upstream).await.unwrap();
                tokio::spawn(relay(client, server, shared.clone()));
            }
        });
        Self { addr, log }
    }

    /// Where the log is now.
    fn mark(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The exchanges since `mark` that did more than a health check.
    fn round_trips_since(&self, mark: usize) -> Vec<String> {
        self.log.lock().unwrap()[mark..]
            .iter()
            .filter(|sent| sent.chars().any(|m| m != 'S'))
            .cloned()
            .collect()
    }
}

/// Forwards one connection both ways, logging the client's messages.
async fn relay(client: TcpStream, server: TcpStream, log: Log) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    // Whether the server answered since the client last sent something:
    // the client's next bytes then start a new exchange.
    let answered = Arc::new(AtomicBool::new(true));
    let replies = answered.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = server_rx.read(&mut buf).await {
            replies.store(true, Ordering::SeqCst);
            if client_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut parser = Frontend::default();
    let mut exchange = None;
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
        let sent = parser.feed(&buf[..n]);
        {
            let mut log = log.lock().unwrap();
            let index = match exchange {
                Some(index) if !answered.swap(false, Ordering::SeqCst) => index,
                _ => {
                    log.push(String::new());
                    log.len() - 1
                }
            };
            log[index].push_str(&sent);
            exchange = Some(index);
        }
        if server_tx.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// Splits the client's byte stream into protocol messages.
#[derive(Default)]
struct Frontend {
    buf: Vec<u8>,
    started: bool,
}

impl Frontend {
    /// The type bytes of the messages completed by `bytes`.
    fn feed(&mut self, bytes: &[u8]) -> String {
        const SSL_REQUEST: u32 = 80_877_103;
        const GSSENC_REQUEST: u32 = 80_877_104;
        self.buf.extend_from_slice(bytes);
        let mut types = String::new();
        loop {
            // Startup messages have no type byte: length, then a code.
            let (header, kind) = if self.started {
                (5, None)
            } else {
                (8, Some('0'))
            };
            if self.buf.len() < header {
                return types;
            }
            let at = usize::from(self.started);
            let len = u32::from_be_bytes(self.buf[at..at + 4].try_into().unwrap()) as usize;
            let total = at + len;
            if self.buf.len() < total {
                return types;
            }
            match kind {
                Some(startup) => {
                    let code = u32::from_be_bytes(self.buf[4..8].try_into().unwrap());
                    self.started = code != SSL_REQUEST && code != GSSENC_REQUEST;
                    types.push(startup);
                }
                None => types.push(char::from(self.buf[0])),
            }
            self.buf.drain(..total);
        }
    }
}

/// The store behind the proxy, on one connection, so every statement's
/// round trips are on one connection with one statement cache.
async fn proxied_store(db: &PgTestDb, proxy: &Proxy) -> PgStore {
    let options = db
        .url
        .parse::<PgConnectOptions>()
        .unwrap()
        .host("127.0.0.1")
        .port(proxy.addr.port())
        .ssl_mode(PgSslMode::Disable);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await
        .unwrap();
    migrated(PgStore::new(pool)).await
}

async fn upstream() -> SocketAddr {
    let options = common::admin_url().parse::<PgConnectOptions>().unwrap();
    tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap()
}

/// The next notification on the channel; its payload must be `expected`,
/// byte for byte (what `Change::payload` writes: serde_json's compact form
/// with sorted keys).
async fn expect_notification(listener: &mut PgListener, expected: serde_json::Value) {
    let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification arrives")
        .unwrap();
    assert_eq!(notification.channel(), CHANGES_CHANNEL);
    assert_eq!(notification.payload(), expected.to_string());
}

fn tenant_change(tenant: &TenantInfo, previous_slug: Option<&str>) -> serde_json::Value {
    json!({"kind": "tenant", "id": tenant.id.as_str(), "slug": tenant.slug.as_str(), "previous_slug": previous_slug})
}

fn config_change(id: &TenantId) -> serde_json::Value {
    json!({"kind": "config", "id": id.as_str(), "slug": null, "previous_slug": null})
}

fn domain_change(domain: &str, id: &TenantId) -> serde_json::Value {
    json!({"kind": "domain", "id": id.as_str(), "slug": null, "previous_slug": null, "domain": domain})
}

/// What one write sent: its name, the round trips it may take, and the
/// message types of each round trip it took.
type Measured = Vec<(String, usize, Vec<String>)>;

/// Runs one write, records its round trips under `name` and returns what it
/// returned.
async fn measured<T>(
    proxy: &Proxy,
    counts: &mut Measured,
    name: &str,
    expected: usize,
    write: impl Future<Output = T>,
) -> T {
    let mark = proxy.mark();
    let out = write.await;
    counts.push((name.to_owned(), expected, proxy.round_trips_since(mark)));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_one_round_trip_with_its_notification() {
    let db = PgTestDb::new().await;
    let proxy = Proxy::start(upstream().await).await;
    let store = proxied_store(&db, &proxy).await;

    // Warm the statement cache: one call of each write, failures included.
    let warm = store.create(new_tenant("warm", "Warm")).await.unwrap();
    let _ = store.create(new_tenant("warm", "Again")).await.unwrap_err();
    let rename = slug_update("warm-2");
    store.update(&warm.id, rename).await.unwrap();
    let _ = store
        .set_status(&warm.id, TenantStatus::Suspended, None)
        .await
        .unwrap_err();
    store
        .set_status(&warm.id, TenantStatus::Active, None)
        .await
        .unwrap();
    store.set_config(&warm.id, "k", json!(1)).await.unwrap();
    store.delete_config(&warm.id, "k").await.unwrap();
    let warm_domain: Domain = "warm.test".parse().unwrap();
    store
        .add_domain(TenantDomain::new(
            warm_domain.clone(),
            warm.id.clone(),
            true,
            false,
        ))
        .await
        .unwrap();
    store.verify_domain(warm_domain.as_str()).await.unwrap();
    store.remove_domain(warm_domain.as_str()).await.unwrap();
    store.delete(&warm.id).await.unwrap();

    // Listens on its own connection, not through the proxy.
    let mut listener = PgListener::connect(&db.url).await.unwrap();
    listener.listen(CHANGES_CHANNEL).await.unwrap();
    let marker = store.create(new_tenant("marker", "Marker")).await.unwrap();
    expect_notification(&mut listener, tenant_change(&marker, None)).await;
    let taken = store.create(new_tenant("taken", "Taken")).await.unwrap();
    expect_notification(&mut listener, tenant_change(&taken, None)).await;

    let mut ok = Vec::new();

    // Successful writes: one round trip each, one notification each.
    let acme = measured(
        &proxy,
        &mut ok,
        "create",
        1,
        store.create(new_tenant("acme", "Acme").plan("pro")),
    )
    .await
    .unwrap();
    expect_notification(&mut listener, tenant_change(&acme, None)).await;

    let renamed = name_update("Acme Corp");
    let acme = measured(
        &proxy,
        &mut ok,
        "update",
        1,
        store.update(&acme.id, renamed),
    )
    .await
    .unwrap();
    assert_eq!(acme.name, "Acme Corp");
    expect_notification(&mut listener, tenant_change(&acme, None)).await;

    let reslug = TenantUpdate {
        slug: Some("acme-2".parse().unwrap()),
        plan: Some(None),
        metadata: Some(json!({"tier": 2})),
        ..Default::default()
    };
    let acme = measured(
        &proxy,
        &mut ok,
        "update (slug rename)",
        1,
        store.update(&acme.id, reslug),
    )
    .await
    .unwrap();
    assert_eq!(
        (acme.slug.as_str(), acme.name.as_str(), acme.plan.as_deref()),
        ("acme-2", "Acme Corp", None)
    );
    assert_eq!(acme.metadata, json!({"tier": 2}));
    expect_notification(&mut listener, tenant_change(&acme, Some("acme"))).await;

    let acme = measured(
        &proxy,
        &mut ok,
        "set_status (activate)",
        1,
        store.set_status(&acme.id, TenantStatus::Active, None),
    )
    .await
    .unwrap();
    expect_notification(&mut listener, tenant_change(&acme, None)).await;

    let acme = measured(
        &proxy,
        &mut ok,
        "set_status (suspend)",
        1,
        store.set_status(&acme.id, TenantStatus::Suspended, Some("unpaid")),
    )
    .await
    .unwrap();
    assert_eq!(acme.status_reason.as_deref(), Some("unpaid"));
    expect_notification(&mut listener, tenant_change(&acme, None)).await;

    measured(
        &proxy,
        &mut ok,
        "set_config (insert)",
        1,
        store.set_config(&acme.id, "theme", json!("dark")),
    )
    .await
    .unwrap();
    expect_notification(&mut listener, config_change(&acme.id)).await;

    measured(
        &proxy,
        &mut ok,
        "set_config (replace)",
        1,
        store.set_config(&acme.id, "theme", json!("light")),
    )
    .await
    .unwrap();
    expect_notification(&mut listener, config_change(&acme.id)).await;
    assert_eq!(
        store.get_config(&acme.id, "theme").await.unwrap(),
        Some(json!("light"))
    );

    let deleted = measured(
        &proxy,
        &mut ok,
        "delete_config",
        1,
        store.delete_config(&acme.id, "theme"),
    )
    .await
    .unwrap();
    assert!(deleted);
    expect_notification(&mut listener, config_change(&acme.id)).await;

    let portal: Domain = "portal.acme.test".parse().unwrap();
    measured(
        &proxy,
        &mut ok,
        "add_domain (primary)",
        1,
        store.add_domain(TenantDomain::new(
            portal.clone(),
            acme.id.clone(),
            true,
            false,
        )),
    )
    .await
    .unwrap();
    expect_notification(&mut listener, domain_change(portal.as_str(), &acme.id)).await;

    let verified = measured(
        &proxy,
        &mut ok,
        "verify_domain",
        1,
        store.verify_domain(portal.as_str()),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(verified.is_verified());
    expect_notification(&mut listener, domain_change(portal.as_str(), &acme.id)).await;

    let removed = measured(
        &proxy,
        &mut ok,
        "remove_domain",
        1,
        store.remove_domain(portal.as_str()),
    )
    .await
    .unwrap();
    assert!(removed.is_some());
    expect_notification(&mut listener, domain_change(portal.as_str(), &acme.id)).await;

    store
        .set_config(&acme.id, "theme", json!("dark"))
        .await
        .unwrap();
    expect_notification(&mut listener, config_change(&acme.id)).await;
    let deleted = measured(&proxy, &mut ok, "delete", 1, store.delete(&acme.id))
        .await
        .unwrap();
    assert!(deleted);
    expect_notification(&mut listener, tenant_change(&acme, None)).await;
    assert!(store.all_config(&acme.id).await.unwrap().is_empty());

    // Writes that fail or change nothing: no notification (the next one
    // to arrive is the marker's), and one round trip, except a refused
    // status change, which then reads the tenant to say why.
    let mut refused = Vec::new();
    let mut quiet = 0;
    let mut nothing_sent = async |listener: &mut PgListener| {
        quiet += 1;
        store
            .set_config(&marker.id, "n", json!(quiet))
            .await
            .unwrap();
        expect_notification(listener, config_change(&marker.id)).await;
    };

    let err = measured(
        &proxy,
        &mut refused,
        "create (duplicate slug)",
        1,
        store.create(new_tenant("taken", "Again")),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::DuplicateSlug(s) if s == "taken"),
        "{err}"
    );
    nothing_sent(&mut listener).await;

    let steal = slug_update("taken");
    let err = measured(
        &proxy,
        &mut refused,
        "update (duplicate slug)",
        1,
        store.update(&marker.id, steal),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::DuplicateSlug(s) if s == "taken"),
        "{err}"
    );
    nothing_sent(&mut listener).await;

    let ghost: TenantId = "ghost".parse().unwrap();
    let err = measured(
        &proxy,
        &mut refused,
        "update (not found)",
        1,
        store.update(&ghost, TenantUpdate::default()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(s) if s == "ghost"),
        "{err}"
    );
    nothing_sent(&mut listener).await;

    let err = measured(
        &proxy,
        &mut refused,
        "set_status (refused transition)",
        2,
        store.set_status(&taken.id, TenantStatus::Suspended, Some("no")),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::InvalidTransition { id, from: TenantStatus::Provisioning, to: TenantStatus::Suspended }
                if id == taken.id.as_str()
        ),
        "{err}"
    );
    nothing_sent(&mut listener).await;
    assert_eq!(
        store.get(&taken.id).await.unwrap().unwrap().status,
        TenantStatus::Provisioning
    );

    let err = measured(
        &proxy,
        &mut refused,
        "set_status (not found)",
        2,
        store.set_status(&ghost, TenantStatus::Active, None),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(s) if s == "ghost"),
        "{err}"
    );
    nothing_sent(&mut listener).await;

    let err = measured(
        &proxy,
        &mut refused,
        "set_config (no such tenant)",
        1,
        store.set_config(&ghost, "theme", json!("dark")),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(s) if s == "ghost"),
        "{err}"
    );
    nothing_sent(&mut listener).await;

    let deleted = measured(
        &proxy,
        &mut refused,
        "delete_config (no such key)",
        1,
        store.delete_config(&taken.id, "nothing"),
    )
    .await
    .unwrap();
    assert!(!deleted);
    nothing_sent(&mut listener).await;

    let deleted = measured(
        &proxy,
        &mut refused,
        "delete (no such tenant)",
        1,
        store.delete(&ghost),
    )
    .await
    .unwrap();
    assert!(!deleted);
    nothing_sent(&mut listener).await;

    let claimed: Domain = "claimed.test".parse().unwrap();
    store
        .add_domain(TenantDomain::new(
            claimed.clone(),
            taken.id.clone(),
            true,
            true,
        ))
        .await
        .unwrap();
    expect_notification(&mut listener, domain_change(claimed.as_str(), &taken.id)).await;
    let err = measured(
        &proxy,
        &mut refused,
        "add_domain (taken)",
        1,
        store.add_domain(TenantDomain::new(
            claimed.clone(),
            marker.id.clone(),
            true,
            false,
        )),
    )
    .await
    .unwrap_err();
    assert!(matches!(&err, StoreError::DomainTaken(_)), "{err}");
    nothing_sent(&mut listener).await;
    // The refused claim demoted nothing.
    assert!(store.list_domains(&taken.id).await.unwrap()[0].primary);

    let none = measured(
        &proxy,
        &mut refused,
        "verify_domain (unknown)",
        1,
        store.verify_domain("nowhere.test"),
    )
    .await
    .unwrap();
    assert!(none.is_none());
    nothing_sent(&mut listener).await;

    let none = measured(
        &proxy,
        &mut refused,
        "remove_domain (unknown)",
        1,
        store.remove_domain("nowhere.test"),
    )
    .await
    .unwrap();
    assert!(none.is_none());
    nothing_sent(&mut listener).await;

    for (name, _, sent) in ok.iter().chain(&refused) {
        println!("{name:32} {} round trip(s): {sent:?}", sent.len());
    }
    let wrong: Vec<_> = ok
        .iter()
        .chain(&refused)
        .filter(|(_, expected, sent)| sent.len() != *expected)
        .collect();
    assert!(
        wrong.is_empty(),
        "writes with more round trips than expected (message types sent per round trip): {wrong:?}"
    );

    listener.unlisten_all().await.unwrap();
    drop(listener);
    store.pool().close().await;
}
