//! Configuration: `tenancy.yaml` under a `tenancy:` key, with
//! environment overrides `TENANCY__SECTION__KEY`.
//!
//! Every setting has a default, so an empty or missing file is valid.
//!
//! ```yaml
//! tenancy:
//!   resolution:
//!     resolvers: [jwt_claim, header, subdomain, path]  # run in priority order
//!     header_name: X-Tenant-Id
//!     jwt_claim: tenant_id
//!     membership_claim: tenants
//!     base_domain: app.com          # none (default) disables `subdomain`
//!     reserved_subdomains: [www]
//!     path_pattern: /tenants/{tenant_id}/
//!   validation:
//!     cache_ttl_secs: 300
//!     negative_ttl_secs: 5
//!     cache_capacity: 10000
//!   lifecycle:
//!     isolation_strategy: row_level # row_level | schema | database
//!     auto_provision: true
//!     deprovision_policy: keep      # keep | archive | drop
//!     migrations_dir: migrations
//!     pending_pool: 20              # schema/database: tenants kept provisioned for instant signup
//!     database_servers:             # database strategy on Postgres; default: the main server
//!       - { name: pg1, url: "postgres://app@db1/postgres", weight: 2 }
//!       - { name: pg2, url: "postgres://app@db2/postgres" }
//!     owner_database_url: postgres://owner@db/app  # row_level on Postgres: DDL and RLS set up as this role
//!     row_level_signing_key: …      # hex, ≥ 32 bytes; set it by env, not here (see below)
//!   overrides:
//!     cache_ttl_secs: 60
//!     cache_capacity: 10000
//!     defaults: { rate_limit.rps: 100 }
//!   auth:
//!     jwt_secret: change-me         # HS256; or jwt_public_key_pem / _file for RS256
//!     issuers:                      # identity providers (OpenID discovery or jwks_uri)
//!       - { issuer: "https://example.eu.auth0.com/", audiences: [https://api.example.com] }
//!     leeway_s: 30
//!   server:
//!     bind: 127.0.0.1:8080
//!   rate_limit:
//!     default_rps: 100
//!     plans: { free: 10, pro: 1000 }
//!   integration:
//!     redis_url: redis://127.0.0.1:6379
//! ```
//!
//! Environment: `TENANCY__VALIDATION__CACHE_TTL_SECS=60`,
//! `TENANCY__RESOLUTION__RESOLVERS=header,path` (lists are comma
//! separated), `TENANCY__AUTH__JWT_SECRET=…`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::ConfigMap;

/// A configuration that cannot be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting has a value that cannot be used.
    #[error("invalid setting `{key}`: {reason}")]
    Invalid {
        /// The setting, as a dotted path below `tenancy`.
        key: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// The file or environment could not be read or parsed.
    #[error("cannot load configuration: {0}")]
    Load(String),
}

/// The whole configuration. Every field has a documented default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenancyConfig {
    /// How requests name their tenant.
    pub resolution: ResolutionConfig,
    /// The validator's cache.
    pub validation: ValidationConfig,
    /// Creation, isolation and removal of tenants.
    pub lifecycle: LifecycleConfig,
    /// Per-tenant config overrides.
    pub overrides: OverridesConfig,
    /// Token verification.
    pub auth: AuthConfig,
    /// The `tenancy serve` HTTP server.
    pub server: ServerConfig,
    /// Per-tenant rate limits.
    pub rate_limit: RateLimitConfig,
    /// External services (Redis, NATS).
    pub integration: IntegrationConfig,
    /// Tenant domains (verification).
    pub domains: DomainsConfig,
    /// Background jobs.
    pub jobs: JobsConfig,
    /// Usage metering.
    pub usage: UsageConfig,
    /// Plans by name: the features and limits of a tenant on each
    /// (`tenancy::plans`).
    pub plans: BTreeMap<String, PlanConfig>,
}

