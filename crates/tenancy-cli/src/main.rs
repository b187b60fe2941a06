//! The `tenancy` binary (placeholder).
fn main() {}
