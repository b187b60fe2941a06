//! Extractors: [`Tenant`] (required), `Option<Tenant>`, and [`Principal`]
//! (who calls, and their role in the tenant).

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

/// Where the layer read the token's memberships (`resolution.membership_claim`
/// or `membership_claim_path`): put beside the claims for [`Principal`].
#[derive(Debug, Clone)]
pub(crate) struct MembershipPath(pub(crate) Arc<str>);

/// Who is calling: the verified token's subject, the role it gives in the
/// request's tenant, and all of its claims.
///
/// As an extractor it needs the tenant (it answers as [`Tenant`] does when
/// there is none) and a verified token with a `sub` claim (401
/// `token_required` without a token, 401 `invalid_token` without `sub`).
/// The role comes from the membership claim: the `role` of the
/// `{tenant, role}` object naming this tenant (by id or slug), or the
/// `role`/`rol` claim beside a single nested membership (Clerk's `o.rol`,
/// WorkOS's `role`); `None` when the claim gives no role.
///
/// ```
/// use tenancy::Principal;
/// async fn me(who: Principal) -> String {
///     format!("{} ({})", who.subject, who.role.as_deref().unwrap_or("no role"))
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The token's `sub` claim.
    pub subject: String,
    /// The role in the request's tenant, when the token gives one.
    pub role: Option<String>,
    /// Every claim of the verified token.
    pub claims: tenancy_core::VerifiedClaims,
}

impl Principal {
    /// The principal of `claims` in `tenant`, reading memberships at
    /// `membership_path`.
    ///
    /// ```
    /// use tenancy::{NewTenant, Principal, VerifiedClaims};
    /// let acme = NewTenant::new("acme", "Acme").unwrap().into_info(Default::default());
    /// let claims = VerifiedClaims::new(serde_json::json!({
    ///     "sub": "user_1",
    ///     "tenants": [{"tenant": "acme", "role": "admin"}],
    /// }).as_object().unwrap().clone());
    /// let who = Principal::of(claims, &acme, "tenants").unwrap();
    /// assert_eq!((who.subject.as_str(), who.role.as_deref()), ("user_1", Some("admin")));
    /// ```
    pub fn of(
        claims: tenancy_core::VerifiedClaims,
        tenant: &TenantInfo,
        membership_path: &str,
    ) -> Result<Self, TenantError> {
        let subject = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| TenantError::InvalidToken("the token has no `sub` claim".into()))?
            .to_owned();
        let role = claims
            .membership_list(membership_path)
            .map_err(|e| TenantError::InvalidToken(e.to_string()))?
            .and_then(|list| {
                list.into_iter()
                    .find(|m| tenant.is_named_by(m.tenant))
                    .and_then(|m| m.role.map(str::to_owned))
            });
        Ok(Self {
            subject,
            role,
            claims,
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = TenantError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let tenant = <Tenant as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        let claims = parts
            .extensions
            .get::<tenancy_core::VerifiedClaims>()
            .ok_or(TenantError::TokenRequired)?
            .clone();
        let path = parts
            .extensions
            .get::<MembershipPath>()
            .map_or("tenants", |p| &p.0);
        Self::of(claims, &tenant, path)
    }
}
