//! Tenant domains: add, list, verify (by a DNS TXT record) and remove.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tenancy::{Domain, DomainStore, StoreError, TenantDomain};

use crate::app::App;

/// Why a domain operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// Not a usable domain name.
    #[error(transparent)]
    Invalid(#[from] tenancy::domain::InvalidDomain),
    /// The store refused or failed (taken: [`StoreError::DomainTaken`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such domain.
    #[error("domain \"{0}\" is not a domain of any tenant: see `tenancy domains list TENANT`")]
    Unknown(String),
    /// No such tenant.
    #[error("no tenant \"{0}\": see `tenancy tenants list --all`")]
    UnknownTenant(String),
    /// The TXT record is missing or holds another value.
    #[error("{0}")]
    NotVerified(String),
    /// DNS could not be asked.
    #[error("cannot look up the TXT record: {0}")]
    Dns(String),
}

/// The JSON of a domain: the record plus the TXT name and value to publish.
pub fn domain_json(d: &TenantDomain) -> Value {
    json!({
        "domain": d.domain,
        "tenant_id": d.tenant_id,
        "primary": d.primary,
        "status": d.status,
        "created_at": d.created_at,
        "verified_at": d.verified_at,
        "txt_name": d.domain.challenge_name(),
        "txt_value": d.token,
    })
}

fn store(app: &App) -> Result<&std::sync::Arc<dyn DomainStore>, DomainError> {
    app.tenancy
        .domain_store()
        .ok_or_else(|| DomainError::Store(StoreError::Unavailable("no domain store".into())))
}

/// Forgets `domain` in this process's resolver (other processes hear the
/// store's NOTIFY).
fn forget(app: &App, domain: &str) {
    if let Some(resolver) = app.tenancy.domains() {
        resolver.invalidate(domain);
    }
}

/// The tenant `reference` names (id or slug).
async fn tenant_of(app: &App, reference: &str) -> Result<tenancy::TenantInfo, DomainError> {
    app.tenancy
        .store()
        .find(reference)
        .await?
        .ok_or_else(|| DomainError::UnknownTenant(reference.chars().take(64).collect()))
}

/// Adds a domain to the tenant named by `tenant` (id or slug).
pub async fn add(
    app: &App,
    actor: &str,
    tenant: &str,
    domain: &str,
    primary: bool,
    verified: bool,
) -> Result<TenantDomain, DomainError> {
    let domain = Domain::parse(domain)?;
    let tenant = tenant_of(app, tenant).await?;
    let added = store(app)?
        .add_domain(TenantDomain::new(domain, tenant.id, primary, verified))
        .await?;
    forget(app, added.domain.as_str());
    audit(app, actor, "domain.add", None, Some(&added)).await;
    Ok(added)
}

/// Adds a domain that came in an archive to the tenant `tenant` (`tenancy
/// tenants import`): a fresh token (the archive's could be anyone's), and
/// pending unless `trusted` and verified in the archive. Recorded as
/// `domain.import` with the domain and its status.
pub async fn import(
    app: &App,
    actor: &str,
    tenant: &tenancy::TenantId,
    archived: &TenantDomain,
    trusted: bool,
) -> Result<TenantDomain, DomainError> {
    let domain = TenantDomain::new(
        archived.domain.clone(),
        tenant.clone(),
        archived.primary,
        trusted && archived.is_verified(),
    );
    let added = store(app)?.add_domain(domain).await?;
    forget(app, added.domain.as_str());
    audit(app, actor, "domain.import", None, Some(&added)).await;
    Ok(added)
}

/// The domain the store found, or [`DomainError::Unknown`].
fn known(domain: &Domain, found: Option<TenantDomain>) -> Result<TenantDomain, DomainError> {
    found.ok_or_else(|| DomainError::Unknown(domain.to_string()))
}

/// Verifies a domain by its TXT record (an already verified one stays so).
pub async fn verify(app: &App, actor: &str, domain: &str) -> Result<TenantDomain, DomainError> {
    let domain = Domain::parse(domain)?;
    let found = known(&domain, store(app)?.get_domain(domain.as_str()).await?)?;
    if !found.is_verified() {
        let values = txt_values(&app.config.domains.nameservers, &domain.challenge_name()).await?;
        if !values.iter().any(|v| v == &found.token) {
            return Err(DomainError::NotVerified(format!(
                "domain {domain} is not verified: publish a TXT record {} with the value {} (found {})",
                domain.challenge_name(),
                found.token,
                if values.is_empty() {
                    "no TXT record".to_owned()
                } else {
                    format!("{values:?}")
                }
            )));
        }
    }
    let verified = known(&domain, store(app)?.verify_domain(domain.as_str()).await?)?;
    forget(app, verified.domain.as_str());
    audit(app, actor, "domain.verify", Some(&found), Some(&verified)).await;
    Ok(verified)
}

/// Removes a domain.
pub async fn remove(app: &App, actor: &str, domain: &str) -> Result<TenantDomain, DomainError> {
    let domain = Domain::parse(domain)?;
    let removed = known(&domain, store(app)?.remove_domain(domain.as_str()).await?)?;
    forget(app, removed.domain.as_str());
    audit(app, actor, "domain.remove", Some(&removed), None).await;
    Ok(removed)
}

/// Records a domain change in the audit log.
async fn audit(
    app: &App,
    actor: &str,
    action: &str,
    before: Option<&TenantDomain>,
    after: Option<&TenantDomain>,
) {
    let Some(tenant) = after.or(before).map(|d| d.tenant_id.clone()) else {
        return;
    };
    app.audit(
        tenancy::audit::NewAuditEntry::new(actor, action)
            .tenant(tenant)
            .change(before.map(domain_json), after.map(domain_json)),
    )
    .await;
}

/// A tenant's domains.
pub async fn list(app: &App, tenant: &str) -> Result<Vec<TenantDomain>, DomainError> {
    let tenant = tenant_of(app, tenant).await?;
    Ok(store(app)?.list_domains(&tenant.id).await?)
}

/// The TXT values at `name`, asked of `nameservers` (`ip[:port]`) or the
/// system's resolvers. No caching: a record just published is seen.
async fn txt_values(nameservers: &[String], name: &str) -> Result<Vec<String>, DomainError> {
    use hickory_resolver::Resolver;
    use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
    use hickory_resolver::name_server::TokioConnectionProvider;
    use hickory_resolver::proto::xfer::Protocol;

    let mut options = ResolverOpts::default();
    options.timeout = Duration::from_secs(2);
    options.attempts = 2;
    options.cache_size = 0;
    let resolver = if nameservers.is_empty() {
        Resolver::builder_tokio()
            .map_err(|e| DomainError::Dns(format!("no system DNS configuration: {e}")))?
            .with_options(options)
            .build()
    } else {
        let mut config = ResolverConfig::new();
        for server in nameservers {
            let addr: SocketAddr = server
                .parse()
                .or_else(|_| format!("{server}:53").parse())
                .map_err(|_| {
                    DomainError::Dns(format!(
                        "domains.nameservers: \"{server}\" is not ip or ip:port"
                    ))
                })?;
            config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
        }
        Resolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(options)
            .build()
    };
    match resolver.txt_lookup(format!("{name}.")).await {
        Ok(found) => Ok(found
            .iter()
            .map(|txt| {
                txt.txt_data()
                    .iter()
                    .map(|part| String::from_utf8_lossy(part).into_owned())
                    .collect::<String>()
            })
            .collect()),
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
        Err(e) => Err(DomainError::Dns(e.to_string())),
    }
}
