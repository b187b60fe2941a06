//! Tenant-prefixed cache keys: `t:{tenant}:{part}:{part}…` for
//! any cache (Redis, memcached, an in-process map).
//!
//! Every key starts with the tenant, so one tenant's entries can never be
//! read under another tenant's key, and all of a tenant's entries share the
//! prefix [`tenant_prefix`] (to scan or drop them together).
//!
//! ```
//! use tenancy::{TenantId, cache_key, current_cache_key, with_tenant};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let acme: TenantId = "acme".parse()?;
//! assert_eq!(cache_key(&acme, &["notes", "42"]), "t:acme:notes:42");
//!
//! // A part cannot forge another tenant's prefix: ':' is escaped.
//! assert_eq!(cache_key(&acme, &["x:t:globex"]), "t:acme:x%3At%3Aglobex");
//!
//! // From the current tenant; outside a tenant scope there is no key.
//! assert!(current_cache_key(&["notes"]).is_err());
//! let key = with_tenant(acme, async { current_cache_key(&["notes"]) }).await;
//! assert_eq!(key?, "t:acme:notes");
//! # Ok(()) }
//! ```
//!
//! # Escaping
//!
//! Parts are free text: instead of refusing a `:` (ids such as `user:42`
//! are common), it is escaped as `%3A`, and `%` as `%25`, so a part never
//! contains the separator and the mapping from (tenant, parts) to key is
//! one-to-one. Tenant ids are `[A-Za-z0-9_-]` and need no escaping. Glob
//! characters (`*`, `?`, `[`) are left alone: escape them yourself before
//! using a key as a Redis `SCAN MATCH` pattern.

use crate::context;
use crate::tenant::TenantId;

/// The separator between the segments of a key.
pub const SEPARATOR: char = ':';

/// A key was asked for outside any tenant scope: there is no tenant to
/// prefix it with, so there is no key (fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "no current tenant: build cache keys inside a request or `with_tenant`, or name the tenant explicitly"
)]
pub struct NoTenantScope;

/// `t:{tenant}:` — the prefix shared by every key of `tenant`.
pub fn tenant_prefix(tenant: &TenantId) -> String {
    format!("t:{tenant}:")
}

/// `t:{tenant}:{part}:{part}…`, with `:` and `%` in parts escaped.
///
/// With no parts the key is `t:{tenant}`.
pub fn cache_key<P: AsRef<str>>(tenant: &TenantId, parts: &[P]) -> String {
    let len = 2 + tenant.as_str().len() + parts.iter().map(|p| p.as_ref().len() + 1).sum::<usize>();
    let mut key = String::with_capacity(len);
    key.push_str("t:");
    key.push_str(tenant.as_str());
    for part in parts {
        key.push(SEPARATOR);
        push_escaped(&mut key, part.as_ref());
    }
    key
}

/// [`cache_key`] for the current task's tenant ([`context::current`]).
///
/// Fails with [`NoTenantScope`] outside a tenant scope: never a key
/// without a tenant.
pub fn current_cache_key<P: AsRef<str>>(parts: &[P]) -> Result<String, NoTenantScope> {
    context::current()
        .map(|tenant| cache_key(&tenant, parts))
        .ok_or(NoTenantScope)
}

fn push_escaped(key: &mut String, part: &str) {
    for c in part.chars() {
        match c {
            '%' => key.push_str("%25"),
            SEPARATOR => key.push_str("%3A"),
            c => key.push(c),
        }
    }
}

/// Reverses the escaping of one part (for tests and tooling).
#[cfg(test)]
fn unescape(part: &str) -> String {
    part.replace("%3A", ":").replace("%25", "%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn id(s: &str) -> TenantId {
        s.parse().unwrap()
    }

    #[test]
    fn builds_prefixed_keys() {
        let acme = id("acme");
        assert_eq!(cache_key(&acme, &["notes", "42"]), "t:acme:notes:42");
        assert_eq!(cache_key(&acme, &[String::from("notes")]), "t:acme:notes");
        assert_eq!(cache_key::<&str>(&acme, &[]), "t:acme");
        assert!(cache_key(&acme, &["a", "b"]).starts_with(&tenant_prefix(&acme)));
        assert_eq!(tenant_prefix(&acme), "t:acme:");
    }

    #[test]
    fn parts_cannot_forge_another_tenant() {
        let acme = id("acme");
        let globex = id("globex");
        let forged = cache_key(&acme, &["x:t:globex:notes"]);
        assert!(forged.starts_with("t:acme:"));
        assert_eq!(forged.matches(SEPARATOR).count(), 2);
        assert!(!forged.starts_with(&tenant_prefix(&globex)));
        // Escaping itself cannot be forged: '%' is escaped too.
        assert_ne!(cache_key(&acme, &["a%3Ab"]), cache_key(&acme, &["a:b"]));
        assert_eq!(unescape("a%253Ab"), "a%3Ab");
    }

    #[test]
    fn distinct_inputs_give_distinct_keys() {
        let inputs: Vec<(&str, Vec<&str>)> = vec![
            ("acme", vec![]),
            ("acme", vec![""]),
            ("acme", vec!["", ""]),
            ("acme", vec!["a:b"]),
            ("acme", vec!["a", "b"]),
            ("acme", vec!["a%3Ab"]),
            ("acme", vec!["a%b"]),
            ("acme", vec!["a%25b"]),
            ("acme-a", vec!["b"]),
            ("acme", vec!["-a", "b"]),
            ("acme", vec!["ünï:cødé"]),
        ];
        let keys: HashSet<String> = inputs
            .iter()
            .map(|(t, parts)| cache_key(&id(t), parts))
            .collect();
        assert_eq!(keys.len(), inputs.len());
        for (t, parts) in &inputs {
            let key = cache_key(&id(t), parts);
            let segments: Vec<&str> = key.split(SEPARATOR).collect();
            assert_eq!(segments[0], "t");
            assert_eq!(segments[1], *t);
            let decoded: Vec<String> = segments[2..].iter().map(|s| unescape(s)).collect();
            if parts.is_empty() {
                assert!(decoded.is_empty());
            } else {
                assert_eq!(decoded, *parts);
            }
        }
    }

    #[tokio::test]
    async fn current_key_needs_a_tenant_scope() {
        assert_eq!(current_cache_key(&["notes"]), Err(NoTenantScope));
        let key =
            context::with_tenant(id("acme"), async { current_cache_key(&["notes", "1"]) }).await;
        assert_eq!(key, Ok("t:acme:notes:1".to_owned()));
        assert_eq!(current_cache_key(&["notes"]), Err(NoTenantScope));
    }
}
