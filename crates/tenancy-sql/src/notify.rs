//! Instant cache invalidation across processes with Postgres
//! `LISTEN`/`NOTIFY`.
//!
//! Every tenant or config change made through [`PgStore`](crate::PgStore)
//! sends a `NOTIFY` on the channel [`CHANGES_CHANNEL`] (`tenancy_changes`)
//! in the same transaction as the change, so a change that fails or rolls
//! back announces nothing. The payload is a small JSON object:
//!
//! ```json
//! {"kind": "tenant", "id": "…", "slug": "acme", "previous_slug": "acme-old"}
//! {"kind": "config", "id": "…", "slug": null, "previous_slug": null}
//! {"kind": "domain", "id": "…", "slug": null, "previous_slug": null, "domain": "portal.acme.com"}
//! ```
//!
//! (ids and slugs are at most 64 bytes, far below the 8000-byte `NOTIFY`
//! limit). Services in other languages can `LISTEN tenancy_changes` too.
//!
//! A [`PgChangeListener`] in every process receives these notifications
//! and drops the matching entries from its [`Validator`]s and
//! [`CachedConfigStore`]s, so a suspension made anywhere is refused
//! everywhere within milliseconds rather than after the cache TTL.
//!
//! # Starting it next to `Tenancy::builder()`
//!
//! The facade does not start the listener itself (it has no SQL
//! dependency); start it beside the [`Tenancy`] you built, on the same
//! database as the store, and keep the handle for as long as the service
//! runs:
//!
//! With the facade, `Tenancy::listen(options)` does this wiring; by hand:
//!
//! ```
//! use sqlx::postgres::PgConnectOptions;
//! use tenancy::Tenancy;
//! use tenancy::sql::{ChangeTargets, PgChangeListener, PgStore};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // A throwaway database on the local server.
//! # let name = format!("doc_{}", uuid::Uuid::new_v4().simple());
//! # let admin = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/postgres").await?;
//! # sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await?;
//! # let url = format!("postgres://postgres@127.0.0.1/{name}");
//! let store = PgStore::connect(&url).await?;
//! let tenancy = Tenancy::builder().store(store.clone()).build()?;
//! let targets = ChangeTargets::new()
//!     .validator(tenancy.validator().clone())
//!     .config_cache(tenancy.config_store().clone());
//! let listener = PgChangeListener::spawn(url.parse::<PgConnectOptions>()?, targets);
//! listener.listening().await; // optional: wait for the first LISTEN
//! // … serve; dropping `listener` (or `listener.shutdown().await`) stops it.
//! # listener.shutdown().await;
//! # store.pool().close().await;
//! # sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&admin).await?;
//! # Ok(()) }
//! ```
//!
//! # When it cannot know what it missed
//!
//! Notifications are not queued for a listener that is not connected. So
//! after every (re)connection, and whenever a payload cannot be understood,
//! the listener clears its caches entirely ([`Validator::clear`],
//! [`CachedConfigStore::clear`]): the next lookups go to the store, which is
//! always right. A lost connection is re-established at once, then with a
//! backoff (100 ms doubling up to 5 s) while the database is unreachable;
//! the caches are cleared when it is lost and again once `LISTEN` is back.
//! An idle connection is checked every 10 s (a round trip that must answer
//! within 10 s), so one that died silently is replaced too.
//!
//! [`Tenancy`]: https://docs.rs/tenancy
//! [`Validator`]: tenancy_core::Validator
//! [`Validator::clear`]: tenancy_core::Validator::clear
//! [`CachedConfigStore`]: tenancy_core::CachedConfigStore
//! [`CachedConfigStore::clear`]: tenancy_core::CachedConfigStore::clear

use std::time::Duration;

use crate::changes::ChangeTargets;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// The Postgres channel tenant and config changes are announced on.
pub const CHANGES_CHANNEL: &str = "tenancy_changes";

/// A statement that announces a change, the payload bound as `$1` (for a
/// change made in a transaction of several statements; the store's own
/// writes put their `NOTIFY` in the write itself, see [`notify_tenant_sql`]).
pub(crate) const NOTIFY_SQL: &str = "SELECT pg_notify('tenancy_changes', $1)";

