//! The current tenant of a task (SPEC C1).
//!
//! The web layer runs each request inside a scope holding its tenant, so
//! code anywhere below the handler can ask [`current`]. Background work
//! names its tenant explicitly with [`with_tenant`]; [`spawn`] carries the
//! current tenant into a new task (plain `tokio::spawn` does not, on
//! purpose: a task-local is never inherited silently). Outside any scope
//! there is no tenant, never a stale one.
//!
//! ```
//! use tenancy::TenantId;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let acme: TenantId = "acme".parse()?;
//! assert_eq!(tenancy::current(), None);
//! tenancy::with_tenant(acme.clone(), async {
//!     assert_eq!(tenancy::current().as_ref(), Some(&acme));
//! }).await;
//! assert_eq!(tenancy::current(), None);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::Arc;

use crate::tenant::{TenantId, TenantInfo};

/// What a task's scope holds: an id alone ([`with_tenant`]) or the whole
/// validated record (the web layer), whose id is not copied out of it.
#[derive(Clone)]
pub(crate) enum Scope {
    Id(TenantId),
    Info(Arc<TenantInfo>),
}

impl Scope {
    fn id(&self) -> &TenantId {
        match self {
            Self::Id(id) => id,
            Self::Info(info) => &info.id,
        }
    }
}

tokio::task_local! {
    static CURRENT: Scope;
}

/// The id of the current task's tenant, if the task runs in a tenant scope.
pub fn current() -> Option<TenantId> {
    CURRENT.try_with(|s| s.id().clone()).ok()
}

/// The full record of the current tenant, when the scope was set from a
/// validated tenant (as the web layer does). `None` under [`with_tenant`],
/// which knows only the id.
pub fn current_info() -> Option<Arc<TenantInfo>> {
    CURRENT
        .try_with(|s| match s {
            Scope::Info(info) => Some(info.clone()),
            Scope::Id(_) => None,
        })
        .ok()
        .flatten()
}

/// Runs `fut` with `id` as the current tenant: for background jobs and
/// anything that works for a known tenant outside a request.
pub async fn with_tenant<F: Future>(id: TenantId, fut: F) -> F::Output {
    CURRENT.scope(Scope::Id(id), fut).await
}

/// Runs `fut` with the validated `tenant` as the current tenant (what the
/// web layer does for each request).
pub fn with_tenant_info<F: Future>(tenant: Arc<TenantInfo>, fut: F) -> TenantScoped<F> {
    TenantScoped {
        inner: CURRENT.scope(Scope::Info(tenant), fut),
    }
}

pin_project_lite::pin_project! {
    /// A future running in a tenant's scope ([`with_tenant_info`]). A named
    /// type, so a tower service can return it without boxing.
    pub struct TenantScoped<F> {
        #[pin]
        inner: tokio::task::futures::TaskLocalFuture<Scope, F>,
    }
}

impl<F: Future> Future for TenantScoped<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

impl<F> std::fmt::Debug for TenantScoped<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantScoped").finish_non_exhaustive()
    }
}

/// Spawns `fut` on the runtime with the current tenant (if any) carried
/// over. Only the tenant is carried, no other task-local state.
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match CURRENT.try_with(Scope::clone) {
        Ok(scope) => tokio::spawn(CURRENT.scope(scope, fut)),
        Err(_) => tokio::spawn(fut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> TenantId {
        s.parse().unwrap()
    }

    async fn nested_depth(n: u32) -> Option<TenantId> {
        if n == 0 {
            tokio::task::yield_now().await;
            current()
        } else {
            Box::pin(nested_depth(n - 1)).await
        }
    }

    #[tokio::test]
    async fn visible_in_nested_calls_and_absent_outside() {
        assert_eq!(current(), None);
        let seen = with_tenant(id("acme"), nested_depth(5)).await;
        assert_eq!(seen, Some(id("acme")));
        assert_eq!(current(), None, "the scope must end with its future");
        assert!(current_info().is_none());
    }

    #[tokio::test]
    async fn inner_scope_shadows_and_restores() {
        with_tenant(id("outer"), async {
            with_tenant(id("inner"), async {
                assert_eq!(current(), Some(id("inner")))
            })
            .await;
            assert_eq!(current(), Some(id("outer")));
        })
        .await;
    }

    #[tokio::test]
    async fn plain_spawn_does_not_inherit_but_helper_does() {
        let (plain, carried) = with_tenant(id("acme"), async {
            let plain = tokio::spawn(async { current() }).await.unwrap();
            let carried = spawn(async { current() }).await.unwrap();
            (plain, carried)
        })
        .await;
        assert_eq!(plain, None);
        assert_eq!(carried, Some(id("acme")));
        assert_eq!(spawn(async { current() }).await.unwrap(), None);
    }

    #[tokio::test]
    async fn concurrent_scopes_do_not_mix() {
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                tokio::spawn(with_tenant(id(&format!("t{i}")), async move {
                    for _ in 0..10 {
                        tokio::task::yield_now().await;
                    }
                    (i, current())
                }))
            })
            .collect();
        for task in tasks {
            let (i, seen) = task.await.unwrap();
            assert_eq!(seen, Some(id(&format!("t{i}"))));
        }
    }
}
