//! Exact export: a table with every type exported and compared
//! value by value, then imported elsewhere and exported again, byte for
//! byte; on PostgreSQL and on SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tenancy_core::TenantId;
use tenancy_sql::portable::TenantData;

const PG_TABLE: &str = r#"
CREATE TYPE mood AS ENUM ('happy', 'sad', 'ünïcode');
CREATE TABLE everything (
    id BIGSERIAL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    u UUID, ts TIMESTAMPTZ, tsn TIMESTAMP, d DATE, tm TIME, iv INTERVAL,
    n NUMERIC, n2 NUMERIC(12, 4), f8 DOUBLE PRECISION, f4 REAL, i2 SMALLINT, i4 INTEGER, i8 BIGINT,
    b BOOLEAN, t TEXT, vc VARCHAR(20), ch CHAR(3),
    jb JSONB, js JSON, bin BYTEA,
    ints INTEGER[], texts TEXT[], grid INTEGER[][], m mood, moods mood[],
    addr INET, r INT4RANGE,
    gen TEXT GENERATED ALWAYS AS (upper(t)) STORED
);
INSERT INTO everything (tenant_id, u, ts, tsn, d, tm, iv, n, n2, f8, f4, i2, i4, i8, b, t, vc, ch, jb, js, bin,
                        ints, texts, grid, m, moods, addr, r) VALUES
 ('acme', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29 23:59:59.123456+02', '2024-01-01 00:00:00',
  '2024-02-29', '13:14:15.5', '1 year 2 mons 3 days 04:05:06', 123456789012345678901234567890.123456789,
  -0.0001, 0.1 + 0.2::float8, 3.25, -32768, 2147483647, 9223372036854775807, true,
  E'line1\nline2\ttab \\ back "quote" é 😀 \u0001', 'varchar', 'ab',
  '{"a": [1, 2, {"b": null}], "n": 1.50}', '{"x" :  [true, false]}', '\x00ff10deadbeef',
  '{1,2,NULL}', '{"a b","c\"d",NULL,""}', '{{1,2},{3,4}}', 'ünïcode', '{happy,sad}',
  '192.168.0.1/24', '[1,10)'),
 ('acme', NULL, NULL, NULL, NULL, NULL, NULL, 'NaN', NULL, 'Infinity', '-Infinity', NULL, NULL, NULL, false,
  '', '', '   ', 'null', '"str"', '', '{}', '{}', NULL, NULL, NULL, NULL, 'empty'),
 ('globex', NULL, NULL, NULL, NULL, NULL, NULL, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  'other tenant', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

fn rows_of(ndjson: &[u8]) -> Vec<BTreeMap<String, Box<RawValue>>> {
    std::str::from_utf8(ndjson)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn value(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap()
}

#[tokio::test]
async fn postgres_every_type_exported_exactly_and_round_tripped() {
    let db = common::PgTestDb::new().await;
    let pool = db.pool(2).await;
    sqlx::raw_sql(PG_TABLE).execute(&pool).await.unwrap();
    // Exports of shared tables read as the request role, under RLS.
    tenancy_sql::PgRowLevel::new(pool.clone())
        .register_table("everything", "tenant_id")
        .await
        .unwrap();
    let acme: TenantId = "acme".parse().unwrap();
    let data = TenantData::pg_shared(pool.clone(), acme.clone(), "tenant_id").unwrap();

    let mut session = data.read().await.unwrap();
    let tables = session.tables().await.unwrap();
    assert_eq!(tables.len(), 1, "{tables:?}");
    let table = &tables[0];
    assert_eq!(table.key, ["id"]);
    assert!(table.tenant_column);
    let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    assert!(
        !names.contains(&"tenant_id") && !names.contains(&"gen"),
        "{names:?}"
    );
    let mut out = Vec::new();
    let digest = session.export_table(table, None, &mut out).await.unwrap();
    assert_eq!(digest.rows, 2, "only acme's rows");
    assert_eq!(session.row_count(table).await.unwrap(), 2);
    drop(session);

    let rows = rows_of(&out);
    let full = &rows[0];
    let raw = |k: &str| full[k].get().to_owned();
    // Value by value, as PostgreSQL prints them.
    assert_eq!(raw("id"), "1");
    assert_eq!(raw("u"), r#""a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11""#);
    assert_eq!(raw("ts"), r#""2024-02-29T21:59:59.123456+00:00""#);
    assert_eq!(raw("tsn"), r#""2024-01-01T00:00:00""#);
    assert_eq!(raw("d"), r#""2024-02-29""#);
    assert_eq!(raw("tm"), r#""13:14:15.5""#);
    assert_eq!(raw("iv"), r#""1 year 2 mons 3 days 04:05:06""#);
    assert_eq!(raw("n"), "123456789012345678901234567890.123456789");
    assert_eq!(raw("n2"), "-0.0001");
    assert_eq!(raw("f8"), "0.30000000000000004");
    assert_eq!(raw("f4"), "3.25");
    assert_eq!(raw("i2"), "-32768");
    assert_eq!(raw("i4"), "2147483647");
    assert_eq!(raw("i8"), "9223372036854775807");
    assert_eq!(raw("b"), "true");
    assert_eq!(
        value(&full["t"]),
        json!("line1\nline2\ttab \\ back \"quote\" é 😀 \u{1}")
    );
    assert_eq!(value(&full["vc"]), json!("varchar"));
    assert_eq!(value(&full["ch"]), json!("ab "));
    assert_eq!(
        value(&full["jb"]),
        json!({"a": [1, 2, {"b": null}], "n": 1.50})
    );
    assert_eq!(value(&full["js"]), json!({"x": [true, false]}));
    assert_eq!(
        value(&full["bin"]),
        json!("AP8Q3q2+7w=="),
        "bytea is base64"
    );
    assert_eq!(value(&full["ints"]), json!([1, 2, null]));
    assert_eq!(value(&full["texts"]), json!(["a b", "c\"d", null, ""]));
    assert_eq!(value(&full["grid"]), json!([[1, 2], [3, 4]]));
    assert_eq!(value(&full["m"]), json!("ünïcode"));
    assert_eq!(value(&full["moods"]), json!(["happy", "sad"]));
    assert_eq!(value(&full["addr"]), json!("192.168.0.1/24"));
    assert_eq!(value(&full["r"]), json!("[1,10)"));

    let sparse = &rows[1];
    for k in ["u", "ts", "tsn", "d", "tm", "iv", "n2", "i2", "i4", "i8"] {
        assert_eq!(sparse[k].get(), "null", "{k}: a NULL stays null");
    }
    assert_eq!(value(&sparse["n"]), json!("NaN"));
    assert_eq!(value(&sparse["f8"]), json!("Infinity"));
    assert_eq!(value(&sparse["f4"]), json!("-Infinity"));
    assert_eq!(value(&sparse["t"]), json!(""), "empty string is not null");
    assert_eq!(value(&sparse["bin"]), json!(""), "empty bytea is not null");
    assert_eq!(value(&sparse["jb"]), Value::Null);
    assert_eq!(sparse["jb"].get(), "null", "JSON null");
    assert_eq!(value(&sparse["js"]), json!("str"));
    assert_eq!(value(&sparse["ints"]), json!([]));
    assert_eq!(value(&sparse["r"]), json!("empty"));
    // No value anywhere came out as null unless it was NULL.
    let nulls: usize = rows
        .iter()
        .flat_map(|r| r.values())
        .filter(|v| v.get() == "null")
        .count();
    let expected: i64 = sqlx::query_scalar(
        "SELECT sum(num_nulls(u, ts, tsn, d, tm, iv, n, n2, f8, f4, i2, i4, i8, b, t, vc, ch, jb, js, bin, \
                ints, texts, grid, m, moods, addr, r))::int8 + count(*) FILTER (WHERE jb = 'null'::jsonb) \
         FROM everything WHERE tenant_id = 'acme'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(nulls as i64, expected);

    // Import into another tenant's own database, export again: identical.
    let other = common::PgTestDb::new().await;
    let other_pool = other.pool(2).await;
    sqlx::raw_sql(PG_TABLE.split("INSERT INTO").next().unwrap())
        .execute(&other_pool)
        .await
        .unwrap();
    let copy =
        TenantData::pg_database(other_pool.clone(), "copy".parse().unwrap(), "tenant_id").unwrap();
    let mut session = copy.write().await.unwrap();
    let target = session.table("everything").await.unwrap().unwrap();
    let imported = session
        .import_table(&target, &table.columns, &mut &out[..])
        .await
        .unwrap();
    assert_eq!(imported, digest);
    session.commit().await.unwrap();
    let tenant_ids: Vec<String> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM everything")
        .fetch_all(&other_pool)
        .await
        .unwrap();
    assert_eq!(tenant_ids, ["copy"], "the importing tenant owns the rows");
    let mut session = copy.read().await.unwrap();
    let mut again = Vec::new();
    let redigest = session
        .export_table(&target, None, &mut again)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(again).unwrap(),
        String::from_utf8(out).unwrap()
    );
    assert_eq!(redigest, digest);
    drop(session);
    // The serial continues after the imported keys.
    let next: i64 =
        sqlx::query_scalar("INSERT INTO everything (tenant_id) VALUES ('copy') RETURNING id")
            .fetch_one(&other_pool)
            .await
            .unwrap();
    assert_eq!(next, 3);
    // A limit, in key order.
    let mut session = data.read().await.unwrap();
    let mut one = Vec::new();
    let d = session
        .export_table(table, Some(1), &mut one)
        .await
        .unwrap();
    assert_eq!(d.rows, 1);
    assert!(String::from_utf8(one).unwrap().starts_with("{\"id\":1,"));
    drop(session);
    pool.close().await;
    other_pool.close().await;
}

async fn sqlite_pool(path: &std::path::Path) -> sqlx::SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true),
        )
        .await
        .unwrap()
}

const SQLITE_TABLE: &str = "CREATE TABLE classes (k INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, \
    i INTEGER, r REAL, t TEXT, b BLOB, untyped, n NUMERIC)";

#[tokio::test]
async fn sqlite_every_storage_class_exported_exactly_and_round_tripped() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir.path().join("a.db")).await;
    sqlx::raw_sql(SQLITE_TABLE).execute(&pool).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO classes VALUES \
           (1, 'acme', 9223372036854775807, 0.1 + 0.2, 'ünï \"q\" \n 😀', x'00ff10', 'loose', 12.5), \
           (2, 'acme', -1, 1e308 * 10, '', x'', 7, '123456789012345678901234567890'), \
           (3, 'acme', NULL, NULL, NULL, NULL, NULL, NULL), \
           (4, 'globex', 1, 1, 'other', x'01', NULL, NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let data =
        TenantData::sqlite_shared(pool.clone(), "acme".parse().unwrap(), "tenant_id").unwrap();
    let mut session = data.read().await.unwrap();
    let table = session.table("classes").await.unwrap().unwrap();
    let mut out = Vec::new();
    let digest = session.export_table(&table, None, &mut out).await.unwrap();
    drop(session);
    assert_eq!(digest.rows, 3);
    let rows = rows_of(&out);
    assert_eq!(rows[0]["i"].get(), "9223372036854775807");
    assert_eq!(rows[0]["r"].get(), "0.30000000000000004");
    assert_eq!(value(&rows[0]["t"]), json!("ünï \"q\" \n 😀"));
    assert_eq!(value(&rows[0]["b"]), json!("AP8Q"));
    assert_eq!(value(&rows[0]["untyped"]), json!("loose"));
    assert_eq!(rows[0]["n"].get(), "12.5");
    assert_eq!(value(&rows[1]["r"]), json!("Infinity"));
    assert_eq!(value(&rows[1]["t"]), json!(""));
    assert_eq!(value(&rows[1]["b"]), json!(""));
    assert_eq!(rows[1]["untyped"].get(), "7");
    for k in ["i", "r", "t", "b", "untyped", "n"] {
        assert_eq!(rows[2][k].get(), "null", "{k}");
    }

    // Into another file and back out: the same bytes.
    let copy_pool = sqlite_pool(&dir.path().join("b.db")).await;
    sqlx::raw_sql(SQLITE_TABLE)
        .execute(&copy_pool)
        .await
        .unwrap();
    let copy = TenantData::sqlite_database(copy_pool.clone(), "copy".parse().unwrap(), "tenant_id")
        .unwrap();
    let mut session = copy.write().await.unwrap();
    let target = session.table("classes").await.unwrap().unwrap();
    assert_eq!(
        session
            .import_table(&target, &table.columns, &mut &out[..])
            .await
            .unwrap(),
        digest
    );
    session.commit().await.unwrap();
    let classes: Vec<(String, String, String)> =
        sqlx::query_as("SELECT typeof(i), typeof(r), typeof(b) FROM classes ORDER BY k")
            .fetch_all(&copy_pool)
            .await
            .unwrap();
    assert_eq!(classes[0], ("integer".into(), "real".into(), "blob".into()));
    let mut session = copy.read().await.unwrap();
    let mut again = Vec::new();
    session
        .export_table(&target, None, &mut again)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(again).unwrap(),
        String::from_utf8(out).unwrap()
    );
    drop(session);

    // A BLOB where the column is declared TEXT cannot be exported exactly:
    // refused, naming the row.
    sqlx::query("INSERT INTO classes (k, tenant_id, t) VALUES (9, 'acme', x'01')")
        .execute(&pool)
        .await
        .unwrap();
    let mut session = data.read().await.unwrap();
    let err = session
        .export_table(&table, None, &mut Vec::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("k=9") && err.contains("`t`") && err.contains("BLOB"),
        "{err}"
    );
}

#[tokio::test]
async fn an_import_whose_rows_do_not_fit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlite_pool(&dir.path().join("a.db")).await;
    sqlx::raw_sql("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let data =
        TenantData::sqlite_database(pool.clone(), "x".parse().unwrap(), "tenant_id").unwrap();
    let mut session = data.write().await.unwrap();
    let target = session.table("t").await.unwrap().unwrap();
    let mut wrong = target.columns.clone();
    wrong[1].name = "w".into();
    let err = session
        .import_table(&target, &wrong, &mut &b"{\"k\":1,\"w\":\"x\"}\n"[..])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`w`"), "{err}");
    // Broken JSON: refused with its line number.
    let err = session
        .import_table(
            &target,
            &target.columns,
            &mut &b"{\"k\":1,\"v\":\"x\"}\n{oops\n"[..],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}
