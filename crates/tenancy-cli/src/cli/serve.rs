//! `tenancy serve`'s options. The server itself is [`crate::http`]; the
//! binary hands these options to it.

use clap::Args;

/// `tenancy serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: server.bind, 127.0.0.1:8080]; port 0 picks a free port.
    #[arg(long)]
    pub bind: Option<String>,
    /// Bearer token of the admin API [default: server.admin_token (TENANCY__SERVER__ADMIN_TOKEN), else generated and printed once]
    #[arg(long)]
    pub admin_token: Option<String>,
}
