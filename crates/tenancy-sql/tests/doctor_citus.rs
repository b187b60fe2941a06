//! The Citus readiness report (`tenancy doctor --citus`) on a real
//! PostgreSQL (no Citus needed): the classes of a small schema, then each
//! blocker introduced alone, reported alone, and repaired by its own fix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::PgTestDb;
use sqlx::{AssertSqlSafe, PgPool};
use tenancy_sql::doctor::citus::{CitusClass, CitusReport, citus_report};
use tenancy_sql::doctor::{Check, Finding};

/// A schema Citus takes as it is: tenant tables keyed by
/// `(tenant_id, id)` with bigint identities, lookup tables they reference,
/// a table nobody references, a partitioned tenant table, names that need
/// quoting, and the toolkit's own tables (which break the rules and must
/// not be reported).
const CLEAN: &str = r#"
CREATE TABLE currencies (code TEXT PRIMARY KEY);
CREATE TABLE countries (
    code     TEXT PRIMARY KEY,
    currency TEXT REFERENCES currencies (code)
);
CREATE TABLE notes (
    tenant_id TEXT NOT NULL,
    id        BIGINT GENERATED ALWAYS AS IDENTITY,
    title     TEXT NOT NULL,
    country   TEXT REFERENCES countries (code),
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE comments (
    tenant_id TEXT NOT NULL,
    id        BIGSERIAL,
    note_id   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT comments_note FOREIGN KEY (tenant_id, note_id) REFERENCES notes (tenant_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX comments_per_note ON comments (tenant_id, note_id, id);
CREATE TABLE settings (id SERIAL PRIMARY KEY, key TEXT UNIQUE);
CREATE TABLE events (
    tenant_id TEXT NOT NULL,
    id        BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
) PARTITION BY HASH (tenant_id);
CREATE TABLE events_0 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE events_1 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE SCHEMA "App";
CREATE TABLE "App"."Orders" (tenant_id TEXT NOT NULL, id BIGSERIAL, PRIMARY KEY (tenant_id, id));
CREATE TABLE tenancy_tenants (id TEXT PRIMARY KEY);
CREATE TABLE tenancy_things (tenant_id INT, id SERIAL PRIMARY KEY);
CREATE SCHEMA tenancy_rls;
CREATE TABLE tenancy_rls.setting_key (k TEXT PRIMARY KEY);
"#;

async fn clean_db() -> (PgTestDb, PgPool) {
    let db = PgTestDb::new().await;
    let pool = db.pool(2).await;
    run(&pool, CLEAN).await;
    (db, pool)
}

async fn run(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn report(pool: &PgPool) -> CitusReport {
    citus_report(pool, "tenant_id").await.unwrap()
}

async fn assert_clean(pool: &PgPool, after: &str) {
    let r = report(pool).await;
    assert!(
        r.report.findings.is_empty(),
        "{after}: expected no finding\n{}",
        r.to_text()
    );
    assert_eq!(r.report.exit_code(), 0);
}

/// Introduces `defect`, expects exactly one finding of `check` about
/// `object`, runs its fix, expects a clean report again. Returns the
/// finding.
async fn defect_found_and_fixed(
    pool: &PgPool,
    defect: &str,
    check: Check,
    object: &str,
) -> Finding {
    run(pool, defect).await;
    let r = report(pool).await;
    assert_eq!(r.report.findings.len(), 1, "{defect}\n{}", r.to_text());
    let f = r.report.findings[0].clone();
    assert_eq!(
        (f.check, f.object.as_str()),
        (check, object),
        "{}",
        r.to_text()
    );
    assert_eq!(r.report.exit_code(), 1);
    run(pool, &f.fix).await;
    assert_clean(pool, &f.fix).await;
    f
}

#[tokio::test]
async fn classifies_tables_and_finds_nothing_in_a_clean_schema() {
    let (_db, pool) = clean_db().await;
    assert!(matches!(
        citus_report(&pool, "").await,
        Err(tenancy_sql::DbError::UnsafeName(_))
    ));

    let r = report(&pool).await;
    assert!(r.report.findings.is_empty(), "{}", r.to_text());
    let expected = [
        ("\"App\".\"Orders\"", CitusClass::Distributed),
        ("public.comments", CitusClass::Distributed),
        ("public.countries", CitusClass::Reference),
        ("public.currencies", CitusClass::Reference),
        ("public.events", CitusClass::Distributed),
        ("public.notes", CitusClass::Distributed),
        ("public.settings", CitusClass::Local),
        ("public.tenancy_tenants", CitusClass::Local),
        ("public.tenancy_things", CitusClass::Local),
        ("tenancy_rls.setting_key", CitusClass::Local),
    ];
    let got: Vec<_> = r
        .tables
        .iter()
        .map(|t| (t.table.as_str(), t.class))
        .collect();
    assert_eq!(got, expected, "partitions are not listed; names are quoted");
    let reason = |t: &str| {
        r.tables
            .iter()
            .find(|x| x.table == t)
            .map(|x| x.reason.clone())
            .unwrap()
    };
    assert!(reason("public.tenancy_things").contains("control plane"));
    assert!(reason("public.countries").contains("public.notes"));
    assert!(reason("public.currencies").contains("reference table public.countries"));
    assert!(reason("public.settings").contains("not referenced"));
    for (what, n) in [
        ("tables", 10),
        ("distributed", 4),
        ("reference", 2),
        ("local", 4),
    ] {
        assert_eq!(r.report.checked.get(what), Some(&n), "{what}");
    }

    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["tables"][1]["table"], "public.comments");
    assert_eq!(json["tables"][1]["class"], "distributed");
    assert!(json["findings"].as_array().unwrap().is_empty());
    assert_eq!(json["checked"]["tables"], 10);

    let text = r.to_text();
    assert!(text.contains("reference   public.countries"), "{text}");
    assert!(text.contains("No findings"), "{text}");
}

#[tokio::test]
async fn unique_keys_without_the_tenant_column() {
    let (_db, pool) = clean_db().await;
    let f = defect_found_and_fixed(
        &pool,
        "CREATE TABLE tags (tenant_id TEXT NOT NULL, id BIGSERIAL PRIMARY KEY, name TEXT)",
        Check::CitusUniqueWithoutTenant,
        "public.tags.tags_pkey",
    )
    .await;
    assert_eq!(
        f.fix,
        "ALTER TABLE public.tags DROP CONSTRAINT tags_pkey, ADD CONSTRAINT tags_pkey PRIMARY KEY (tenant_id, id);"
    );
    defect_found_and_fixed(
        &pool,
        r#"ALTER TABLE "App"."Orders" ADD COLUMN "Ref" TEXT, ADD CONSTRAINT "Orders Ref" UNIQUE ("Ref")"#,
        Check::CitusUniqueWithoutTenant,
        r#""App"."Orders"."Orders Ref""#,
    )
    .await;
    let f = defect_found_and_fixed(
        &pool,
        "CREATE UNIQUE INDEX notes_title ON notes (lower(title) DESC) WHERE title <> ''",
        Check::CitusUniqueWithoutTenant,
        "public.notes_title",
    )
    .await;
    assert_eq!(
        f.fix,
        "DROP INDEX public.notes_title; CREATE UNIQUE INDEX notes_title ON public.notes USING btree (tenant_id, lower(title) DESC) WHERE (title <> ''::text);"
    );
}

#[tokio::test]
async fn foreign_keys_citus_refuses() {
    let (_db, pool) = clean_db().await;
    // From a local table to a distributed one.
    defect_found_and_fixed(
        &pool,
        "CREATE TABLE audit_links (id BIGINT PRIMARY KEY, note_tenant TEXT, note_id BIGINT,
             CONSTRAINT audit_links_note FOREIGN KEY (note_tenant, note_id) REFERENCES notes (tenant_id, id))",
        Check::CitusFkReferenceToDistributed,
        "public.audit_links.audit_links_note",
    )
    .await;
    // From a reference table to a distributed one.
    defect_found_and_fixed(
        &pool,
        "ALTER TABLE countries ADD COLUMN note_tenant TEXT, ADD COLUMN note_id BIGINT,
             ADD CONSTRAINT countries_note FOREIGN KEY (note_tenant, note_id) REFERENCES notes (tenant_id, id)",
        Check::CitusFkReferenceToDistributed,
        "public.countries.countries_note",
    )
    .await;
    // Between distributed tables, without pairing the tenant columns.
    let f = defect_found_and_fixed(
        &pool,
        "CREATE TABLE likes (tenant_id TEXT NOT NULL, id BIGSERIAL, note_tenant TEXT NOT NULL, note_id BIGINT NOT NULL,
             PRIMARY KEY (tenant_id, id),
             CONSTRAINT likes_note FOREIGN KEY (note_tenant, note_id) REFERENCES notes (tenant_id, id) ON DELETE CASCADE)",
        Check::CitusFkReferenceToDistributed,
        "public.likes.likes_note",
    )
    .await;
    assert_eq!(
        f.fix,
        "ALTER TABLE public.likes DROP CONSTRAINT IF EXISTS likes_note, ADD CONSTRAINT likes_note \
         FOREIGN KEY (tenant_id, note_id) REFERENCES public.notes (tenant_id, id) ON DELETE CASCADE;"
    );
    // An action that would change the tenant column.
    defect_found_and_fixed(
        &pool,
        "CREATE TABLE pins (tenant_id TEXT NOT NULL, id BIGSERIAL, note_id BIGINT, PRIMARY KEY (tenant_id, id),
             CONSTRAINT pins_note FOREIGN KEY (tenant_id, note_id) REFERENCES notes (tenant_id, id) ON DELETE SET NULL)",
        Check::CitusFkReferenceToDistributed,
        "public.pins.pins_note",
    )
    .await;
    // From a distributed table to the control plane, which stays local.
    defect_found_and_fixed(
        &pool,
        "ALTER TABLE comments ADD CONSTRAINT comments_tenant FOREIGN KEY (tenant_id) REFERENCES tenancy_tenants (id)",
        Check::CitusFkReferenceToDistributed,
        "public.comments.comments_tenant",
    )
    .await;
}