/// SQL that announces a tenant change from inside a statement (so a store
/// write and its `NOTIFY` are one statement): a `pg_notify` call whose
/// payload is built by the server, byte for byte what [`Change::payload`]
/// writes (serde_json's compact form, keys sorted). The arguments are SQL
/// text expressions (string literals of SQL): the tenant's id, its slug
/// and its previous slug (`NULL` when unchanged).
///
/// Values go through `to_json`, which quotes and escapes them as serde_json
/// does; nothing is spliced into the SQL at run time.
macro_rules! notify_tenant_sql {
    ($id:literal, $slug:literal, $previous_slug:literal) => {
        concat!(
            r#"pg_notify('tenancy_changes', '{"id":' || to_json("#,
            $id,
            r#"::text)::text || ',"kind":"tenant","previous_slug":' || COALESCE(to_json("#,
            $previous_slug,
            r#"::text)::text, 'null') || ',"slug":' || to_json("#,
            $slug,
            r#"::text)::text || '}')"#
        )
    };
}
pub(crate) use notify_tenant_sql;

/// As [`notify_tenant_sql`], for a change of the config overrides of the
/// tenant whose id is the SQL expression `$id`.
macro_rules! notify_config_sql {
    ($id:literal) => {
        concat!(
            r#"pg_notify('tenancy_changes', '{"id":' || to_json("#,
            $id,
            r#"::text)::text || ',"kind":"config","previous_slug":null,"slug":null}')"#
        )
    };
}
pub(crate) use notify_config_sql;

/// As [`notify_tenant_sql`], for a change of the domain `$domain` of the
/// tenant `$id` (both SQL expressions).
macro_rules! notify_domain_sql {
    ($domain:literal, $id:literal) => {
        concat!(
            r#"pg_notify('tenancy_changes', '{"domain":' || to_json("#,
            $domain,
            r#"::text)::text || ',"id":' || to_json("#,
            $id,
            r#"::text)::text || ',"kind":"domain","previous_slug":null,"slug":null}')"#
        )
    };
}
pub(crate) use notify_domain_sql;

/// The `application_name` the listener's connection uses unless the
/// connect options set one (handy in `pg_stat_activity`).
pub const DEFAULT_APPLICATION_NAME: &str = "tenancy-change-listener";

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often an idle listener checks that its connection still answers.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// How long connecting, `LISTEN` or a keepalive check may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A change announced from Rust with [`NOTIFY_SQL`] (a tenant's database
/// moving to another server). [`PgStore`](crate::PgStore)'s writes build the
/// same payloads in SQL ([`notify_tenant_sql`], [`notify_config_sql`],
/// [`notify_domain_sql`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A tenant record was created, changed or deleted.
    Tenant {
        id: String,
        slug: String,
        previous_slug: Option<String>,
    },
}

impl Change {
    /// The `NOTIFY` payload (JSON).
    pub(crate) fn payload(&self) -> String {
        let value = match self {
            Self::Tenant {
                id,
                slug,
                previous_slug,
            } => serde_json::json!({
                "kind": "tenant",
                "id": id,
                "slug": slug,
                "previous_slug": previous_slug,
            }),
        };
        value.to_string()
    }
}

/// A snapshot of a [`PgChangeListener`]'s state (for health checks, logs
/// and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStatus {
    /// Whether it is connected and listening now.
    pub connected: bool,
    /// Successful connections so far (1 + reconnections).
    pub connections: u64,
    /// Notifications applied so far.
    pub notifications: u64,
    /// Times the caches were cleared because changes may have been missed.
    pub clears: u64,
}

/// Listens for [`CHANGES_CHANNEL`] notifications and invalidates caches.
/// See the [module docs](self) for how to start it next to
/// `Tenancy`.
///
/// The value is a handle to a background task: dropping it (or
/// [`PgChangeListener::shutdown`]) stops the task and closes its
/// connection.
///
/// ```
/// use tenancy::sql::{ChangeTargets, PgChangeListener};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let tenancy = tenancy::Tenancy::builder().store(tenancy::MemoryStore::new()).build()?;
/// # let validator = tenancy.validator().clone();
/// let options = "postgres://postgres@127.0.0.1/postgres".parse()?;
/// let listener = PgChangeListener::spawn(options, ChangeTargets::new().validator(validator));
/// listener.listening().await;
/// assert!(listener.status().connected);
/// listener.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PgChangeListener {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    status: watch::Receiver<ListenerStatus>,
}

