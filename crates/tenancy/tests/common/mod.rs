//! Test support shared by the tenancy test binaries.

#![allow(dead_code, clippy::unwrap_used)]

use tenancy::{Tenancy, TenantInfo};

#[path = "../../../tenancy-core/tests/common/tenants.rs"]
mod tenants;
#[allow(unused_imports)]
pub use tenants::*;

/// Creates (and activates) the tenant `slug` named `name`.
pub async fn create(tenancy: &Tenancy, slug: &str, name: &str) -> TenantInfo {
    tenancy
        .lifecycle()
        .create(new_tenant(slug, name))
        .await
        .unwrap()
}
