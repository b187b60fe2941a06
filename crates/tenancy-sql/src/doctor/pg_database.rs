//! Checks of the database strategy on PostgreSQL: tenant databases and
//! tenant roles against the store's tenants, one catalog query of each
//! kind per database cluster (never one per tenant).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::PgPool;
use tenancy_core::{TenantId, TenantInfo, TenantStatus};

use super::{Check, Finding, Report, Severity};
use crate::ident::{archived_id, tenant_object_name};
use crate::{DatabaseServer, DbError, PgDatabaseIsolation};

/// Checks every tenant database on `servers` against the tenants of the
/// store (`tenants`), `home` holding the placements. Reads catalogs only.
///
/// Findings:
/// - `orphan_database`: a database named like a tenant's (`tenant_<id>`)
///   whose tenant is not in `tenants` (a warning), or that sits on a server
///   its tenant is not placed on (a copy left by a move); an archive
///   (`archived_<time>_<id>`) of a tenant no longer there is `info`.
///   Databases another deployment marked as its own are not looked at.
/// - `missing_storage`: a tenant (active or suspended) whose database is
///   not on its server. An inactive tenant without one is `info` (the
///   deprovision policy removed it on deactivation); a provisioning one is
///   skipped.
/// - `schema_privilege_leak`: a tenant database (or archive) that `PUBLIC`
///   or a role other than its tenant's role, the admin and superusers may
///   connect to, or a role that is a member of the tenant's role.
/// - `role_bypasses_rls`: a tenant role that is superuser, `BYPASSRLS`,
///   `CREATEDB`, `CREATEROLE` or `REPLICATION`, or a member of another
///   role (critical); missing or `NOLOGIN` while its database is there (a
///   warning: the tenant cannot connect).
///
/// Counts `databases` (tenant databases and archives looked at) and
/// `tenant_roles` (roles of tenants found). Servers that are one cluster
/// reached under two names are checked once. Members of the pending pool
/// are storage with no tenant yet: pass them in `tenants` (status
/// `provisioning` or `active`), or they are reported as orphans.
pub async fn check_databases(
    home: &PgPool,
    servers: &[DatabaseServer],
    tenants: &[TenantInfo],
    report: &mut Report,
) -> Result<(), DbError> {
    let mark = PgDatabaseIsolation::recorded_mark(home).await?;
    let placements = placements(home).await?;
    let first = servers.first().map(|s| s.name().to_owned());
    let known: HashMap<&str, &TenantInfo> = tenants.iter().map(|t| (t.id.as_str(), t)).collect();
    let placed = |t: &TenantInfo| -> Option<String> {
        placements
            .get(t.id.as_str())
            .cloned()
            .or_else(|| first.clone())
    };
    for t in tenants {
        if let Some(server) = placed(t)
            && !servers.iter().any(|s| s.name() == server)
            && t.status != TenantStatus::Provisioning
            && let Ok(name) = tenant_object_name(&t.id)
        {
            report.push(Finding::new(
                Check::MissingStorage,
                &name,
                format!(
                    "tenant {} ({}) is placed on database server `{server}`, which is not configured",
                    t.slug, t.id
                ),
                format!("add `{server}` back to lifecycle.database_servers"),
            ));
        }
    }

    for cluster in clusters(servers).await? {
        let here = |t: &TenantInfo| placed(t).is_some_and(|s| cluster.names.contains(&s));
        let catalog = Catalog::read(cluster.admin).await?;
        let on = cluster.label();

        // Databases: orphans and who may connect.
        let mut seen = BTreeSet::new();
        for db in &catalog.databases {
            let Some((id, archived)) = tenant_of(&db.name) else {
                continue;
            };
            let tenant = known.get(id).copied();
            let ours = tenant.is_some_and(&here)
                || match db.comment.as_deref() {
                    Some(c) if c.starts_with(PgDatabaseIsolation::MARK_PREFIX) => {
                        mark.as_deref() == Some(c)
                    }
                    _ => true,
                };
            if !ours {
                continue;
            }
            report.count("databases", 1);
            let role = format!("tenant_{id}");
            let orphan = match (tenant, archived) {
                (None, _) => true,
                (Some(t), false) => !here(t),
                (Some(_), true) => false,
            };
            if orphan {
                let others = catalog
                    .databases
                    .iter()
                    .filter(|d| d.name != db.name && tenant_of(&d.name).map(|(i, _)| i) == Some(id))
                    .count();
                let role_is_unused = others == 0 && !tenant.is_some_and(&here);
                report.push(orphan_finding(
                    db,
                    id,
                    archived,
                    tenant,
                    &role,
                    role_is_unused,
                    &on,
                ));
                continue;
            }
            if !archived {
                seen.insert(id.to_owned());
            }
            if tenant.is_some_and(|t| t.status == TenantStatus::Provisioning) {
                continue;
            }
            let own = (!archived).then_some(role.as_str());
            let allowed = |grantee: &str| Some(grantee) == own || grantee == catalog.admin;
            let mut offenders: Vec<String> = db
                .connectors
                .iter()
                .filter(|g| !allowed(g))
                .cloned()
                .collect();
            offenders.sort();
            offenders.dedup();
            let members: Vec<&String> = catalog
                .roles
                .get(&role)
                .map(|r| r.members.iter().filter(|m| **m != catalog.admin).collect())
                .unwrap_or_default();
            if !offenders.is_empty() || !members.is_empty() {
                report.push(leak_finding(&db.name, &role, &offenders, &members, &on));
            }
        }

        // Tenants placed here: their database and their role.
        for t in tenants.iter().filter(|t| here(t)) {
            // An id too long for a database name never had one.
            let Ok(name) = tenant_object_name(&t.id) else {
                continue;
            };
            if t.status == TenantStatus::Provisioning {
                continue;
            }
            let exists = seen.contains(t.id.as_str());
            if !exists {
                report.push(missing_finding(t, &name, &on));
            }
            match catalog.roles.get(&name) {
                Some(role) => {
                    report.count("tenant_roles", 1);
                    // Membership in another tenant's role is that tenant's
                    // leak (reported on its database), not this role's.
                    let tenant_role = |g: &String| {
                        g.strip_prefix("tenant_")
                            .and_then(|id| known.get(id))
                            .is_some_and(|t| here(t))
                    };
                    if let Some(finding) = role_finding(&name, role, exists, &tenant_role, &on) {
                        report.push(finding);
                    }
                }
                None if exists => report.push(
                    Finding::new(
                        Check::RoleBypassesRls,
                        &name,
                        format!(
                            "tenant {} ({}) has no role `{name}` on {on}: it cannot connect to its database",
                            t.slug, t.id
                        ),
                        "tenancy migrate",
                    )
                    .with_severity(Severity::Warning),
                ),
                None => {}
            }
        }
    }
    Ok(())
}