#[tokio::test]
async fn sequences_that_are_not_bigint() {
    let (_db, pool) = clean_db().await;
    let f = defect_found_and_fixed(
        &pool,
        "CREATE TABLE counters (tenant_id TEXT NOT NULL, id SERIAL, PRIMARY KEY (tenant_id, id))",
        Check::CitusSequenceNotBigint,
        "public.counters_id_seq",
    )
    .await;
    assert_eq!(
        f.fix,
        "ALTER TABLE public.counters ALTER COLUMN id TYPE bigint; ALTER SEQUENCE public.counters_id_seq AS bigint;"
    );
    defect_found_and_fixed(
        &pool,
        "CREATE TABLE visits (tenant_id TEXT NOT NULL, id INT GENERATED BY DEFAULT AS IDENTITY, PRIMARY KEY (tenant_id, id))",
        Check::CitusSequenceNotBigint,
        "public.visits_id_seq",
    )
    .await;
    defect_found_and_fixed(
        &pool,
        "CREATE SEQUENCE ticket_no AS integer;
         CREATE TABLE tickets (tenant_id TEXT NOT NULL, id BIGINT NOT NULL DEFAULT nextval('ticket_no'), PRIMARY KEY (tenant_id, id))",
        Check::CitusSequenceNotBigint,
        "public.ticket_no",
    )
    .await;
}

