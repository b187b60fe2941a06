//! Unit-level tests of the rewriter: exact output for each construct kind,
//! and refusals.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tenancy_interceptor::{Dialect, Interceptor, Refusal, TenantTables};

fn interceptor() -> Interceptor {
    Interceptor::new(TenantTables::new(["notes", "orders", "users"]).column("tenant_id"))
}

fn pg(sql: &str) -> String {
    match interceptor().rewrite(sql, Dialect::Postgres) {
        Ok(r) => r.sql().to_owned(),
        Err(e) => panic!("refused {sql}: {e}"),
    }
}

fn lite(sql: &str) -> String {
    match interceptor().rewrite(sql, Dialect::Sqlite) {
        Ok(r) => r.sql().to_owned(),
        Err(e) => panic!("refused {sql}: {e}"),
    }
}

fn refused(sql: &str, dialect: Dialect) -> Refusal {
    match interceptor().rewrite(sql, dialect) {
        Ok(r) => panic!("not refused: {sql} -> {}", r.sql()),
        Err(e) => e,
    }
}

#[test]
fn plain_select_gets_where() {
    assert_eq!(
        pg("SELECT * FROM notes"),
        "SELECT * FROM notes WHERE notes.tenant_id = $1"
    );
    assert_eq!(
        pg("SELECT id FROM notes n WHERE n.id = $1 OR n.pinned"),
        "SELECT id FROM notes n WHERE (n.id = $1 OR n.pinned) AND n.tenant_id = $2"
    );
    assert_eq!(
        pg("SELECT id FROM notes WHERE id = $3 AND body = $1"),
        "SELECT id FROM notes WHERE id = $3 AND body = $1 AND notes.tenant_id = $4"
    );
}

#[test]
fn or_is_nested_never_leaks() {
    let out = pg("SELECT * FROM notes WHERE a = 1 OR b = 2");
    assert_eq!(
        out,
        "SELECT * FROM notes WHERE (a = 1 OR b = 2) AND notes.tenant_id = $1"
    );
    let out = pg("SELECT * FROM notes WHERE NOT a OR b");
    assert!(out.contains("(NOT a OR b) AND"), "{out}");
}

#[test]
fn global_tables_untouched_and_no_tenant_param() {
    let r = interceptor()
        .rewrite("SELECT * FROM globals WHERE id = $1", Dialect::Postgres)
        .unwrap();
    assert_eq!(r.sql(), "SELECT * FROM globals WHERE id = $1");
    assert_eq!(r.tenant_param(), None);
    let r = interceptor()
        .rewrite("SELECT * FROM notes WHERE id = $1", Dialect::Postgres)
        .unwrap();
    assert_eq!(r.tenant_param(), Some(2));
}

