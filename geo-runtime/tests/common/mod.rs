//! Shared by the runtime's integration tests: a model, databases for a primary and a secondary
//! on each dialect, and small helpers.
#![allow(dead_code)]

pub mod cluster;
pub mod hooked;

use geo_runtime::db::{self, Dialect};
use geo_runtime::testing::{self, TestDatabase};
use geo_runtime::{Database, NodeRole, ReplicatorSet};
use sqlx::AssertSqlSafe;

/// The model of these tests.
#[geo_runtime::replicable(strategy = "blob", table = "widgets", enabled_by_default = true)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Widget {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
}

/// A second model, replication off by default.
#[geo_runtime::replicable(strategy = "blob", table = "gizmos")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gizmo {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
}

pub fn set() -> ReplicatorSet {
    ReplicatorSet::linked().expect("the test models are linked")
}

pub async fn exec(db: &Database, sql: &str) {
    match db.dialect() {
        Dialect::Postgres => sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(db.as_postgres().expect("pg"))
            .await
            .map(|_| ())
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
        Dialect::Sqlite => sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(db.as_sqlite_writer().expect("sqlite"))
            .await
            .map(|_| ())
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
    }
}

pub async fn scalar_i64(db: &Database, sql: &str) -> i64 {
    match db.dialect() {
        Dialect::Postgres => sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
            .fetch_one(db.as_postgres().expect("pg"))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
        Dialect::Sqlite => sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
            .fetch_one(db.as_sqlite_readers().expect("sqlite"))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}")),
    }
}

/// A primary with the application's tables and the runtime's schema.
pub async fn primary(db: &TestDatabase) {
    exec(db, "CREATE TABLE widgets (id BIGINT PRIMARY KEY, file TEXT NOT NULL); CREATE TABLE gizmos (id BIGINT PRIMARY KEY, file TEXT NOT NULL)").await;
    db::migrate(db, NodeRole::Primary, &set())
        .await
        .expect("primary migrations");
}

/// A secondary's tracking database.
pub async fn secondary(db: &TestDatabase) {
    db::migrate(db, NodeRole::Secondary, &set())
        .await
        .expect("secondary migrations");
}

/// Secondary tracking databases: SQLite, and PostgreSQL when configured.
pub async fn secondaries() -> Vec<TestDatabase> {
    let dbs = testing::all().await;
    for db in &dbs {
        secondary(db).await;
    }
    dbs
}

/// Empty (primary, secondary) databases of the same dialect: SQLite, and PostgreSQL when
/// configured.
pub async fn empty_pairs() -> Vec<(TestDatabase, TestDatabase)> {
    let mut out = vec![(testing::sqlite().await, testing::sqlite().await)];
    if let Some(p) = testing::postgres().await {
        let s = testing::postgres().await.expect("a second schema");
        out.push((p, s));
    }
    out
}

/// Waits until `check` passes, polling every 50 ms; panics with its last reason after
/// `deadline`.
pub async fn eventually<F, Fut>(what: &str, deadline: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = std::time::Instant::now();
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if start.elapsed() > deadline => {
                panic!("{what}: still {e} after {deadline:?}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// (primary, secondary) pairs of the same dialect, with the tables and migrations.
pub async fn pairs() -> Vec<(TestDatabase, TestDatabase)> {
    let out = empty_pairs().await;
    for (p, s) in &out {
        primary(p).await;
        secondary(s).await;
    }
    out
}

/// Records widget `id`'s row (tracked already, or tracked now) as synced under `key`, as a sync
/// would: claimed, then marked by that attempt.
pub async fn synced_under(db: &Database, id: i64, key: &str) {
    use geo_runtime::Replicator;
    let registry = geo_runtime::registry::Registry::new(db, WidgetReplicator::DESCRIPTOR);
    let now = geo_runtime::db::dialect::now();
    registry.insert_pending(&[id], now).await.expect("pending");
    let row = registry
        .claim(usize::MAX >> 1, now)
        .await
        .expect("claim")
        .into_iter()
        .find(|r| r.model_record_id == id)
        .unwrap_or_else(|| panic!("row {id} is due"));
    let marked = registry
        .mark_synced_copies(&[geo_runtime::registry::SyncedCopy {
            row,
            object_key: Some(key.to_owned()),
            sha256: None,
            checked_against_primary: false,
        }])
        .await
        .expect("synced");
    assert_eq!(marked, [row.id], "row {id} synced");
}