impl PgChangeListener {
    /// Starts listening on the database `options` point at (the store's
    /// database: notifications do not cross databases) and invalidating
    /// `targets`. Connects in the background; see
    /// [`PgChangeListener::listening`].
    ///
    /// The connection's `application_name` is [`DEFAULT_APPLICATION_NAME`]
    /// unless `options` set one. A store's options are
    /// `(*store.pool().connect_options()).clone()`.
    ///
    /// Must be called within a Tokio runtime.
    pub fn spawn(options: PgConnectOptions, targets: ChangeTargets) -> Self {
        let options = if options.get_application_name().is_none() {
            options.application_name(DEFAULT_APPLICATION_NAME)
        } else {
            options
        };
        let (stop, stopped) = oneshot::channel();
        let (status_tx, status) = watch::channel(ListenerStatus::default());
        let task = tokio::spawn(run(options, targets, stopped, status_tx));
        Self {
            stop: Some(stop),
            task: Some(task),
            status,
        }
    }

    /// The current state.
    pub fn status(&self) -> ListenerStatus {
        *self.status.borrow()
    }

    /// Waits until the listener is connected and listening (returns at once
    /// when it already is). Waits forever while the database is
    /// unreachable, so wrap it in a timeout where that matters.
    pub async fn listening(&self) {
        let mut status = self.status.clone();
        // An error means the task ended (shut down): nothing to wait for.
        let _ = status.wait_for(|s| s.connected).await;
    }

    /// Stops listening and waits for the task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(err) = task.await
        {
            tracing::warn!(error = %err, "tenancy change listener task failed");
        }
    }
}

impl Drop for PgChangeListener {
    fn drop(&mut self) {
        // Dropping the sender wakes the task, which then stops cleanly.
        self.stop.take();
    }
}

/// The listener task: connect, apply notifications, reconnect.
async fn run(
    options: PgConnectOptions,
    targets: ChangeTargets,
    mut stopped: oneshot::Receiver<()>,
    status: watch::Sender<ListenerStatus>,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut failures: u32 = 0;
    loop {
        let connected = tokio::select! {
            _ = &mut stopped => break,
            connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(&options)) => connected,
        };
        let mut listener = match connected {
            Ok(Ok(listener)) => listener,
            failed => {
                let error = match failed {
                    Ok(Err(err)) => err.to_string(),
                    _ => format!("no answer within {CONNECT_TIMEOUT:?}"),
                };
                failures = failures.saturating_add(1);
                tracing::warn!(%error, attempt = failures, retry_in_ms = backoff.as_millis() as u64,
                    "tenancy change listener cannot connect; caches are cleared and refilled from the store");
                clear(&targets, &status);
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        failures = 0;
        backoff = FIRST_BACKOFF;
        // Whatever happened before this connection listened is unknown.
        connected_now(&targets, &status);
        tracing::info!(
            channel = CHANGES_CHANNEL,
            "tenancy change listener is listening"
        );
        let ended = serve(&mut listener, &targets, &status, &mut stopped).await;
        status.send_modify(|s| s.connected = false);
        if ended == Ended::Stopped {
            return;
        }
        // Changes may be missed until the next connection listens.
        clear(&targets, &status);
        // Drop the broken listener (and its pool) before connecting anew.
        drop(listener);
    }
    status.send_modify(|s| s.connected = false);
}

#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The handle asked to stop.
    Stopped,
    /// The connection is unusable: connect anew.
    Broken,
}

/// Applies notifications until told to stop or the connection breaks.
/// Checks the connection every [`KEEPALIVE`] so a silently dead one (no
/// FIN, no RST) is noticed.
async fn serve(
    listener: &mut PgListener,
    targets: &ChangeTargets,
    status: &watch::Sender<ListenerStatus>,
    stopped: &mut oneshot::Receiver<()>,
) -> Ended {
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let received = tokio::select! {
            _ = &mut *stopped => return Ended::Stopped,
            // `try_recv` is cancel safe: a partly read message stays buffered.
            _ = keepalive.tick() => {
                if let Err(error) = ping(listener).await {
                    tracing::warn!(%error, "tenancy change listener connection does not answer; reconnecting, caches are cleared");
                    return Ended::Broken;
                }
                continue;
            }
            received = listener.try_recv() => received,
        };
        match received {
            Ok(Some(notification)) => match crate::changes::parse(notification.payload()) {
                Some((kind, id, references)) => {
                    tracing::debug!(kind = ?kind, tenant_id = %id, "tenancy change received");
                    targets.apply(kind, &id, &references).await;
                    status.send_modify(|s| s.notifications += 1);
                }
                None => {
                    tracing::warn!(
                        payload = %notification.payload().chars().take(200).collect::<String>(),
                        "unreadable tenancy change notification; clearing caches"
                    );
                    clear(targets, status);
                }
            },
            // The connection was lost (sqlx reconnects on the next use):
            // notifications sent meanwhile are gone.
            Ok(None) => {
                tracing::warn!(
                    "tenancy change listener lost its connection; clearing caches and reconnecting"
                );
                status.send_modify(|s| s.connected = false);
                clear(targets, status);
                // Reconnect and LISTEN again now, so we know when it is back.
                let reconnected = tokio::select! {
                    _ = &mut *stopped => return Ended::Stopped,
                    reconnected = ping(listener) => reconnected,
                };
                if let Err(error) = reconnected {
                    tracing::warn!(%error, "tenancy change listener cannot reconnect; retrying");
                    return Ended::Broken;
                }
                connected_now(targets, status);
                tracing::info!(
                    channel = CHANGES_CHANNEL,
                    "tenancy change listener is listening again"
                );
            }
            Err(error) => {
                tracing::warn!(%error,
                    "tenancy change listener failed; reconnecting, caches are cleared");
                return Ended::Broken;
            }
        }
    }
}

