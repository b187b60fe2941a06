//! `GET /metrics`: Prometheus text format, encoded by
//! `prometheus-client` from the counters the toolkit keeps in atomics.
//! Behind the admin token: per-tenant series name tenants.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tenancy::metrics::HistogramSnapshot;

use super::{ServerState, problem};

/// What one scrape reads.
struct Snapshot {
    state: ServerState,
    /// Jobs by kind and state, and the tenants with the most queued (read
    /// before encoding: the collector cannot wait).
    jobs: Option<(tenancy_sql::jobs::JobStats, Vec<(tenancy::TenantId, u64)>)>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").finish_non_exhaustive()
    }
}

fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    snapshot: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    // prometheus-client wants counts per bucket, and adds them up itself.
    let mut previous = 0;
    let mut buckets: Vec<(f64, u64)> = snapshot
        .buckets
        .iter()
        .map(|(le, cumulative)| {
            let count = cumulative - previous;
            previous = *cumulative;
            (*le, count)
        })
        .collect();
    buckets.push((f64::MAX, snapshot.count - previous));
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    metric.encode_histogram::<NoLabelSet>(snapshot.sum_secs, snapshot.count, &buckets, None)
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = &self.state;
        let requests = &state.metrics;
        {
            let mut family = encoder.encode_descriptor(
                "tenancy_requests",
                "Requests through the tenant layer, by outcome (status and problem code).",
                None,
                MetricType::Counter,
            )?;
            for ((status, code), value) in
                tenancy::metrics::OUTCOMES.iter().zip(requests.outcomes())
            {
                let status = status.to_string();
                let labels = [("status", status.as_str()), ("code", *code)];
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        histogram(
            &mut encoder,
            "tenancy_request_duration_seconds",
            "Time through the tenant layer, the handler included, for one request in 8.",
            &requests.latency_snapshot(),
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "tenancy_tenant_requests",
                "Requests per tenant: a series for each of the first server.metrics_tenants tenants seen, the rest as tenant_id=\"_other\".",
                None,
                MetricType::Counter,
            )?;
            for (tenant, value) in requests.tenants() {
                let labels = [("tenant_id", tenant.as_str())];
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let validator = state.app.tenancy.validator().stats();
        counter(
            &mut encoder,
            "tenancy_validator_cache_hits",
            "Validations answered from the cache.",
            validator.hits,
        )?;
        counter(
            &mut encoder,
            "tenancy_validator_cache_misses",
            "Validations not in the cache.",
            validator.misses,
        )?;
        counter(
            &mut encoder,
            "tenancy_store_lookups",
            "Tenant lookups that reached the store.",
            validator.store_lookups,
        )?;
        counter(
            &mut encoder,
            "tenancy_cache_invalidations",
            "Validator cache invalidations (changes here and from other instances).",
            validator.invalidations,
        )?;
        if let Some(listener) = &state.listener {
            let status = listener.status();
            counter(
                &mut encoder,
                "tenancy_listener_reconnects",
                "Times the change listener had to connect again.",
                status.connections.saturating_sub(1),
            )?;
            counter(
                &mut encoder,
                "tenancy_listener_notifications",
                "Change notifications applied.",
                status.notifications,
            )?;
            let connected = ConstGauge::new(i64::from(status.connected));
            connected.encode(encoder.encode_descriptor(
                "tenancy_listener_connected",
                "Whether the change listener is connected (1) or not (0).",
                None,
                connected.metric_type(),
            )?)?;
        }
        if let Some((stats, by_tenant)) = &self.jobs {
            {
                let mut family = encoder.encode_descriptor(
                    "tenancy_jobs",
                    "Background jobs by kind and state.",
                    None,
                    MetricType::Gauge,
                )?;
                for (kind, job_state, n) in &stats.counts {
                    let labels = [("kind", kind.as_str()), ("state", job_state.as_str())];
                    ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX))
                        .encode(family.encode_family(&labels)?)?;
                }
            }
            let mut family = encoder.encode_descriptor(
                "tenancy_jobs_queued_by_tenant",
                "Queued jobs of the server.metrics_tenants tenants with the most.",
                None,
                MetricType::Gauge,
            )?;
            for (tenant, n) in by_tenant {
                let labels = [("tenant_id", tenant.as_str())];
                ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        if let Some(worker) = &state.jobs {
            use std::sync::atomic::Ordering::Relaxed;
            let m = worker.metrics();
            counter(
                &mut encoder,
                "tenancy_job_runs",
                "Job runs this server started.",
                m.started.load(Relaxed),
            )?;
            counter(
                &mut encoder,
                "tenancy_job_runs_succeeded",
                "Job runs of this server that succeeded.",
                m.succeeded.load(Relaxed),
            )?;
            counter(
                &mut encoder,
                "tenancy_job_runs_failed",
                "Job runs of this server that failed (retried or dead).",
                m.failed.load(Relaxed),
            )?;
            counter(
                &mut encoder,
                "tenancy_job_start_wait_milliseconds",
                "Sum over runs of the time from a job's run_at (or enqueue) to its start: divide by tenancy_job_runs for the mean.",
                m.latency_ms_sum.load(Relaxed),
            )?;
        }
        histogram(
            &mut encoder,
            "tenancy_provisioning_duration_seconds",
            "Time to provision a tenant (schema or database, and its migrations).",
            &state
                .app
                .tenancy
                .lifecycle()
                .provisioning_durations()
                .snapshot(),
        )?;
        histogram(
            &mut encoder,
            "tenancy_migration_duration_seconds",
            "Time to apply migrations to one tenant, for runs that applied any.",
            &tenancy_sql::migrate::durations().snapshot(),
        )?;
        Ok(())
    }
}

/// `GET /metrics`.
#[utoipa::path(get,
    path = "/metrics",
    tag = "meta",
    summary = "Prometheus (OpenMetrics) text",
    responses((status = 200, description = "Metrics", content_type = "application/openmetrics-text", body = String),
        crate::http::docs::AdminTokenRequired),
    security(("admin_token" = [])))]
pub(super) async fn metrics(State(state): State<ServerState>) -> Response {
    let jobs = &state.app.jobs;
    let limit = u32::try_from(state.app.config.server.metrics_tenants).unwrap_or(u32::MAX);
    let jobs = match (jobs.stats().await, jobs.queued_by_tenant(limit).await) {
        (Ok(stats), Ok(by_tenant)) => Some((stats, by_tenant)),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "metrics: cannot read the job queue");
            None
        }
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot { state, jobs }));
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        return problem(StatusCode::INTERNAL_SERVER_ERROR, "metrics_failed", e);
    }
    let mut res = text.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    res
}

/// Kept so the listener's status can be read at scrape time.
pub(crate) type Listener = Option<Arc<tenancy_sql::PgChangeListener>>;
