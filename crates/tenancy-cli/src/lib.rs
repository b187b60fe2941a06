//! The `tenancy` operator binary, as a library: its operations can be
//! called from an application's own code and its server can be tested in
//! process.
//!
//! Three layers over one application handle:
//!
//! - [`app`]: the [`App`](app::App) every command and route shares,
//!   opened from one database URL and the configuration;
//! - [`ops`]: the operations (tenants, domains, config, audit, migrations,
//!   export, import, purge, move), each taking the app and an actor, each
//!   with its own error type, each recording its audit entry once;
//! - [`cli`]: the commands (`clap`) and what they print;
//! - [`http`]: `tenancy serve`: the admin API, the console, the gateway's
//!   `/resolve`, the CRUD resources, `/openapi.json` and `/metrics`.
//!
//! `ops` imports neither `cli` nor `http`, and `cli` and `http` do not
//! import each other; the binary (`main.rs`) joins them.

pub mod app;
pub mod cli;
pub mod http;
pub mod ops;
