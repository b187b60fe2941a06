//! RFC 9457 problem details: the one error body of every tenancy response.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem: `type`, `title`, `status`, `detail`, plus a stable
/// machine-readable `code`.
///
/// ```
/// use tenancy::Problem;
/// use http::StatusCode;
/// let problem = Problem::new(StatusCode::NOT_FOUND, "not_found", "no note 42 in this tenant");
/// assert_eq!(problem.status(), StatusCode::NOT_FOUND);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    type_uri: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    code: &'static str,
    #[serde(skip)]
    retry_after: Option<u64>,
    /// Extension members (RFC 9457 §3.2): `limit`, `used`, `feature`, ….
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    members: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl Problem {
    /// A problem with HTTP `status`, a stable snake_case `code` and a
    /// human-readable `detail` saying what was wrong and what to do.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            type_uri: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            code,
            retry_after: None,
            members: None,
        }
    }

    /// Adds an extension member (RFC 9457 §3.2) for programs to read, such
    /// as the `limit` and `used` of a `quota_exceeded`.
    ///
    /// ```
    /// use tenancy::Problem;
    /// use http::StatusCode;
    /// let problem = Problem::new(StatusCode::FORBIDDEN, "quota_exceeded", "…")
    ///     .with("limit", 100)
    ///     .with("used", 100);
    /// assert_eq!(problem.member("limit"), Some(&serde_json::json!(100)));
    /// ```
    pub fn with(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.members
            .get_or_insert_with(Default::default)
            .insert(name.to_owned(), value.into());
        self
    }

    /// The extension member `name`, if set.
    pub fn member(&self, name: &str) -> Option<&serde_json::Value> {
        self.members.as_ref()?.get(name)
    }

    /// Adds a `Retry-After` header (seconds), as for 429 and 503.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The stable code (`tenant_required`, `unknown_tenant`, …).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The detail message.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
