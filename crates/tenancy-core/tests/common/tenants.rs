//! Tenant commands tests build again and again. The test crates that
//! work with tenants share this file by path.

use tenancy_core::{NewTenant, Slug, TenantDomain, TenantId, TenantUpdate};

/// The new tenant `slug` named `name` (both valid).
pub fn new_tenant(slug: &str, name: &str) -> NewTenant {
    NewTenant::new(slug, name).unwrap()
}

/// The update that renames a tenant to `name`.
pub fn name_update(name: &str) -> TenantUpdate {
    TenantUpdate {
        name: Some(name.into()),
        ..Default::default()
    }
}

/// The update that gives a tenant the slug `slug`.
pub fn slug_update(slug: &str) -> TenantUpdate {
    TenantUpdate {
        slug: Some(Slug::new(slug).unwrap()),
        ..Default::default()
    }
}

/// The domain `name` of `tenant`.
pub fn domain(name: &str, tenant: &TenantId, primary: bool, verified: bool) -> TenantDomain {
    TenantDomain::new(name.parse().unwrap(), tenant.clone(), primary, verified)
}