#[tokio::test]
async fn tenant_columns_of_another_type() {
    let (_db, pool) = clean_db().await;
    let f = defect_found_and_fixed(
        &pool,
        "CREATE TABLE files (tenant_id UUID NOT NULL, id BIGSERIAL, PRIMARY KEY (tenant_id, id))",
        Check::CitusTenantTypeMismatch,
        "public.files",
    )
    .await;
    assert_eq!(
        f.fix,
        "ALTER TABLE public.files ALTER COLUMN tenant_id TYPE text USING tenant_id::text;"
    );
}

#[tokio::test]
async fn fixes_run_in_report_order_repair_a_single_node_schema() {
    let db = PgTestDb::new().await;
    let pool = db.pool(2).await;
    // Written for one node: keys without the tenant, a foreign key that
    // uses one, a 32-bit serial.
    run(
        &pool,
        "CREATE TABLE notes (id SERIAL PRIMARY KEY, tenant_id TEXT NOT NULL, body TEXT NOT NULL);
         CREATE TABLE comments (id BIGSERIAL PRIMARY KEY, tenant_id TEXT NOT NULL,
             note_id INT NOT NULL REFERENCES notes (id) ON DELETE CASCADE);",
    )
    .await;
    let r = report(&pool).await;
    let got: Vec<_> = r
        .report
        .findings
        .iter()
        .map(|f| (f.check, f.object.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                Check::CitusUniqueWithoutTenant,
                "public.comments.comments_pkey"
            ),
            (Check::CitusUniqueWithoutTenant, "public.notes.notes_pkey"),
            (
                Check::CitusFkReferenceToDistributed,
                "public.comments.comments_note_id_fkey"
            ),
            (Check::CitusSequenceNotBigint, "public.notes_id_seq"),
        ],
        "{}",
        r.to_text()
    );
    for f in &r.report.findings {
        run(&pool, &f.fix).await;
    }
    assert_clean(&pool, "all fixes").await;
    let fk: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'comments_note_id_fkey'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        fk,
        "FOREIGN KEY (tenant_id, note_id) REFERENCES notes(tenant_id, id) ON DELETE CASCADE"
    );
}

