//! SQL query interceptor (placeholder).