/// The limits the toolkit knows (`rows.<resource>` is a family).
pub const LIMITS: [&str; 4] = [
    "requests_per_minute",
    "requests_per_month",
    "jobs_concurrency",
    "storage_mb",
];

/// Whether `name` is a limit the toolkit knows.
pub fn is_limit(name: &str) -> bool {
    LIMITS.contains(&name)
        || name.strip_prefix("rows.").is_some_and(|resource| {
            !resource.is_empty()
                && resource
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Checks `plans.*`: known limit names, feature names of letters, digits,
/// `_`, `-` and `.`.
pub fn validate_plans(plans: &BTreeMap<String, PlanConfig>) -> Result<(), ConfigError> {
    for (name, plan) in plans {
        for feature in &plan.features {
            if !is_feature_name(feature) {
                return Err(ConfigError::Invalid {
                    key: format!("plans.{name}.features"),
                    reason: format!(
                        "\"{}\" is not a feature name (letters, digits, `_`, `-`, `.`)",
                        feature.escape_debug()
                    ),
                });
            }
        }
        for limit in plan.limits.keys() {
            if !is_limit(limit) {
                return Err(ConfigError::Invalid {
                    key: format!("plans.{name}.limits.{limit}"),
                    reason: format!(
                        "unknown limit \"{}\": one of {}, or rows.<resource>",
                        limit.escape_debug(),
                        LIMITS.join(", ")
                    ),
                });
            }
        }
    }
    Ok(())
}

fn is_feature_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `plans.NAME`: what a tenant on this plan may do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanConfig {
    /// The features the plan includes (names of your choosing).
    pub features: Vec<String>,
    /// Its limits: `requests_per_minute`, `requests_per_month`,
    /// `rows.<resource>`, `jobs_concurrency`, `storage_mb`.
    pub limits: BTreeMap<String, u64>,
}

/// `jobs.*`: background jobs (`tenancy::jobs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Jobs `tenancy serve` runs at once (default 2; 0 runs none).
    pub workers: u32,
    /// How long a claimed job is its worker's (default 30 s): the worker
    /// renews it while the job runs; a job whose worker died runs again
    /// once it lapses.
    pub lease_s: u64,
    /// Runs of a failing job before it is `dead` (default 5).
    pub max_attempts: u32,
    /// Jobs of one tenant running at once, across every worker (default 2).
    pub max_concurrency_per_tenant: u32,
    /// How often an idle worker looks for work when nothing wakes it
    /// (default 1000 ms; PostgreSQL wakes workers with `NOTIFY`).
    pub poll_ms: u64,
    /// The first retry's delay (default 1000 ms), doubled at each attempt,
    /// at most an hour.
    pub backoff_ms: u64,
    /// Where `tenancy serve`'s export jobs write their archives (default
    /// `exports`, relative to the working directory).
    pub exports_dir: PathBuf,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            lease_s: 30,
            max_attempts: 5,
            max_concurrency_per_tenant: 2,
            poll_ms: 1000,
            backoff_ms: 1000,
            exports_dir: PathBuf::from("exports"),
        }
    }
}

/// `usage.*`: usage metering (`tenancy_core::usage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsageConfig {
    /// Whether requests, rows and jobs are metered (default true).
    pub enabled: bool,
    /// How often each instance adds its counts to the store (default 10 s).
    /// What an instance killed outright had not flushed is lost: at most
    /// this long of its own traffic.
    pub flush_secs: u64,
    /// How often tenants' storage is sampled (default 3600 s; 0 never).
    pub storage_sample_secs: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            flush_secs: 10,
            storage_sample_secs: 3600,
        }
    }
}

/// `domains.*`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DomainsConfig {
    /// DNS servers (`ip:port`, port 53 if omitted) that verification asks
    /// for `_tenancy-challenge.<domain>` TXT records (default: the
    /// system's resolvers). A list, or a comma-separated string.
    #[serde(deserialize_with = "list_or_csv")]
    pub nameservers: Vec<String>,
}

