//! The server's edges: how connections are accepted and what every request
//! goes through before a handler sees it.
//!
//! - A connection must send its request header within
//!   `server.header_timeout_ms`, else it is closed (hyper's header timer).
//! - At most `server.max_connections` connections are open at once, lowered
//!   at start below the process's descriptor limit; beyond it, connections
//!   wait in the listen backlog instead of exhausting descriptors.
//! - A body is read whole, within `server.body_timeout_ms` (408
//!   `body_timeout`) and `server.max_body_bytes` (413 `body_too_large`).
//! - A route answers within `server.request_timeout_ms` (admin routes:
//!   `server.admin_timeout_ms`), else 503 `request_timeout` with
//!   `Retry-After`.
//! - Every request has an id (`X-Request-Id`, taken from the request when it
//!   is well formed, else made here), returned in the response header and in
//!   every problem body as `request_id`; the log names it beside any
//!   database error, which never reaches the client.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tenancy::Problem;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The request id header.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Problem bodies are small; one larger than this is passed on untouched.
const MAX_PROBLEM_BYTES: usize = 64 * 1024;

/// Descriptors kept free for the database pools, files and logs.
fn descriptor_reserve(limit: u64) -> u64 {
    (limit / 8).max(64)
}

/// The connection cap: `configured`, lowered below the descriptor limit.
pub(crate) fn connection_cap(configured: usize) -> (usize, Option<u64>) {
    let limit = descriptor_limit();
    let cap = match limit {
        Some(limit) => {
            let room = limit.saturating_sub(descriptor_reserve(limit)).max(8);
            configured.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => configured,
    };
    (cap.max(1), limit)
}

#[cfg(unix)]
fn descriptor_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[cfg(not(unix))]
fn descriptor_limit() -> Option<u64> {
    None
}

/// The router inside the edges every request goes through, outermost
/// first: its id, its body read within bounds, its answer within the
/// deadline of its route. Applied around the finished router (not with
/// `Router::layer`, which would box them again into every route).
pub(crate) fn edges<B>(
    router: Router,
    server: &tenancy::config::ServerConfig,
) -> impl tower::Service<Request<B>, Response = Response, Error = Infallible, Future: Send + 'static>
+ Clone
+ Send
+ 'static
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let deadlines = Deadlines {
        request: Duration::from_millis(server.request_timeout_ms),
        admin: Duration::from_millis(server.admin_timeout_ms),
    };
    let body = BodyBounds {
        timeout: Duration::from_millis(server.body_timeout_ms),
        max_bytes: server.max_body_bytes,
    };
    tower::ServiceBuilder::new()
        .map_request(|req: Request<B>| req.map(Body::new))
        .layer(axum::middleware::from_fn(request_id))
        .layer(axum::middleware::from_fn_with_state(body, bounded_body))
        .layer(axum::extract::DefaultBodyLimit::max(body.max_bytes))
        .layer(axum::middleware::from_fn_with_state(deadlines, deadline))
        .service(router)
}

/// Serves `router` inside its [`edges`] on `listener` until `shutdown`
/// completes, then lets open requests finish (at most 10 s). Clients must
/// send a request's header within `server.header_timeout_ms`; at most
/// `max_connections` are open at once.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    server: &tenancy::config::ServerConfig,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let service = edges(router, server);
    let header_timeout = Duration::from_millis(server.header_timeout_ms);
    let slots = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or a connection reset before it
                    // was accepted: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still open 10 s after shutdown began were dropped");
    }
    Ok(())
}

tokio::task_local! {
    static CURRENT_REQUEST: Arc<str>;
}

/// The id of the request being served, for logs (`-` outside one).
pub(crate) fn current_request_id() -> Arc<str> {
    CURRENT_REQUEST
        .try_with(Arc::clone)
        .unwrap_or_else(|_| Arc::from("-"))
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn new_request_id() -> String {
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u32> = OnceLock::new();
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u128() as u32);
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:08x}{n:012x}")
}

