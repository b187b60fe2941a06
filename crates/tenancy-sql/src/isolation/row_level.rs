//! Row-level isolation on PostgreSQL with Row-Level Security,
//! optionally keyed on a signed tenant setting ([`PgRowLevel::signed`]).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Postgres, Transaction};
use tenancy_core::config::DeprovisionPolicy;
use tenancy_core::{IsolationError, IsolationStrategy, TenantId, TenantInfo};

use super::step_error;
use crate::db::{DbError, ScopedBegin};
use crate::ident::{quote_ident, tenant_literal, validate_table};
use crate::migrate::{Applied, Migrations, apply};

/// Shared tables with a tenant column, guarded by PostgreSQL Row-Level
/// Security keyed on the transaction-local setting `tenancy.tenant_id`.
///
/// [`PgRowLevel::register_table`] enables and forces RLS on a table (so the
/// table owner is bound too), adds a policy that compares the tenant column
/// with the setting for reads and writes, and makes the column default to
/// the setting so inserts need not name it. With no tenant set the setting
/// is `''`/NULL and the policy matches no row: unscoped use sees nothing.
///
/// Every scoped transaction also switches to the request role
/// [`PgRowLevel::REQUEST_ROLE`] (`SET LOCAL ROLE tenancy_request`): an
/// ordinary role (not superuser, not `BYPASSRLS`, owning nothing) that may
/// only read and write the registered tables. So RLS binds the
/// application's hand-written SQL even when the pool connects as
/// `postgres`. [`PgRowLevel::install`] (or [`PgRowLevel::migrate`], or
/// [`PgRowLevel::register_table`]) creates the role; a pool of another
/// ordinary role must be a member of it ([`PgRowLevel::allow_role`]).
///
/// Migrations of the shared tables can register a table themselves:
/// `SELECT tenancy_register_table('projects')` (a function
/// [`PgRowLevel::install`] creates) does what
/// [`PgRowLevel::register_table`] does.
///
/// # What the plain form does not stop
///
/// The setting is an ordinary transaction-local setting: SQL running inside
/// the tenant's own transaction (an injection in the application) can run
/// `set_config('tenancy.tenant_id', '<other id>', true)` and then read and
/// write the other tenant's rows. [`PgRowLevel::signed`] closes that: the
/// policy trusts the setting only with a signature that only this process
/// can make.
#[derive(Clone)]
pub struct PgRowLevel {
    pool: PgPool,
    tables: Arc<Mutex<Vec<(String, String)>>>,
    key: Option<TenantSigningKey>,
}

impl PgRowLevel {
    /// The transaction-local setting that holds the tenant id.
    pub const SETTING: &'static str = "tenancy.tenant_id";

    /// The transaction-local setting that holds the tenant id's signature
    /// in the signed form ([`PgRowLevel::signed`]): lower-case hex of
    /// HMAC-SHA256(key, tenant id).
    pub const SIGNATURE_SETTING: &'static str = "tenancy.tenant_sig";

    /// The SQL expression of the verified tenant in the signed form: the
    /// id in [`Self::SETTING`] when [`Self::SIGNATURE_SETTING`] is its
    /// signature under the installed key, else NULL. Application SQL may
    /// use it too (`SELECT tenancy_rls.current_tenant()`).
    pub const VERIFIED_TENANT: &'static str = "tenancy_rls.current_tenant()";

    /// The role every scoped transaction runs as: `NOLOGIN`, not superuser,
    /// not `BYPASSRLS`, granted reads and writes on the registered tables
    /// only. Roles are per server: deployments sharing a server share it
    /// (its privileges are per table, so it reaches nothing else).
    pub const REQUEST_ROLE: &'static str = "tenancy_request";