/// `resolution.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResolutionConfig {
    /// Resolvers to run (default: all five built-ins; they run by
    /// priority). `domain` needs a store with domains (every store of the
    /// toolkit has them) and is added by `Tenancy::builder`; it is off when
    /// the builder got no domain store. A list, or a comma-separated string (for the environment).
    #[serde(deserialize_with = "list_or_csv")]
    pub resolvers: Vec<String>,
    /// Header read by `header` (default `X-Tenant-Id`).
    pub header_name: String,
    /// Claim read by `jwt_claim` (default `tenant_id`).
    pub jwt_claim: String,
    /// Claim listing the tenants a user belongs to (default `tenants`):
    /// ids or slugs, or `{tenant, role}` objects.
    pub membership_claim: String,
    /// Where the memberships are when they are nested (default none: the
    /// top-level `membership_claim`): a dotted path such as `o.id` (Clerk),
    /// `org_id` (WorkOS, Auth0) or `org.id`; it replaces
    /// `membership_claim`. A claim whose name holds dots
    /// (`https://example.com/tenants`) is found by its exact name first.
    pub membership_claim_path: Option<String>,
    /// Base domain for `subdomain` (default none: `subdomain` is off).
    pub base_domain: Option<String>,
    /// Labels that never name a tenant (default `[www]`).
    #[serde(deserialize_with = "list_or_csv")]
    pub reserved_subdomains: Vec<String>,
    /// Pattern for `path` (default `/tenants/{tenant_id}/`).
    pub path_pattern: String,
}

/// The placeholder a `resolution.path_pattern` contains once.
pub const PATH_PLACEHOLDER: &str = "{tenant_id}";

impl ResolutionConfig {
    /// The names `resolution.resolvers` may list (custom resolvers are
    /// added in code).
    pub const RESOLVERS: [&'static str; 5] = ["jwt_claim", "header", "domain", "subdomain", "path"];

    /// Where the token's memberships are read: `membership_claim_path`
    /// when set, else `membership_claim`.
    pub fn membership_path(&self) -> &str {
        self.membership_claim_path
            .as_deref()
            .unwrap_or(&self.membership_claim)
    }

    /// Checks the resolution settings: known resolver names, a valid
    /// header name, a valid path pattern. The error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(path) = &self.membership_claim_path
            && (path.is_empty() || path.split('.').any(str::is_empty))
        {
            return Err(ConfigError::Invalid {
                key: "resolution.membership_claim_path".into(),
                reason: format!(
                    "\"{}\" is not a dotted claim path such as o.id or org.id",
                    path.escape_debug()
                ),
            });
        }
        if let Some(other) = self
            .resolvers
            .iter()
            .find(|name| !Self::RESOLVERS.contains(&name.as_str()))
        {
            return Err(ConfigError::Invalid {
                key: "resolution.resolvers".into(),
                reason: format!(
                    "unknown resolver \"{other}\": expected jwt_claim, header, domain, subdomain or path \
                     (add custom resolvers in code with ResolverChain::with)"
                ),
            });
        }
        self.header()?;
        path_prefix(&self.path_pattern)?;
        Ok(())
    }

    /// `header_name` as an HTTP header name.
    pub fn header(&self) -> Result<http::HeaderName, ConfigError> {
        http::HeaderName::try_from(self.header_name.as_str()).map_err(|_| ConfigError::Invalid {
            key: "resolution.header_name".into(),
            reason: format!("\"{}\" is not a valid HTTP header name", self.header_name),
        })
    }
}

