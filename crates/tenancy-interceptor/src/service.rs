//! Tenant-scoped table service (placeholder).
