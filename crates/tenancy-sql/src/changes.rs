//! What a change announces and what it invalidates, whichever database
//! carried it: PostgreSQL's `NOTIFY` ([`PgChangeListener`](crate::PgChangeListener))
//! or SQLite's change log ([`SqliteChangeListener`](crate::SqliteChangeListener)).
//! Both carry the same JSON payloads:
//!
//! ```json
//! {"kind": "tenant", "id": "…", "slug": "acme", "previous_slug": "acme-old"}
//! {"kind": "config", "id": "…", "slug": null, "previous_slug": null}
//! {"kind": "domain", "id": "…", "slug": null, "previous_slug": null, "domain": "portal.acme.com"}
//! ```

use tenancy_core::{CachedConfigStore, TenantId, Validator};

/// Parses a payload; `None` when it is not one we understand.
pub(crate) fn parse(payload: &str) -> Option<(ChangeKind, TenantId, Vec<String>)> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    let id = TenantId::new(value.get("id")?.as_str()?).ok()?;
    let kind = match value.get("kind")?.as_str()? {
        "tenant" => ChangeKind::Tenant,
        "config" => ChangeKind::Config,
        "domain" => ChangeKind::Domain,
        _ => return None,
    };
    let mut references = Vec::new();
    if kind == ChangeKind::Domain {
        references.push(value.get("domain")?.as_str()?.to_owned());
    }
    for field in ["slug", "previous_slug"] {
        match value.get(field) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(s)) => references.push(s.clone()),
            Some(_) => return None,
        }
    }
    Some((kind, id, references))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Tenant,
    Config,
    Domain,
}

/// The caches a change listener ([`PgChangeListener`](crate::PgChangeListener)
/// or [`SqliteChangeListener`](crate::SqliteChangeListener)) keeps fresh.
///
/// ```
/// use std::sync::Arc;
/// use tenancy::{CachedConfigStore, MemoryStore, Validator};
/// use tenancy::sql::ChangeTargets;
/// let store = Arc::new(MemoryStore::new());
/// let targets = ChangeTargets::new()
///     .validator(Validator::new(store.clone(), &Default::default()))
///     .config_cache(CachedConfigStore::new(store, &Default::default()));
/// # drop(targets);
/// ```
#[derive(Clone, Default)]
pub struct ChangeTargets {
    validators: Vec<Validator>,
    config_caches: Vec<CachedConfigStore>,
    #[cfg(feature = "postgres")]
    databases: Vec<crate::PgDatabaseIsolation>,
    domains: Vec<tenancy_core::DomainResolver>,
    issuers: Vec<tenancy_core::issuers::TenantIssuers>,
}

impl ChangeTargets {
    /// No caches yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Invalidates `validator` on tenant changes (may be called again for
    /// more validators; clones share their cache).
    pub fn validator(mut self, validator: Validator) -> Self {
        self.validators.push(validator);
        self
    }

    /// Invalidates `cache` on config changes, and on tenant changes (a
    /// deleted tenant's overrides are gone).
    pub fn config_cache(mut self, cache: CachedConfigStore) -> Self {
        self.config_caches.push(cache);
        self
    }

    /// Drops the cached pool of a tenant on tenant changes (a move switches
    /// its server), and every pool when changes may have been missed.
    #[cfg(feature = "postgres")]
    pub fn database_pools(mut self, databases: crate::PgDatabaseIsolation) -> Self {
        self.databases.push(databases);
        self
    }

    /// Forgets a domain in `resolver` when it is added, verified or
    /// removed anywhere, and every domain when changes may have been missed.
    pub fn domains(mut self, resolver: tenancy_core::DomainResolver) -> Self {
        self.domains.push(resolver);
        self
    }

    /// Reads a tenant's own identity provider (`auth.issuer`) again on its
    /// config and tenant changes, and the whole index when changes may
    /// have been missed.
    pub fn tenant_issuers(mut self, issuers: tenancy_core::issuers::TenantIssuers) -> Self {
        self.issuers.push(issuers);
        self
    }

    pub(crate) fn clear(&self) {
        for issuers in &self.issuers {
            issuers.forget();
        }
        for resolver in &self.domains {
            resolver.clear();
        }
        #[cfg(feature = "postgres")]
        for databases in &self.databases {
            databases.forget_all();
        }
        for validator in &self.validators {
            validator.clear();
        }
        for cache in &self.config_caches {
            cache.clear();
        }
    }

    pub(crate) async fn apply(&self, kind: ChangeKind, id: &TenantId, references: &[String]) {
        if kind == ChangeKind::Domain {
            for resolver in &self.domains {
                for domain in references {
                    resolver.invalidate(domain);
                }
            }
            return;
        }
        if kind == ChangeKind::Tenant {
            #[cfg(feature = "postgres")]
            for databases in &self.databases {
                databases.forget(id).await;
            }
            for validator in &self.validators {
                validator.invalidate(id).await;
                for reference in references {
                    validator.invalidate_reference(reference).await;
                }
            }
        }
        for cache in &self.config_caches {
            cache.invalidate(id).await;
        }
        for issuers in &self.issuers {
            issuers.refresh(id).await;
        }
    }
}

impl std::fmt::Debug for ChangeTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeTargets")
            .field("validators", &self.validators.len())
            .field("config_caches", &self.config_caches.len())
            .field("domains", &self.domains.len())
            .field("issuers", &self.issuers.len())
            .finish()
    }
}
