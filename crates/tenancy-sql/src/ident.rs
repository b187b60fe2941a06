//! Names derived from tenants, proven safe before they reach SQL.
//!
//! Tenant ids are already restricted to `[A-Za-z0-9_-]` by
//! [`TenantId`]; this module re-checks that (defence in depth) and the
//! length limits of PostgreSQL identifiers, then quotes. Nothing a client
//! sends is ever interpolated: only values that passed these checks.

use tenancy_core::TenantId;

use crate::DbError;

/// Longest tenant id usable with schema or database isolation, so that the
/// schema/database name and its archive name fit in 63 bytes.
pub const MAX_ISOLATED_ID_LEN: usize = 40;

fn is_safe(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ISOLATED_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The schema or database name of a tenant: `tenant_<id>`, exact case.
///
/// ```
/// use tenancy::sql::ident::tenant_object_name;
/// assert_eq!(tenant_object_name(&"Acme-1".parse().unwrap()).unwrap(), "tenant_Acme-1");
/// ```
pub fn tenant_object_name(id: &TenantId) -> Result<String, DbError> {
    if !is_safe(id.as_str()) {
        return Err(DbError::UnsafeName(format!(
            "tenant id \"{id}\" cannot name a schema or database: at most {MAX_ISOLATED_ID_LEN} characters of letters, digits, '-' and '_'"
        )));
    }
    Ok(format!("tenant_{id}"))
}

/// The name an archived schema or database gets: `archived_<unix time>_<id>`.
///
/// The time is digits only, so the first `_` after it ends it and the rest
/// is exactly the id: [`archived_id`] reads it back without ambiguity, even
/// for ids that contain `_` (`archived_1_x_acme` belongs to `x_acme`, never
/// to `acme`).
pub fn archive_name(id: &TenantId, unix_time: i64) -> Result<String, DbError> {
    tenant_object_name(id)?;
    Ok(format!("archived_{unix_time}_{id}"))
}

/// The tenant id an archived schema, database or file stem was named for
/// by [`archive_name`], or `None` when `name` is no such name. Compare the
/// result for equality (never by suffix) to find a tenant's archives.
///
/// ```
/// use tenancy::sql::ident::archived_id;
/// assert_eq!(archived_id("archived_1700000000_x_acme"), Some("x_acme"));
/// assert_eq!(archived_id("archived_17x_acme"), None);
/// assert_eq!(archived_id("tenant_acme"), None);
/// ```
pub fn archived_id(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("archived_")?;
    let (time, id) = rest.split_once('_')?;
    let digits = !time.is_empty() && time.bytes().all(|b| b.is_ascii_digit());
    (digits && is_safe(id)).then_some(id)
}

/// Whether `name` is an archived schema, database or file stem of tenant
/// `id` (made by [`archive_name`]): its id part is `id`, byte for byte.
pub fn is_archive_of(name: &str, id: &TenantId) -> bool {
    archived_id(name) == Some(id.as_str())
}

/// Quotes an identifier that passed validation (`"name"`).
pub fn quote_ident(name: &str) -> Result<String, DbError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(format!("\"{name}\""))
    } else {
        Err(DbError::UnsafeName(format!(
            "\"{}\" is not a safe SQL identifier: use at most 63 letters, digits, '-' or '_'",
            name.escape_debug()
        )))
    }
}

/// A single-quoted SQL literal of a tenant id, for the one place a value
/// cannot be bound: the `BEGIN` that scopes a transaction in the same round
/// trip. The id's alphabet (`[A-Za-z0-9_-]`, re-checked here) cannot close
/// or escape a literal.
#[cfg(feature = "postgres")]
pub(crate) fn tenant_literal(id: &TenantId) -> Result<String, DbError> {
    let s = id.as_str();
    if s.is_empty()
        || s.len() > 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(DbError::UnsafeName(format!(
            "tenant id \"{}\" is not safe",
            s.escape_debug()
        )));
    }
    Ok(format!("'{s}'"))
}

/// Checks a table or column name given by the application:
/// `[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes, optionally `schema.table`.
pub fn validate_table(name: &str) -> Result<String, DbError> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let quoted: Option<Vec<String>> = name
        .split('.')
        .map(|p| part_ok(p).then(|| format!("\"{p}\"")))
        .collect();
    match quoted {
        Some(parts) if (1..=2).contains(&parts.len()) => Ok(parts.join(".")),
        _ => Err(DbError::UnsafeName(format!(
            "\"{}\" is not a valid table or column name: use letters, digits and '_' (optionally schema.table)",
            name.escape_debug()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_and_refused_safely() {
        let id: TenantId = "acme-1".parse().unwrap();
        assert_eq!(tenant_object_name(&id).unwrap(), "tenant_acme-1");
        assert_eq!(
            archive_name(&id, 1700000000).unwrap(),
            "archived_1700000000_acme-1"
        );
        let long: TenantId = "a".repeat(41).parse().unwrap();
        assert!(tenant_object_name(&long).is_err());
        assert!(
            archive_name(&"a".repeat(40).parse().unwrap(), i64::from(u32::MAX))
                .unwrap()
                .len()
                <= 63
        );
    }

    #[test]
    fn archive_names_belong_to_exactly_one_tenant() {
        let acme: TenantId = "acme".parse().unwrap();
        let x_acme: TenantId = "x_acme".parse().unwrap();
        let mine = archive_name(&acme, 1700000000).unwrap();
        let theirs = archive_name(&x_acme, 1700000000).unwrap();
        assert!(is_archive_of(&mine, &acme));
        assert!(!is_archive_of(&mine, &x_acme));
        assert!(is_archive_of(&theirs, &x_acme));
        assert!(!is_archive_of(&theirs, &acme), "a suffix is not the id");
        for other in [
            "archived_1700000000_acmex",
            "archived_1700000000_acme_x",
            "archived__acme",
            "archived_17a_acme",
            "archived_1700000000_",
            "archived_1700000000_acme.db",
            "xarchived_1700000000_acme",
            "tenant_acme",
        ] {
            assert!(!is_archive_of(other, &acme), "{other}");
        }
        // Ids that start with digits or hold '_' still parse one way only.
        let odd: TenantId = "1_2".parse().unwrap();
        let name = archive_name(&odd, 5).unwrap();
        assert_eq!(archived_id(&name), Some("1_2"));
    }

    #[test]
    fn identifiers_and_tables() {
        assert_eq!(quote_ident("tenant_x").unwrap(), "\"tenant_x\"");
        for bad in ["", "a\"b", "a b", "x;drop", &"a".repeat(64)] {
            assert!(quote_ident(bad).is_err(), "{bad}");
        }
        assert_eq!(validate_table("notes").unwrap(), "\"notes\"");
        assert_eq!(validate_table("app.notes").unwrap(), "\"app\".\"notes\"");
        for bad in ["1notes", "no tes", "a.b.c", "n\"x", "notes;", ""] {
            assert!(validate_table(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn literal_is_only_for_safe_ids() {
        assert_eq!(tenant_literal(&"acme".parse().unwrap()).unwrap(), "'acme'");
    }
}
