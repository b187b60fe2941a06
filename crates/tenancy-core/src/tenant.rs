//! The tenant model: identifiers, slugs, status and the commands
//! that create or change a tenant.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest accepted tenant id, in bytes.
pub const MAX_ID_LEN: usize = 64;
/// Shortest accepted slug, in bytes.
pub const MIN_SLUG_LEN: usize = 2;
/// Longest accepted slug, in bytes (a DNS label: subdomains must fit).
pub const MAX_SLUG_LEN: usize = 63;

/// The opaque, immutable identifier of a tenant.
///
/// Cheap to clone (reference counted). Store-generated (a UUID) unless the
/// caller gives one; a given id must be 1–64 characters of `[A-Za-z0-9_-]`,
/// so an id is always safe in a header, a URL and a log line.
///
/// ```
/// use tenancy::TenantId;
/// let id: TenantId = "acme-001".parse()?;
/// assert_eq!(id.as_str(), "acme-001");
/// assert!("../etc".parse::<TenantId>().is_err());
/// # Ok::<(), tenancy::InvalidTenantId>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// A new random id (UUID v4, hyphenated).
    pub fn generate() -> Self {
        Self(Arc::from(uuid::Uuid::new_v4().to_string()))
    }

    /// Checks and wraps `value`.
    pub fn new(value: &str) -> Result<Self, InvalidTenantId> {
        if is_valid_id(value) {
            Ok(Self(Arc::from(value)))
        } else {
            Err(InvalidTenantId {
                value: printable_prefix(value),
            })
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub(crate) fn is_valid_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A short, printable rendering of untrusted input for error messages.
pub(crate) fn printable_prefix(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(40)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().count() > 40 {
        out.push('…');
    }
    out
}

impl FromStr for TenantId {
    type Err = InvalidTenantId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::new(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A tenant id that is not 1–64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tenant id \"{value}\": use 1-64 characters of letters, digits, '-' or '_'")]
pub struct InvalidTenantId {
    /// The offending value, escaped and shortened.
    pub value: String,
}

/// A validated slug: the unique, URL-safe, human-readable tenant handle.
///
/// 2–63 characters of lower-case ASCII letters, digits and `-`, starting
/// with a letter and not ending with `-`, so it is a valid DNS label (a
/// subdomain) and a safe path segment.
///
/// ```
/// use tenancy::Slug;
/// assert!(Slug::new("acme-corp").is_ok());
/// assert!(Slug::new("Acme").is_err());
/// assert!(Slug::new("x'; DROP TABLE t;--").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Slug(String);

impl Slug {
    /// Checks and wraps `value`.
    pub fn new(value: &str) -> Result<Self, InvalidSlug> {
        let bytes = value.as_bytes();
        let ok = (MIN_SLUG_LEN..=MAX_SLUG_LEN).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes[bytes.len() - 1] != b'-'
            && bytes
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidSlug {
                value: printable_prefix(value),
            })
        }
    }

    /// The slug as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `pending`: the slug a pending pool member is provisioned under.
    pub(crate) fn pending() -> Self {
        Self("pending".to_owned())
    }
}

impl<'de> Deserialize<'de> for Slug {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::new(&raw).map_err(serde::de::Error::custom)
    }
}

impl FromStr for Slug {
    type Err = InvalidSlug;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for Slug {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A slug that breaks the slug rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid slug \"{value}\": use 2-63 characters of lower-case letters, digits and '-', starting with a letter and not ending with '-'"
)]
pub struct InvalidSlug {
    /// The offending value, escaped and shortened.
    pub value: String,
}

/// Where a tenant stands. Only [`TenantStatus::Active`] tenants are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Served.
    Active,
    /// Switched off by an operator; may be re-activated.
    Inactive,
    /// Blocked (e.g. unpaid); may be re-activated.
    Suspended,
    /// Being created: its isolation (schema, database) is not ready yet.
    Provisioning,
}

impl TenantStatus {
    /// The status as its lower-case name (`"active"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Suspended => "suspended",
            Self::Provisioning => "provisioning",
        }
    }

    /// Whether an operator may move a tenant from `self` to `to`.
    ///
    /// Staying in the same status is allowed (a no-op). A `Provisioning`
    /// tenant can only become `Active` (provisioning finished); nothing goes
    /// back to `Provisioning`.
    pub fn can_become(self, to: TenantStatus) -> bool {
        use TenantStatus::*;
        match (self, to) {
            (a, b) if a == b => true,
            (_, Provisioning) => false,
            (Provisioning, Active) => true,
            (Provisioning, _) => false,
            _ => true,
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TenantStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "inactive" => Ok(Self::Inactive),
            "suspended" => Ok(Self::Suspended),
            "provisioning" => Ok(Self::Provisioning),
            other => Err(format!(
                "unknown tenant status \"{}\": expected active, inactive, suspended or provisioning",
                printable_prefix(other)
            )),
        }
    }
}