/// The part of a path pattern before [`PATH_PLACEHOLDER`], which must be
/// a whole segment after a leading `/`, once.
pub(crate) fn path_prefix(pattern: &str) -> Result<&str, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        key: "resolution.path_pattern".into(),
        reason: format!("{reason} (got \"{pattern}\"; example: \"/tenants/{{tenant_id}}/\")"),
    };
    let Some((prefix, rest)) = pattern.split_once(PATH_PLACEHOLDER) else {
        return Err(invalid("the pattern must contain {tenant_id}"));
    };
    if !prefix.starts_with('/') || !prefix.ends_with('/') {
        return Err(invalid(
            "{tenant_id} must be a whole path segment after a leading '/'",
        ));
    }
    if rest.contains(PATH_PLACEHOLDER) {
        return Err(invalid("{tenant_id} may appear only once"));
    }
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Err(invalid("{tenant_id} must be followed by '/' or the end"));
    }
    Ok(prefix)
}

impl Default for ResolutionConfig {
    fn default() -> Self {
        Self {
            resolvers: ["jwt_claim", "header", "domain", "subdomain", "path"]
                .map(String::from)
                .to_vec(),
            header_name: "X-Tenant-Id".into(),
            jwt_claim: "tenant_id".into(),
            membership_claim: "tenants".into(),
            membership_claim_path: None,
            base_domain: None,
            reserved_subdomains: vec!["www".into()],
            path_pattern: "/tenants/{tenant_id}/".into(),
        }
    }
}

/// `validation.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// How long a looked-up tenant stays cached (default 300 s).
    pub cache_ttl_secs: u64,
    /// How long "no such tenant" stays cached (default 5 s).
    pub negative_ttl_secs: u64,
    /// Most entries held (default 10,000).
    pub cache_capacity: u64,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            cache_ttl_secs: 300,
            negative_ttl_secs: 5,
            cache_capacity: 10_000,
        }
    }
}

/// What happens to a tenant's schema or database when it is deactivated
/// or deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeprovisionPolicy {
    /// Leave everything in place (default).
    #[default]
    Keep,
    /// Rename it to an archive name.
    Archive,
    /// Drop it.
    Drop,
}

/// `lifecycle.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    /// `row_level` (default), `schema` or `database`.
    pub isolation_strategy: String,
    /// Provision isolation when a tenant is created (default true). When
    /// false, new tenants stay `Provisioning` until provisioned explicitly.
    pub auto_provision: bool,
    /// What deactivate and delete do to a tenant's isolation (default keep).
    pub deprovision_policy: DeprovisionPolicy,
    /// The application's migrations (default none): applied to each
    /// tenant's schema or database (schema and database strategies), or
    /// to the shared tables of the main database (row level, where a
    /// migration registers a tenant table with `SELECT
    /// tenancy_register_table('t')`).
    pub migrations_dir: Option<PathBuf>,
    /// Database servers for the `database` strategy on PostgreSQL (default
    /// none: the main database's server). New tenants go to the server with
    /// the fewest tenants per unit of weight.
    pub database_servers: Vec<DatabaseServerConfig>,
    /// Tenants kept provisioned and migrated, unclaimed, so signup does not
    /// wait for provisioning (default 0: off). Used by the
    /// `schema` and `database` strategies; `row_level` has nothing to
    /// provision.
    pub pending_pool: u32,
    /// `row_level` on PostgreSQL: a `postgres://` URL of the role that owns
    /// the tables (default none: the main URL's role does everything).
    /// With it, the store's tables, the resources' tables and row-level
    /// security are set up as this role, which then grants the main URL's
    /// role reads and writes only: connect the server as an ordinary role
    /// (not superuser, not `BYPASSRLS`, not the owner), so that row-level
    /// security binds it.
    pub owner_database_url: Option<String>,
    /// `row_level` on PostgreSQL: a key (hex, at least 32 bytes) that signs
    /// the tenant setting of every scoped transaction, so that SQL running
    /// in a request's transaction cannot switch it to another tenant
    /// (`PgRowLevel::signed`). Needs `owner_database_url`. Keep it out of
    /// files: `TENANCY__LIFECYCLE__ROW_LEVEL_SIGNING_KEY`.
    pub row_level_signing_key: Option<Secret>,
    /// The plan a tenant moves to when its trial ends (SPEC E5); unset
    /// (the default), it is suspended with reason `trial_expired`. Must be
    /// one of `plans`.
    pub trial_fallback_plan: Option<String>,
}

