//! The operations of the binary, shared by the commands ([`crate::cli`])
//! and the admin API ([`crate::http`]). Each takes the
//! [`App`](crate::app::App) and, when it changes something, the actor to
//! record in the audit log; each has its own error type.

pub mod audit;
pub mod config;
pub mod doctor;
pub mod domains;
pub mod jobs;
pub mod migrate;
pub mod plans;
pub mod pool;
pub mod portability;
pub mod table_export;
pub mod tenants;
pub mod usage;
