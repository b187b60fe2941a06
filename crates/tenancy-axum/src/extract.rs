//! Extractors: [`Tenant`] (required) and `Option<Tenant>`.

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;
use tenancy_core::TenantInfo;

use crate::outcome::{TenantError, TenantState};

/// The validated, active tenant of the request.
///
/// As an extractor it answers 401 when the request names no tenant, 403
/// when the tenant is unknown, not active or not among the user's
/// memberships. `Option<Tenant>` is `None` only when no tenant was named;
/// a named but refused tenant still answers 403 (a refused tenant never
/// silently becomes "no tenant").
///
/// Derefs to [`TenantInfo`].
///
/// ```
/// use tenancy::Tenant;
/// async fn whoami(tenant: Tenant) -> String {
///     format!("{} ({})", tenant.slug, tenant.id)
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant(pub Arc<TenantInfo>);

impl Tenant {
    /// The shared tenant record.
    pub fn info(&self) -> &Arc<TenantInfo> {
        &self.0
    }
}

impl Deref for Tenant {
    type Target = TenantInfo;
    fn deref(&self) -> &TenantInfo {
        &self.0
    }
}

fn state(parts: &Parts) -> Result<&TenantState, TenantError> {
    parts
        .extensions
        .get::<TenantState>()
        .ok_or(TenantError::LayerMissing)
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = TenantError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match state(parts)? {
            TenantState::Resolved(t) => Ok(Tenant(t.clone())),
            TenantState::Refused(e) => Err(e.clone()),
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Tenant {
    type Rejection = TenantError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match state(parts)? {
            TenantState::Resolved(t) => Ok(Some(Tenant(t.clone()))),
            TenantState::Refused(TenantError::NotIdentified(_)) => Ok(None),
            TenantState::Refused(e) => Err(e.clone()),
        }
    }
}
