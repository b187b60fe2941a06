//! Rewrite cost: sqlparser's own parse + print (the baseline), the first
//! (uncached) rewrite of the same statement, and a cache hit.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use tenancy_interceptor::{Dialect, Interceptor, TenantTables};

/// A 3-table join with a subquery.
const SQL: &str = "SELECT n.id, n.body, o.total, u.name FROM notes n \
    JOIN orders o ON o.note_id = n.id \
    LEFT JOIN users u ON u.id = o.user_id \
    WHERE n.created_at > $1 AND (n.pinned OR o.total > $2) \
    AND n.id IN (SELECT note_id FROM orders WHERE status = 'open') \
    ORDER BY n.id LIMIT 50";

fn benches(c: &mut Criterion) {
    let interceptor = Interceptor::new(TenantTables::new(["notes", "orders", "users"]));
    let mut group = c.benchmark_group("rewrite_3_table_join_with_subquery");
    group.bench_function("baseline_parse_print", |b| {
        b.iter(|| {
            let stmts = Parser::parse_sql(&PostgreSqlDialect {}, black_box(SQL));
            black_box(stmts.map(|s| s[0].to_string()))
        })
    });
    group.bench_function("first_rewrite_uncached", |b| {
        b.iter(|| black_box(interceptor.rewrite_uncached(black_box(SQL), Dialect::Postgres)))
    });
    let _ = interceptor.rewrite(SQL, Dialect::Postgres);
    group.bench_function("cache_hit", |b| {
        b.iter(|| black_box(interceptor.rewrite(black_box(SQL), Dialect::Postgres)))
    });
    group.finish();
}

criterion_group!(rewrite, benches);
criterion_main!(rewrite);
