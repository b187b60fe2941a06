//! Shared fixtures for the differential tests: schema, data and a corpus of
//! statements written as application SQL (no tenant column anywhere).

#![allow(dead_code)]

/// Tenants in the shared tables; `A` is the one under test.
pub const TENANTS: [&str; 3] = ["A", "B", "C"];
/// Tenant tables.
pub const TENANT_TABLES: [&str; 3] = ["notes", "orders", "users"];

/// One statement of the corpus.
pub struct Case {
    pub sql: &'static str,
    pub params: &'static [i32],
    pub postgres: bool,
    pub sqlite: bool,
}

const fn both(sql: &'static str) -> Case {
    Case {
        sql,
        params: &[],
        postgres: true,
        sqlite: true,
    }
}
const fn both_p(sql: &'static str, params: &'static [i32]) -> Case {
    Case {
        sql,
        params,
        postgres: true,
        sqlite: true,
    }
}
const fn pg(sql: &'static str) -> Case {
    Case {
        sql,
        params: &[],
        postgres: true,
        sqlite: false,
    }
}
const fn lite(sql: &'static str) -> Case {
    Case {
        sql,
        params: &[],
        postgres: false,
        sqlite: true,
    }
}

/// `CREATE TABLE` statements; `shared` adds the tenant column and makes it
/// part of every key.
pub fn schema(shared: bool) -> Vec<String> {
    let (t, pk) = if shared {
        ("tenant_id TEXT NOT NULL, ", "PRIMARY KEY (tenant_id, id)")
    } else {
        ("", "PRIMARY KEY (id)")
    };
    vec![
        format!("CREATE TABLE users ({t}id INT NOT NULL, name TEXT, {pk})"),
        format!(
            "CREATE TABLE notes ({t}id INT NOT NULL, user_id INT, body TEXT, pinned BOOLEAN NOT NULL DEFAULT FALSE, score INT, {pk})"
        ),
        format!(
            "CREATE TABLE orders ({t}id INT NOT NULL, note_id INT, user_id INT, total INT, status TEXT, {pk})"
        ),
        "CREATE TABLE kinds (id INT NOT NULL PRIMARY KEY, label TEXT)".to_string(),
    ]
}

fn lit(v: Option<String>) -> String {
    v.unwrap_or_else(|| "NULL".into())
}

/// INSERT statements for the given tenants (`None` = oracle, tenant A's rows
/// without the tenant column).
pub fn data(shared: bool) -> Vec<String> {
    let mut out = vec![
        "INSERT INTO kinds (id, label) VALUES (1, 'one'), (2, 'two'), (3, 'three')".to_string(),
    ];
    let tenants: &[&str] = if shared { &TENANTS } else { &TENANTS[..1] };
    for (k, t) in tenants.iter().enumerate() {
        let k = k as i32;
        let (tc, tv) = if shared {
            ("tenant_id, ", format!("'{t}', "))
        } else {
            ("", String::new())
        };
        for id in 1..=4 {
            out.push(format!(
                "INSERT INTO users ({tc}id, name) VALUES ({tv}{id}, '{t}-user{id}')"
            ));
        }
        for id in 1..=(6 + k) {
            let user = if id == 5 {
                None
            } else {
                Some(((id % 4) + 1).to_string())
            };
            let pinned = if id % 2 == 0 { "TRUE" } else { "FALSE" };
            out.push(format!(
                "INSERT INTO notes ({tc}id, user_id, body, pinned, score) VALUES ({tv}{id}, {}, '{t} note {id}', {pinned}, {})",
                lit(user),
                id * 10 + k
            ));
        }
        for id in 1..=5 {
            let note = if id == 5 { 9 } else { id + k % 2 };
            let status = if id % 2 == 0 { "closed" } else { "open" };
            out.push(format!(
                "INSERT INTO orders ({tc}id, note_id, user_id, total, status) VALUES ({tv}{id}, {note}, {}, {}, '{status}')",
                (id % 3) + 1,
                id * 100 + k
            ));
        }
    }
    out
}

