//! Background jobs that keep their tenant (SPEC J): the domain types. The
//! durable queue and the worker are in `tenancy_sql::jobs` (PostgreSQL
//! and SQLite).
//!
//! A job is a serde payload of a kind ([`Job::KIND`]) for one tenant. It
//! moves through [`JobState`]s: `queued` → `running` → `done`, or back to
//! `queued` with a backoff after a failure, `dead` after its last attempt;
//! `cancelled` by an operator; `dropped` when its tenant was deleted.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::tenant::TenantId;

/// A kind of job: its payload type and its stable name.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// struct SendInvoice { invoice: u64 }
/// impl tenancy::jobs::Job for SendInvoice {
///     const KIND: &'static str = "send_invoice";
/// }
/// ```
pub trait Job: Serialize + DeserializeOwned + Send + 'static {
    /// The kind's name, as stored with each job (keep it stable).
    const KIND: &'static str;
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its `run_at`, a worker, or its tenant to be active.
    Queued,
    /// Claimed by a worker, under a lease.
    Running,
    /// Ran to success.
    Done,
    /// Failed on its last attempt (see its `last_error`).
    Dead,
    /// Cancelled before it ran.
    Cancelled,
    /// Its tenant was deleted before it ran.
    Dropped,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 6] = [
        Self::Queued,
        Self::Running,
        Self::Done,
        Self::Dead,
        Self::Cancelled,
        Self::Dropped,
    ];

    /// The state's name (`queued`, …), as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
            Self::Dropped => "dropped",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is none of [`JobState::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state \"{0}\": one of queued, running, done, dead, cancelled, dropped")]
pub struct UnknownJobState(pub String);

impl std::str::FromStr for JobState {
    type Err = UnknownJobState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownJobState(s.chars().take(32).collect()))
    }
}

/// How a job is enqueued: when, how many attempts, and an idempotency key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOptions {
    /// Not before this time (Unix milliseconds); default: now.
    pub run_at_ms: Option<i64>,
    /// Runs before it is `dead`; default `jobs.max_attempts`.
    pub max_attempts: Option<u32>,
    /// A second job of the tenant with this key (while the first is kept)
    /// is not enqueued: the first one's id is returned.
    pub idempotency_key: Option<String>,
}

impl JobOptions {
    /// Runs `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        let delay = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        self.run_at_ms = Some(now_ms().saturating_add(delay));
        self
    }

    /// Runs at most `attempts` times.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// Drops duplicates of this key for the tenant.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// One job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Its id.
    pub id: i64,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its kind ([`Job::KIND`]).
    pub kind: String,
    /// Its payload.
    pub payload: serde_json::Value,
    /// Where it is.
    pub state: JobState,
    /// Runs started so far.
    pub attempts: u32,
    /// Runs before it is `dead`.
    pub max_attempts: u32,
    /// Not before (Unix ms).
    pub run_at_ms: i64,
    /// The error of its last failed run.
    pub last_error: Option<String>,
    /// What its successful run returned.
    pub result: Option<serde_json::Value>,
    /// Its idempotency key.
    pub idempotency_key: Option<String>,
    /// Enqueued (Unix ms).
    pub created_at_ms: i64,
    /// Its last run started (Unix ms).
    pub started_at_ms: Option<i64>,
    /// It ended: done, dead, cancelled or dropped (Unix ms).
    pub finished_at_ms: Option<i64>,
}

/// Which jobs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only this tenant's.
    pub tenant: Option<TenantId>,
    /// Only in this state.
    pub state: Option<JobState>,
    /// At most this many, newest first (default 50, at most 1000).
    pub limit: Option<u32>,
}

impl JobFilter {
    /// The number of jobs to list.
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(50).clamp(1, 1000)
    }
}

/// Jobs by state and kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStats {
    /// `(kind, state, count)`, sorted.
    pub counts: Vec<(String, JobState, u64)>,
}

impl JobStats {
    /// Jobs in `state`, of every kind.
    pub fn in_state(&self, state: JobState) -> u64 {
        self.counts
            .iter()
            .filter(|(_, s, _)| *s == state)
            .map(|(_, _, n)| n)
            .sum()
    }
}

/// The delay before attempt `attempt + 1` after `attempt` failed runs:
/// `base` doubled at each attempt, at most an hour.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(20);
    base.saturating_mul(factor).min(Duration::from_secs(3600))
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let base = Duration::from_secs(1);
        assert_eq!(backoff(base, 1), Duration::from_secs(1));
        assert_eq!(backoff(base, 2), Duration::from_secs(2));
        assert_eq!(backoff(base, 4), Duration::from_secs(8));
        assert_eq!(backoff(base, 40), Duration::from_secs(3600));
    }

    #[test]
    fn states_round_trip_and_unknown_ones_are_refused() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        assert!("finished".parse::<JobState>().is_err());
    }
}
