//! One isolation suite — the same application SQL, tenants with colliding
//! keys — on every strategy, plus pool hygiene and
//! provisioning failures leaving nothing behind (L1).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Postgres, Sqlite};
use tenancy_core::config::DeprovisionPolicy;
use tenancy_core::*;
use tenancy_sql::*;

use common::{new_tenant, register_notes};

fn notes_migrations() -> Migrations {
    Migrations::new(vec![Migration {
        version: 1,
        name: "notes".into(),
        sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)".into(),
    }])
    .unwrap()
}

fn tenant(id: &str) -> TenantInfo {
    NewTenant::new(&format!("s-{}", id.to_lowercase()), id)
        .unwrap()
        .id(id.parse().unwrap())
        .into_info(chrono::Utc::now())
}

/// The application's SQL, identical for every Postgres strategy.
async fn pg_suite(db: &TenantDb<Postgres>, a: &TenantId, b: &TenantId) {
    for (t, rows) in [(a, vec![(1, "a1"), (2, "a2")]), (b, vec![(1, "b1")])] {
        let mut tx = db.begin_for(t).await.unwrap();
        for (id, body) in rows {
            sqlx::query("INSERT INTO notes (id, body) VALUES ($1, $2)")
                .bind(id)
                .bind(body)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    let read = |t: TenantId| async move {
        let mut tx = db.begin_for(&t).await.unwrap();
        let rows: Vec<(i32, String)> = sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        rows
    };
    assert_eq!(read(a.clone()).await, [(1, "a1".into()), (2, "a2".into())]);
    assert_eq!(read(b.clone()).await, [(1, "b1".into())]);

    // An UPDATE without WHERE and a DELETE by a colliding key touch A only.
    let mut tx = db.begin_for(a).await.unwrap();
    let updated = sqlx::query("UPDATE notes SET body = 'x'")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 2);
    sqlx::query("DELETE FROM notes WHERE id = 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(read(a.clone()).await, [(2, "x".into())]);
    assert_eq!(read(b.clone()).await, [(1, "b1".into())]);

    // The task-local scope picks the tenant for begin().
    let scoped = context::with_tenant(b.clone(), async {
        let mut tx = db.begin().await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        n
    })
    .await;
    assert_eq!(scoped, 1);
    assert!(
        matches!(db.begin().await, Err(DbError::NoTenant)),
        "no tenant, no transaction"
    );
}

async fn sqlite_suite(db: &TenantDb<Sqlite>, a: &TenantId, b: &TenantId) {
    for (t, rows) in [(a, vec![(1, "a1"), (2, "a2")]), (b, vec![(1, "b1")])] {
        let mut tx = db.begin_for(t).await.unwrap();
        for (id, body) in rows {
            sqlx::query("INSERT INTO notes (id, body) VALUES (?1, ?2)")
                .bind(id)
                .bind(body)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    let read = |t: TenantId| async move {
        let mut tx = db.begin_for(&t).await.unwrap();
        let rows: Vec<(i32, String)> = sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        rows
    };
    assert_eq!(read(a.clone()).await, [(1, "a1".into()), (2, "a2".into())]);
    assert_eq!(read(b.clone()).await, [(1, "b1".into())]);
    let mut tx = db.begin_for(a).await.unwrap();
    sqlx::query("UPDATE notes SET body = 'x'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM notes WHERE id = 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(read(a.clone()).await, [(2, "x".into())]);
    assert_eq!(read(b.clone()).await, [(1, "b1".into())]);
    assert!(matches!(db.begin().await, Err(DbError::NoTenant)));
}

/// A pool of an ordinary role: not superuser, no BYPASSRLS (superusers
/// bypass RLS, so testing as one would prove nothing).
async fn app_role_pool(db: &common::PgTestDb, admin: &PgPool) -> PgPool {
    app_role_pool_of(db, admin, 1).await
}

/// [`app_role_pool`] with `connections` connections.
async fn app_role_pool_of(db: &common::PgTestDb, admin: &PgPool, connections: u32) -> PgPool {
    let role = format!("app_{}", &db.name[db.name.len() - 12..]);
    for sql in [
        format!("CREATE ROLE \"{role}\" LOGIN NOSUPERUSER NOBYPASSRLS"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON notes TO \"{role}\""),
    ] {
        sqlx::query(AssertSqlSafe(sql))
            .execute(admin)
            .await
            .unwrap();
    }
    // Scoped transactions switch to the request role: the app's role may.
    PgRowLevel::new(admin.clone())
        .allow_role(&role)
        .await
        .unwrap();
    let url = db
        .url
        .replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
    PgPoolOptions::new()
        .max_connections(connections)
        .connect(&url)
        .await
        .unwrap()
}

async fn drop_role(admin: &PgPool, pool: PgPool) {
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    sqlx::query(AssertSqlSafe(format!("DROP OWNED BY \"{role}\"")))
        .execute(admin)
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!("DROP ROLE \"{role}\"")))
        .execute(admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn row_level_security_on_postgres() {
    let db = common::PgTestDb::new().await;
    let admin = PgPool::connect(&db.url).await.unwrap();
    sqlx::query("CREATE TABLE notes (id INTEGER NOT NULL, tenant_id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant_id, id))")
        .execute(&admin)
        .await
        .unwrap();
    register_notes(&admin).await;
    // One connection: every transaction reuses the previous one's connection.
    let app = app_role_pool(&db, &admin).await;
    let rls = PgRowLevel::new(app.clone())
        .with_table("notes", "tenant_id")
        .unwrap();
    let tdb = TenantDb::new(rls.clone());
    let (a, b): (TenantId, TenantId) = ("tenant-a".parse().unwrap(), "tenant-b".parse().unwrap());
    pg_suite(&tdb, &a, &b).await;

    // Hand-written SQL cannot cross tenants.
    let mut tx = tdb.begin_for(&a).await.unwrap();
    let leaked: i64 = sqlx::query_scalar("SELECT count(*) FROM notes WHERE tenant_id = 'tenant-b'")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(leaked, 0);
    let err =
        sqlx::query("INSERT INTO notes (id, tenant_id, body) VALUES (9, 'tenant-b', 'planted')")
            .execute(&mut *tx)
            .await
            .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();
    let mut tx = tdb.begin_for(&a).await.unwrap();
    let moved = sqlx::query("UPDATE notes SET tenant_id = 'tenant-b'")
        .execute(&mut *tx)
        .await;
    assert!(moved.is_err(), "moving rows to another tenant is refused");
    tx.rollback().await.unwrap();

    // The connection returned to the pool carries no tenant: unscoped use sees nothing.
    let mut conn = app.acquire().await.unwrap();
    let setting: Option<String> =
        sqlx::query_scalar("SELECT current_setting('tenancy.tenant_id', true)")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert!(setting.as_deref().unwrap_or("").is_empty(), "{setting:?}");
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(visible, 0, "no tenant set means no rows");
    let unscoped_insert = sqlx::query("INSERT INTO notes (id, body) VALUES (5, 'orphan')")
        .execute(&mut *conn)
        .await;
    assert!(unscoped_insert.is_err(), "no tenant set means no writes");
    drop(conn);

    // Deprovision with `drop` removes only that tenant's rows.
    rls.deprovision(&tenant("tenant-a"), DeprovisionPolicy::Drop)
        .await
        .unwrap();
    let owners: Vec<String> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM notes")
        .fetch_all(&admin)
        .await
        .unwrap();
    assert_eq!(owners, ["tenant-b"]);
    rls.check().await.unwrap();
    drop_role(&admin, app).await;
}

/// A notes table under RLS, made by the owner (`admin`), with rows of
/// tenant-a (ids 1, 2) and tenant-b (id 1) inserted by the owner, and a
/// one-connection pool of an ordinary app role. `key`: the signed form.
async fn notes_under_rls(
    db: &common::PgTestDb,
    key: Option<&TenantSigningKey>,
) -> (PgPool, PgPool) {
    let admin = PgPool::connect(&db.url).await.unwrap();
    sqlx::query("CREATE TABLE notes (id INTEGER NOT NULL, tenant_id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant_id, id))")
        .execute(&admin)
        .await
        .unwrap();
    let owner = PgRowLevel::new(admin.clone());
    let owner = match key {
        Some(key) => owner.signed(key.clone()),
        None => owner,
    };
    owner.register_table("notes", "tenant_id").await.unwrap();
    sqlx::query("INSERT INTO notes VALUES (1, 'tenant-a', 'a1'), (2, 'tenant-a', 'a2'), (1, 'tenant-b', 'b1')")
        .execute(&admin)
        .await
        .unwrap();
    let app = app_role_pool_of(db, &admin, 2).await;
    (admin, app)
}

fn signing_key(byte: u8) -> TenantSigningKey {
    TenantSigningKey::new(&[byte; 32]).unwrap()
}

/// Counts what the transaction sees of tenant-b: rows read, and rows an
/// UPDATE and a DELETE without WHERE affect (rolled back by the caller).
async fn reach_of_b(tx: &mut sqlx::PgConnection) -> (i64, u64, u64) {
    let read: i64 = sqlx::query_scalar("SELECT count(*) FROM notes WHERE tenant_id = 'tenant-b'")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let updated = sqlx::query("UPDATE notes SET body = 'pwned' WHERE tenant_id = 'tenant-b'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    let deleted = sqlx::query("DELETE FROM notes WHERE tenant_id = 'tenant-b'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    (read, updated, deleted)
}

/// The limit of the plain form, stated by a test: SQL running inside
/// tenant-a's transaction (an injection) sets the tenant setting to
/// tenant-b and then reads, changes and plants tenant-b's rows.
#[tokio::test]
async fn unsigned_row_level_is_crossed_by_set_config_inside_the_transaction() {
    let db = common::PgTestDb::new().await;
    let (admin, app) = notes_under_rls(&db, None).await;
    let tdb = TenantDb::new(PgRowLevel::new(app.clone()));
    let a: TenantId = "tenant-a".parse().unwrap();

    let mut tx = tdb.begin_for(&a).await.unwrap();
    assert_eq!(reach_of_b(&mut tx).await, (0, 0, 0), "scoped: nothing of B");
    sqlx::query("SELECT set_config('tenancy.tenant_id', 'tenant-b', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        reach_of_b(&mut tx).await,
        (1, 1, 1),
        "forged setting: B's row is read, updated and deleted"
    );
    sqlx::query("INSERT INTO notes (id, tenant_id, body) VALUES (9, 'tenant-b', 'planted')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    drop_role(&admin, app).await;
}

/// The signed form: the same forgery, and forged or copied signatures,
/// reach nothing of the other tenant (nor of the own one); the key is out
/// of the app role's reach; the scoped path works as before; unscoped use
/// sees nothing; deprovisioning and the health check work.
#[tokio::test]
async fn signed_row_level_refuses_a_forged_tenant_setting() {
    let db = common::PgTestDb::new().await;
    let key = signing_key(0x42);
    let (admin, app) = notes_under_rls(&db, Some(&key)).await;
    sqlx::query("DELETE FROM notes")
        .execute(&admin)
        .await
        .unwrap();
    let rls = PgRowLevel::new(app.clone())
        .signed(key.clone())
        .with_table("notes", "tenant_id")
        .unwrap();
    let tdb = TenantDb::new(rls.clone());
    let (a, b): (TenantId, TenantId) = ("tenant-a".parse().unwrap(), "tenant-b".parse().unwrap());
    // The scoped path: the whole suite (reads, writes, defaults, task-local).
    pg_suite(&tdb, &a, &b).await;
    let b_rows = || async {
        sqlx::query_as::<_, (i32, String)>(
            "SELECT id, body FROM notes WHERE tenant_id = 'tenant-b' ORDER BY id",
        )
        .fetch_all(&admin)
        .await
        .unwrap()
    };
    assert_eq!(b_rows().await, [(1, "b1".into())]);

    // Inside A's transaction: forge the id alone, a made-up signature, and
    // A's own signature copied onto B's id.
    let a_sig: String = {
        let mut tx = tdb.begin_for(&a).await.unwrap();
        let sig: String = sqlx::query_scalar("SELECT current_setting('tenancy.tenant_sig')")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        sig
    };
    assert_eq!(a_sig.len(), 64);
    let forgeries = [
        (
            "the id alone",
            "SELECT set_config('tenancy.tenant_id', 'tenant-b', true)".to_owned(),
        ),
        (
            "a made-up signature",
            format!(
                "SELECT set_config('tenancy.tenant_id', 'tenant-b', true), set_config('tenancy.tenant_sig', '{}', true)",
                "0".repeat(64)
            ),
        ),
        (
            "A's signature copied onto B",
            format!(
                "SELECT set_config('tenancy.tenant_id', 'tenant-b', true), set_config('tenancy.tenant_sig', '{a_sig}', true)"
            ),
        ),
        (
            "a session-level setting",
            "SELECT set_config('tenancy.tenant_id', 'tenant-b', false)".to_owned(),
        ),
    ];
    for (what, forge) in &forgeries {
        let mut tx = tdb.begin_for(&a).await.unwrap();
        sqlx::query(AssertSqlSafe(forge.clone()))
            .execute(&mut *tx)
            .await
            .unwrap();
        let verified: Option<String> = sqlx::query_scalar("SELECT tenancy_rls.current_tenant()")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(verified, None, "{what}: not verified");
        assert_eq!(reach_of_b(&mut tx).await, (0, 0, 0), "{what}: reaches B");
        let all: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(all, 0, "{what}: a forged setting sees no tenant at all");
        for insert in [
            "INSERT INTO notes (id, tenant_id, body) VALUES (9, 'tenant-b', 'planted')",
            "INSERT INTO notes (id, body) VALUES (9, 'planted')", // default: the forged id
        ] {
            let mut sp = sqlx::Connection::begin(&mut *tx).await.unwrap();
            let err = sqlx::query(insert).execute(&mut *sp).await.unwrap_err();
            assert!(
                err.to_string().contains("row-level security"),
                "{what}: {insert}: {err}"
            );
            sp.rollback().await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    assert_eq!(b_rows().await, [(1, "b1".into())], "B is untouched");
    // The session-level forgery is still on the connection it ran on:
    // unscoped use of that connection (the pool has one idle here) sees
    // nothing either.
    for conn in [app.acquire().await.unwrap(), app.acquire().await.unwrap()] {
        let mut conn = conn;
        let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(visible, 0, "unscoped: no rows");
        let insert =
            sqlx::query("INSERT INTO notes (id, tenant_id, body) VALUES (5, 'tenant-b', 'x')")
                .execute(&mut *conn)
                .await;
        assert!(insert.is_err(), "unscoped: no writes");
    }

    // The key and the verifying function are out of the app role's reach:
    // it can neither read the key, nor replace it with one it knows, nor
    // redefine the function.
    for attempt in [
        "SELECT inner_pad, outer_pad FROM tenancy_rls.setting_key",
        "UPDATE tenancy_rls.setting_key SET inner_pad = inner_pad",
        "DELETE FROM tenancy_rls.setting_key",
        "INSERT INTO tenancy_rls.setting_key (only_row, inner_pad, outer_pad) VALUES (false, '', '')",
        "CREATE OR REPLACE FUNCTION tenancy_rls.current_tenant() RETURNS text LANGUAGE sql AS $$ SELECT 'tenant-b' $$",
        "ALTER FUNCTION tenancy_rls.current_tenant() SECURITY INVOKER",
        "CREATE FUNCTION tenancy_rls.sneak() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
    ] {
        let err = sqlx::query(attempt).execute(&app).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("permission denied") || text.contains("must be owner"),
            "{attempt}: {text}"
        );
    }

    // The health check passes for the ordinary role, and refuses a role
    // that could read the key or that bypasses RLS (here the owner, a
    // superuser).
    rls.check().await.unwrap();
    let err = PgRowLevel::new(admin.clone())
        .signed(key.clone())
        .check()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ordinary role"), "{err}");
    let app_role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&app)
        .await
        .unwrap();
    // A role that can read the key, or that bypasses RLS, fails it too.
    for (on, off) in [
        (
            format!("GRANT SELECT ON tenancy_rls.setting_key TO \"{app_role}\""),
            format!("REVOKE SELECT ON tenancy_rls.setting_key FROM \"{app_role}\""),
        ),
        (
            format!("ALTER ROLE \"{app_role}\" BYPASSRLS"),
            format!("ALTER ROLE \"{app_role}\" NOBYPASSRLS"),
        ),
    ] {
        sqlx::query(AssertSqlSafe(on.clone()))
            .execute(&admin)
            .await
            .unwrap();
        let err = rls.check().await.unwrap_err();
        assert!(err.to_string().contains("ordinary role"), "{on}: {err}");
        sqlx::query(AssertSqlSafe(off))
            .execute(&admin)
            .await
            .unwrap();
    }
    rls.check().await.unwrap();
    // The process's key must be the installed one: another key verifies
    // nothing, and the health check says so.
    let stranger = PgRowLevel::new(app.clone()).signed(signing_key(0x43));
    let mut tx = stranger.begin_for(&a).await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 0, "a wrong key sees nothing");
    tx.rollback().await.unwrap();
    let err = stranger.check().await.unwrap_err();
    assert!(err.to_string().contains("install_signed_setting"), "{err}");

    // Exports through the app role: a session with B's signature reads
    // B's row; without it, the policies hide it.
    use tenancy_sql::portable::TenantData;
    let shared = TenantData::pg_shared(app.clone(), b.clone(), "tenant_id").unwrap();
    for (data, expected) in [(shared.clone(), 0), (shared.signed(&key), 1)] {
        let mut session = data.read().await.unwrap();
        let tables = session.tables().await.unwrap();
        let notes = tables.iter().find(|t| t.name == "notes").unwrap();
        assert_eq!(session.row_count(notes).await.unwrap(), expected);
    }

    // Deprovision with `drop` removes only that tenant's rows.
    rls.deprovision(&tenant("tenant-a"), DeprovisionPolicy::Drop)
        .await
        .unwrap();
    let owners: Vec<String> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM notes")
        .fetch_all(&admin)
        .await
        .unwrap();
    assert_eq!(owners, ["tenant-b"]);
    drop_role(&admin, app).await;
}

/// The signature is sent bound, so another connection of the same role
/// cannot harvest it from `pg_stat_activity`; the control shows the probe
/// does see the plain form's scoping text.
#[tokio::test]
async fn the_signature_never_shows_in_pg_stat_activity() {
    use hmac::{Hmac, Mac};
    let db = common::PgTestDb::new().await;
    let key_bytes = [0x17u8; 40];
    let key = TenantSigningKey::new(&key_bytes).unwrap();
    let (admin, app) = notes_under_rls(&db, Some(&key)).await;
    let b: TenantId = "tenant-b".parse().unwrap();
    // B's signature, computed independently of the crate.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key_bytes).unwrap();
    mac.update(b"tenant-b");
    let b_sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();

    let queries = |app: PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT query FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query <> ''",
        )
        .fetch_all(&app)
        .await
        .unwrap()
    };
    // Control: the plain form's scoping text is visible to the same role.
    let plain = PgRowLevel::new(app.clone());
    let tx = plain.begin_for(&b).await.unwrap();
    let seen = queries(app.clone()).await;
    assert!(seen.iter().any(|q| q.contains("'tenant-b'")), "{seen:?}");
    drop(tx);

    let signed = PgRowLevel::new(app.clone()).signed(key);
    let mut tx = signed.begin_for(&b).await.unwrap();
    let seen = queries(app.clone()).await;
    assert!(seen.iter().any(|q| q.contains("tenant_sig")), "{seen:?}");
    assert!(!seen.iter().any(|q| q.contains(&b_sig)), "{seen:?}");
    // The database verifies exactly that signature.
    let sig: String = sqlx::query_scalar("SELECT current_setting('tenancy.tenant_sig')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(sig, b_sig);
    let verified: Option<String> = sqlx::query_scalar("SELECT tenancy_rls.current_tenant()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(verified.as_deref(), Some("tenant-b"));
    tx.rollback().await.unwrap();
    drop_role(&admin, app).await;
}

#[tokio::test]
async fn schema_per_tenant_on_postgres() {
    let db = common::PgTestDb::new().await;
    let pool = db.pool(1).await;
    let schemas = PgSchemaIsolation::new(pool.clone(), notes_migrations());
    let (ta, tb) = (
        tenant(&format!("A{}", &db.name[14..24])),
        tenant(&format!("b{}", &db.name[14..24])),
    );
    schemas.provision(&ta).await.unwrap();
    schemas.provision(&tb).await.unwrap();
    schemas.provision(&ta).await.unwrap(); // idempotent
    // The version index records both, at the latest version.
    let recorded = schemas.recorded_versions().await.unwrap();
    assert_eq!(recorded.get(ta.id.as_str()), Some(&1));
    assert_eq!(recorded.get(tb.id.as_str()), Some(&1));
    let tdb = TenantDb::new(schemas.clone());
    pg_suite(&tdb, &ta.id, &tb.id).await;

    // Naming the other tenant's schema explicitly is refused.
    let mut tx = tdb.begin_for(&ta.id).await.unwrap();
    let other = PgSchemaIsolation::schema_of(&tb.id).unwrap();
    let err = sqlx::query(AssertSqlSafe(format!("SELECT count(*) FROM {other}.notes")))
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    tx.rollback().await.unwrap();

    // A tenant with no schema (never provisioned, or dropped) is refused,
    // and the pool's only connection comes back usable, not stuck in an
    // aborted transaction.
    let ghost: TenantId = format!("ghost{}", &db.name[14..24]).parse().unwrap();
    assert!(tdb.begin_for(&ghost).await.is_err());
    let mut tx = tdb.begin_for(&ta.id).await.unwrap();
    sqlx::query("SELECT count(*) FROM notes")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    // The pooled connection is back to the default search_path and role.
    let (path, role): (String, String) =
        sqlx::query_as("SELECT current_setting('search_path'), current_user::text")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!path.contains("tenant_"), "{path}");
    assert_eq!(role, "postgres");
    assert!(
        sqlx::query("SELECT count(*) FROM notes")
            .execute(&pool)
            .await
            .is_err(),
        "no tenant table is visible unscoped"
    );

    // Archive renames, drop removes schema and role.
    schemas
        .deprovision(&ta, DeprovisionPolicy::Archive)
        .await
        .unwrap();
    schemas
        .deprovision(&tb, DeprovisionPolicy::Drop)
        .await
        .unwrap();
    assert!(
        schemas.recorded_versions().await.unwrap().is_empty(),
        "archived and dropped schemas leave the index"
    );
    let names: Vec<String> = sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tenant_%' OR nspname LIKE 'archived_%' ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("archived_") && names[0].ends_with(ta.id.as_str()));
    let role_b: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(format!("tenant_{}", tb.id))
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!role_b);
    // Clean the cluster-wide role of A.
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA \"{}\" CASCADE",
        names[0]
    )))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(AssertSqlSafe(format!("DROP ROLE \"tenant_{}\"", ta.id)))
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn database_per_tenant_on_postgres() {
    let db = common::PgTestDb::new().await;
    let admin = PgPool::connect(&db.url).await.unwrap();
    let dbs = PgDatabaseIsolation::new(admin.clone(), notes_migrations()).pool_limits(1, 2);
    let suffix = &db.name[14..26];
    let (ta, tb) = (tenant(&format!("a{suffix}")), tenant(&format!("b{suffix}")));
    dbs.provision(&ta).await.unwrap();
    dbs.provision(&tb).await.unwrap();
    let tdb = TenantDb::new(dbs.clone());
    pg_suite(&tdb, &ta.id, &tb.id).await;
    assert!(dbs.open_pools() <= 1, "the pool set stays bounded");
    for t in [&ta, &tb] {
        dbs.deprovision(t, DeprovisionPolicy::Drop).await.unwrap();
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE $1")
        .bind(format!("tenant_%{suffix}"))
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn database_per_tenant_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let files = SqliteDatabaseIsolation::with_max_pools(dir.path(), notes_migrations(), 1);
    let (ta, tb) = (tenant("tenant-a"), tenant("tenant-b"));
    files.provision(&ta).await.unwrap();
    files.provision(&tb).await.unwrap();
    let tdb = TenantDb::new(files.clone());
    sqlite_suite(&tdb, &ta.id, &tb.id).await;
    assert!(files.open_pools() <= 1);
    // A tenant that was never provisioned has no database (no file is made).
    let ghost: TenantId = "ghost".parse().unwrap();
    assert!(tdb.begin_for(&ghost).await.is_err());
    assert!(!files.path_of(&ghost).unwrap().exists());
    // F5: a tenant's connection cannot ATTACH another tenant's file (or
    // any file), whatever SQL the application runs through TenantDb.
    for target in [
        files.path_of(&tb.id).unwrap().display().to_string(),
        dir.path().join("new.db").display().to_string(),
        ":memory:".to_owned(),
    ] {
        let mut tx = tdb.begin_for(&ta.id).await.unwrap();
        let err = sqlx::query(AssertSqlSafe(format!(
            "ATTACH DATABASE '{target}' AS other"
        )))
        .execute(&mut *tx)
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("too many attached databases"),
            "{target}: {err}"
        );
        drop(tx);
    }
    assert!(!dir.path().join("new.db").exists());
    files
        .deprovision(&ta, DeprovisionPolicy::Archive)
        .await
        .unwrap();
    files
        .deprovision(&tb, DeprovisionPolicy::Drop)
        .await
        .unwrap();
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".db"))
        .collect();
    assert_eq!(left.len(), 1);
    assert!(
        left[0].starts_with("archived_") && left[0].ends_with("tenant-a.db"),
        "{left:?}"
    );
}

