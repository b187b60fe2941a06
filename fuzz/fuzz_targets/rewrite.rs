//! The query interceptor (SPEC Q2): for any input, the rewrite is refused,
//! or its output re-parses and every reference to a tenant table is under
//! the tenant predicate (checked by the independent verifier).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenancy_interceptor::{Dialect, Interceptor, TenantTables, verify};

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let tables = TenantTables::new(["notes", "orders", "Users"]);
    let interceptor = Interceptor::new(tables.clone());
    for dialect in [Dialect::Postgres, Dialect::Sqlite] {
        if let Ok(out) = interceptor.rewrite_uncached(sql, dialect) {
            if let Err(why) = verify::check(out.sql(), &tables, dialect) {
                panic!("unscoped output for {sql:?}: {} ({why})", out.sql());
            }
        }
    }
});
