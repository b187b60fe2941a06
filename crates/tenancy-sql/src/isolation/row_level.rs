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
use crate::ident::{tenant_literal, validate_table};

/// Shared tables with a tenant column, guarded by PostgreSQL Row-Level
/// Security keyed on the transaction-local setting `tenancy.tenant_id`.
///
/// [`PgRowLevel::register_table`] enables and forces RLS on a table (so the
/// table owner is bound too), adds a policy that compares the tenant column
/// with the setting for reads and writes, and makes the column default to
/// the setting so inserts need not name it. With no tenant set the setting
/// is `''`/NULL and the policy matches no row: unscoped use sees nothing.
///
/// Superusers and `BYPASSRLS` roles ignore RLS: connect the application as
/// an ordinary role.
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
        install(&mut tx, key).await?;
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
        let current = "NULLIF(current_setting('tenancy.tenant_id', true), '')";
        let verified = match self.key {
            Some(_) => format!("(SELECT {})", Self::VERIFIED_TENANT),
            None => current.to_owned(),
        };
        let mut tx = self.pool.begin().await?;
        if let Some(key) = &self.key {
            install(&mut tx, key).await?;
        }
        for sql in [
            format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"),
            format!("ALTER TABLE {t} FORCE ROW LEVEL SECURITY"),
            format!("DROP POLICY IF EXISTS tenancy_isolation ON {t}"),
            format!(
                "CREATE POLICY tenancy_isolation ON {t} USING ({c} = {verified}) WITH CHECK ({c} = {verified})"
            ),
            format!("ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {current}"),
        ] {
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if !tables.iter().any(|(tt, _)| *tt == t) {
            tables.push((t, c));
        }
        Ok(())
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
        let entry = (validate_table(table)?, validate_table(column)?);
        {
            let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
            if !tables.contains(&entry) {
                tables.push(entry);
            }
        }
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
        let Some(key) = &self.key else {
            // BEGIN and the transaction-local setting in one round trip.
            let begin = format!("BEGIN; SELECT set_config('tenancy.tenant_id', {literal}, true)");
            return Ok(self.pool.begin_with(AssertSqlSafe(begin)).await?);
        };
        // The signature is a capability for its tenant: bound, never in
        // the SQL text, which other connections of the same role can read
        // in pg_stat_activity. Hence a statement of its own after BEGIN,
        // unnamed (not `persistent`) so that it is safe behind pgbouncer in
        // transaction mode before 1.21, like the simple queries that scope
        // the other strategies.
        let mut tx = self.pool.begin().await?;
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

    /// Reaches the database. In the signed form, also checks what the
    /// signed form relies on, since a broken setup either hides every row
    /// or protects nothing: the database verifies this process's
    /// signatures (the installed key is this key), and the pool's role can
    /// neither read nor change the key nor escape RLS (it is not superuser
    /// or `BYPASSRLS`, has no privilege on the key table and does not own
    /// it or the verifying function).
    async fn check(&self) -> Result<(), IsolationError> {
        if self.key.is_none() {
            return sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(step_error("row_level", "health check"));
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
                pg_catalog.has_table_privilege('tenancy_rls.setting_key',
                    'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                OR (SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c
                    WHERE c.oid = 'tenancy_rls.setting_key'::pg_catalog.regclass)
                OR (SELECT pg_catalog.pg_has_role(p.proowner, 'USAGE') FROM pg_catalog.pg_proc p
                    WHERE p.oid = 'tenancy_rls.current_tenant()'::pg_catalog.regprocedure)
                OR (SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r
                    WHERE r.rolname = current_user)",
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

/// Creates (or updates) the key table and the verifying function, in the
/// caller's transaction. The statements name everything by schema: the
/// function runs with `search_path = pg_catalog, pg_temp`, so nothing the
/// caller or the application creates can stand in for what it calls.
///
/// The function computes HMAC-SHA256 with the built-in `sha256` (no
/// extension needed) from the key's two padded blocks, `K0 ⊕ ipad` and
/// `K0 ⊕ opad` (RFC 2104): `sha256(outer ‖ sha256(inner ‖ id))`.
async fn install(
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
