//! The current tenant of a task.
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

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

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

// The current scope of this thread: set only while a scoped future is
// being polled (and swapped back out when its poll returns), so a task
// sees its own tenant on whatever worker thread polls it, and nothing is
// left behind between polls. A `Cell` swap, not a `RefCell` borrow: the
// request path pays two swaps per poll.
thread_local! {
    static CURRENT: Cell<Option<Scope>> = const { Cell::new(None) };
}

/// The id of the current task's tenant, if the task runs in a tenant scope.
pub fn current() -> Option<TenantId> {
    read(|scope| scope.id().clone())
}

/// The full record of the current tenant, when the scope was set from a
/// validated tenant (as the web layer does). `None` under [`with_tenant`],
/// which knows only the id.
pub fn current_info() -> Option<Arc<TenantInfo>> {
    read(|scope| match scope {
        Scope::Info(info) => Some(info.clone()),
        Scope::Id(_) => None,
    })
    .flatten()
}

/// `f` of the current scope, if there is one. `f` only clones: it cannot
/// reach this thread-local again while the scope is taken out.
fn read<R>(f: impl FnOnce(&Scope) -> R) -> Option<R> {
    CURRENT
        .try_with(|cell| {
            let scope = cell.take();
            let out = scope.as_ref().map(f);
            cell.set(scope);
            out
        })
        .ok()
        .flatten()
}

/// Runs `fut` with `id` as the current tenant: for background jobs and
/// anything that works for a known tenant outside a request.
pub async fn with_tenant<F: Future>(id: TenantId, fut: F) -> F::Output {
    TenantScoped::new(Scope::Id(id), fut).await
}

/// Runs `fut` with the validated `tenant` as the current tenant (what the
/// web layer does for each request).
#[inline(always)]
pub fn with_tenant_info<F: Future>(tenant: Arc<TenantInfo>, fut: F) -> TenantScoped<F> {
    TenantScoped::new(Scope::Info(tenant), fut)
}

pin_project_lite::pin_project! {
    /// A future running in a tenant's scope ([`with_tenant_info`]). A named
    /// type, so a tower service can return it without boxing.
    ///
    /// The tenant is current while the future is polled and while it is
    /// dropped (a cancelled request's destructors still see it), and at
    /// no other time.
    pub struct TenantScoped<F> {
        #[pin]
        inner: Option<F>,
        // This future's scope while it is not being polled; the scope it
        // displaced (usually none) while it is.
        slot: Option<Scope>,
    }

    impl<F> PinnedDrop for TenantScoped<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if this.inner.is_some() {
                let _entered = Entered::new(this.slot);
                this.inner.set(None);
            }
        }
    }
}

impl<F> TenantScoped<F> {
    #[inline(always)]
    fn new(scope: Scope, fut: F) -> Self {
        Self {
            inner: Some(fut),
            slot: Some(scope),
        }
    }
}

/// Swaps a scope into this thread's current one, and back out on drop
/// (also when the poll inside panics).
struct Entered<'a> {
    slot: &'a mut Option<Scope>,
}

impl<'a> Entered<'a> {
    #[inline]
    fn new(slot: &'a mut Option<Scope>) -> Self {
        swap(slot);
        Self { slot }
    }
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        swap(self.slot);
    }
}

#[inline]
fn swap(slot: &mut Option<Scope>) {
    // Fails only while the thread is being torn down: the future then runs
    // with no tenant (fail closed), and both swaps fail alike.
    let _ = CURRENT.try_with(|cell| *slot = cell.replace(slot.take()));
}

impl<F: Future> Future for TenantScoped<F> {
    type Output = F::Output;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let _entered = Entered::new(this.slot);
        let output = match this.inner.as_mut().as_pin_mut() {
            Some(fut) => fut.poll(cx),
            None => panic!("TenantScoped polled after completion"),
        };
        if output.is_ready() {
            // Dropped at once, still in its scope.
            this.inner.set(None);
        }
        output
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
    match read(Scope::clone) {
        Some(scope) => tokio::spawn(TenantScoped::new(scope, fut)),
        None => tokio::spawn(fut),
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
    async fn a_cancelled_future_is_dropped_in_its_scope() {
        struct SeesTenant(Arc<std::sync::Mutex<Option<Option<TenantId>>>>);
        impl Drop for SeesTenant {
            fn drop(&mut self) {
                *self.0.lock().unwrap() = Some(current());
            }
        }
        let seen = Arc::new(std::sync::Mutex::new(None));
        let guard = SeesTenant(seen.clone());
        let fut = with_tenant(id("acme"), async move {
            let _guard = guard;
            std::future::pending::<()>().await
        });
        let waited = tokio::time::timeout(std::time::Duration::from_millis(5), fut).await;
        assert!(waited.is_err(), "the future never completes");
        assert_eq!(*seen.lock().unwrap(), Some(Some(id("acme"))));
        assert_eq!(current(), None, "and the scope ended with it");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scopes_follow_tasks_across_worker_threads() {
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                tokio::spawn(with_tenant(id(&format!("t{i}")), async move {
                    let mut seen = Vec::new();
                    for _ in 0..20 {
                        tokio::task::yield_now().await;
                        seen.push(current());
                    }
                    (i, seen)
                }))
            })
            .collect();
        for task in tasks {
            let (i, seen) = task.await.unwrap();
            assert!(seen.iter().all(|s| s == &Some(id(&format!("t{i}")))));
        }
        assert_eq!(current(), None);
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
