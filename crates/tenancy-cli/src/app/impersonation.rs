//! The resolver that serves an impersonation grant's tenant: used by the
//! app (as the chain's override) and issued over HTTP by
//! `serve::impersonate`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tenancy::TenantRef;
use tenancy::resolve::{ResolutionContext, Resolver};

/// The claim that marks claims made from an impersonation grant.
pub(crate) const IMPERSONATED_BY: &str = "impersonated_by";

/// Resolves the tenant of an impersonation grant first, whatever other
/// resolvers would say (installed as the chain's override).
#[derive(Debug, Clone)]
pub(crate) struct ImpersonationResolver {
    pub(crate) claim: Arc<str>,
}

#[async_trait]
impl Resolver for ImpersonationResolver {
    fn name(&self) -> &str {
        "impersonation"
    }
    fn priority(&self) -> i32 {
        0
    }
    async fn resolve(&self, ctx: &ResolutionContext<'_>) -> Option<TenantRef> {
        let claims = ctx.claims()?;
        claims.get(IMPERSONATED_BY)?;
        claims
            .get(&self.claim)
            .and_then(Value::as_str)
            .map(TenantRef::new)
    }
}
