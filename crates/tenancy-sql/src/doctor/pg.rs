//! Checks of the row-level and schema strategies on PostgreSQL: a handful
//! of catalog-wide queries, never one per table or schema, so a database
//! with thousands of tenant schemas is checked in a few round trips.

use std::collections::{HashMap, HashSet};

use sqlx::PgPool;
use tenancy_core::{TenantInfo, TenantStatus};

use super::{Check, Finding, Report, Severity};
use crate::DbError;
use crate::PgRowLevel;
use crate::ident::archived_id;
use crate::portable::quote;

/// Schemas that are never the application's tables.
const SYSTEM_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'tenancy_rls') \
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// A table that has the tenant column, as the catalog describes it.
#[derive(sqlx::FromRow)]
struct TenantTable {
    /// Qualified and quoted as PostgreSQL prints a `regclass`.
    name: String,
    rls: bool,
    forced: bool,
    owner: String,
    /// Permissive policies for every command keyed on the tenant setting.
    tenant_policies: i64,
    /// Other permissive policies that apply to everyone or to the request
    /// role: they OR with the tenant policy.
    other_policies: Vec<String>,
    indexed: bool,
}

/// Checks every table with `tenant_column` in the database of `pool`
/// against the row-level strategy: RLS on and forced, the tenant policy,
/// an index leading with the tenant column, unique keys and foreign keys
/// that include it, and the request role (SPEC G1's `role_bypasses_rls`,
/// `rls_disabled`, `rls_not_forced`, `policy_missing`,
/// `tenant_column_unindexed`, `unique_without_tenant`,
/// `fk_without_tenant`). The toolkit's own tables (`tenancy_*`,
/// `_tenancy_*`) are its control plane, not tenant data, and are skipped.
pub async fn check_row_level(
    pool: &PgPool,
    tenant_column: &str,
    report: &mut Report,
) -> Result<(), DbError> {
    let tables = tenant_tables(pool, tenant_column).await?;
    let all_tables: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {SYSTEM_SCHEMAS}"
    )))
    .fetch_one(pool)
    .await?;
    report.count("tables", all_tables.max(0) as u64);
    report.count("tenant_tables", tables.len() as u64);
    request_role(pool, &tables, report).await?;
    let column = quote(tenant_column);
    for t in &tables {
        let register = format!(
            "SELECT tenancy_register_table('{}', '{}');",
            t.name.replace('\'', "''"),
            tenant_column.replace('\'', "''")
        );
        if !t.rls {
            report.push(Finding::new(
                Check::RlsDisabled,
                &t.name,
                format!(
                    "{} has the tenant column {tenant_column} but row-level security is off: \
                     every query sees every tenant's rows",
                    t.name
                ),
                register.clone(),
            ));
        } else if !t.forced {
            report.push(Finding::new(
                Check::RlsNotForced,
                &t.name,
                format!(
                    "row-level security on {} is not forced: its owner ({}) is not bound by it",
                    t.name, t.owner
                ),
                format!("ALTER TABLE {} FORCE ROW LEVEL SECURITY;", t.name),
            ));
        }
        if t.rls && t.tenant_policies == 0 {
            report.push(Finding::new(
                Check::PolicyMissing,
                &t.name,
                format!(
                    "no policy on {} compares {tenant_column} with the tenant setting: \
                     with RLS on and no such policy, tenants see nothing (or what other policies allow)",
                    t.name
                ),
                register.clone(),
            ));
        }
        for policy in &t.other_policies {
            report.push(Finding::new(
                Check::PolicyMissing,
                format!("{policy} ON {}", t.name),
                format!(
                    "the permissive policy {policy} on {} is not keyed on the tenant setting: \
                     permissive policies are ORed, so it opens rows the tenant policy would hide",
                    t.name
                ),
                format!("DROP POLICY {} ON {};", quote(policy), t.name),
            ));
        }
        if !t.indexed {
            report.push(Finding::new(
                Check::TenantColumnUnindexed,
                &t.name,
                format!(
                    "no index of {} leads with {tenant_column}: every tenant's query scans the whole table",
                    t.name
                ),
                format!("CREATE INDEX CONCURRENTLY ON {} ({column});", t.name),
            ));
        }
    }
    unique_without_tenant(pool, tenant_column, report).await?;
    fk_without_tenant(pool, tenant_column, report).await?;
    Ok(())
}

