//! The tenant-scoped table service (Q4) on real Postgres and SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, SqliteConnection};
use tenancy_interceptor::service::{Object, ScopedTable, ServiceError};
use tenancy_interceptor::{Interceptor, TenantTables};

const SCHEMA: &str = "CREATE TABLE notes (tenant_id TEXT NOT NULL, id BIGINT NOT NULL, body TEXT, score BIGINT, PRIMARY KEY (tenant_id, id))";

fn obj(v: Value) -> Object {
    v.as_object().unwrap().clone()
}

fn table() -> ScopedTable {
    let interceptor = Interceptor::new(TenantTables::new(["notes"]));
    ScopedTable::new(interceptor, "notes", "id", ["body", "score"]).unwrap()
}

#[test]
fn construction_validates() {
    let i = Interceptor::new(TenantTables::new(["notes"]));
    assert!(matches!(
        ScopedTable::new(i.clone(), "notes; drop", "id", ["body"]),
        Err(ServiceError::InvalidIdentifier(_))
    ));
    assert!(matches!(
        ScopedTable::new(i.clone(), "kinds", "id", ["body"]),
        Err(ServiceError::NotTenantTable(_))
    ));
    assert!(matches!(
        ScopedTable::new(i, "notes", "id", ["tenant_id"]),
        Err(ServiceError::UnknownColumn(_))
    ));
}

#[tokio::test]
async fn postgres_crud_is_scoped() {
    let name = format!("tenancy_svc_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap_or_else(|e| panic!("this test needs the real Postgres at 127.0.0.1:5432: {e}"));
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    let result = async {
        let mut conn = PgConnection::connect(&format!("postgres://postgres@127.0.0.1:5432/{name}"))
            .await
            .unwrap();
        conn.execute(SCHEMA).await.unwrap();
        let t = table();
        for tenant in ["a", "b"] {
            for (id, body) in [(1, "hello"), (2, "World 50%")] {
                t.create(
                    &mut conn,
                    tenant,
                    &obj(json!({"id": id, "body": format!("{tenant} {body}"), "score": id})),
                )
                .await
                .unwrap();
            }
        }
        let rows = t.list(&mut conn, "a", &Object::new(), 10, 0).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["body"], json!("a hello"));
        assert_eq!(
            t.count(&mut conn, "a", &obj(json!({"score": 2})))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            t.get(&mut conn, "b", &json!(1)).await.unwrap().unwrap()["body"],
            json!("b hello")
        );
        let found = t
            .search(&mut conn, "a", "50%", &["body"], 10)
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        let up = t
            .update(&mut conn, "a", &json!(1), &obj(json!({"body": "changed"})))
            .await
            .unwrap();
        assert_eq!(up.unwrap()["body"], json!("changed"));
        assert_eq!(
            t.get(&mut conn, "b", &json!(1)).await.unwrap().unwrap()["body"],
            json!("b hello")
        );
        assert!(t.delete(&mut conn, "a", &json!(2)).await.unwrap());
        assert!(!t.delete(&mut conn, "a", &json!(2)).await.unwrap());
        assert_eq!(t.count(&mut conn, "b", &Object::new()).await.unwrap(), 2);
        assert!(
            t.update(&mut conn, "c", &json!(1), &obj(json!({"body": "x"})))
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            t.create(&mut conn, "a", &obj(json!({"id": 9, "tenant_id": "b"})))
                .await,
            Err(ServiceError::UnknownColumn(_))
        ));
        conn.close().await.unwrap();
    };
    result.await;
    admin
        .execute(AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
        .await
        .unwrap();
}

#[tokio::test]
async fn sqlite_crud_is_scoped() {
    let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
    conn.execute(SCHEMA).await.unwrap();
    let t = table();
    for tenant in ["a", "b"] {
        for id in 1..=3 {
            t.create(
                &mut conn,
                tenant,
                &obj(json!({"id": id, "body": format!("{tenant} Note {id}"), "score": id})),
            )
            .await
            .unwrap();
        }
    }
    assert_eq!(
        t.list(&mut conn, "a", &Object::new(), 2, 1)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(t.count(&mut conn, "b", &Object::new()).await.unwrap(), 3);
    assert_eq!(
        t.search(&mut conn, "a", "note", &["body"], 10)
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(t.delete(&mut conn, "a", &json!(1)).await.unwrap());
    assert_eq!(t.count(&mut conn, "a", &Object::new()).await.unwrap(), 2);
    assert_eq!(t.count(&mut conn, "b", &Object::new()).await.unwrap(), 3);
    assert_eq!(
        t.get(&mut conn, "b", &json!(1)).await.unwrap().unwrap()["body"],
        json!("b Note 1")
    );
}
