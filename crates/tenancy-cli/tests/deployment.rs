//! Issue 26, finding 7: the store records the isolation strategy (and the
//! database servers) it was set up with; a process configured differently
//! refuses to run against it, naming both, before it writes anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Cli, PgTestDb, id_of};
use sqlx::Connection;

/// Runs `args` with `TENANCY__LIFECYCLE__ISOLATION_STRATEGY=strategy`
/// (or none) on `cli`'s store.
fn with_strategy(cli: &mut Cli, strategy: Option<&str>) {
    cli.env
        .retain(|(k, _)| k != "TENANCY__LIFECYCLE__ISOLATION_STRATEGY");
    if let Some(strategy) = strategy {
        cli.env.push((
            "TENANCY__LIFECYCLE__ISOLATION_STRATEGY".into(),
            strategy.into(),
        ));
    }
}

/// A store of the database strategy with one tenant and its archive; then
/// a process without the strategy set (row_level by default) is refused,
/// for a read, a create and the import of the issue, and the tenant is
/// still served by a process configured right.
fn refuses_the_other_strategy(cli: &mut Cli) -> String {
    with_strategy(cli, Some("database"));
    let acme = id_of(&cli.create("acme", "A"));
    cli.ok(&["tenants", "export", "acme", "--output", "acme.tar"]);
    with_strategy(cli, None);
    for args in [
        &["tenants", "list"][..],
        &["tenants", "create", "--slug", "other", "--name", "O"],
        &["tenants", "import", "acme.tar", "--slug", "copy"],
    ] {
        let err = cli.fail(args);
        assert!(
            err.contains("isolation strategy `database`")
                && err.contains("configured with `row_level`"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("TENANCY__LIFECYCLE__ISOLATION_STRATEGY"),
            "{err}"
        );
    }
    with_strategy(cli, Some("database"));
    let list = cli.json(&["tenants", "list", "--json"]);
    let slugs: Vec<&str> = list["items"]
        .as_array()
        .or(list.as_array())
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(
        slugs,
        ["acme"],
        "nothing was written by the refused processes"
    );
    acme
}

#[test]
fn a_sqlite_store_refuses_a_process_of_another_strategy() {
    let mut cli = Cli::sqlite();
    refuses_the_other_strategy(&mut cli);
    // An empty store follows whoever opens it next.
    let mut empty = Cli::sqlite();
    with_strategy(&mut empty, Some("database"));
    empty.ok(&["tenants", "list"]);
    with_strategy(&mut empty, Some("row_level"));
    empty.ok(&["tenants", "list"]);
    empty.ok(&["tenants", "create", "--slug", "rows", "--name", "R"]);
    with_strategy(&mut empty, Some("database"));
    let err = empty.fail(&["tenants", "list"]);
    assert!(
        err.contains("`row_level`") && err.contains("`database`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_postgres_store_refuses_a_process_of_another_strategy_or_without_its_servers() {
    let db = PgTestDb::new().await;
    let mut cli = Cli::with_url(&db.url);
    let acme = refuses_the_other_strategy(&mut cli);
    db.track_tenant(&acme);
    // The refused import did not create the row-level table either.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let notes: bool = sqlx::query_scalar("SELECT to_regclass('public.notes') IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!notes, "no row-level table in the control database");

    // acme is placed on `default`: a process that configures only
    // another server is refused, naming both.
    std::fs::write(
        cli.path("tenancy.yaml"),
        format!(
            "tenancy:\n  lifecycle:\n    isolation_strategy: database\n    database_servers:\n      - {{ name: elsewhere, url: \"{}\" }}\n",
            db.url
        ),
    )
    .unwrap();
    with_strategy(&mut cli, None);
    let err = cli.fail(&["tenants", "list"]);
    assert!(
        err.contains("default") && err.contains("lifecycle.database_servers: elsewhere"),
        "{err}"
    );
}
