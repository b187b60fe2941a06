//! The upstream service of the nginx gateway example: it answers
//! `GET /whoami` with the tenant nginx put in the `X-Tenant-*` headers (see
//! the library docs, `nginx.conf.template` and `README.md`).
//!
//! ```text
//! cargo run -p example-gateway-nginx       # BIND, default 127.0.0.1:3000
//! # then, through nginx (README.md): curl localhost:8000/whoami -H 'X-Tenant-Id: acme'
//! ```
//!
//! It must be reachable only through nginx: it trusts those headers.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}  (to be reached through nginx only)");
    axum::serve(listener, example_gateway_nginx::app())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
