//! [`RequireFeatureLayer`]: routes only tenants whose plan (or own
//! override) includes a feature may reach (SPEC E2).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use http::{Request, StatusCode};
use tenancy_core::TenantInfo;
use tower_layer::Layer;
use tower_service::Service;

use crate::outcome::{TenantError, TenantState};
use crate::problem::Problem;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Answers whether a tenant has a feature: `Ok(true)` lets the request
/// through, `Ok(false)` refuses it with 403 `feature_not_in_plan`, `Err`
/// answers with that problem (a store that is down: 503).
pub type FeatureCheck =
    Arc<dyn Fn(Arc<TenantInfo>, Arc<str>) -> BoxFuture<Result<bool, Problem>> + Send + Sync>;

/// Refuses requests whose tenant lacks a feature: 403 problem+json
/// `feature_not_in_plan` naming the feature and the tenant's plan. Put it
/// inside the [`TenantLayer`](crate::TenantLayer) (a request it did not
/// resolve is refused as the `Tenant` extractor would). `tenancy`'s
/// `Tenancy::require_feature` builds one from the configured plans.
#[derive(Clone)]
pub struct RequireFeatureLayer {
    feature: Arc<str>,
    gate: TenantGateLayer,
}

impl RequireFeatureLayer {
    /// Requires `feature`, as `check` tells.
    pub fn new(feature: impl Into<Arc<str>>, check: FeatureCheck) -> Self {
        let feature: Arc<str> = feature.into();
        let required = feature.clone();
        let gate = TenantGateLayer::new(Arc::new(move |tenant| {
            let (check, feature) = (check.clone(), required.clone());
            Box::pin(async move {
                match check(tenant.clone(), feature.clone()).await {
                    Ok(true) => None,
                    Ok(false) => Some(not_in_plan(&tenant, &feature)),
                    Err(problem) => Some(problem),
                }
            })
        }));
        Self { feature, gate }
    }
}

impl std::fmt::Debug for RequireFeatureLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireFeatureLayer")
            .field("feature", &self.feature)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RequireFeatureLayer {
    type Service = TenantGateService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        self.gate.layer(inner)
    }
}

/// The 403 of a tenant without `feature`.
pub fn not_in_plan(tenant: &TenantInfo, feature: &str) -> Problem {
    let plan = tenant.plan.as_deref().unwrap_or("(none)");
    Problem::new(
        StatusCode::FORBIDDEN,
        "feature_not_in_plan",
        format!(
            "feature `{feature}` is not in plan `{plan}` of tenant {}: change its plan, or set its \
             config key features.{feature} to true",
            tenant.slug
        ),
    )
    .with("feature", feature)
    .with("plan", tenant.plan.as_deref())
}

/// The 403 `quota_exceeded` of a write or request past the tenant's limit
/// `limit_name` (`rows.notes`, `requests_per_month`): `limit` and `used`
/// are members of the problem, for programs.
pub fn quota_exceeded(tenant: &TenantInfo, limit_name: &str, limit: u64, used: u64) -> Problem {
    let plan = tenant.plan.as_deref().unwrap_or("(none)");
    Problem::new(
        StatusCode::FORBIDDEN,
        "quota_exceeded",
        format!(
            "tenant {} has used {used} of its {limit_name} limit of {limit} (plan `{plan}`): \
             move it to a larger plan, or raise its config key limits.{limit_name}",
            tenant.slug
        ),
    )
    .with("limit_name", limit_name)
    .with("limit", limit)
    .with("used", used)
    .with("plan", tenant.plan.as_deref())
}

/// Decides about a request's tenant: `None` lets the request through,
/// `Some(problem)` answers with it.
pub type TenantGate = Arc<dyn Fn(Arc<TenantInfo>) -> BoxFuture<Option<Problem>> + Send + Sync>;

/// Lets a request through only when `gate` says nothing against its
/// tenant; the monthly request quota (`tenancy`'s
/// `Tenancy::request_quota`) is one. Put it inside the
/// [`TenantLayer`](crate::TenantLayer).
#[derive(Clone)]
pub struct TenantGateLayer {
    gate: TenantGate,
}

impl TenantGateLayer {
    /// A layer asking `gate`.
    pub fn new(gate: TenantGate) -> Self {
        Self { gate }
    }
}

impl std::fmt::Debug for TenantGateLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantGateLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for TenantGateLayer {
    type Service = TenantGateService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TenantGateService {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// The service of [`TenantGateLayer`].
#[derive(Clone)]
pub struct TenantGateService<S> {
    inner: S,
    gate: TenantGate,
}

impl<S: std::fmt::Debug> std::fmt::Debug for TenantGateService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantGateService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for TenantGateService<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = self.gate.clone();
        Box::pin(async move {
            let tenant = match req.extensions().get::<TenantState>() {
                Some(TenantState::Resolved(tenant)) => tenant.clone(),
                Some(TenantState::Refused(error)) => return Ok(error.clone().into_response()),
                None => return Ok(TenantError::LayerMissing.into_response()),
            };
            match gate(tenant).await {
                None => inner.call(req).await,
                Some(problem) => Ok(problem.into_response()),
            }
        })
    }
}
