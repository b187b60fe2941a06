//! [`Setting`]: a per-tenant config value as an axum extractor.

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use serde::de::DeserializeOwned;
use tenancy_axum::{Problem, Tenant, TenantError};
use tenancy_core::ConfigValueError;

use crate::Tenancy;

/// A per-tenant setting: the config key it lives under and the type of its
/// value. Implement it once per setting; read it in handlers with
/// [`Setting`].
///
/// The value is the tenant's override (`tenancy config set`, the admin API
/// or [`TenantConfigService::set`](crate::TenantConfigService::set)), else
/// the application default in `overrides.defaults`.
pub trait TenantSetting: DeserializeOwned + Send + 'static {
    /// The dotted key, as in `overrides.defaults` (`"notes.max_length"`).
    const KEY: &'static str;
}

/// Extractor: the request tenant's value of a [`TenantSetting`].
///
/// Needs `Tenancy` in the router's state (`Tenancy: FromRef<S>`, so your
/// own state type with a `Tenancy` field and `#[derive(FromRef)]` works).
/// Reads go through the config-override cache, so a hit never reaches the
/// store. Refusals are problem+json:
///
/// | Situation | Status | `code` |
/// |---|---|---|
/// | no tenant, or one that may not be served | 401 / 403 | as [`Tenant`] |
/// | no override and no default | 500 | `setting_missing` |
/// | the value is not a `T` | 500 | `setting_invalid` |
/// | the config store is down | 503 | `config_store_unavailable` |
///
/// `Option<Setting<T>>` is `None` when the setting has no value.
///
/// ```
/// use axum::{Router, body::Body, routing::get};
/// use http::Request;
/// use serde::Deserialize;
/// use serde_json::json;
/// use tenancy::{MemoryStore, NewTenant, Setting, Tenancy, TenancyConfig, TenantSetting};
/// use tower::ServiceExt;
///
/// /// Longest note a tenant may store.
/// #[derive(Deserialize)]
/// struct MaxNoteLength(usize);
/// impl TenantSetting for MaxNoteLength {
///     const KEY: &'static str = "notes.max_length";
/// }
///
/// async fn limits(Setting(MaxNoteLength(max)): Setting<MaxNoteLength>) -> String {
///     format!("notes up to {max} characters")
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = TenancyConfig::default();
/// config.overrides.defaults.insert("notes.max_length".into(), json!(280));
/// let tenancy = Tenancy::builder().config(config).store(MemoryStore::new()).build()?;
/// let acme = tenancy.lifecycle().create(NewTenant::new("acme", "Acme")?).await?;
/// tenancy.lifecycle().create(NewTenant::new("globex", "Globex")?).await?;
/// tenancy.overrides().set(&acme.id, "notes.max_length", json!(10_000)).await?;
///
/// let app = Router::new()
///     .route("/limits", get(limits))
///     .layer(tenancy.layer())
///     .with_state(tenancy);
///
/// let ask = |tenant: &str| Request::get("/limits").header("x-tenant-id", tenant).body(Body::empty());
/// let body = |r: axum::response::Response| async {
///     axum::body::to_bytes(r.into_body(), 1024).await.map(|b| String::from_utf8_lossy(&b).into_owned())
/// };
/// assert_eq!(body(app.clone().oneshot(ask("acme")?).await?).await?, "notes up to 10000 characters");
/// assert_eq!(body(app.clone().oneshot(ask("globex")?).await?).await?, "notes up to 280 characters");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting<T>(pub T);

/// Why a [`Setting`] could not be extracted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingError {
    /// The request has no tenant that may be served.
    #[error(transparent)]
    Tenant(#[from] TenantError),
    /// Neither the tenant nor the application defaults set the key.
    #[error(
        "setting `{key}` has no value for this tenant: add it to overrides.defaults, or set it for the tenant"
    )]
    Missing {
        /// The key.
        key: &'static str,
    },
    /// The value is not of the setting's type, or the store failed.
    #[error(transparent)]
    Value(#[from] ConfigValueError),
}

impl IntoResponse for SettingError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::Tenant(error) => return error.to_problem().into_response(),
            Self::Missing { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "setting_missing"),
            Self::Value(ConfigValueError::Store(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "config_store_unavailable")
            }
            Self::Value(_) => (StatusCode::INTERNAL_SERVER_ERROR, "setting_invalid"),
        };
        // The application's fault: say so in the log as well.
        tracing::warn!(error = %self, "per-tenant setting refused");
        let problem = Problem::new(status, code, self.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            problem.retry_after(1).into_response()
        } else {
            problem.into_response()
        }
    }
}

async fn value<T: TenantSetting, S>(parts: &mut Parts, state: &S) -> Result<Option<T>, SettingError>
where
    Tenancy: FromRef<S>,
    S: Send + Sync,
{
    let tenant = <Tenant as FromRequestParts<S>>::from_request_parts(parts, state).await?;
    let tenancy = Tenancy::from_ref(state);
    Ok(tenancy.overrides().get_as::<T>(&tenant.id, T::KEY).await?)
}

impl<S, T> FromRequestParts<S> for Setting<T>
where
    T: TenantSetting,
    Tenancy: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = SettingError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        value::<T, S>(parts, state)
            .await?
            .map(Setting)
            .ok_or(SettingError::Missing { key: T::KEY })
    }
}

impl<S, T> OptionalFromRequestParts<S> for Setting<T>
where
    T: TenantSetting,
    Tenancy: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = SettingError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(value::<T, S>(parts, state).await?.map(Setting))
    }
}

/// Extractor: what the request's tenant may do (SPEC E2): its plan's
/// features and limits with its own overrides (`features.<name>`,
/// `limits.<name>`), read through the override cache. Derefs to
/// [`TenantEntitlements`](crate::plans::TenantEntitlements)
/// (`has(feature)`, `limit(name)`, `plan()`).
///
/// Needs `Tenancy` in the router's state, as [`Setting`] does. Refused as
/// [`Tenant`] is when the request has no tenant; 503
/// `config_store_unavailable` when the overrides cannot be read.
#[derive(Debug, Clone)]
pub struct Entitlements(pub tenancy_core::plans::TenantEntitlements);

impl std::ops::Deref for Entitlements {
    type Target = tenancy_core::plans::TenantEntitlements;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<S> FromRequestParts<S> for Entitlements
where
    Tenancy: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let tenant = <Tenant as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let tenancy = Tenancy::from_ref(state);
        tenancy
            .entitlements(&tenant)
            .await
            .map(Entitlements)
            .map_err(|e| {
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "config_store_unavailable",
                    format!("cannot read the tenant's entitlements: {e}"),
                )
                .retry_after(1)
                .into_response()
            })
    }
}
