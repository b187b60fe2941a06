//! The response future of [`RequireTenant`](super::RequireTenant).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::response::Response;
use pin_project_lite::pin_project;

pin_project! {
    /// The response future of [`RequireTenant`](super::RequireTenant):
    /// either the inner service's future or an immediate refusal.
    ///
    /// # Panics
    ///
    /// Polled again after it returned its answer, as tower-http's futures do.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Refused { response: Option<Response> },
        // The answer was returned.
        Done,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    pub(super) fn refused(response: Response) -> Self {
        Self {
            kind: Kind::Refused {
                response: Some(response),
            },
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        let polled = match kind.as_mut().project() {
            KindProj::Inner { future } => future.poll(cx),
            KindProj::Refused { response } => Poll::Ready(Ok(response.take().unwrap_or_default())),
            // A programming error, as with tower-http's futures.
            KindProj::Done => panic!("the guard's ResponseFuture polled after completion"),
        };
        if polled.is_ready() {
            kind.set(Kind::Done);
        }
        polled
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