/// The tenant id a database name belongs to, and whether it is an archive.
fn tenant_of(name: &str) -> Option<(&str, bool)> {
    if let Some(id) = archived_id(name) {
        return Some((id, true));
    }
    let id = name.strip_prefix("tenant_")?;
    let parsed: TenantId = id.parse().ok()?;
    (tenant_object_name(&parsed).ok()?.as_str() == name).then_some((id, false))
}

/// An identifier quoted for a fix the operator runs (any text: `"`
/// doubled).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn orphan_finding(
    db: &DatabaseRow,
    id: &str,
    archived: bool,
    tenant: Option<&TenantInfo>,
    role: &str,
    drop_role: bool,
    on: &str,
) -> Finding {
    let mut detail = match (archived, tenant) {
        (true, _) => format!(
            "database {} on {on} is the archive of tenant {id}, which no longer exists (deprovision policy `archive`)",
            db.name
        ),
        (false, Some(t)) => format!(
            "database {} on {on} is a copy of tenant {} ({id}), which is placed on another server \
             (left by a failed or unfinished move: `tenancy tenants move {} --resume` settles one in progress)",
            db.name, t.slug, t.slug
        ),
        (false, None) => format!(
            "database {} on {on} belongs to no tenant: tenant {id} does not exist",
            db.name
        ),
    };
    if db.connectors.iter().any(|g| g.is_empty()) {
        detail.push_str("; PUBLIC can connect to it");
    }
    let mut fix = format!("DROP DATABASE {} WITH (FORCE);", quoted(&db.name));
    if drop_role {
        fix.push_str(&format!("\nDROP ROLE IF EXISTS {};", quoted(role)));
    }
    let finding = Finding::new(Check::OrphanDatabase, &db.name, detail, fix);
    if archived {
        finding.with_severity(Severity::Info)
    } else {
        finding
    }
}