/// One database server (`lifecycle.database_servers[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseServerConfig {
    /// The name placements record (keep it stable).
    pub name: String,
    /// A `postgres://` URL whose role may `CREATE DATABASE`.
    pub url: String,
    /// Relative share of new tenants (default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            isolation_strategy: "row_level".into(),
            auto_provision: true,
            deprovision_policy: DeprovisionPolicy::Keep,
            migrations_dir: None,
            database_servers: Vec::new(),
            pending_pool: 0,
            owner_database_url: None,
            row_level_signing_key: None,
            trial_fallback_plan: None,
        }
    }
}

/// `overrides.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverridesConfig {
    /// How long a tenant's overrides stay cached (default 60 s).
    pub cache_ttl_secs: u64,
    /// Most tenants cached (default 10,000).
    pub cache_capacity: u64,
    /// Application defaults that tenants may override (default empty).
    pub defaults: ConfigMap,
}

impl Default for OverridesConfig {
    fn default() -> Self {
        Self {
            cache_ttl_secs: 60,
            cache_capacity: 10_000,
            defaults: ConfigMap::new(),
        }
    }
}

/// A secret string: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `auth.*`
///
/// ```yaml
/// auth:
///   issuers:                       # identity providers (OpenID discovery or jwks_uri)
///     - issuer: https://example.eu.auth0.com/
///       audiences: [https://api.example.com]
///       algorithms: [RS256]        # default [RS256]
///   jwks_min_refresh_s: 30         # an unknown `kid` refetches at most this often
///   jwks_timeout_ms: 2000          # no request waits longer for a provider
///   leeway_s: 30                   # clock skew on `exp` and `nbf`
///   jwt_secret: …                  # HS256 (your own tokens), or jwt_public_key_pem / _file (RS256)
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 shared secret (default none).
    pub jwt_secret: Option<Secret>,
    /// RS256 public key, PEM text (default none).
    pub jwt_public_key_pem: Option<String>,
    /// RS256 public key, path to a PEM file (default none).
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` of tokens verified with the secret or key above, if
    /// set (default none).
    pub issuer: Option<String>,
    /// Required `aud` of tokens verified with the secret or key above, if
    /// set (default none).
    pub audience: Option<String>,
    /// Identity providers whose tokens are accepted (default none): each
    /// publishes its keys as a JWKS, found through OpenID discovery or
    /// named by `jwks_uri`.
    pub issuers: Vec<IssuerConfig>,
    /// An unknown `kid` refetches an issuer's keys at most once in this
    /// many seconds (default 30).
    pub jwks_min_refresh_s: u64,
    /// No request waits longer than this many milliseconds for an
    /// identity provider (default 2,000): past it, keys already fetched
    /// keep serving, and without any the answer is 503.
    pub jwks_timeout_ms: u64,
    /// Clock skew allowed on `exp` and `nbf`, seconds (default 30). The
    /// older name `leeway_secs` is read too.
    #[serde(alias = "leeway_secs")]
    pub leeway_s: u64,
    /// Every tenant route needs a verified token (401 `token_required`
    /// without one). Default: true as soon as an issuer, a secret or a key
    /// is configured, false otherwise.
    pub required: Option<bool>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_public_key_pem: None,
            jwt_public_key_file: None,
            issuer: None,
            audience: None,
            issuers: Vec::new(),
            jwks_min_refresh_s: 30,
            jwks_timeout_ms: 2_000,
            leeway_s: 30,
            required: None,
        }
    }
}

impl AuthConfig {
    /// Whether tokens can be verified: an issuer, an HS256 secret or a
    /// public key is set.
    pub fn is_configured(&self) -> bool {
        !self.issuers.is_empty()
            || self.jwt_secret.is_some()
            || self.jwt_public_key_pem.is_some()
            || self.jwt_public_key_file.is_some()
    }

    /// Whether every tenant route needs a token: `auth.required`, which
    /// defaults to [`AuthConfig::is_configured`].
    pub fn requires_token(&self) -> bool {
        self.required.unwrap_or_else(|| self.is_configured())
    }

    /// Checks the token settings: each issuer (see
    /// [`IssuerConfig::validate`]), no issuer listed twice, a non-zero
    /// timeout. The error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.jwks_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "auth.jwks_timeout_ms".into(),
                reason: "must be greater than 0".into(),
            });
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            let key = format!("auth.issuers[{i}]");
            issuer.validate(&key)?;
            if self.issuers[..i].iter().any(|o| o.issuer == issuer.issuer) {
                return Err(ConfigError::Invalid {
                    key: format!("{key}.issuer"),
                    reason: format!("issuer \"{}\" is listed twice", issuer.issuer),
                });
            }
        }
        Ok(())
    }
}

/// One identity provider of `auth.issuers`: whose tokens are accepted,
/// where its keys are, for which audiences and with which algorithms.
///
/// ```
/// use tenancy_core::config::IssuerConfig;
/// let okta = IssuerConfig::new("https://acme.okta.com/oauth2/default", ["api://default"]);
/// assert_eq!(okta.algorithms, ["RS256"]);
/// assert!(okta.validate("auth.issuers[0]").is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The issuer URL, exactly as in its tokens' `iss` and its discovery
    /// document.
    pub issuer: String,
    /// Where its keys (a JWKS) are; default: the `jwks_uri` of its OpenID
    /// discovery document, `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// A token's `aud` must name one of these (at least one is required).
    pub audiences: Vec<String>,
    /// Signature algorithms accepted from this issuer (default `[RS256]`):
    /// RS256, RS384, RS512, PS256, ES256, ES384, EdDSA. Shared-secret
    /// algorithms (HS*) and `none` are refused.
    #[serde(default = "default_issuer_algorithms")]
    pub algorithms: Vec<String>,
}

