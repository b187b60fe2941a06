//! The response future of [`RateLimit`](super::RateLimit).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::response::Response;
use pin_project_lite::pin_project;

/// The limit check of one request: the inner service's future when the
/// request may go on, the 429 response when not.
pub(super) type Check<F> = Pin<Box<dyn Future<Output = Result<F, Response>> + Send>>;

pin_project! {
    /// Checks the tenant's limit, then runs the inner service's future or
    /// answers 429.
    pub struct RateLimitFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Checking { check: Check<F> },
        Inner { #[pin] future: F },
        Done,
    }
}

impl<F> RateLimitFuture<F> {
    pub(super) fn inner(future: F) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    pub(super) fn checking(check: Check<F>) -> Self {
        Self {
            state: State::Checking { check },
        }
    }
}

impl<F, E> Future for RateLimitFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking { check } => match ready!(check.as_mut().poll(cx)) {
                    Ok(future) => this.state.set(State::Inner { future }),
                    Err(response) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(response));
                    }
                },
                StateProj::Inner { future } => return future.poll(cx),
                StateProj::Done => return Poll::Pending,
            }
        }
    }
}

impl<F> std::fmt::Debug for RateLimitFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Checking { .. } => "checking",
            State::Inner { .. } => "inner",
            State::Done => "done",
        };
        f.debug_struct("RateLimitFuture")
            .field("state", &state)
            .finish()
    }
}