fn leak_finding(
    database: &str,
    role: &str,
    offenders: &[String],
    members: &[&String],
    on: &str,
) -> Finding {
    let who: Vec<String> = offenders
        .iter()
        .map(|g| {
            if g.is_empty() {
                "PUBLIC (every role)".to_owned()
            } else {
                format!("role {g}")
            }
        })
        .chain(
            members
                .iter()
                .map(|m| format!("role {m} (a member of {role})")),
        )
        .collect();
    let fix: Vec<String> = offenders
        .iter()
        .map(|g| {
            let grantee = if g.is_empty() {
                "PUBLIC".to_owned()
            } else {
                quoted(g)
            };
            format!(
                "REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM {grantee};",
                quoted(database)
            )
        })
        .chain(
            members
                .iter()
                .map(|m| format!("REVOKE {} FROM {};", quoted(role), quoted(m))),
        )
        .collect();
    Finding::new(
        Check::SchemaPrivilegeLeak,
        database,
        format!(
            "tenant database {database} on {on} can be connected to by {}",
            who.join(", ")
        ),
        fix.join("\n"),
    )
}

fn missing_finding(t: &TenantInfo, name: &str, on: &str) -> Finding {
    let inactive = t.status == TenantStatus::Inactive;
    let detail = if inactive {
        format!(
            "inactive tenant {} ({}) has no database {name} on {on} (removed on deactivation by the deprovision policy; activating it provisions a new one)",
            t.slug, t.id
        )
    } else {
        format!(
            "tenant {} ({}) is {} but its database {name} is not on {on}",
            t.slug,
            t.id,
            t.status.as_str()
        )
    };
    let fix = format!(
        "CREATE DATABASE {};\n-- on {on}, then run `tenancy migrate` (it gives the database its role and tables); \
         restore it from a backup instead to keep the tenant's data",
        quoted(name)
    );
    let finding = Finding::new(Check::MissingStorage, name, detail, fix);
    if inactive {
        finding.with_severity(Severity::Info)
    } else {
        finding
    }
}

fn role_finding(
    name: &str,
    role: &RoleRow,
    database: bool,
    tenant_role: &dyn Fn(&String) -> bool,
    on: &str,
) -> Option<Finding> {
    let member_of: Vec<&String> = role.member_of.iter().filter(|g| !tenant_role(g)).collect();
    let dangerous: Vec<(&str, &str)> = [
        (role.superuser, "SUPERUSER", "NOSUPERUSER"),
        (role.bypassrls, "BYPASSRLS", "NOBYPASSRLS"),
        (role.createdb, "CREATEDB", "NOCREATEDB"),
        (role.createrole, "CREATEROLE", "NOCREATEROLE"),
        (role.replication, "REPLICATION", "NOREPLICATION"),
    ]
    .into_iter()
    .filter(|(bad, _, _)| *bad)
    .map(|(_, has, fix)| (has, fix))
    .collect();
    let no_login = database && !role.login;
    if dangerous.is_empty() && member_of.is_empty() && !no_login {
        return None;
    }
    let mut problems: Vec<String> = dangerous.iter().map(|(has, _)| (*has).to_owned()).collect();
    problems.extend(member_of.iter().map(|g| format!("member of role {g}")));
    let mut clauses: Vec<&str> = dangerous.iter().map(|(_, fix)| *fix).collect();
    if no_login {
        problems.push("NOLOGIN: the tenant cannot connect to its database".to_owned());
        clauses.insert(0, "LOGIN");
    }
    let mut fix = Vec::new();
    if !clauses.is_empty() {
        fix.push(format!(
            "ALTER ROLE {} {};",
            quoted(name),
            clauses.join(" ")
        ));
    }
    fix.extend(
        member_of
            .iter()
            .map(|g| format!("REVOKE {} FROM {};", quoted(g), quoted(name))),
    );
    let finding = Finding::new(
        Check::RoleBypassesRls,
        name,
        format!("tenant role {name} on {on}: {}", problems.join(", ")),
        fix.join("\n"),
    );
    Some(if dangerous.is_empty() && member_of.is_empty() {
        finding.with_severity(Severity::Warning)
    } else {
        finding
    })
}

