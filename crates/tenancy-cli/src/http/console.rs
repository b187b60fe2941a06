//! `GET /console`: the operators' web console, three files built
//! into the binary (no CDN, works offline). It is a client of the admin
//! API: the page itself holds no data, and every call carries the admin
//! token the operator signs in with (kept in the tab's sessionStorage).
//!
//! The page is served with a Content-Security-Policy that allows only its
//! own script and style and connections to this server; the script puts
//! every API value on the page as text, never as HTML.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut res = body.into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// The console's routes.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    const HTML: &str = "text/html; charset=utf-8";
    [
        ("/console", INDEX, HTML),
        ("/console/", INDEX, HTML),
        (
            "/console/console.js",
            SCRIPT,
            "text/javascript; charset=utf-8",
        ),
        ("/console/console.css", STYLE, "text/css; charset=utf-8"),
    ]
    .into_iter()
    .fold(Router::new(), |router, (path, body, content_type)| {
        router.route(path, get(move || async move { asset(body, content_type) }))
    })
}