fn default_issuer_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}

impl IssuerConfig {
    /// The algorithms an issuer may be configured with.
    pub const ALGORITHMS: [&'static str; 7] = [
        "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA",
    ];

    /// An issuer found through OpenID discovery, accepting RS256 tokens
    /// for `audiences`.
    pub fn new<A: Into<String>>(
        issuer: impl Into<String>,
        audiences: impl IntoIterator<Item = A>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            jwks_uri: None,
            audiences: audiences.into_iter().map(Into::into).collect(),
            algorithms: default_issuer_algorithms(),
        }
    }

    /// Checks one issuer: `http`/`https` URLs, at least one audience,
    /// known asymmetric algorithms only. `key` names it in the error (such
    /// as `auth.issuers[0]`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            key: format!("{key}.{field}"),
            reason,
        };
        if !is_http_url(&self.issuer) {
            return Err(invalid(
                "issuer",
                format!(
                    "\"{}\" is not an http or https URL (example: https://example.eu.auth0.com/)",
                    self.issuer
                ),
            ));
        }
        if let Some(uri) = self.jwks_uri.as_deref().filter(|uri| !is_http_url(uri)) {
            return Err(invalid(
                "jwks_uri",
                format!("\"{uri}\" is not an http or https URL"),
            ));
        }
        if self.audiences.iter().all(|a| a.is_empty()) {
            return Err(invalid(
                "audiences",
                "name at least one audience: a token's `aud` must be one of them \
                 (the API identifier of your application at the provider)"
                    .into(),
            ));
        }
        if self.algorithms.is_empty() {
            return Err(invalid(
                "algorithms",
                "name at least one algorithm (such as RS256)".into(),
            ));
        }
        for alg in &self.algorithms {
            if !Self::ALGORITHMS.contains(&alg.as_str()) {
                let why = if alg.starts_with("HS") || alg.eq_ignore_ascii_case("none") {
                    "shared-secret algorithms and `none` are refused for identity providers \
                     (use auth.jwt_secret for your own HS256 tokens)"
                } else {
                    "unknown algorithm"
                };
                return Err(invalid(
                    "algorithms",
                    format!(
                        "\"{alg}\": {why}; expected RS256, RS384, RS512, PS256, ES256, ES384 or EdDSA"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Whether `url` is an absolute `http://` or `https://` URL with a host.
fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.and_then(|r| r.split(['/', '?', '#']).next())
        .is_some_and(|host| !host.is_empty() && !host.contains(char::is_whitespace))
}

/// `server.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub bind: String,
    /// Bearer token for the admin API (default none: one is generated and
    /// printed at start).
    pub admin_token: Option<Secret>,
    /// Tenant-aware CRUD resources served under `/api/{name}` (default
    /// none: the built-in `notes` resource).
    pub resources: Vec<ResourceConfig>,
    /// Tenants with a series of their own in `GET /metrics` (default 100);
    /// the requests of all others are counted as `tenant_id="_other"`.
    pub metrics_tenants: usize,
    /// A client must send a request's whole header within this many
    /// milliseconds, else its connection is closed (default 10,000).
    pub header_timeout_ms: u64,
    /// A request body must arrive within this many milliseconds, else the
    /// answer is 408 `body_timeout` (default 10,000).
    pub body_timeout_ms: u64,
    /// Bodies larger than this many bytes are refused with 413
    /// `body_too_large` (default 1 MiB).
    pub max_body_bytes: usize,
    /// Tenant, gateway and health routes answer within this many
    /// milliseconds; past it the answer is 503 `request_timeout` with
    /// `Retry-After` (default 3,000: a database that stopped answering
    /// never holds a request longer).
    pub request_timeout_ms: u64,
    /// The same bound for admin routes, which may provision (default
    /// 30,000).
    pub admin_timeout_ms: u64,
    /// Open connections at most (default 1,024); lowered at start to the
    /// process's descriptor limit minus a reserve for the database pools
    /// and files, so accepting never runs out of descriptors. Connections
    /// beyond it wait in the listen backlog.
    pub max_connections: usize,
    /// Refuse to start when `tenancy doctor`'s checks find a critical
    /// isolation defect (default false: each finding is printed and the
    /// server starts).
    pub refuse_unsafe_start: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            admin_token: None,
            resources: Vec::new(),
            metrics_tenants: 100,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            max_body_bytes: 1 << 20,
            request_timeout_ms: 3_000,
            admin_timeout_ms: 30_000,
            max_connections: 1_024,
            refuse_unsafe_start: false,
        }
    }
}

/// One CRUD resource of `tenancy serve` (`server.resources[]`): a tenant
/// table with a tenant column (`tenant_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// The route segment: `/api/{name}`.
    pub name: String,
    /// The table (defaults to `name`).
    #[serde(default)]
    pub table: Option<String>,
    /// The primary-key column (default `id`).
    #[serde(default = "default_key")]
    pub key: String,
    /// The columns exposed (the tenant column never is).
    pub columns: Vec<String>,
    /// Columns searched by `?q=` (default none).
    #[serde(default)]
    pub search: Vec<String>,
}

