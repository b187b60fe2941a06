//! [`RequireTenantLayer`]: protects a whole router.
//!
//! Requests without a valid tenant never reach the inner service: they get
//! the same 401/403 problem response as the [`Tenant`](crate::Tenant)
//! extractor gives. Put it inside (after) the
//! [`TenantLayer`](crate::TenantLayer).
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use tenancy::{RequireTenantLayer, TenantLayer};
//! use tenancy::{MemoryStore, ResolverChain, Validator};
//!
//! # let layer = TenantLayer::new(ResolverChain::new(), Validator::new(Arc::new(MemoryStore::new()), &Default::default()));
//! let api: Router = Router::new()
//!     .route("/notes", get(|| async { "only for tenants" }))
//!     .layer(RequireTenantLayer::new());
//! let app: Router = Router::new().nest("/api", api).layer(layer);
//! ```

mod future;

use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use http::Request;
use tower_layer::Layer;
use tower_service::Service;

pub use future::ResponseFuture;

use crate::outcome::{TenantError, TenantState};

/// Refuses requests without a valid tenant.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequireTenantLayer;

impl RequireTenantLayer {
    /// The guard layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for RequireTenantLayer {
    type Service = RequireTenant<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireTenant { inner }
    }
}

/// The service made by [`RequireTenantLayer`].
#[derive(Debug, Clone)]
pub struct RequireTenant<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for RequireTenant<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match req.extensions().get::<TenantState>() {
            Some(TenantState::Resolved(_)) => ResponseFuture::inner(self.inner.call(req)),
            Some(TenantState::Refused(error)) => {
                ResponseFuture::refused(error.clone().into_response())
            }
            None => ResponseFuture::refused(TenantError::LayerMissing.into_response()),
        }
    }
}