/// The corpus: reads and writes of every kind the interceptor scopes.
pub fn corpus() -> Vec<Case> {
    vec![
        // -- plain reads
        both("SELECT id, body FROM notes"),
        both("SELECT * FROM notes"),
        both_p("SELECT * FROM notes WHERE id = $1", &[3]),
        both_p("SELECT id FROM notes WHERE pinned OR score > $1", &[30]),
        both_p(
            "SELECT n.id FROM notes n WHERE n.id = $1 OR n.id = $2",
            &[1, 2],
        ),
        both("SELECT count(*) FROM notes"),
        both("SELECT max(total), min(total), sum(total) FROM orders"),
        both("SELECT DISTINCT user_id FROM notes"),
        both("SELECT id FROM notes ORDER BY score DESC LIMIT 2 OFFSET 1"),
        both("SELECT ID FROM NOTES WHERE PINNED"),
        both(r#"SELECT "id" FROM "notes" WHERE "notes"."score" > 10"#),
        pg("SELECT id FROM public.notes WHERE public.notes.id > 2"),
        lite("SELECT id FROM main.notes WHERE main.notes.id > 2"),
        both("SELECT o.status, count(*) FROM orders o GROUP BY o.status HAVING count(*) > 1"),
        // -- joins
        both("SELECT n.id, u.name FROM notes n JOIN users u ON u.id = n.user_id"),
        both("SELECT n.id, u.name FROM notes n, users u WHERE u.id = n.user_id AND n.id < 4"),
        both("SELECT n.id, o.id AS oid FROM notes n LEFT JOIN orders o ON o.note_id = n.id"),
        both("SELECT o.id, n.body FROM orders o LEFT OUTER JOIN notes n ON n.id = o.note_id"),
        both("SELECT n.id, o.total FROM notes n RIGHT JOIN orders o ON o.note_id = n.id"),
        both("SELECT n.id, u.name FROM notes n RIGHT JOIN users u ON u.id = n.user_id"),
        both("SELECT n.id, o.id AS oid FROM notes n FULL JOIN orders o ON o.note_id = n.id"),
        both("SELECT count(*) FROM notes n FULL JOIN users u ON u.id = n.user_id"),
        both("SELECT n.id, o.status FROM notes n FULL OUTER JOIN orders o USING (id)"),
        both("SELECT n.id FROM notes n JOIN orders o USING (id)"),
        both("SELECT n.id FROM notes n LEFT JOIN orders o USING (id) WHERE o.id IS NULL"),
        both(
            "SELECT n.id, u.name, o.total FROM notes n JOIN orders o ON o.note_id = n.id LEFT JOIN users u ON u.id = o.user_id WHERE o.status = 'open'",
        ),
        both(
            "SELECT a.id, b.id AS bid FROM notes a JOIN notes b ON a.user_id = b.user_id AND a.id < b.id",
        ),
        both(
            "SELECT u.name, n.id FROM users u LEFT JOIN (notes n JOIN orders o ON o.note_id = n.id) ON n.user_id = u.id",
        ),
        both("SELECT k.label, n.body FROM kinds k LEFT JOIN notes n ON n.id = k.id"),
        both(
            "SELECT k.label, count(n.id) FROM kinds k LEFT JOIN notes n ON n.id = k.id GROUP BY k.label",
        ),
        both("SELECT n.id, k.label FROM notes n RIGHT JOIN kinds k ON k.id = n.id"),
        both(
            "SELECT n.id, o.id AS oid, u.id AS uid FROM notes n LEFT JOIN orders o ON o.note_id = n.id RIGHT JOIN users u ON u.id = n.user_id",
        ),
        // -- subqueries
        both(
            "SELECT id FROM notes WHERE user_id IN (SELECT id FROM users WHERE name LIKE '%user1')",
        ),
        both(
            "SELECT id FROM notes n WHERE EXISTS (SELECT 1 FROM orders o WHERE o.note_id = n.id AND o.total > 200)",
        ),
        both(
            "SELECT id FROM notes n WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.note_id = n.id)",
        ),
        both(
            "SELECT n.id, (SELECT count(*) FROM orders o WHERE o.note_id = n.id) AS c FROM notes n",
        ),
        both(
            "SELECT (SELECT name FROM users u WHERE u.id = n.user_id) AS name FROM notes n WHERE n.id < 3",
        ),
        both("SELECT s.id FROM (SELECT id, score FROM notes WHERE score > 20) s"),
        both(
            "SELECT user_id, count(*) FROM notes GROUP BY user_id HAVING count(*) >= (SELECT count(*) FROM users) / 4",
        ),
        pg(
            "SELECT n.id, x.total FROM notes n, LATERAL (SELECT max(total) AS total FROM orders o WHERE o.note_id = n.id) x",
        ),
        pg("SELECT n.id FROM notes n WHERE n.user_id = ANY (SELECT id FROM users WHERE id > 1)"),
        both("SELECT id FROM kinds WHERE id IN (SELECT id FROM notes WHERE pinned)"),
        both("SELECT n.id FROM notes n WHERE n.score > (SELECT avg(score) FROM notes)"),
        both("SELECT coalesce((SELECT max(id) FROM orders), 0) AS m"),
        both("SELECT id FROM (SELECT id FROM notes UNION SELECT id FROM users) s WHERE id > 2"),
        // -- set operations and CTEs
        both("SELECT id FROM notes UNION SELECT id FROM orders"),
        both("SELECT id FROM notes INTERSECT SELECT note_id FROM orders"),
        both("SELECT id FROM notes EXCEPT SELECT note_id FROM orders"),
        both("SELECT id, 'n' AS k FROM notes UNION ALL SELECT id, 'k' FROM kinds"),
        both(
            "WITH top AS (SELECT id, score FROM notes WHERE score >= 30) SELECT t.id FROM top t JOIN orders o ON o.note_id = t.id",
        ),
        pg("WITH notes AS (SELECT id, body FROM notes WHERE pinned) SELECT id, body FROM notes"),
        lite("WITH notes AS (SELECT id, name FROM users WHERE id < 3) SELECT id, name FROM notes"),
        both(
            "WITH a AS (SELECT id FROM users), b AS (SELECT a.id FROM a JOIN notes n ON n.user_id = a.id) SELECT count(*) FROM b",
        ),
        both(
            "WITH RECURSIVE r(n) AS (SELECT min(id) FROM notes UNION ALL SELECT n + 1 FROM r WHERE n < (SELECT max(id) FROM notes)) SELECT n FROM r",
        ),
        both(
            "WITH RECURSIVE chain(id, user_id) AS (SELECT id, user_id FROM notes WHERE id = 1 UNION SELECT n.id, n.user_id FROM notes n JOIN chain c ON n.user_id = c.user_id) SELECT id FROM chain",
        ),
        // -- inserts
        both(
            "INSERT INTO notes (id, user_id, body, pinned, score) VALUES (100, 1, 'new', TRUE, 5), (101, NULL, 'new2', FALSE, 6)",
        ),
        both_p(
            "INSERT INTO notes (id, body, pinned) VALUES ($1, 'p', FALSE) RETURNING id, body",
            &[200],
        ),
        both("INSERT INTO users (id, name) SELECT id + 10, body FROM notes WHERE pinned"),
        both(
            "INSERT INTO users (id, name) SELECT id + 20, name FROM users UNION SELECT id + 40, label FROM kinds",
        ),
        both(
            "INSERT INTO orders (id, note_id, user_id, total, status) SELECT id + 50, id, user_id, score, 'new' FROM notes n WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = n.user_id)",
        ),
        both(
            "INSERT INTO notes (id, body, pinned) VALUES (1, 'dup', FALSE) ON CONFLICT (id) DO NOTHING",
        ),
        both(
            "INSERT INTO notes (id, body, pinned) VALUES (1, 'upd', FALSE), (300, 'x', TRUE) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        ),
        both(
            "INSERT INTO notes (id, body, pinned) VALUES (2, 'upd', FALSE), (3, 'upd', FALSE) ON CONFLICT (id) DO UPDATE SET body = excluded.body WHERE notes.score > 25",
        ),
        both("INSERT INTO kinds (id, label) SELECT id + 10, body FROM notes WHERE id < 3"),
        // -- updates
        both_p("UPDATE notes SET body = 'changed' WHERE id = $1", &[2]),
        both("UPDATE notes SET score = score + 1 WHERE pinned OR id = 1"),
        both("UPDATE notes SET body = body || '!'"),
        pg(
            "UPDATE notes AS n SET body = u.name FROM users u WHERE u.id = n.user_id RETURNING n.id, n.body",
        ),
        lite(
            "UPDATE notes AS n SET body = u.name FROM users u WHERE u.id = n.user_id RETURNING id, body",
        ),
        both("UPDATE orders SET status = 'x' WHERE note_id IN (SELECT id FROM notes WHERE pinned)"),
        both("UPDATE notes SET score = (SELECT count(*) FROM orders o WHERE o.note_id = notes.id)"),
        both("UPDATE kinds SET label = label || CAST((SELECT count(*) FROM notes) AS TEXT)"),
        both_p(
            "UPDATE users SET name = 'u' WHERE id = $1 RETURNING id, name",
            &[2],
        ),
        // -- deletes
        both("DELETE FROM notes WHERE id = 3"),
        both("DELETE FROM orders WHERE total > 200 OR status = 'closed' RETURNING id"),
        pg("DELETE FROM notes USING orders o WHERE o.note_id = notes.id AND o.status = 'open'"),
        both(
            "DELETE FROM notes WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.note_id = notes.id)",
        ),
        both(
            "DELETE FROM users WHERE id NOT IN (SELECT user_id FROM notes WHERE user_id IS NOT NULL)",
        ),
        both("DELETE FROM notes"),
        // -- data-modifying CTEs (Postgres)
        pg(
            "WITH moved AS (DELETE FROM orders WHERE status = 'closed' RETURNING id, note_id) INSERT INTO users (id, name) SELECT id + 100, 'moved' FROM moved",
        ),
        pg(
            "WITH up AS (UPDATE notes SET pinned = TRUE WHERE id < 3 RETURNING id) SELECT count(*) FROM up",
        ),
        pg(
            "WITH ins AS (INSERT INTO users (id, name) VALUES (77, 'x') RETURNING id) SELECT id FROM ins",
        ),
    ]
}

/// Sort rows so results compare as multisets.
pub fn sorted(mut rows: Vec<String>) -> Vec<String> {
    rows.sort();
    rows
}

/// Tables whose final state is compared after each statement.
pub const ALL_TABLES: [&str; 4] = ["notes", "orders", "users", "kinds"];
