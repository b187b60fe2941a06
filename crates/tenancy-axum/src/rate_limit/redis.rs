//! The Redis backend: one GCRA cell per tenant in Redis, shared by every
//! instance, updated by one atomic Lua script.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tenancy_core::{TenantId, cache_key};
use tokio::time::Instant;

use super::gcra;

/// GCRA in Redis, in microseconds of the Redis server's clock (`TIME`), so
/// instances with skewed clocks still share one bucket. Returns
/// `{1, 0}` when the request conforms (and moves the TAT), or `{0, wait}`
/// with the microseconds until it would. The key expires once the bucket
/// is full again, so idle tenants leave nothing behind.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return {0, wait} end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
";

/// How long (ms) a failed Redis call keeps the limiter on in-process
/// buckets before Redis is tried again.
const RETRY_AFTER_FAILURE_MS: u64 = 1_000;

/// Redis could not be used as a rate-limit backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisBackendError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL: {0} (expected redis://host:port[/db])")]
    InvalidUrl(String),
    /// Redis did not answer.
    #[error("cannot reach Redis at {url}: {reason}")]
    Unreachable {
        /// The URL, without credentials.
        url: String,
        /// The client's message.
        reason: String,
    },
}

/// Rate limits shared by every instance through one Redis.
///
/// Keys are `t:{tenant_id}:ratelimit:{scope}` (see
/// [`tenancy::cache_key()`](tenancy_core::cache_key())); the scope is `default` unless set with
/// [`RedisBackend::scope`], so two limiters of one application can share a
/// Redis. Each key holds one number and expires when the tenant's bucket is
/// full again.
///
/// When Redis fails or does not answer within the timeout (default
/// 100 ms), the request is limited by the in-process buckets instead, a
/// warning is logged once per outage, and Redis is tried again a second
/// later. Rate limiting prefers availability to strictness here: during an
/// outage each instance enforces the limit on its own. Tenant isolation
/// does not depend on it.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    script: redis::Script,
    scope: String,
    timeout: Duration,
    origin: Instant,
    /// Milliseconds since `origin` before which Redis is not tried.
    skip_until_ms: AtomicU64,
    degraded: AtomicBool,
}

impl RedisBackend {
    /// Connects to `url` (`redis://127.0.0.1:6379`). Fails when the URL is
    /// invalid or Redis does not answer now; after that, outages fall back
    /// to in-process limits and the connection is re-established in the
    /// background.
    pub async fn connect(url: &str) -> Result<Self, RedisBackendError> {
        let client =
            redis::Client::open(url).map_err(|e| RedisBackendError::InvalidUrl(e.to_string()))?;
        let timeout = Duration::from_millis(100);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2);
        let shown = redacted(url);
        let mut conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| RedisBackendError::Unreachable {
                url: shown.clone(),
                reason: e.to_string(),
            })?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| RedisBackendError::Unreachable {
                url: shown,
                reason: e.to_string(),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                script: redis::Script::new(SCRIPT),
                scope: "default".to_owned(),
                timeout,
                origin: Instant::now(),
                skip_until_ms: AtomicU64::new(0),
                degraded: AtomicBool::new(false),
            }),
        })
    }

    /// Names this limiter in its keys (`t:{tenant}:ratelimit:{scope}`).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.inner_mut().scope = scope.into();
        self
    }

    /// How long to wait for Redis before falling back (default 100 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.inner_mut().timeout = timeout;
        self
    }

    /// The Redis key holding `tenant`'s bucket.
    pub fn key(&self, tenant: &TenantId) -> String {
        cache_key(tenant, &["ratelimit", self.inner.scope.as_str()])
    }

    /// Takes one token for `tenant` in Redis. `None` when Redis cannot be
    /// used now (the caller falls back to in-process buckets).
    pub(crate) async fn check(
        &self,
        tenant: &TenantId,
        rps: NonZeroU32,
    ) -> Option<Result<(), Duration>> {
        let inner = &*self.inner;
        let now_ms = u64::try_from(inner.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        if now_ms < inner.skip_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let (interval, tolerance) = gcra::params(rps, 1_000_000);
        let mut conn = inner.conn.clone();
        let mut invocation = inner.script.key(self.key(tenant));
        invocation.arg(interval).arg(tolerance);
        let reply = tokio::time::timeout(
            inner.timeout,
            invocation.invoke_async::<(i64, i64)>(&mut conn),
        )
        .await;
        let failure = match reply {
            Ok(Ok((allowed, wait_us))) => {
                if inner.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: rate limits are shared again");
                }
                return Some(if allowed == 1 {
                    Ok(())
                } else {
                    Err(Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)))
                });
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", inner.timeout),
        };
        inner.skip_until_ms.store(
            now_ms.saturating_add(RETRY_AFTER_FAILURE_MS),
            Ordering::Relaxed,
        );
        if !inner.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %failure,
                "Redis rate limiting unavailable: falling back to in-process limits per instance"
            );
        } else {
            tracing::debug!(error = %failure, "Redis rate limiting still unavailable");
        }
        None
    }

    fn inner_mut(&mut self) -> &mut Inner {
        if Arc::get_mut(&mut self.inner).is_none() {
            let old = &self.inner;
            self.inner = Arc::new(Inner {
                conn: old.conn.clone(),
                script: redis::Script::new(SCRIPT),
                scope: old.scope.clone(),
                timeout: old.timeout,
                origin: old.origin,
                skip_until_ms: AtomicU64::new(0),
                degraded: AtomicBool::new(false),
            });
        }
        Arc::get_mut(&mut self.inner).unwrap_or_else(|| unreachable!("just made unique"))
    }
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("scope", &self.inner.scope)
            .field("timeout", &self.inner.timeout)
            .field("degraded", &self.inner.degraded.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// `url` without a password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redacted("redis://:pw@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