async fn tenant_tables(pool: &PgPool, tenant_column: &str) -> Result<Vec<TenantTable>, DbError> {
    let rows = sqlx::query_as::<_, TenantTable>(sqlx::AssertSqlSafe(format!(
        "SELECT c.oid::regclass::text AS name, c.relrowsecurity AS rls, c.relforcerowsecurity AS forced, \
                pg_get_userbyid(c.relowner)::text AS owner, \
                (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid AND p.polpermissive AND p.polcmd = '*' \
                    AND (pg_get_expr(p.polqual, p.polrelid) LIKE '%tenancy.tenant_id%' \
                         OR pg_get_expr(p.polqual, p.polrelid) LIKE '%tenancy_rls.current_tenant()%') \
                    AND (p.polwithcheck IS NULL \
                         OR pg_get_expr(p.polwithcheck, p.polrelid) LIKE '%tenancy.tenant_id%' \
                         OR pg_get_expr(p.polwithcheck, p.polrelid) LIKE '%tenancy_rls.current_tenant()%')) \
                    AS tenant_policies, \
                COALESCE(ARRAY(SELECT p.polname::text FROM pg_policy p WHERE p.polrelid = c.oid AND p.polpermissive \
                    AND ('0'::oid = ANY (p.polroles) \
                         OR EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = '{role}' AND r.oid = ANY (p.polroles))) \
                    AND COALESCE(pg_get_expr(p.polqual, p.polrelid), '') NOT LIKE '%tenancy.tenant_id%' \
                    AND COALESCE(pg_get_expr(p.polqual, p.polrelid), '') NOT LIKE '%tenancy_rls.current_tenant()%' \
                    ORDER BY 1), '{{}}') AS other_policies, \
                EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum) AS indexed \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = $1 AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {SYSTEM_SCHEMAS} \
           AND c.relname NOT LIKE 'tenancy\\_%' AND c.relname NOT LIKE '\\_tenancy\\_%' \
           AND n.nspname NOT LIKE 'tenant\\_%' AND n.nspname NOT LIKE 'archived\\_%' \
         ORDER BY 1",
        role = PgRowLevel::REQUEST_ROLE
    )))
    .bind(tenant_column)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// `role_bypasses_rls`: the request role is missing, superuser or
/// `BYPASSRLS`, or owns a tenant table.
async fn request_role(
    pool: &PgPool,
    tables: &[TenantTable],
    report: &mut Report,
) -> Result<(), DbError> {
    let role = PgRowLevel::REQUEST_ROLE;
    let flags: Option<(bool, bool)> =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_optional(pool)
            .await?;
    report.count("roles", 1);
    match flags {
        None => report.push(Finding::new(
            Check::RoleBypassesRls,
            role,
            format!(
                "the request role {role} does not exist: scoped transactions cannot switch to it and fail"
            ),
            "tenancy migrate",
        )),
        Some((superuser, bypass)) if superuser || bypass => report.push(Finding::new(
            Check::RoleBypassesRls,
            role,
            format!(
                "the request role {role} is {}: row-level security does not apply to it, so every request sees every tenant",
                if superuser { "a superuser" } else { "BYPASSRLS" }
            ),
            format!("ALTER ROLE {role} NOSUPERUSER NOBYPASSRLS;"),
        )),
        Some(_) => {}
    }
    for t in tables.iter().filter(|t| t.owner == role) {
        report.push(Finding::new(
            Check::RoleBypassesRls,
            &t.name,
            format!(
                "the request role {role} owns {}: an owner can disable row-level security on it",
                t.name
            ),
            format!("ALTER TABLE {} OWNER TO CURRENT_USER;", t.name),
        ));
    }
    Ok(())
}

/// One unique index without the tenant column.
#[derive(sqlx::FromRow)]
struct LooseUnique {
    index: String,
    table: String,
    constraint_name: Option<String>,
    primary: bool,
    columns: Vec<String>,
    predicate: Option<String>,
    expressions: bool,
}

async fn unique_without_tenant(
    pool: &PgPool,
    tenant_column: &str,
    report: &mut Report,
) -> Result<(), DbError> {
    let rows = sqlx::query_as::<_, LooseUnique>(sqlx::AssertSqlSafe(format!(
        "SELECT i.indexrelid::regclass::text AS index, c.oid::regclass::text AS table, \
                con.conname::text AS constraint_name, i.indisprimary AS primary, \
                COALESCE(ARRAY(SELECT quote_ident(ka.attname) FROM generate_series(0, i.indnkeyatts - 1) g \
                    JOIN pg_attribute ka ON ka.attrelid = c.oid AND ka.attnum = i.indkey[g] ORDER BY g), '{{}}') AS columns, \
                pg_get_expr(i.indpred, i.indrelid) AS predicate, \
                i.indexprs IS NOT NULL AS expressions \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = $1 AND a.attnum > 0 AND NOT a.attisdropped \
         LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.contype IN ('p', 'u') \
         WHERE i.indisunique AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND {SYSTEM_SCHEMAS} \
           AND c.relname NOT LIKE 'tenancy\\_%' AND c.relname NOT LIKE '\\_tenancy\\_%' \
           AND n.nspname NOT LIKE 'tenant\\_%' AND n.nspname NOT LIKE 'archived\\_%' \
           AND NOT EXISTS (SELECT 1 FROM generate_series(0, i.indnkeyatts - 1) g WHERE i.indkey[g] = a.attnum) \
         ORDER BY 1"
    )))
    .bind(tenant_column)
    .fetch_all(pool)
    .await?;
    let column = quote(tenant_column);
    for u in rows {
        let keyed = std::iter::once(column.clone())
            .chain(u.columns.iter().cloned())
            .collect::<Vec<_>>()
            .join(", ");
        let fix = match (&u.constraint_name, u.expressions) {
            (_, true) => format!(
                "-- recreate {} as a unique index whose first column is {column}",
                u.index
            ),
            (Some(name), false) => format!(
                "ALTER TABLE {} DROP CONSTRAINT {}, ADD CONSTRAINT {} {} ({keyed});",
                u.table,
                quote(name),
                quote(name),
                if u.primary { "PRIMARY KEY" } else { "UNIQUE" }
            ),
            (None, false) => {
                let bare = u.index.rsplit('.').next().unwrap_or(&u.index);
                format!(
                    "DROP INDEX {}; CREATE UNIQUE INDEX {bare} ON {} ({keyed}){};",
                    u.index,
                    u.table,
                    u.predicate
                        .as_deref()
                        .map(|p| format!(" WHERE {p}"))
                        .unwrap_or_default()
                )
            }
        };
        report.push(Finding::new(
            Check::UniqueWithoutTenant,
            &u.index,
            format!(
                "the {} {} on {} does not include {tenant_column}: a tenant inserting a value another tenant \
                 holds gets a unique violation, which tells it the value exists (and Citus refuses it)",
                if u.primary { "primary key" } else { "unique index" },
                u.index,
                u.table
            ),
            fix,
        ));
    }
    Ok(())
}

/// One foreign key between tenant tables that leaves out the tenant column.
#[derive(sqlx::FromRow)]
struct LooseForeignKey {
    name: String,
    table: String,
    target: String,
    columns: Vec<String>,
    target_columns: Vec<String>,
}

async fn fk_without_tenant(
    pool: &PgPool,
    tenant_column: &str,
    report: &mut Report,
) -> Result<(), DbError> {
    let rows = sqlx::query_as::<_, LooseForeignKey>(
        "SELECT f.conname::text AS name, f.conrelid::regclass::text AS table, f.confrelid::regclass::text AS target, \
                COALESCE(ARRAY(SELECT quote_ident(ka.attname) FROM unnest(f.conkey) WITH ORDINALITY k(n, o) \
                    JOIN pg_attribute ka ON ka.attrelid = f.conrelid AND ka.attnum = k.n ORDER BY k.o), '{}') AS columns, \
                COALESCE(ARRAY(SELECT quote_ident(ka.attname) FROM unnest(f.confkey) WITH ORDINALITY k(n, o) \
                    JOIN pg_attribute ka ON ka.attrelid = f.confrelid AND ka.attnum = k.n ORDER BY k.o), '{}') AS target_columns \
         FROM pg_constraint f \
         JOIN pg_attribute a ON a.attrelid = f.conrelid AND a.attname = $1 AND NOT a.attisdropped \
         JOIN pg_attribute b ON b.attrelid = f.confrelid AND b.attname = $1 AND NOT b.attisdropped \
         JOIN pg_class c ON c.oid = f.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE f.contype = 'f' AND n.nspname NOT LIKE 'tenant\\_%' AND c.relname NOT LIKE 'tenancy\\_%' \
           AND NOT (a.attnum = ANY (f.conkey) AND b.attnum = ANY (f.confkey)) \
         ORDER BY 1, 2",
    )
    .bind(tenant_column)
    .fetch_all(pool)
    .await?;
    let column = quote(tenant_column);
    for fk in rows {
        let with_tenant = |cols: &[String]| {
            std::iter::once(column.clone())
                .chain(cols.iter().filter(|c| **c != column).cloned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (from, to) = (with_tenant(&fk.columns), with_tenant(&fk.target_columns));
        let name = quote(&fk.name);
        report.push(Finding::new(
            Check::FkWithoutTenant,
            format!("{name} ON {}", fk.table),
            format!(
                "the foreign key {name} from {} to {} leaves out {tenant_column}: a row can reference another \
                 tenant's row, and the reference proves that row exists",
                fk.table, fk.target
            ),
            format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({to}); \
                 ALTER TABLE {} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} FOREIGN KEY ({from}) REFERENCES {} ({to});",
                quote(&format!(
                    "{}_tenant_key",
                    fk.target.rsplit('.').next().unwrap_or(&fk.target).trim_matches('"')
                )),
                fk.target,
                fk.table,
                fk.target
            ),
        ));
    }
    Ok(())
}

/// Checks the schema strategy: every tenant has its schema
/// (`missing_storage`), every tenant schema has a tenant (`orphan_schema`;
/// archived ones are `info`), no tenant role or PUBLIC can use another
/// tenant's schema and no tenant role is a member of another's
/// (`schema_privilege_leak`), and no tenant role escapes RLS
/// (`role_bypasses_rls`).
pub async fn check_schemas(
    pool: &PgPool,
    tenants: &[TenantInfo],
    report: &mut Report,
) -> Result<(), DbError> {
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace \
         WHERE nspname LIKE 'tenant\\_%' OR nspname LIKE 'archived\\_%' ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    report.count("schemas", schemas.len() as u64);
    report.count("tenants", tenants.len() as u64);
    let present: HashSet<&str> = schemas.iter().map(String::as_str).collect();
    let known: HashMap<String, &TenantInfo> = tenants
        .iter()
        .map(|t| (format!("tenant_{}", t.id), t))
        .collect();
    for tenant in tenants {
        let name = format!("tenant_{}", tenant.id);
        if tenant.status != TenantStatus::Provisioning && !present.contains(name.as_str()) {
            report.push(Finding::new(
                Check::MissingStorage,
                format!("tenant {} ({})", tenant.slug, tenant.id),
                format!(
                    "tenant {} is {} but its schema {name} does not exist: its requests fail",
                    tenant.slug,
                    tenant.status.as_str()
                ),
                "tenancy migrate",
            ));
        }
    }
    for schema in &schemas {
        if let Some(id) = archived_id(schema) {
            report.push(
                Finding::new(
                    Check::OrphanSchema,
                    schema,
                    format!(
                        "{schema} is the archive of tenant {id}, kept by the deprovision policy"
                    ),
                    format!("DROP SCHEMA {} CASCADE;", quote(schema)),
                )
                .with_severity(Severity::Info),
            );
        } else if !known.contains_key(schema) {
            report.push(Finding::new(
                Check::OrphanSchema,
                schema,
                format!("the schema {schema} belongs to no tenant of the store"),
                format!(
                    "DROP SCHEMA {} CASCADE; DROP ROLE IF EXISTS {};",
                    quote(schema),
                    quote(schema)
                ),
            ));
        }
    }
    // Grants on tenant schemas to PUBLIC or to another tenant's role.
    let leaks: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(acl.grantee)::text END, \
                string_agg(acl.privilege_type, ', ' ORDER BY acl.privilege_type) \
         FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) acl \
         WHERE n.nspname LIKE 'tenant\\_%' AND acl.grantee <> n.nspowner \
           AND (acl.grantee = 0 OR pg_get_userbyid(acl.grantee) LIKE 'tenant\\_%') \
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    for (schema, grantee, privileges) in leaks {
        let who = if grantee == "PUBLIC" {
            "PUBLIC".to_owned()
        } else {
            quote(&grantee)
        };
        report.push(Finding::new(
            Check::SchemaPrivilegeLeak,
            &schema,
            format!("{grantee} has {privileges} on the schema {schema}: it can reach that tenant's tables"),
            format!("REVOKE ALL ON SCHEMA {} FROM {who};", quote(&schema)),
        ));
    }
    // A tenant role that is a member of another tenant's role.
    let memberships: Vec<(String, String)> = sqlx::query_as(
        "SELECT g.rolname::text, m.rolname::text FROM pg_auth_members am \
         JOIN pg_roles g ON g.oid = am.roleid JOIN pg_roles m ON m.oid = am.member \
         WHERE g.rolname LIKE 'tenant\\_%' AND m.rolname LIKE 'tenant\\_%' ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    for (granted, member) in memberships {
        report.push(Finding::new(
            Check::SchemaPrivilegeLeak,
            &granted,
            format!("the role {member} is a member of {granted}: it can use that tenant's schema"),
            format!("REVOKE {} FROM {};", quote(&granted), quote(&member)),
        ));
    }
    let privileged: Vec<String> = sqlx::query_scalar(
        "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'tenant\\_%' \
         AND (rolsuper OR rolbypassrls OR rolcreaterole) ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    for role in privileged.into_iter().filter(|r| known.contains_key(r)) {
        report.push(Finding::new(
            Check::RoleBypassesRls,
            &role,
            format!("the tenant role {role} is a superuser, BYPASSRLS or CREATEROLE: it can reach other tenants"),
            format!("ALTER ROLE {} NOSUPERUSER NOBYPASSRLS NOCREATEROLE;", quote(&role)),
        ));
    }
    Ok(())
}
