//! `tenancy serve`'s routes in process: the same router and edges as the
//! binary ([`tenancy_cli::http::Server`]), driven with
//! `tower::ServiceExt::oneshot`, on a SQLite file of the test's own.

#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::response::Response;
use serde_json::Value;
use tenancy_cli::app::{App, Source};
use tenancy_cli::http::Server;
use tower::ServiceExt;
use tower::util::BoxCloneService;

/// The admin token of [`InProcess`] servers.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A server with no socket.
pub struct InProcess {
    service: BoxCloneService<Request<Body>, Response, Infallible>,
    _server: Server,
    _dir: tempfile::TempDir,
}

/// An answer: status, headers, and the body as JSON (a string when it is not).
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

impl InProcess {
    /// Over a fresh SQLite file, row level, no configuration file.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        Self::over(&url, dir).await
    }

    /// Over `url` (a database the test made), no configuration file;
    /// `dir` lives as long as the server.
    pub async fn over(url: &str, dir: tempfile::TempDir) -> Self {
        let source = Source {
            database_url: Some(url.to_owned()),
            config: None,
        };
        let app = App::open(&source).await.unwrap();
        let server = Server::new(app, &source, Arc::from(ADMIN_TOKEN))
            .await
            .unwrap();
        Self {
            service: BoxCloneService::new(server.service()),
            _server: server,
            _dir: dir,
        }
    }

    /// `method path` with `authorization` (a whole header value) and a
    /// JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let headers: Vec<(&str, &str)> = authorization
            .map(|value| ("authorization", value))
            .into_iter()
            .collect();
        self.request(method, path, &headers, body).await
    }

    /// `method path` with `headers` and a JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = match body {
            Some(body) => req
                .header("content-type", "application/json")
                .body(Body::from(body.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let res = self.service.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            headers,
            body,
        }
    }

    /// An admin request with the right token, by `actor` (`X-Actor`).
    pub async fn admin_as(
        &self,
        actor: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        self.request(
            method,
            path,
            &[("authorization", &auth), ("x-actor", actor)],
            body,
        )
        .await
    }

    /// An admin request with the right token.
    pub async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        self.call(method, path, Some(&auth), body).await
    }
}