#[test]
fn names_resolve_like_postgres() {
    assert_eq!(
        pg(r#"SELECT * FROM "Notes", NOTES, "notes""#),
        r#"SELECT * FROM "Notes", NOTES, "notes" WHERE NOTES.tenant_id = $1 AND "notes".tenant_id = $1"#
    );
    assert_eq!(
        pg("SELECT * FROM public.notes WHERE id = 1"),
        "SELECT * FROM public.notes WHERE id = 1 AND public.notes.tenant_id = $1"
    );
    // SQLite identifiers are case-insensitive even when quoted.
    assert_eq!(
        lite(r#"SELECT * FROM "Notes""#),
        r#"SELECT * FROM "Notes" WHERE "Notes".tenant_id = ?1"#
    );
    // Qualified configuration matches only that schema (or unqualified refs).
    let i = Interceptor::new(TenantTables::new(["app.notes"]));
    assert_eq!(
        i.rewrite("SELECT * FROM other.notes", Dialect::Postgres)
            .unwrap()
            .sql(),
        "SELECT * FROM other.notes"
    );
    assert_eq!(
        i.rewrite("SELECT * FROM notes", Dialect::Postgres)
            .unwrap()
            .sql(),
        "SELECT * FROM notes WHERE notes.tenant_id = $1"
    );
    // A custom, quoted tenant column.
    let i = Interceptor::new(TenantTables::new(["notes"]).column("TenantId"));
    assert_eq!(
        i.rewrite("SELECT * FROM notes", Dialect::Postgres)
            .unwrap()
            .sql(),
        r#"SELECT * FROM notes WHERE notes."TenantId" = $1"#
    );
}

#[test]
fn joins_put_predicates_where_semantics_need_them() {
    assert_eq!(
        pg(
            "SELECT n.id, o.id FROM notes n JOIN orders o ON o.note_id = n.id LEFT JOIN users u ON u.id = o.user_id WHERE n.x > 3"
        ),
        "SELECT n.id, o.id FROM notes n JOIN orders o ON o.note_id = n.id LEFT JOIN users u ON u.id = o.user_id AND u.tenant_id = $1 WHERE n.x > 3 AND n.tenant_id = $1 AND o.tenant_id = $1"
    );
    assert_eq!(
        pg("SELECT * FROM notes n RIGHT JOIN orders o ON o.id = n.id"),
        "SELECT * FROM notes n RIGHT JOIN orders o ON o.id = n.id AND n.tenant_id = $1 WHERE o.tenant_id = $1"
    );
    assert_eq!(
        pg("SELECT * FROM notes n FULL JOIN orders o ON o.id = n.id"),
        "SELECT * FROM (SELECT * FROM notes WHERE notes.tenant_id = $1) n FULL JOIN (SELECT * FROM orders WHERE orders.tenant_id = $1) o ON o.id = n.id"
    );
    assert_eq!(
        pg("SELECT * FROM notes n LEFT JOIN orders USING (id)"),
        "SELECT * FROM notes n LEFT JOIN (SELECT * FROM orders WHERE orders.tenant_id = $1) AS orders USING(id) WHERE n.tenant_id = $1"
    );
    assert_eq!(
        pg("SELECT * FROM notes n, orders o, globals g WHERE n.id = o.id"),
        "SELECT * FROM notes n, orders o, globals g WHERE n.id = o.id AND n.tenant_id = $1 AND o.tenant_id = $1"
    );
    assert_eq!(
        pg("SELECT * FROM notes a LEFT JOIN (orders b JOIN users c ON c.id = b.id) ON b.id = a.id"),
        "SELECT * FROM notes a LEFT JOIN (orders b JOIN users c ON c.id = b.id) ON b.id = a.id AND b.tenant_id = $1 AND c.tenant_id = $1 WHERE a.tenant_id = $1"
    );
}

#[test]
fn subqueries_everywhere() {
    assert_eq!(
        pg(
            "SELECT (SELECT count(*) FROM orders o WHERE o.nid = n.id) FROM notes n WHERE EXISTS (SELECT 1 FROM users WHERE users.id = n.uid)"
        ),
        "SELECT (SELECT count(*) FROM orders o WHERE o.nid = n.id AND o.tenant_id = $1) FROM notes n WHERE EXISTS (SELECT 1 FROM users WHERE users.id = n.uid AND users.tenant_id = $1) AND n.tenant_id = $1"
    );
    assert_eq!(
        pg("SELECT * FROM (SELECT id FROM notes) s WHERE s.id IN (SELECT id FROM orders)"),
        "SELECT * FROM (SELECT id FROM notes WHERE notes.tenant_id = $1) s WHERE s.id IN (SELECT id FROM orders WHERE orders.tenant_id = $1)"
    );
    assert_eq!(
        pg("SELECT kind FROM globals GROUP BY kind HAVING count(*) > (SELECT count(*) FROM notes)"),
        "SELECT kind FROM globals GROUP BY kind HAVING count(*) > (SELECT count(*) FROM notes WHERE notes.tenant_id = $1)"
    );
    assert_eq!(
        pg("SELECT * FROM notes n, LATERAL (SELECT * FROM orders o WHERE o.nid = n.id) x"),
        "SELECT * FROM notes n, LATERAL (SELECT * FROM orders o WHERE o.nid = n.id AND o.tenant_id = $1) x WHERE n.tenant_id = $1"
    );
}

#[test]
fn set_operations_and_ctes() {
    assert_eq!(
        pg("SELECT id FROM notes UNION SELECT id FROM orders EXCEPT SELECT id FROM globals"),
        "SELECT id FROM notes WHERE notes.tenant_id = $1 UNION SELECT id FROM orders WHERE orders.tenant_id = $1 EXCEPT SELECT id FROM globals"
    );
    // A CTE named like a table shadows it in the body, but its own body
    // reads the real table.
    assert_eq!(
        pg("WITH notes AS (SELECT * FROM notes WHERE x) SELECT * FROM notes"),
        "WITH notes AS (SELECT * FROM notes WHERE (x) AND notes.tenant_id = $1) SELECT * FROM notes"
    );
    assert_eq!(
        pg(
            "WITH RECURSIVE t(n) AS (SELECT id FROM notes UNION ALL SELECT n+1 FROM t WHERE n < 5) SELECT * FROM t"
        ),
        "WITH RECURSIVE t (n) AS (SELECT id FROM notes WHERE notes.tenant_id = $1 UNION ALL SELECT n + 1 FROM t WHERE n < 5) SELECT * FROM t"
    );
    // The CTE scope ends with its query: a later subquery's `notes` is the table.
    assert_eq!(
        pg("SELECT * FROM (WITH notes AS (SELECT 1 AS id) SELECT * FROM notes) a, notes"),
        "SELECT * FROM (WITH notes AS (SELECT 1 AS id) SELECT * FROM notes) a, notes WHERE notes.tenant_id = $1"
    );
}

#[test]
fn writes() {
    assert_eq!(
        pg("INSERT INTO notes (id, body) VALUES (1, 'a'), (2, $1) RETURNING id"),
        "INSERT INTO notes (id, body, tenant_id) VALUES (1, 'a', $2), (2, $1, $2) RETURNING id"
    );
    assert_eq!(
        pg("INSERT INTO notes (id, body) SELECT id, body FROM orders WHERE x"),
        "INSERT INTO notes (id, body, tenant_id) SELECT id, body, $1 FROM orders WHERE (x) AND orders.tenant_id = $1"
    );
    assert_eq!(
        pg("INSERT INTO notes (id, body) SELECT id, body FROM orders UNION SELECT 1, 'x'"),
        "INSERT INTO notes (id, body, tenant_id) SELECT __tenancy_src.*, $1 FROM (SELECT id, body FROM orders WHERE orders.tenant_id = $1 UNION SELECT 1, 'x') AS __tenancy_src"
    );
    assert_eq!(
        pg(
            "INSERT INTO notes (id, body) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET body = excluded.body"
        ),
        "INSERT INTO notes (id, body, tenant_id) VALUES (1, 'a', $1) ON CONFLICT(tenant_id, id) DO UPDATE SET body = excluded.body WHERE notes.tenant_id = $1"
    );
    assert_eq!(
        pg("UPDATE notes n SET body = o.x FROM orders o WHERE o.id = n.id OR true RETURNING n.id"),
        "UPDATE notes n SET body = o.x FROM orders o WHERE (o.id = n.id OR true) AND n.tenant_id = $1 AND o.tenant_id = $1 RETURNING n.id"
    );
    assert_eq!(
        pg("DELETE FROM notes USING orders o WHERE o.id = notes.id"),
        "DELETE FROM notes USING orders o WHERE o.id = notes.id AND notes.tenant_id = $1 AND o.tenant_id = $1"
    );
    assert_eq!(
        pg(
            "WITH d AS (DELETE FROM notes WHERE id = 1 RETURNING id) INSERT INTO orders (id) SELECT id FROM d"
        ),
        "WITH d AS (DELETE FROM notes WHERE id = 1 AND notes.tenant_id = $1 RETURNING id) INSERT INTO orders (id, tenant_id) SELECT id, $1 FROM d"
    );
    // The target of a write is never a CTE, even when one shadows its name.
    assert_eq!(
        pg(
            "WITH notes AS (SELECT 1 AS id) UPDATE notes SET body = 'x' WHERE id IN (SELECT id FROM notes)"
        ),
        "WITH notes AS (SELECT 1 AS id) UPDATE notes SET body = 'x' WHERE id IN (SELECT id FROM notes) AND notes.tenant_id = $1"
    );
    assert_eq!(
        pg("DELETE FROM notes"),
        "DELETE FROM notes WHERE notes.tenant_id = $1"
    );
}

#[test]
fn sqlite_placeholders() {
    assert_eq!(
        lite("SELECT * FROM notes WHERE id = ? AND x = ?"),
        "SELECT * FROM notes WHERE id = ?1 AND x = ?2 AND notes.tenant_id = ?3"
    );
    assert_eq!(
        lite("SELECT * FROM notes n LEFT JOIN orders o ON o.id = n.id WHERE n.a = ? AND o.b = ?"),
        "SELECT * FROM notes n LEFT JOIN orders o ON o.id = n.id AND o.tenant_id = ?3 WHERE n.a = ?1 AND o.b = ?2 AND n.tenant_id = ?3"
    );
    assert_eq!(
        lite("SELECT * FROM notes WHERE id = ?2 AND x = ?1"),
        "SELECT * FROM notes WHERE id = ?2 AND x = ?1 AND notes.tenant_id = ?3"
    );
    assert!(matches!(
        refused(
            "SELECT * FROM notes WHERE id = ? AND x = ?1",
            Dialect::Sqlite
        ),
        Refusal::Placeholders(_)
    ));
    assert!(matches!(
        refused("SELECT * FROM notes WHERE id = :id", Dialect::Sqlite),
        Refusal::Placeholders(_)
    ));
    assert!(matches!(
        refused("SELECT * FROM notes WHERE id = ?", Dialect::Postgres),
        Refusal::Placeholders(_) | Refusal::Parse { .. }
    ));
}

#[test]
fn refusals() {
    use Dialect::Postgres as P;
    assert!(matches!(refused("SELEC 1", P), Refusal::Parse { .. }));
    assert!(matches!(refused("", P), Refusal::Empty));
    assert!(matches!(
        refused("SELECT 1; SELECT 2", P),
        Refusal::MultipleStatements { count: 2 }
    ));
    assert!(matches!(
        refused("TRUNCATE notes", P),
        Refusal::TenantTableStatement { .. }
    ));
    for ddl in [
        "DROP TABLE notes",
        "CREATE TABLE x (id int)",
        "ALTER TABLE notes ADD COLUMN x int",
        "COPY notes TO STDOUT",
        "CREATE INDEX i ON notes (id)",
        "GRANT SELECT ON notes TO bob",
        "SET search_path = x",
    ] {
        refused(ddl, P);
    }
    assert!(matches!(
        refused("UPDATE notes SET tenant_id = 'x'", P),
        Refusal::TenantColumnWritten { .. }
    ));
    assert!(matches!(
        refused("UPDATE notes n SET (a, tenant_id) = (1, 'x')", P),
        Refusal::TenantColumnWritten { .. }
    ));
    assert!(matches!(
        refused("INSERT INTO notes (id, tenant_id) VALUES (1, 'x')", P),
        Refusal::TenantColumnWritten { .. }
    ));
    assert!(matches!(
        refused(
            "INSERT INTO notes (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET tenant_id = 'b'",
            P
        ),
        Refusal::TenantColumnWritten { .. }
    ));
    assert!(matches!(
        refused("INSERT INTO notes VALUES (1, 'x')", P),
        Refusal::InsertWithoutColumns { .. }
    ));
    assert!(matches!(
        refused("EXPLAIN ANALYZE DELETE FROM notes", P),
        Refusal::ExplainAnalyzeWrite
    ));
    assert!(matches!(
        refused("EXPLAIN (ANALYZE) UPDATE notes SET a = 1", P),
        Refusal::ExplainAnalyzeWrite
    ));
    refused("SELECT * FROM notes NATURAL JOIN orders", P);
    refused("SELECT * INTO newtab FROM notes", P);
    refused("TABLE notes", P);
    refused(
        "SELECT query_to_xml('select * from notes', true, true, '')",
        P,
    );
    refused("SELECT set_config('app.tenant_id', 'b', true)", P);
    refused(
        "SELECT * FROM (notes n JOIN orders o ON n.id = o.id) AS j",
        P,
    );
    refused("SELECT * FROM notes AS n(a, b, c)", P);
    refused(
        "INSERT OR REPLACE INTO notes (id) VALUES (1)",
        Dialect::Sqlite,
    );
    refused("REPLACE INTO notes (id) VALUES (1)", Dialect::Sqlite);
    refused("INSERT INTO notes DEFAULT VALUES", P);
    // Nested deeper than the parser's limit.
    let deep = format!("SELECT {}1{}", "(".repeat(200), ")".repeat(200));
    assert!(matches!(refused(&deep, P), Refusal::Parse { .. }));
    let deep = format!(
        "SELECT * FROM notes WHERE id IN {}SELECT 1{}",
        "(SELECT * FROM notes WHERE id IN ".repeat(60),
        ")".repeat(60)
    );
    refused(&deep, P);
}

#[test]
fn explain_without_analyze_is_scoped() {
    assert_eq!(
        pg("EXPLAIN SELECT * FROM notes"),
        "EXPLAIN SELECT * FROM notes WHERE notes.tenant_id = $1"
    );
    assert_eq!(
        pg("EXPLAIN ANALYZE SELECT * FROM notes"),
        "EXPLAIN ANALYZE SELECT * FROM notes WHERE notes.tenant_id = $1"
    );
}

#[test]
fn cache_returns_same_result() {
    let i = interceptor();
    let a = i.rewrite("SELECT * FROM notes", Dialect::Postgres).unwrap();
    let b = i.rewrite("SELECT * FROM notes", Dialect::Postgres).unwrap();
    assert_eq!(a, b);
    let c = i.rewrite("SELECT * FROM notes", Dialect::Sqlite).unwrap();
    assert_eq!(c.sql(), "SELECT * FROM notes WHERE notes.tenant_id = ?1");
    assert!(i.rewrite("TRUNCATE notes", Dialect::Postgres).is_err());
    assert!(i.rewrite("TRUNCATE notes", Dialect::Postgres).is_err());
}

/// A form the printer cannot write back faithfully (found by fuzzing: the
/// keyword `not` taken as a bare column name prints unquoted, and the
/// scoped statement no longer parses) is refused, never handed on.
#[test]
fn output_that_does_not_read_back_is_refused() {
    let sql = "DELETE FROM orders USING notes WHERE orders.note_id = not\u{b}\u{b}";
    for dialect in [Dialect::Postgres, Dialect::Sqlite] {
        match refused(sql, dialect) {
            Refusal::DoesNotReadBack(_) | Refusal::Parse { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    // Quoted, it is an ordinary column.
    assert!(
        pg("DELETE FROM orders USING notes WHERE orders.note_id = \"not\"").contains("\"not\"")
    );
}