fn default_key() -> String {
    "id".into()
}

/// `rate_limit.*`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per second for a tenant with no plan or override (default 100).
    pub default_rps: u32,
    /// Requests per second by plan name (default empty).
    pub plans: BTreeMap<String, u32>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            default_rps: 100,
            plans: BTreeMap::new(),
        }
    }
}

/// `integration.*`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntegrationConfig {
    /// Redis for shared rate limits (default none: in-process).
    pub redis_url: Option<String>,
    /// NATS for publishing tenant events (default none).
    pub nats_url: Option<String>,
}

impl TenancyConfig {
    /// The file read by [`TenancyConfig::load`].
    pub const DEFAULT_FILE: &'static str = "tenancy.yaml";

    /// Loads `tenancy.yaml` from the working directory if it exists, then
    /// applies `TENANCY__…` environment overrides, then validates.
    pub fn load() -> Result<Self, ConfigError> {
        let default = Path::new(Self::DEFAULT_FILE);
        Self::load_from(default.exists().then_some(default))
    }

    /// Loads the given YAML file (it must exist) or none, then applies
    /// environment overrides, then validates.
    pub fn load_from(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env = std::env::vars().filter(|(k, _)| k.starts_with("TENANCY__"));
        Self::load_with_env(file, env)
    }