/// The reports quoted in docs/citus.md. Run with
/// `cargo test -p tenancy-sql --test doctor_citus -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "prints the examples' reports for docs/citus.md"]
async fn print_the_examples_reports() {
    // 1. `tenancy serve`'s notes table under row level, with the store.
    let db = PgTestDb::new().await;
    let pool = db.pool(2).await;
    run(
        &pool,
        "CREATE TABLE notes (id BIGSERIAL, tenant_id TEXT NOT NULL, title TEXT NOT NULL,
             body TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL DEFAULT '',
             PRIMARY KEY (tenant_id, id));
         CREATE INDEX notes_tenant ON notes (tenant_id, id);",
    )
    .await;
    tenancy_sql::PgStore::new(pool.clone())
        .migrate()
        .await
        .unwrap();
    common::register_notes(&pool).await;
    println!(
        "=== tenancy serve (row level)\n{}",
        report(&pool).await.to_text()
    );

    // 2. examples/pg-row-level's notes table.
    let db = PgTestDb::new().await;
    let pool = db.pool(2).await;
    run(
        &pool,
        "CREATE TABLE IF NOT EXISTS notes (
             id        BIGSERIAL PRIMARY KEY,
             tenant_id TEXT NOT NULL,
             body      TEXT NOT NULL
         )",
    )
    .await;
    tenancy_sql::PgStore::new(pool.clone())
        .migrate()
        .await
        .unwrap();
    common::register_notes(&pool).await;
    let r = report(&pool).await;
    println!("=== examples/pg-row-level\n{}", r.to_text());
    println!("--- as JSON\n{}", serde_json::to_string_pretty(&r).unwrap());

    // 3. examples/pg-schema-per-tenant: two tenants' schemas, made and
    // migrated with its migrations as the example does.
    let db = PgTestDb::new().await;
    let pool = db.pool(2).await;
    tenancy_sql::PgStore::new(pool.clone())
        .migrate()
        .await
        .unwrap();
    let dir = "../../examples/pg-schema-per-tenant/migrations";
    let migrations = tenancy_sql::Migrations::new(vec![
        tenancy_sql::Migration {
            version: 1,
            name: "notes".into(),
            sql: std::fs::read_to_string(format!("{dir}/0001_notes.sql")).unwrap(),
        },
        tenancy_sql::Migration {
            version: 2,
            name: "note_created_at".into(),
            sql: std::fs::read_to_string(format!("{dir}/0002_note_created_at.sql")).unwrap(),
        },
    ])
    .unwrap();
    let schemas = tenancy_sql::PgSchemaIsolation::new(pool.clone(), migrations);
    for id in ["acme", "globex"] {
        schemas.migrate_tenant(&id.parse().unwrap()).await.unwrap();
    }
    println!(
        "=== examples/pg-schema-per-tenant\n{}",
        report(&pool).await.to_text()
    );
}