/// A client's `X-Request-Id` is kept when it is 1–64 of letters, digits,
/// `-`, `_`, `.`; anything else is replaced.
fn well_formed(id: &[u8]) -> bool {
    (1..=64).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
}

/// Gives the request its id and puts it in the response header and in any
/// problem body.
pub(crate) async fn request_id(req: Request, next: Next) -> Response {
    let id: Arc<str> = match req.headers().get(&REQUEST_ID) {
        Some(v) if well_formed(v.as_bytes()) => Arc::from(v.to_str().unwrap_or_default()),
        _ => Arc::from(new_request_id()),
    };
    let response = CURRENT_REQUEST.scope(id.clone(), next.run(req)).await;
    with_request_id(response, &id).await
}

async fn with_request_id(mut response: Response, id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match http_body_util::Limited::new(body, MAX_PROBLEM_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Response::from_parts(parts, Body::empty()),
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut problem)) => {
            problem.insert("request_id".into(), serde_json::Value::from(id));
            parts.headers.remove(header::CONTENT_LENGTH);
            Body::from(serde_json::Value::Object(problem).to_string())
        }
        _ => Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

/// Bounds of a request body.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyBounds {
    pub timeout: Duration,
    pub max_bytes: usize,
}

/// Reads the whole body within its time and size bounds, so no handler
/// waits on a slow client or buffers an unbounded body.
pub(crate) async fn bounded_body(
    State(bounds): State<BodyBounds>,
    req: Request,
    next: Next,
) -> Response {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the body is larger than {} bytes (server.max_body_bytes)",
                bounds.max_bytes
            ),
        )
        .into_response()
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > bounds.max_bytes as u64) {
        return too_large();
    }
    // Most requests (every GET) have no body: nothing to wait for.
    if axum::body::HttpBody::is_end_stream(req.body()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let read = http_body_util::Limited::new(body, bounds.max_bytes).collect();
    let bytes = match tokio::time::timeout(bounds.timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(_)) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                "the request body could not be read (the connection broke or the encoding is invalid)",
            )
            .into_response();
        }
        Err(_) => {
            return Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the body did not arrive within {} ms (server.body_timeout_ms): send it at once",
                    bounds.timeout.as_millis()
                ),
            )
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// How long a route may take.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadlines {
    /// Tenant, gateway, health and every other route.
    pub request: Duration,
    /// `/admin/…`, which may provision.
    pub admin: Duration,
}

/// Answers 503 `request_timeout` when the route takes longer than its
/// deadline: a database that stopped answering never holds a request.
pub(crate) async fn deadline(
    State(deadlines): State<Deadlines>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let limit = if path == "/admin" || path.starts_with("/admin/") {
        deadlines.admin
    } else {
        deadlines.request
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(
                request_id = %current_request_id(),
                limit_ms = limit.as_millis() as u64,
                "request timed out"
            );
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "request_timeout",
                format!(
                    "no answer within {} ms: a backing service is slow or down, retry after the delay",
                    limit.as_millis()
                ),
            )
            .retry_after(1)
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_ids_are_kept_only_when_well_formed() {
        assert!(well_formed(b"abc-123_x.y"));
        assert!(!well_formed(b""));
        assert!(!well_formed(b"a b"));
        assert!(!well_formed(b"a\nb"));
        assert!(!well_formed(&[b'a'; 65]));
    }

    #[test]
    fn generated_request_ids_differ_and_are_well_formed() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert!(well_formed(a.as_bytes()), "{a}");
    }

    #[test]
    fn the_connection_cap_stays_below_the_descriptor_limit() {
        let (cap, limit) = connection_cap(usize::MAX);
        if let Some(limit) = limit {
            assert!((cap as u64) < limit, "{cap} < {limit}");
        }
        // A configured cap below the limit is kept as it is.
        assert_eq!(connection_cap(5).0, 5);
    }

    #[test]
    fn the_reserve_is_an_eighth_of_the_limit_and_at_least_64() {
        assert_eq!(descriptor_reserve(256), 64);
        assert_eq!(descriptor_reserve(1024), 128);
        assert_eq!(descriptor_reserve(100), 64);
    }
}