/// Placements recorded in `home` (none when the table is not there yet).
async fn placements(home: &PgPool) -> Result<HashMap<String, String>, DbError> {
    let table: bool = sqlx::query_scalar("SELECT to_regclass('tenancy_placements') IS NOT NULL")
        .fetch_one(home)
        .await?;
    if !table {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT tenant_id, server FROM tenancy_placements")
            .fetch_all(home)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Configured servers grouped by the cluster they reach.
struct Cluster<'a> {
    names: Vec<String>,
    admin: &'a PgPool,
}

impl Cluster<'_> {
    /// `server a` or `servers a, b`, for details.
    fn label(&self) -> String {
        match self.names.as_slice() {
            [one] => format!("server `{one}`"),
            many => format!(
                "servers {}",
                many.iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// One entry per cluster: a cluster is told by its postmaster's start time
/// and port (readable by any role), so one server configured under two
/// names (two URLs) is checked once.
async fn clusters(servers: &[DatabaseServer]) -> Result<Vec<Cluster<'_>>, DbError> {
    let mut by_key: BTreeMap<String, Cluster<'_>> = BTreeMap::new();
    let mut order = Vec::new();
    for server in servers {
        let key: String = sqlx::query_scalar(
            "SELECT pg_postmaster_start_time()::text || ' ' || current_setting('port') \
             || ' ' || current_setting('cluster_name')",
        )
        .fetch_one(server.admin())
        .await?;
        match by_key.get_mut(&key) {
            Some(cluster) => cluster.names.push(server.name().to_owned()),
            None => {
                order.push(key.clone());
                by_key.insert(
                    key,
                    Cluster {
                        names: vec![server.name().to_owned()],
                        admin: server.admin(),
                    },
                );
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|key| by_key.remove(&key))
        .collect())
}

/// A tenant-named database: its comment and the non-superuser grantees
/// that may connect to it (`""` for PUBLIC).
#[derive(sqlx::FromRow)]
struct DatabaseRow {
    name: String,
    comment: Option<String>,
    connectors: Vec<String>,
}

/// A tenant role's attributes and memberships (superusers and the admin
/// left out of its members).
#[derive(sqlx::FromRow)]
struct RoleRow {
    name: String,
    login: bool,
    superuser: bool,
    bypassrls: bool,
    createdb: bool,
    createrole: bool,
    replication: bool,
    members: Vec<String>,
    member_of: Vec<String>,
}

/// What one cluster's catalogs say, in three queries.
struct Catalog {
    admin: String,
    databases: Vec<DatabaseRow>,
    roles: HashMap<String, RoleRow>,
}

impl Catalog {
    async fn read(admin: &PgPool) -> Result<Self, DbError> {
        let user: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(admin)
            .await?;
        let databases: Vec<DatabaseRow> = sqlx::query_as(
            "SELECT d.datname::text AS name, shobj_description(d.oid, 'pg_database') AS comment, \
                    COALESCE(ARRAY(SELECT COALESCE(g.rolname::text, '') \
                        FROM aclexplode(COALESCE(d.datacl, acldefault('d', d.datdba))) a \
                        LEFT JOIN pg_roles g ON g.oid = a.grantee \
                        WHERE a.privilege_type = 'CONNECT' AND (a.grantee = 0 OR NOT g.rolsuper)), '{}') AS connectors \
             FROM pg_database d \
             WHERE NOT d.datistemplate AND (d.datname LIKE 'tenant\\_%' OR d.datname LIKE 'archived\\_%') \
             ORDER BY d.datname",
        )
        .fetch_all(admin)
        .await?;
        let roles: Vec<RoleRow> = sqlx::query_as(
            "SELECT r.rolname::text AS name, r.rolcanlogin AS login, r.rolsuper AS superuser, \
                    r.rolbypassrls AS bypassrls, r.rolcreatedb AS createdb, r.rolcreaterole AS createrole, \
                    r.rolreplication AS replication, \
                    COALESCE(ARRAY(SELECT m.rolname::text FROM pg_auth_members am \
                        JOIN pg_roles m ON m.oid = am.member \
                        WHERE am.roleid = r.oid AND NOT m.rolsuper ORDER BY 1), '{}') AS members, \
                    COALESCE(ARRAY(SELECT g.rolname::text FROM pg_auth_members am \
                        JOIN pg_roles g ON g.oid = am.roleid \
                        WHERE am.member = r.oid ORDER BY 1), '{}') AS member_of \
             FROM pg_roles r WHERE r.rolname LIKE 'tenant\\_%'",
        )
        .fetch_all(admin)
        .await?;
        Ok(Self {
            admin: user,
            databases,
            roles: roles.into_iter().map(|r| (r.name.clone(), r)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_tell_their_tenant() {
        assert_eq!(tenant_of("tenant_acme-1"), Some(("acme-1", false)));
        assert_eq!(
            tenant_of("archived_1700000000_x_acme"),
            Some(("x_acme", true))
        );
        for other in [
            "tenant_",
            "tenant_a b",
            "tenancy_test_1",
            "postgres",
            "archived_x_acme",
        ] {
            assert_eq!(tenant_of(other), None, "{other}");
        }
        assert_eq!(tenant_of(&format!("tenant_{}", "a".repeat(41))), None);
    }

    #[test]
    fn fixes_quote_any_role_name() {
        assert_eq!(quoted("tenant_a"), "\"tenant_a\"");
        assert_eq!(quoted("we\"ird"), "\"we\"\"ird\"");
    }
}
