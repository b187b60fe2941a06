//! The types the OpenAPI document describes the HTTP surface with: the
//! problem body, pages, path and header parameters, and the error
//! responses routes share. Handlers name them in `#[utoipa::path]`;
//! [`super::openapi`] assembles the document.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::{self, RefOr};

/// An RFC 9457 problem, the body of every error.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub(super) struct ProblemDoc {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    type_uri: String,
    /// The status's reason phrase.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What was wrong and what to do.
    detail: String,
    /// A stable snake_case code (`tenant_required`, `unknown_tenant`, …).
    code: String,
}

/// A page of rows of a CRUD resource.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub(super) struct RowsDoc {
    /// The rows: column name → value.
    items: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Rows matching the filters in all.
    total: u64,
}

/// A page of audit entries, newest first.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub(super) struct AuditPageDoc {
    items: Vec<tenancy::audit::AuditEntry>,
    /// Pass as `before` for the next page (absent on the last).
    next_before: Option<i64>,
}

/// `X-Actor`: who acts, for the audit log.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(super) struct ActorHeader {
    /// Who acts, for the audit log (1–64 of letters, digits, `.`, `_`, `@`, `-`).
    #[param(rename = "x-actor", pattern = r"^[A-Za-z0-9._@-]{1,64}$")]
    x_actor: Option<String>,
}

/// A tenant named in the path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(super) struct TenantPath {
    /// Tenant id or slug (1–64 of letters, digits, `-`, `_`).
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    tenant: String,
}

/// A job named in the path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(super) struct JobPath {
    /// The job's id.
    id: i64,
}

/// A domain named in the path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(super) struct DomainPath {
    /// The domain (ASCII labels of letters, digits and `-`, at least two).
    #[param(
        pattern = r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
    )]
    domain: String,
}

/// A tenant and a config key in the path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(super) struct ConfigPath {
    /// Tenant id or slug (1–64 of letters, digits, `-`, `_`).
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    tenant: String,
    /// Dotted config key (1–128 of letters, digits, `_`, `.`, `-`).
    #[param(pattern = r"^[A-Za-z0-9_.-]{1,128}$")]
    key: String,
}

/// The forwarded request's headers of `GET /resolve` (beside these, the
/// client's own: `X-Tenant-Id`, `Authorization`, `Host`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(super) struct ForwardedHeaders {
    /// The original request target (origin form, `/…`).
    #[param(
        rename = "x-original-uri",
        pattern = r"^/[A-Za-z0-9._~!$&'()*+,;=:@/%?\[\]-]{0,2047}$"
    )]
    x_original_uri: Option<String>,
    /// The original `Host`.
    #[param(
        rename = "x-forwarded-host",
        pattern = r"^[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?$"
    )]
    x_forwarded_host: Option<String>,
}

/// The problem response (`application/problem+json`, [`ProblemDoc`]) of
/// `description`.
fn problem_doc(description: &str) -> RefOr<openapi::Response> {
    openapi::ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            openapi::ContentBuilder::new()
                .schema(Some(openapi::Ref::from_schema_name("ProblemDoc")))
                .build(),
        )
        .build()
        .into()
}

/// Error responses, each a problem: one type per status and meaning (or
/// per set a family of routes shares), listed in the `responses(…)` of
/// `#[utoipa::path]` instead of repeating the tuple.
macro_rules! problems {
    ($($(#[$doc:meta])* $name:ident => [$(($status:literal, $description:literal)),+ $(,)?];)+) => {$(
        $(#[$doc])*
        pub(super) struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
                [$(($status.to_string(), problem_doc($description))),+]
                    .into_iter()
                    .collect()
            }
        }
    )+};
}

problems! {
    /// 401 of the admin API.
    AdminTokenRequired => [(401, "Missing or wrong admin token (the same whether the tenant exists or not)")];
    /// 503 of the admin API.
    StoreUnavailable => [(503, "The store is unavailable; retry")];
    /// 422 of the admin API.
    InvalidInput => [(422, "Invalid input (body, slug, key, X-Actor…)")];
    /// 409 of the admin API.
    Conflict => [(409, "Conflict: duplicate, invalid status transition, or tenant not active")];
    /// 500 of a lifecycle change.
    ProvisioningFailed => [(500, "Provisioning or deprovisioning failed; nothing half-done is kept")];
    /// What a change of a tenant may answer instead.
    TenantChangeErrors => [(401, "Missing or wrong admin token (the same whether the tenant exists or not)"), (404, "No such tenant"), (409, "Conflict: duplicate, invalid status transition, or tenant not active"), (422, "Invalid input (body, slug, key, X-Actor…)"), (503, "The store is unavailable; retry")];
    /// What a request about a tenant with input may answer instead.
    TenantInputErrors => [(401, "Missing or wrong admin token (the same whether the tenant exists or not)"), (404, "No such tenant"), (422, "Invalid input (body, slug, key, X-Actor…)"), (503, "The store is unavailable; retry")];
    /// What a read of a tenant may answer instead.
    TenantReadErrors => [(401, "Missing or wrong admin token (the same whether the tenant exists or not)"), (404, "No such tenant"), (503, "The store is unavailable; retry")];
    /// What a change of a domain may answer instead.
    DomainChangeErrors => [(401, "Missing or wrong admin token (the same whether the tenant exists or not)"), (404, "No such domain"), (422, "Invalid input (body, slug, key, X-Actor…)"), (503, "The store is unavailable; retry")];
    /// What a request about a job may answer instead.
    JobErrors => [(401, "Missing or wrong admin token (the same whether the job exists or not)"), (404, "No such job"), (409, "The job is not in a state this applies to"), (422, "Invalid input"), (503, "The store is unavailable; retry")];
    /// 409 of a CRUD write.
    DuplicateKey => [(409, "Duplicate key")];
    /// What every CRUD route of a tenant may answer instead.
    TenantRouteErrors => [
        (400, "A header naming the tenant (Host, X-Tenant-Id) is repeated"),
        (401, "No tenant named, or an invalid token"),
        (403, "The tenant is unknown, not active, not among the token's memberships, or the request names different tenants"),
        (404, "No such resource or row"),
        (422, "Invalid body, filter or column"),
        (429, "Over the tenant's rate limit"),
        (503, "Store or database unavailable, or the tenant's writes are paused; retry"),
    ];
}