/// Everything known about a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantInfo {
    /// Opaque, immutable id.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: TenantId,
    /// Unique, URL-safe handle.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub slug: Slug,
    /// Display name.
    pub name: String,
    /// Whether the tenant is served.
    pub status: TenantStatus,
    /// Why the status was last changed (e.g. the suspension reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Commercial plan; selects plan-wide defaults such as rate limits.
    pub plan: Option<String>,
    /// Free-form JSON object.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: serde_json::Value,
    /// When the tenant was created.
    pub created_at: DateTime<Utc>,
    /// When the tenant last changed.
    pub updated_at: DateTime<Utc>,
    /// When its trial ends (SPEC E5): past it, the tenant is suspended
    /// with reason `trial_expired`, or moved to
    /// `lifecycle.trial_fallback_plan` when one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_ends_at: Option<DateTime<Utc>>,
}

/// The status reason of a tenant whose trial ended.
pub const TRIAL_EXPIRED: &str = "trial_expired";

impl TenantInfo {
    /// Whether the tenant may be served.
    pub fn is_active(&self) -> bool {
        self.status == TenantStatus::Active
    }

    /// Whether its trial has ended by `now`.
    #[inline]
    pub fn trial_ended(&self, now: DateTime<Utc>) -> bool {
        self.trial_ends_at.is_some_and(|end| end <= now)
    }

    /// Whether its trial has ended (the clock is read only for a tenant on
    /// trial).
    #[inline]
    pub fn trial_over(&self) -> bool {
        self.trial_ends_at.is_some_and(|end| end <= Utc::now())
    }

    /// Whether `reference` (an id or a slug) names this tenant.
    pub fn is_named_by(&self, reference: &str) -> bool {
        self.id.as_str() == reference || self.slug.as_str() == reference
    }
}

/// The command that creates a tenant.
///
/// ```
/// use tenancy::NewTenant;
/// let cmd = NewTenant::new("acme", "Acme Corp")?.plan("pro");
/// # Ok::<(), tenancy::InvalidSlug>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTenant {
    /// A chosen id; the store generates one when `None`.
    #[serde(default)]
    pub id: Option<TenantId>,
    /// The slug.
    pub slug: Slug,
    /// Display name.
    pub name: String,
    /// Plan.
    #[serde(default)]
    pub plan: Option<String>,
    /// Metadata (a JSON object; `null` means empty).
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// When its trial ends (none: not on trial).
    #[serde(default)]
    pub trial_ends_at: Option<DateTime<Utc>>,
}

impl NewTenant {
    /// A command for `slug` and `name`, with no plan and empty metadata.
    pub fn new(slug: &str, name: impl Into<String>) -> Result<Self, InvalidSlug> {
        Ok(Self {
            id: None,
            slug: Slug::new(slug)?,
            name: name.into(),
            plan: None,
            metadata: serde_json::Value::Object(Default::default()),
            trial_ends_at: None,
        })
    }

    /// Puts the tenant on a trial ending at `ends_at`.
    pub fn trial_ends_at(mut self, ends_at: DateTime<Utc>) -> Self {
        self.trial_ends_at = Some(ends_at);
        self
    }

    /// Uses `id` instead of a generated one.
    pub fn id(mut self, id: TenantId) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the plan.
    pub fn plan(mut self, plan: impl Into<String>) -> Self {
        self.plan = Some(plan.into());
        self
    }

    /// Sets the metadata.
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// Builds the stored record (status `Provisioning`), generating the id
    /// if none was given. Stores call this so every store behaves alike.
    pub fn into_info(self, now: DateTime<Utc>) -> TenantInfo {
        TenantInfo {
            id: self.id.unwrap_or_else(TenantId::generate),
            slug: self.slug,
            name: self.name,
            status: TenantStatus::Provisioning,
            status_reason: None,
            plan: self.plan,
            metadata: match self.metadata {
                serde_json::Value::Null => serde_json::Value::Object(Default::default()),
                other => other,
            },
            created_at: now,
            updated_at: now,
            trial_ends_at: self.trial_ends_at,
        }
    }
}

/// The command that changes a tenant: only the fields given change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantUpdate {
    /// New slug.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub slug: Option<Slug>,
    /// New display name.
    #[serde(default)]
    pub name: Option<String>,
    /// New plan (`null` clears it).
    #[serde(default, with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub plan: Option<Option<String>>,
    /// New metadata (replaces the old object).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<serde_json::Value>,
    /// New trial end (`null` ends the trial: no end).
    #[serde(default, with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub trial_ends_at: Option<Option<DateTime<Utc>>>,
}

impl TenantUpdate {
    /// Sets the plan (`TenantUpdate::default().plan("pro")`).
    pub fn plan(mut self, plan: impl Into<String>) -> Self {
        self.plan = Some(Some(plan.into()));
        self
    }

    /// Whether the update changes nothing.
    pub fn is_empty(&self) -> bool {
        self.slug.is_none()
            && self.name.is_none()
            && self.plan.is_none()
            && self.metadata.is_none()
            && self.trial_ends_at.is_none()
    }