/// A round trip on the listener's connection (reconnecting and re-issuing
/// `LISTEN` first if it was lost), bounded by [`CONNECT_TIMEOUT`].
async fn ping(listener: &mut PgListener) -> Result<(), String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, sqlx::query("SELECT 1").execute(listener)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
    }
}

/// A listener on its own one-connection pool, so a dead connection is
/// never handed back to anyone.
async fn connect(options: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.ignore_pool_close_event(true);
    // Report a lost connection at once; `serve` reconnects explicitly.
    listener.eager_reconnect(false);
    listener.listen(CHANGES_CHANNEL).await?;
    Ok(listener)
}

fn clear(targets: &ChangeTargets, status: &watch::Sender<ListenerStatus>) {
    targets.clear();
    status.send_modify(|s| s.clears += 1);
}

/// Clears the caches, then reports the (new) connection: whoever sees
/// `connected` also sees the cleared caches.
fn connected_now(targets: &ChangeTargets, status: &watch::Sender<ListenerStatus>) {
    targets.clear();
    status.send_modify(|s| {
        s.clears += 1;
        s.connections += 1;
        s.connected = true;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let change = Change::Tenant {
            id: "t-1".into(),
            slug: "acme".into(),
            previous_slug: Some("acme-old".into()),
        };
        let payload = change.payload();
        let parsed: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
        assert_eq!(
            parsed,
            serde_json::json!({"kind": "tenant", "id": "t-1", "slug": "acme", "previous_slug": "acme-old"})
        );
        // The exact bytes, which the `notify_*_sql` payloads reproduce
        // (tests/round_trips.rs checks what the server sends).
        assert_eq!(
            payload,
            r#"{"id":"t-1","kind":"tenant","previous_slug":"acme-old","slug":"acme"}"#
        );
        let (kind, id, refs) =
            crate::changes::parse(&payload).unwrap_or_else(|| panic!("{payload}"));
        assert_eq!(kind, crate::changes::ChangeKind::Tenant);
        assert_eq!(id.as_str(), "t-1");
        assert_eq!(refs, ["acme", "acme-old"]);

        let config = r#"{"id":"t-1","kind":"config","previous_slug":null,"slug":null}"#;
        let (kind, _, refs) = crate::changes::parse(config).unwrap_or_else(|| panic!("{config}"));
        assert_eq!(kind, crate::changes::ChangeKind::Config);
        assert!(refs.is_empty());

        let domain =
            r#"{"domain":"a.test","id":"t-1","kind":"domain","previous_slug":null,"slug":null}"#;
        let (kind, _, refs) = crate::changes::parse(domain).unwrap_or_else(|| panic!("{domain}"));
        assert_eq!(kind, crate::changes::ChangeKind::Domain);
        assert_eq!(refs, ["a.test"]);
    }

    #[test]
    fn the_store_notifies_on_the_channel() {
        let channel = format!("pg_notify('{CHANGES_CHANNEL}', ");
        for sql in [
            NOTIFY_SQL,
            notify_tenant_sql!("t.id", "t.slug", "NULL"),
            notify_config_sql!("t.id"),
            notify_domain_sql!("t.domain", "t.id"),
        ] {
            assert!(sql.contains(&channel), "{sql}");
        }
    }

    #[test]
    fn unreadable_payloads_are_refused() {
        for bad in [
            "",
            "garbage",
            "{}",
            r#"{"kind":"tenant"}"#,
            r#"{"kind":"other","id":"t-1"}"#,
            r#"{"kind":"tenant","id":"has space"}"#,
            r#"{"kind":"tenant","id":"t-1","slug":3}"#,
        ] {
            assert!(crate::changes::parse(bad).is_none(), "{bad}");
        }
    }
}