    /// Like [`TenancyConfig::load_from`] with an explicit environment (for
    /// tests and embedding).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist: create it or drop --config",
                    path.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Yaml)
                    .required(true),
            );
        }
        let env: std::collections::HashMap<String, String> = env.into_iter().collect();
        builder = builder.add_source(
            config::Environment::with_prefix("TENANCY")
                .prefix_separator("__")
                .separator("__")
                .keep_prefix(true)
                .source(Some(env)),
        );
        let raw = builder.build().map_err(load_error)?;
        // Deserializing from the root lets error messages name the full key.
        #[derive(Deserialize)]
        struct Root {
            #[serde(default)]
            tenancy: TenancyConfig,
        }
        let config = raw.try_deserialize::<Root>().map_err(load_error)?.tenancy;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that deserialization cannot: known names, non-zero
    /// durations, patterns.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resolution.validate()?;
        self.auth.validate()?;
        validate_plans(&self.plans)?;
        if let Some(plan) = &self.lifecycle.trial_fallback_plan
            && !self.plans.contains_key(plan)
        {
            return Err(ConfigError::Invalid {
                key: "lifecycle.trial_fallback_plan".into(),
                reason: format!(
                    "no plan \"{}\" in `plans`: name one of them, or unset it to suspend tenants whose trial ended",
                    plan.escape_debug()
                ),
            });
        }
        let positive = [
            ("validation.cache_ttl_secs", self.validation.cache_ttl_secs),
            (
                "validation.negative_ttl_secs",
                self.validation.negative_ttl_secs,
            ),
            ("validation.cache_capacity", self.validation.cache_capacity),
            ("overrides.cache_ttl_secs", self.overrides.cache_ttl_secs),
            ("overrides.cache_capacity", self.overrides.cache_capacity),
            (
                "rate_limit.default_rps",
                u64::from(self.rate_limit.default_rps),
            ),
            ("server.header_timeout_ms", self.server.header_timeout_ms),
            ("server.body_timeout_ms", self.server.body_timeout_ms),
            ("server.request_timeout_ms", self.server.request_timeout_ms),
            ("server.admin_timeout_ms", self.server.admin_timeout_ms),
            ("server.max_body_bytes", self.server.max_body_bytes as u64),
            ("server.max_connections", self.server.max_connections as u64),
            ("jobs.lease_s", self.jobs.lease_s),
            ("jobs.max_attempts", u64::from(self.jobs.max_attempts)),
            (
                "jobs.max_concurrency_per_tenant",
                u64::from(self.jobs.max_concurrency_per_tenant),
            ),
            ("jobs.poll_ms", self.jobs.poll_ms),
            ("usage.flush_secs", self.usage.flush_secs),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key: key.into(),
                    reason: "must be greater than 0".into(),
                });
            }
        }
        for (plan, rps) in &self.rate_limit.plans {
            if *rps == 0 {
                return Err(ConfigError::Invalid {
                    key: format!("rate_limit.plans.{plan}"),
                    reason: "must be greater than 0".into(),
                });
            }
        }
        Ok(())
    }
}

/// Accepts `[a, b]` or `"a,b"`.
fn list_or_csv<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(deserializer)? {
        ListOrCsv::List(items) => items,
        ListOrCsv::Csv(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

fn load_error(err: config::ConfigError) -> ConfigError {
    // config-rs names the key in its messages ("… for key `tenancy.x.y`").
    ConfigError::Load(err.to_string())
}