    /// Row-level isolation over `pool`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = sqlx::PgPool::connect_lazy("postgres://app@127.0.0.1/app")?;
    /// let rows = tenancy::PgRowLevel::new(pool).with_table("notes", "tenant_id")?;
    /// # let _ = rows; Ok(()) }
    /// ```
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            tables: Arc::default(),
            key: None,
        }
    }

    /// The signed form: each scoped transaction also sets
    /// [`Self::SIGNATURE_SETTING`] to the tenant id's HMAC under `key`, and
    /// the policies of [`register_table`](Self::register_table) accept a
    /// row only for the id whose signature checks out
    /// ([`Self::VERIFIED_TENANT`]). SQL injected into a tenant's
    /// transaction can still change the settings, but cannot sign another
    /// id, so a forged id matches no row and allows no write.
    ///
    /// Trust model and requirements:
    /// - the owner role (which owns the tables) runs
    ///   [`install_signed_setting`](Self::install_signed_setting) or
    ///   [`register_table`](Self::register_table) on a signed `PgRowLevel`:
    ///   that stores the key in `tenancy_rls.setting_key`, readable by the
    ///   owner only, and creates the `SECURITY DEFINER` function
    ///   `tenancy_rls.current_tenant()` that checks the signature;
    /// - the application connects as an **ordinary role**: not the owner
    ///   of the key table or the function (the owner can read the key),
    ///   not superuser, not `BYPASSRLS` (those ignore RLS anyway);
    /// - every process of the application uses the same key, kept secret
    ///   like a password. A signature is a lasting capability for its
    ///   tenant: replacing the key (install again) revokes all of them.
    ///
    /// The signature is sent as a bound parameter, never in the SQL text,
    /// so it does not show in `pg_stat_activity` (which the application
    /// role can read for its other connections). That costs the scoped
    /// transaction more round trips than the plain form's one (`BEGIN`,
    /// then an unnamed statement, safe behind pgbouncer).
    ///
    /// ```
    /// use tenancy::{PgRowLevel, TenantDb, TenantSigningKey};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let name = format!("doc_{}", uuid::Uuid::new_v4().simple());
    /// # let admin = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/postgres").await?;
    /// # sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await?;
    /// # let owner_url = format!("postgres://postgres@127.0.0.1/{name}");
    /// // From a secret store; at least 32 bytes.
    /// let key = TenantSigningKey::from_hex("8d0f7f4c4d3b2a19e1c0b7a6958473625140f3e2d1c0b9a8f7e6d5c4b3a29180")?;
    ///
    /// // As the owner, once (a migration step):
    /// let owner = sqlx::PgPool::connect(&owner_url).await?;
    /// sqlx::query("CREATE TABLE notes (tenant_id text NOT NULL, body text NOT NULL)").execute(&owner).await?;
    /// PgRowLevel::new(owner.clone()).signed(key.clone()).register_table("notes", "tenant_id").await?;
    ///
    /// // The application, as an ordinary role (the owner pool stands in here; `check()` would refuse it):
    /// let rows = PgRowLevel::new(owner.clone()).signed(key).with_table("notes", "tenant_id")?;
    /// let db = TenantDb::new(rows);
    /// let mut tx = db.begin_for(&"acme".parse()?).await?;
    /// let verified: Option<String> = sqlx::query_scalar("SELECT tenancy_rls.current_tenant()")
    ///     .fetch_one(&mut *tx)
    ///     .await?;
    /// assert_eq!(verified.as_deref(), Some("acme"));
    /// // A forged id is not verified: the policies match no row for it.
    /// sqlx::query("SELECT set_config('tenancy.tenant_id', 'globex', true)").execute(&mut *tx).await?;
    /// let verified: Option<String> = sqlx::query_scalar("SELECT tenancy_rls.current_tenant()")
    ///     .fetch_one(&mut *tx)
    ///     .await?;
    /// assert_eq!(verified, None);
    /// # drop(tx); owner.close().await;
    /// # sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&admin).await?;
    /// # Ok(()) }
    /// ```
    pub fn signed(mut self, key: TenantSigningKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Stores the signing key in the database and creates the function
    /// that verifies the signed setting (see [`signed`](Self::signed)):
    /// schema `tenancy_rls`, its table `setting_key` (no privileges for
    /// anyone but the owner) and `tenancy_rls.current_tenant()`
    /// (`SECURITY DEFINER`, callable by everyone). Idempotent; run it as
    /// the owner role. Installing another key replaces the old one, which
    /// then verifies nothing: restart the application with the new key.
    ///
    /// [`register_table`](Self::register_table) on a signed `PgRowLevel`
    /// runs it too. Without a key it does nothing.
    ///
    /// ```no_run
    /// # async fn rotate(owner: sqlx::PgPool, new_key: tenancy::TenantSigningKey) -> Result<(), tenancy::DbError> {
    /// tenancy::PgRowLevel::new(owner).signed(new_key).install_signed_setting().await?;
    /// # Ok(()) }
    /// ```
    pub async fn install_signed_setting(&self) -> Result<(), DbError> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        let mut tx = self.pool.begin().await?;
        install_signed(&mut tx, key).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Puts `table` under RLS keyed on `column` (a `text` column).
    /// Idempotent. Run it as the table owner (e.g. in a migration step).
    ///
    /// The policy compares `column` with the tenant setting, or in the
    /// signed form with the verified tenant
    /// (`(SELECT tenancy_rls.current_tenant())`, a sub-select so that
    /// PostgreSQL checks the signature once per statement, not per row).
    /// The column defaults to the setting either way: a forged default
    /// fails the policy's `WITH CHECK`.
    ///
    /// ```no_run
    /// # async fn migrate(owner: sqlx::PgPool) -> Result<(), tenancy::DbError> {
    /// tenancy::PgRowLevel::new(owner).register_table("notes", "tenant_id").await?;
    /// # Ok(()) }
    /// ```
    pub async fn register_table(&self, table: &str, column: &str) -> Result<(), DbError> {
        let t = validate_table(table)?;
        let c = validate_table(column)?;
        let mut tx = self.pool.begin().await?;
        install_all(&mut tx, self.key.as_ref()).await?;
        sqlx::query("SELECT tenancy_register_table($1::regclass, $2)")
            .bind(&t)
            .bind(column)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.remember(t, c);
        Ok(())
    }

    /// Sets up what the row-level strategy needs in the database, as the
    /// owner of the tables (idempotent; a migration step):
    /// - the request role [`Self::REQUEST_ROLE`], granted to the current
    ///   role so that it may switch to it;
    /// - the function `tenancy_register_table(table regclass, tenant_column
    ///   name DEFAULT 'tenant_id')`, which enables and forces RLS on a
    ///   table, creates the isolation policy (signed when the signed setting
    ///   is installed), makes the tenant column default to the current
    ///   tenant and grants the request role reads and writes on the table
    ///   and its sequences. SQL migrations call it:
    ///   `SELECT tenancy_register_table('projects');`
    /// - in the signed form, the signed setting
    ///   ([`install_signed_setting`](Self::install_signed_setting)).
    ///
    /// Creating the role needs `CREATEROLE` (or a superuser); when the role
    /// exists already it is only checked.
    ///
    /// ```no_run
    /// # async fn set_up(owner: sqlx::PgPool) -> Result<(), tenancy::DbError> {
    /// tenancy::PgRowLevel::new(owner).install().await?;
    /// # Ok(()) }
    /// ```
    pub async fn install(&self) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        install_all(&mut tx, self.key.as_ref()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies the application's migrations to the shared database, in one
    /// transaction, after [`install`](Self::install): a migration registers
    /// its tenant tables with `SELECT tenancy_register_table('t')`. The
    /// versions applied are recorded in `_tenancy_migrations`, so a re-run
    /// applies only what is missing. Run it as the owner of the tables.
    ///
    /// ```no_run
    /// # async fn up(owner: sqlx::PgPool) -> Result<(), tenancy::DbError> {
    /// use tenancy::{Migration, Migrations, PgRowLevel};
    /// let migrations = Migrations::new(vec![Migration {
    ///     version: 1,
    ///     name: "projects".into(),
    ///     sql: "CREATE TABLE projects (tenant_id text NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY, \
    ///           name text NOT NULL, PRIMARY KEY (tenant_id, id)); \
    ///           SELECT tenancy_register_table('projects');".into(),
    /// }])?;
    /// let applied = PgRowLevel::new(owner).migrate(&migrations).await?;
    /// assert_eq!(applied.to, 1);
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self, migrations: &Migrations) -> Result<Applied, DbError> {
        let mut tx = self.pool.begin().await?;
        // One migrator at a time: two processes starting together would
        // otherwise both apply version 1.
        sqlx::query("SELECT pg_advisory_xact_lock(7261638)")
            .execute(&mut *tx)
            .await?;
        install_all(&mut tx, self.key.as_ref()).await?;
        let applied = apply::<Postgres>(&mut tx, migrations).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Lets the ordinary role `role` (the application's, when it is not the
    /// role that ran [`install`](Self::install)) switch to the request
    /// role: `GRANT tenancy_request TO role`. Run it as the owner.
    ///
    /// ```no_run
    /// # async fn grant(owner: sqlx::PgPool) -> Result<(), tenancy::DbError> {
    /// tenancy::PgRowLevel::new(owner).allow_role("app").await?;
    /// # Ok(()) }
    /// ```
    pub async fn allow_role(&self, role: &str) -> Result<(), DbError> {
        let role = quote_ident(role)?;
        let mut tx = self.pool.begin().await?;
        install_role(&mut tx).await?;
        sqlx::query(AssertSqlSafe(format!(
            "GRANT {} TO {role}",
            Self::REQUEST_ROLE
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    fn remember(&self, table: String, column: String) {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if !tables.iter().any(|(t, _)| *t == table) {
            tables.push((table, column));
        }
    }

    /// Records a table whose RLS was set up elsewhere (by the owner, in a
    /// migration), so `drop` deprovisioning covers it. No SQL is run.
    ///
    /// ```
    /// # fn f(pool: sqlx::PgPool) -> Result<(), tenancy::DbError> {
    /// let rows = tenancy::PgRowLevel::new(pool).with_table("notes", "tenant_id")?;
    /// # let _ = rows; Ok(()) }
    /// ```
    pub fn with_table(self, table: &str, column: &str) -> Result<Self, DbError> {
        self.remember(validate_table(table)?, validate_table(column)?);
        Ok(self)
    }

    fn registered(&self) -> Vec<(String, String)> {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl ScopedBegin<Postgres> for PgRowLevel {
    async fn begin_for(
        &self,
        tenant: &TenantId,
    ) -> Result<Transaction<'static, Postgres>, DbError> {
        let literal = tenant_literal(tenant)?;
        // The request role and the tenant, transaction-local, in the same
        // round trip as BEGIN. They are set *before* BEGIN on purpose: the
        // statements before a BEGIN in one simple query form an implicit
        // transaction that BEGIN takes over, so the settings hold in the
        // transaction; and when the switch fails (the role is missing, or
        // the pool's role is not a member) the implicit transaction ends
        // with the error and the connection goes back to the pool clean,
        // not stuck in an aborted transaction block.
        let Some(key) = &self.key else {
            let begin = format!(
                "SELECT set_config('role', '{}', true), set_config('tenancy.tenant_id', {literal}, true); BEGIN",
                Self::REQUEST_ROLE
            );
            return Ok(self.pool.begin_with(AssertSqlSafe(begin)).await?);
        };
        // The signature is a capability for its tenant: bound, never in
        // the SQL text, which other connections of the same role can read
        // in pg_stat_activity. Hence a statement of its own after BEGIN,
        // unnamed (not `persistent`) so that it is safe behind pgbouncer in
        // transaction mode before 1.21, like the simple queries that scope
        // the other strategies.
        let mut tx = self
            .pool
            .begin_with("SELECT set_config('role', 'tenancy_request', true); BEGIN")
            .await?;
        sqlx::query(
            "SELECT set_config('tenancy.tenant_id', $1, true), set_config('tenancy.tenant_sig', $2, true)",
        )
        .bind(tenant.as_str())
        .bind(key.sign(tenant))
        .persistent(false)
        .execute(&mut *tx)
        .await?;
        Ok(tx)
    }
}

#[async_trait]
impl IsolationStrategy for PgRowLevel {
    fn name(&self) -> &str {
        "row_level"
    }

    async fn provision(&self, _tenant: &TenantInfo) -> Result<(), IsolationError> {
        Ok(()) // shared tables: nothing per tenant
    }

    /// `drop` deletes the tenant's rows from every registered table, in one
    /// transaction scoped to the tenant and with an explicit predicate on the
    /// tenant column (RLS alone would not bind a superuser); `keep` and
    /// `archive` leave them.
    async fn deprovision(
        &self,
        tenant: &TenantInfo,
        policy: DeprovisionPolicy,
    ) -> Result<(), IsolationError> {
        if policy != DeprovisionPolicy::Drop {
            return Ok(());
        }
        let mut tx = self
            .begin_for(&tenant.id)
            .await
            .map_err(|e| IsolationError::new("row_level", "begin", e))?;
        // The predicate as well as RLS: superusers and BYPASSRLS roles (and
        // table owners without FORCE) are not bound by the policy, and an
        // unfiltered DELETE would then remove every tenant's rows.
        for (table, column) in self.registered() {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE {column} = NULLIF(current_setting('tenancy.tenant_id', true), '')"
            )))
                .execute(&mut *tx)
                .await
                .map_err(step_error("row_level", "delete rows"))?;
        }
        tx.commit().await.map_err(step_error("row_level", "commit"))
    }

    /// Switches to the request role in a probe transaction and checks that
    /// RLS binds it. In the signed form, also checks what the
    /// signed form relies on, since a broken setup either hides every row
    /// or protects nothing: the database verifies this process's
    /// signatures (the installed key is this key), and the pool's role can
    /// neither read nor change the key nor escape RLS (it is not superuser
    /// or `BYPASSRLS`, has no privilege on the key table and does not own
    /// it or the verifying function): the pool's own role, since SQL in a
    /// transaction can `RESET ROLE` back to it.
    async fn check(&self) -> Result<(), IsolationError> {
        if self.key.is_none() {
            // The scoped transaction switches to the request role (it
            // fails when the role is missing or not granted to the pool's
            // role), and that role is bound by RLS.
            let step = "switch to the request role";
            let probe = TenantId::new(PROBE_TENANT)
                .map_err(|e| IsolationError::new("row_level", step, e))?;
            let mut tx = self
                .begin_for(&probe)
                .await
                .map_err(|e| IsolationError::new("row_level", step, e))?;
            let bypasses: Option<bool> = sqlx::query_scalar(
                "SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
            )
            .fetch_optional(&mut *tx)
            .await
            .map_err(step_error("row_level", step))?;
            tx.rollback().await.map_err(step_error("row_level", step))?;
            return match bypasses {
                Some(false) => Ok(()),
                _ => Err(IsolationError::new(
                    "row_level",
                    step,
                    DbError::Refused(
                        "the request role tenancy_request is superuser or BYPASSRLS: ALTER ROLE tenancy_request NOSUPERUSER NOBYPASSRLS"
                            .into(),
                    ),
                )),
            };
        }
        let step = "verify the signed setting";
        let probe =
            TenantId::new(PROBE_TENANT).map_err(|e| IsolationError::new("row_level", step, e))?;
        let mut tx = self
            .begin_for(&probe)
            .await
            .map_err(|e| IsolationError::new("row_level", step, e))?;
        let (verified, privileged): (Option<String>, Option<bool>) = sqlx::query_as(
            "SELECT tenancy_rls.current_tenant(),
                pg_catalog.has_table_privilege(session_user, 'tenancy_rls.setting_key',
                    'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                OR (SELECT pg_catalog.pg_has_role(session_user, c.relowner, 'USAGE') FROM pg_catalog.pg_class c
                    WHERE c.oid = 'tenancy_rls.setting_key'::pg_catalog.regclass)
                OR (SELECT pg_catalog.pg_has_role(session_user, p.proowner, 'USAGE') FROM pg_catalog.pg_proc p
                    WHERE p.oid = 'tenancy_rls.current_tenant()'::pg_catalog.regprocedure)
                OR (SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r
                    WHERE r.rolname = session_user)",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(step_error("row_level", step))?;
        tx.rollback().await.map_err(step_error("row_level", step))?;
        if verified.as_deref() != Some(PROBE_TENANT) {
            return Err(IsolationError::new(
                "row_level",
                step,
                SigningKeyError::NotInstalled,
            ));
        }
        if privileged != Some(false) {
            return Err(IsolationError::new(
                "row_level",
                step,
                SigningKeyError::PrivilegedRole,
            ));
        }
        Ok(())
    }
}

/// The tenant id `check` signs and expects back (never given to a tenant:
/// it only proves the key round trip).
const PROBE_TENANT: &str = "tenancy-signing-probe";

/// What [`PgRowLevel::install`] sets up, in the caller's transaction.
async fn install_all(
    tx: &mut Transaction<'static, Postgres>,
    key: Option<&TenantSigningKey>,
) -> Result<(), DbError> {
    install_role(tx).await?;
    if let Some(key) = key {
        install_signed(tx, key).await?;
    }
    sqlx::raw_sql(REGISTER_FUNCTION).execute(&mut **tx).await?;
    Ok(())
}

/// Creates the request role when it is missing (two installers racing on
/// the same server: the loser's `duplicate_object` is ignored), checks
/// that it binds (not superuser, not `BYPASSRLS`) and lets the current
/// role switch to it.
async fn install_role(tx: &mut Transaction<'static, Postgres>) -> Result<(), DbError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)")
            .bind(PgRowLevel::REQUEST_ROLE)
            .fetch_one(&mut **tx)
            .await?;
    if !exists {
        sqlx::raw_sql(
            "DO $do$ BEGIN
                CREATE ROLE tenancy_request NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $do$",
        )
        .execute(&mut **tx)
        .await?;
    }
    let (bypasses, member): (bool, bool) = sqlx::query_as(
        "SELECT r.rolsuper OR r.rolbypassrls, pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER')
         FROM pg_catalog.pg_roles r WHERE r.rolname = $1",
    )
    .bind(PgRowLevel::REQUEST_ROLE)
    .fetch_one(&mut **tx)
    .await?;
    if bypasses {
        return Err(DbError::Refused(
            "the request role tenancy_request is superuser or BYPASSRLS, so row-level security would not bind \
             it: ALTER ROLE tenancy_request NOSUPERUSER NOBYPASSRLS"
                .into(),
        ));
    }
    if !member {
        sqlx::query("GRANT tenancy_request TO CURRENT_USER")
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// `tenancy_register_table(table, tenant_column)`: RLS enabled and forced,
/// the isolation policy (on the verified tenant when the signed setting is
/// installed), the column's default, and the request role's privileges.
/// It runs as its caller (the owner of the table: `ALTER TABLE` needs it),
/// with a fixed `search_path`, and builds its statements with `format`'s
/// `%I`/`%s` on a `regclass`, so names are always quoted.
const REGISTER_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION public.tenancy_register_table(target regclass, tenant_column name DEFAULT 'tenant_id')
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    t text := target::text;
    cond text;
    nsp name;
    seq text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = target AND attname = tenant_column AND attnum > 0 AND NOT attisdropped) THEN
        RAISE EXCEPTION 'table % has no column %', t, tenant_column
            USING HINT = 'name the tenant column: SELECT tenancy_register_table(''t'', ''column'')';
    END IF;
    IF to_regclass('tenancy_rls.setting_key') IS NOT NULL THEN
        cond := format('%I = (SELECT tenancy_rls.current_tenant())', tenant_column);
    ELSE
        cond := format('%I = NULLIF(current_setting(''tenancy.tenant_id'', true), '''')', tenant_column);
    END IF;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('DROP POLICY IF EXISTS tenancy_isolation ON %s', t);
    EXECUTE format('CREATE POLICY tenancy_isolation ON %s USING (%s) WITH CHECK (%s)', t, cond, cond);
    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT NULLIF(current_setting(''tenancy.tenant_id'', true), '''')',
                   t, tenant_column);
    SELECT n.nspname INTO nsp FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = target;
    IF NOT has_schema_privilege('tenancy_request', nsp, 'USAGE') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO tenancy_request', nsp);
    END IF;
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO tenancy_request', t);
    FOR seq IN
        SELECT pg_get_serial_sequence(t, a.attname) FROM pg_attribute a
        WHERE a.attrelid = target AND a.attnum > 0 AND NOT a.attisdropped
          AND pg_get_serial_sequence(t, a.attname) IS NOT NULL
    LOOP
        EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO tenancy_request', seq);
    END LOOP;
END
$fn$;
REVOKE ALL ON FUNCTION public.tenancy_register_table(regclass, name) FROM PUBLIC;
"#;

/// Creates (or updates) the key table and the verifying function, in the
/// caller's transaction. The statements name everything by schema: the
/// function runs with `search_path = pg_catalog, pg_temp`, so nothing the
/// caller or the application creates can stand in for what it calls.
///
/// The function computes HMAC-SHA256 with the built-in `sha256` (no
/// extension needed) from the key's two padded blocks, `K0 ⊕ ipad` and
/// `K0 ⊕ opad` (RFC 2104): `sha256(outer ‖ sha256(inner ‖ id))`.
async fn install_signed(
    tx: &mut Transaction<'static, Postgres>,
    key: &TenantSigningKey,
) -> Result<(), DbError> {
    for sql in [
        "CREATE SCHEMA IF NOT EXISTS tenancy_rls",
        "REVOKE ALL ON SCHEMA tenancy_rls FROM PUBLIC",
        "GRANT USAGE ON SCHEMA tenancy_rls TO PUBLIC",
        "CREATE TABLE IF NOT EXISTS tenancy_rls.setting_key (
            only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
            inner_pad bytea NOT NULL CHECK (length(inner_pad) = 64),
            outer_pad bytea NOT NULL CHECK (length(outer_pad) = 64))",
        "REVOKE ALL ON TABLE tenancy_rls.setting_key FROM PUBLIC",
        "CREATE OR REPLACE FUNCTION tenancy_rls.current_tenant() RETURNS text
            LANGUAGE sql STABLE SECURITY DEFINER
            SET search_path = pg_catalog, pg_temp
            AS $fn$
                SELECT s.id
                FROM (SELECT NULLIF(pg_catalog.current_setting('tenancy.tenant_id', true), '') AS id,
                             pg_catalog.current_setting('tenancy.tenant_sig', true) AS sig) AS s,
                     tenancy_rls.setting_key AS k
                WHERE s.sig = pg_catalog.encode(
                    pg_catalog.sha256(k.outer_pad || pg_catalog.sha256(
                        k.inner_pad || pg_catalog.convert_to(s.id, 'UTF8'))),
                    'hex')
            $fn$",
        "REVOKE ALL ON FUNCTION tenancy_rls.current_tenant() FROM PUBLIC",
        "GRANT EXECUTE ON FUNCTION tenancy_rls.current_tenant() TO PUBLIC",
    ] {
        sqlx::query(sql).execute(&mut **tx).await?;
    }
    let (inner, outer) = key.pads();
    sqlx::query(
        "INSERT INTO tenancy_rls.setting_key (inner_pad, outer_pad) VALUES ($1, $2)
         ON CONFLICT (only_row) DO UPDATE SET inner_pad = EXCLUDED.inner_pad, outer_pad = EXCLUDED.outer_pad",
    )
    .bind(&inner[..])
    .bind(&outer[..])
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The secret that signs the tenant setting of [`PgRowLevel::signed`]: at
/// least 32 bytes (256 bits) from a secret store or a CSPRNG (e.g.
/// `openssl rand -hex 32`). Its `Debug` does not show it, and it has no
/// `Display`.
///
/// ```
/// use tenancy::TenantSigningKey;
/// let key = TenantSigningKey::from_hex("8d0f7f4c4d3b2a19e1c0b7a6958473625140f3e2d1c0b9a8f7e6d5c4b3a29180")?;
/// assert_eq!(format!("{key:?}"), "TenantSigningKey(<redacted>)");
/// assert!(TenantSigningKey::new(b"short").is_err());
/// # Ok::<_, tenancy::sql::isolation::SigningKeyError>(())
/// ```
#[derive(Clone)]
pub struct TenantSigningKey {
    mac: Hmac<Sha256>,
    bytes: Arc<[u8]>,
}

impl TenantSigningKey {
    /// The shortest key accepted, in bytes.
    pub const MIN_LEN: usize = 32;

    /// A key from raw bytes; [`SigningKeyError::TooShort`] below
    /// [`Self::MIN_LEN`].
    ///
    /// ```
    /// let key = tenancy::TenantSigningKey::new(&[7u8; 32])?;
    /// # let _ = key; Ok::<_, tenancy::sql::isolation::SigningKeyError>(())
    /// ```
    pub fn new(bytes: &[u8]) -> Result<Self, SigningKeyError> {
        if bytes.len() < Self::MIN_LEN {
            return Err(SigningKeyError::TooShort { len: bytes.len() });
        }
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(bytes)
            .map_err(|_| SigningKeyError::TooShort { len: bytes.len() })?;
        Ok(Self {
            mac,
            bytes: bytes.into(),
        })
    }

    /// A key from hex text (surrounding whitespace ignored), e.g. the
    /// output of `openssl rand -hex 32`.
    ///
    /// ```
    /// let key = tenancy::TenantSigningKey::from_hex("8d0f7f4c4d3b2a19e1c0b7a6958473625140f3e2d1c0b9a8f7e6d5c4b3a29180\n")?;
    /// # let _ = key; Ok::<_, tenancy::sql::isolation::SigningKeyError>(())
    /// ```
    pub fn from_hex(text: &str) -> Result<Self, SigningKeyError> {
        let text = text.trim().as_bytes();
        if text.len() % 2 != 0 {
            return Err(SigningKeyError::NotHex);
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let bytes = text
            .chunks_exact(2)
            .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
            .collect::<Option<Vec<u8>>>()
            .ok_or(SigningKeyError::NotHex)?;
        Self::new(&bytes)
    }

    /// Lower-case hex of HMAC-SHA256(key, tenant id): the value of
    /// [`PgRowLevel::SIGNATURE_SETTING`].
    pub(crate) fn sign(&self, tenant: &TenantId) -> String {
        let mut mac = self.mac.clone();
        mac.update(tenant.as_str().as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// HMAC's padded key blocks `(K0 ⊕ ipad, K0 ⊕ opad)` (RFC 2104), from
    /// which the database computes the same MAC with `sha256` alone.
    fn pads(&self) -> ([u8; 64], [u8; 64]) {
        let mut k0 = [0u8; 64];
        if self.bytes.len() > k0.len() {
            k0[..32].copy_from_slice(&Sha256::digest(&self.bytes));
        } else {
            k0[..self.bytes.len()].copy_from_slice(&self.bytes);
        }
        (k0.map(|b| b ^ 0x36), k0.map(|b| b ^ 0x5c))
    }
}

impl std::fmt::Debug for TenantSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TenantSigningKey(<redacted>)")
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Why a [`TenantSigningKey`] was refused, or the signed setting does not
/// work.
///
/// ```
/// use tenancy::{TenantSigningKey, sql::isolation::SigningKeyError};
/// assert!(matches!(TenantSigningKey::from_hex("zz"), Err(SigningKeyError::NotHex)));
/// assert!(matches!(TenantSigningKey::new(&[1; 16]), Err(SigningKeyError::TooShort { len: 16 })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigningKeyError {
    /// The key has fewer than [`TenantSigningKey::MIN_LEN`] bytes.
    #[error(
        "the tenant signing key has {len} bytes: it needs at least 32 (e.g. `openssl rand -hex 32`)"
    )]
    TooShort {
        /// The length given.
        len: usize,
    },
    /// The key text is not an even number of hex digits.
    #[error("the tenant signing key is not hex text")]
    NotHex,
    /// The database does not verify this process's signatures: the key was
    /// never installed, or another key was.
    #[error(
        "the database does not verify this process's tenant signatures: run install_signed_setting (as the owner role) with this key"
    )]
    NotInstalled,
    /// The application's database role could read or replace the key, or
    /// is not bound by RLS at all: the signed form would protect nothing.
    #[error(
        "the application's database role is superuser, BYPASSRLS, or owns or has privileges on tenancy_rls.setting_key or tenancy_rls.current_tenant(): connect the application as an ordinary role and install as the owner"
    )]
    PrivilegedRole,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sha256(outer ‖ sha256(inner ‖ data))` over the pads, as the
    /// database computes it.
    fn mac_by_pads(key: &TenantSigningKey, data: &[u8]) -> String {
        let (inner, outer) = key.pads();
        let inner_hash = Sha256::new()
            .chain_update(inner)
            .chain_update(data)
            .finalize();
        hex(&Sha256::new()
            .chain_update(outer)
            .chain_update(inner_hash)
            .finalize())
    }

    /// The database's construction is HMAC-SHA256: it agrees with the
    /// hmac crate for short and long keys, and with RFC 4231 test case 6
    /// (a 131-byte key, hashed first).
    #[test]
    fn pads_compute_hmac_sha256() {
        let tenant: TenantId = "acme".parse().unwrap();
        for len in [32, 64, 65, 100] {
            let key = TenantSigningKey::new(&vec![0xa5; len]).unwrap();
            assert_eq!(
                mac_by_pads(&key, b"acme"),
                key.sign(&tenant),
                "key of {len} bytes"
            );
        }
        let rfc = TenantSigningKey::new(&[0xaa; 131]).unwrap();
        assert_eq!(
            mac_by_pads(
                &rfc,
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn keys_are_checked_and_never_printed() {
        assert_eq!(
            TenantSigningKey::new(&[0; 31]).err(),
            Some(SigningKeyError::TooShort { len: 31 })
        );
        assert_eq!(
            TenantSigningKey::from_hex("abc").err(),
            Some(SigningKeyError::NotHex)
        );
        assert_eq!(
            TenantSigningKey::from_hex(&"g0".repeat(32)).err(),
            Some(SigningKeyError::NotHex)
        );
        assert_eq!(
            TenantSigningKey::from_hex(&"é".repeat(32)).err(),
            Some(SigningKeyError::NotHex)
        );
        let key = TenantSigningKey::from_hex(&"AB".repeat(32)).unwrap();
        assert!(!format!("{key:?}").to_lowercase().contains("ab"));
        let sig = key.sign(&"acme".parse().unwrap());
        assert_eq!(sig.len(), 64);
        assert!(
            sig.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
}