fn broken_migrations() -> Migrations {
    Migrations::new(vec![
        Migration {
            version: 1,
            name: "notes".into(),
            sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)".into(),
        },
        Migration {
            version: 2,
            name: "broken".into(),
            sql: "CREATE TABLE oops (".into(),
        },
    ])
    .unwrap()
}

#[tokio::test]
async fn failed_schema_provisioning_leaves_nothing() {
    let db = common::PgTestDb::new().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    let schemas = PgSchemaIsolation::new(pool.clone(), broken_migrations());
    let store = Arc::new(MemoryStore::new());
    let lifecycle =
        LifecycleService::new(store.clone()).provisioner(Provisioner::new(Arc::new(schemas)));
    let id: TenantId = format!("f{}", &db.name[14..26]).parse().unwrap();
    let err = lifecycle
        .create(new_tenant("failing", "F").id(id.clone()))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("migrate") && text.contains("0002_broken"),
        "{text}"
    );
    let schema_left: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(format!("tenant_{id}"))
            .fetch_one(&pool)
            .await
            .unwrap();
    let role_left: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(format!("tenant_{id}"))
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!schema_left && !role_left, "no schema, no role");
    assert!(store.get(&id).await.unwrap().is_none(), "no tenant record");
}

#[tokio::test]
async fn failed_database_provisioning_leaves_nothing() {
    let db = common::PgTestDb::new().await;
    let admin = PgPool::connect(&db.url).await.unwrap();
    let id: TenantId = format!("f{}", &db.name[14..26]).parse().unwrap();
    let err = PgDatabaseIsolation::new(admin.clone(), broken_migrations())
        .provision(&tenant(id.as_str()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("0002_broken"), "{err}");
    let left: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(format!("tenant_{id}"))
            .fetch_one(&admin)
            .await
            .unwrap();
    assert!(!left, "the half-made database was dropped");

    let dir = tempfile::tempdir().unwrap();
    let files = SqliteDatabaseIsolation::new(dir.path(), broken_migrations());
    let err = files.provision(&tenant("tenant-f")).await.unwrap_err();
    assert!(err.to_string().contains("0002_broken"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no file left behind"
    );
}

#[tokio::test]
async fn unsafe_tenant_names_are_refused_for_schemas() {
    let db = common::PgTestDb::new().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    let schemas = PgSchemaIsolation::new(pool, notes_migrations());
    let long = tenant(&"x".repeat(41));
    let err = schemas.provision(&long).await.unwrap_err();
    assert!(err.to_string().contains("cannot name a schema"), "{err}");
    assert!(TenantDb::new(schemas).begin_for(&long.id).await.is_err());
}

#[tokio::test]
async fn row_level_on_sqlite_through_the_interceptor() {
    use tenancy_interceptor::{Interceptor, TenantTables};
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("app.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("CREATE TABLE notes (id INTEGER NOT NULL, tenant_id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant_id, id))")
        .execute(&pool)
        .await
        .unwrap();
    let rows = SqliteRowLevel::new(pool.clone(), Interceptor::new(TenantTables::new(["notes"])));
    let (a, b): (TenantId, TenantId) = ("tenant-a".parse().unwrap(), "tenant-b".parse().unwrap());
    for (t, data) in [(&a, vec![(1, "a1"), (2, "a2")]), (&b, vec![(1, "b1")])] {
        let mut tx = rows.begin_for(t).await.unwrap();
        for (id, body) in data {
            tx.query("INSERT INTO notes (id, body) VALUES (?1, ?2)")
                .unwrap()
                .bind(id)
                .bind(body)
                .execute(&mut tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    async fn read(rows: &SqliteRowLevel, t: &TenantId) -> Vec<(i64, String)> {
        use sqlx::Row;
        let mut tx = rows.begin_for(t).await.unwrap();
        let out = tx
            .query("SELECT id, body FROM notes ORDER BY id")
            .unwrap()
            .fetch_all(&mut tx)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
            .collect();
        tx.commit().await.unwrap();
        out
    }
    assert_eq!(read(&rows, &a).await, [(1, "a1".into()), (2, "a2".into())]);
    assert_eq!(read(&rows, &b).await, [(1, "b1".into())]);

    let mut tx = rows.begin_for(&a).await.unwrap();
    let updated = tx
        .query("UPDATE notes SET body = 'x'")
        .unwrap()
        .execute(&mut tx)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 2);
    tx.query("DELETE FROM notes WHERE id = ?1")
        .unwrap()
        .bind(1)
        .execute(&mut tx)
        .await
        .unwrap();
    // Hand-written attempts to cross tenants.
    let leaked = tx
        .query("SELECT count(*) FROM notes WHERE tenant_id = 'tenant-b'")
        .unwrap()
        .fetch_all(&mut tx)
        .await
        .unwrap();
    assert_eq!(sqlx::Row::get::<i64, _>(&leaked[0], 0), 0);
    assert!(matches!(
        tx.query("INSERT INTO notes (id, tenant_id, body) VALUES (9, 'tenant-b', 'x')"),
        Err(DbError::Refused(_))
    ));
    assert!(matches!(
        tx.query("UPDATE notes SET tenant_id = 'tenant-b'"),
        Err(DbError::Refused(_))
    ));
    assert!(matches!(
        tx.query("DROP TABLE notes"),
        Err(DbError::Refused(_))
    ));
    assert!(matches!(
        tx.query("SELECT 1; DELETE FROM notes"),
        Err(DbError::Refused(_))
    ));
    // A statement whose own parameters are not all bound is refused, so the
    // tenant can never land in the wrong slot.
    let unbound = tx
        .query("SELECT body FROM notes WHERE id = ?1")
        .unwrap()
        .fetch_all(&mut tx)
        .await;
    assert!(matches!(unbound, Err(DbError::Refused(_))));
    tx.commit().await.unwrap();
    assert_eq!(read(&rows, &a).await, [(2, "x".into())]);
    assert_eq!(read(&rows, &b).await, [(1, "b1".into())]);

    rows.deprovision(&tenant("tenant-a"), DeprovisionPolicy::Drop)
        .await
        .unwrap();
    let owners: Vec<String> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM notes")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(owners, ["tenant-b"]);
}

#[tokio::test]
async fn database_placement_spreads_tenants_and_routing_follows() {
    let db = common::PgTestDb::new().await;
    let home = PgPool::connect(&db.url).await.unwrap();
    // Two servers with distinct URLs (the machine has one cluster: one via
    // 127.0.0.1, one via localhost), weights 2:1.
    let via_localhost = db.url.replacen("127.0.0.1", "localhost", 1);
    assert_ne!(via_localhost, db.url);
    let server_b = PgPool::connect(&via_localhost).await.unwrap();
    let dbs = PgDatabaseIsolation::with_servers(
        home.clone(),
        vec![
            DatabaseServer::new("a", home.clone(), 2),
            DatabaseServer::new("b", server_b, 1),
        ],
        notes_migrations(),
    )
    .pool_limits(2, 1);
    let suffix = &db.name[14..22];
    let tenants: Vec<TenantInfo> = (0..6).map(|i| tenant(&format!("p{i}{suffix}"))).collect();
    for t in &tenants {
        dbs.provision(t).await.unwrap();
    }
    let mut placed = std::collections::HashMap::<String, usize>::new();
    for t in &tenants {
        *placed
            .entry(dbs.placement_of(&t.id).await.unwrap().unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        (placed["a"], placed["b"]),
        (4, 2),
        "placement follows the weights"
    );
    // Routing reaches the placed server: each tenant's pool connects to its
    // server's host, and its own database holds its own rows.
    let tdb = TenantDb::new(dbs.clone());
    for (i, t) in tenants.iter().enumerate() {
        let mut tx = tdb.begin_for(&t.id).await.unwrap();
        let (database, addr): (String, Option<String>) =
            sqlx::query_as("SELECT current_database()::text, inet_server_addr()::text")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(database, format!("tenant_{}", t.id));
        assert!(addr.is_some());
        sqlx::query("INSERT INTO notes (id, body) VALUES ($1, 'x')")
            .bind(i as i32)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    assert!(
        dbs.open_pools() <= 2,
        "at most the configured number of pools stay open"
    );
    let pool = dbs.pool_for(&tenants[0].id).await.unwrap();
    let expected_host = if dbs.placement_of(&tenants[0].id).await.unwrap().as_deref() == Some("a") {
        "127.0.0.1"
    } else {
        "localhost"
    };
    assert_eq!(pool.connect_options().get_host(), expected_host);
    dbs.check().await.unwrap();
    for t in &tenants {
        dbs.deprovision(t, DeprovisionPolicy::Drop).await.unwrap();
        assert_eq!(dbs.placement_of(&t.id).await.unwrap(), None);
    }
}