    /// Applies the update to `tenant`, stamping `updated_at` with `now`.
    pub fn apply_to(&self, tenant: &mut TenantInfo, now: DateTime<Utc>) {
        if let Some(slug) = &self.slug {
            tenant.slug = slug.clone();
        }
        if let Some(name) = &self.name {
            tenant.name = name.clone();
        }
        if let Some(plan) = &self.plan {
            tenant.plan = plan.clone();
        }
        if let Some(metadata) = &self.metadata {
            tenant.metadata = metadata.clone();
        }
        if let Some(trial) = self.trial_ends_at {
            tenant.trial_ends_at = trial;
        }
        tenant.updated_at = now;
    }
}

/// A field that may be absent (unchanged), `null` (cleared) or a value.
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// What a resolver found: an id or a slug, not yet checked against the
/// store. Untrusted input: it may be anything the client sent.
///
/// Values up to [`MAX_ID_LEN`] bytes (every well-formed one) are held
/// inline, so resolving a tenant does not allocate; longer (malformed)
/// values are kept on the heap, only to be refused and logged.
#[derive(Clone)]
pub struct TenantRef(RefRepr);

#[derive(Clone)]
enum RefRepr {
    /// Up to [`MAX_ID_LEN`] bytes, copied from a `&str`.
    Inline(arrayvec::ArrayString<MAX_ID_LEN>),
    Heap(Box<str>),
}

impl TenantRef {
    /// Wraps a raw value taken from a request.
    #[inline]
    pub fn new(raw: &str) -> Self {
        match arrayvec::ArrayString::from(raw) {
            Ok(inline) => Self(RefRepr::Inline(inline)),
            Err(_) => Self(RefRepr::Heap(Box::from(raw))),
        }
    }

    /// The raw value.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            RefRepr::Inline(value) => value.as_str(),
            RefRepr::Heap(value) => value,
        }
    }

    /// Whether the value can possibly name a tenant (an id or a slug
    /// shape). Malformed values are refused without a store lookup.
    pub fn is_well_formed(&self) -> bool {
        is_valid_id(self.as_str())
    }
}

impl PartialEq for TenantRef {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for TenantRef {}

impl std::hash::Hash for TenantRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for TenantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantRef(\"{}\")", printable_prefix(self.as_str()))
    }
}

impl fmt::Display for TenantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&printable_prefix(self.as_str()))
    }
}

impl From<&TenantId> for TenantRef {
    fn from(id: &TenantId) -> Self {
        Self::new(id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_hostile_values() {
        for bad in [
            "",
            "../x",
            "a b",
            "a\u{0}",
            "x'; drop",
            &"a".repeat(65),
            "é",
        ] {
            assert!(TenantId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(TenantId::new(&"a".repeat(64)).is_ok());
        assert!(TenantId::new(TenantId::generate().as_str()).is_ok());
    }

    #[test]
    fn slugs_follow_dns_label_rules() {
        for good in ["ab", "acme", "acme-corp", "a1", &"a".repeat(63)] {
            assert!(Slug::new(good).is_ok(), "{good:?} refused");
        }
        for bad in [
            "a",
            "",
            "1abc",
            "-abc",
            "abc-",
            "Acme",
            "ac_me",
            "ac.me",
            "../etc",
            "a b",
            "x';drop table t;--",
            &"a".repeat(64),
        ] {
            assert!(Slug::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn slug_error_is_escaped_and_short() {
        let err = Slug::new(&format!("\u{1b}[31m{}", "x".repeat(500))).unwrap_err();
        assert!(err.value.len() < 80);
        assert!(!err.to_string().contains('\u{1b}'));
    }

    #[test]
    fn status_transitions() {
        use TenantStatus::*;
        let all = [Active, Inactive, Suspended, Provisioning];
        for from in all {
            for to in all {
                let expected = from == to
                    || matches!(
                        (from, to),
                        (Provisioning, Active)
                            | (Active, Inactive)
                            | (Active, Suspended)
                            | (Inactive, Active)
                            | (Inactive, Suspended)
                            | (Suspended, Active)
                            | (Suspended, Inactive)
                    );
                assert_eq!(from.can_become(to), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn update_changes_only_given_fields() {
        let mut t = NewTenant::new("acme", "Acme")
            .unwrap()
            .plan("pro")
            .into_info(Utc::now());
        let before = t.clone();
        TenantUpdate {
            name: Some("Acme 2".into()),
            ..Default::default()
        }
        .apply_to(&mut t, Utc::now());
        assert_eq!(t.name, "Acme 2");
        assert_eq!(t.plan, before.plan);
        assert_eq!(t.slug, before.slug);
        assert_eq!(t.metadata, before.metadata);
    }

    #[test]
    fn update_json_distinguishes_absent_and_null_plan() {
        let absent: TenantUpdate = serde_json::from_str(r#"{"name":"x"}"#).unwrap();
        assert_eq!(absent.plan, None);
        let null: TenantUpdate = serde_json::from_str(r#"{"plan":null}"#).unwrap();
        assert_eq!(null.plan, Some(None));
        assert!(serde_json::from_str::<TenantUpdate>(r#"{"slug":"BAD SLUG"}"#).is_err());
    }
}
