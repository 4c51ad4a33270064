//! What the benches share: the model they replicate, the scale knob and raw SQL. Each bench uses
//! a part of it.
#![allow(dead_code)]

use geo_runtime::{Database, Dialect};
use sqlx::AssertSqlSafe;

/// The replicable every bench moves and verifies.
#[geo_runtime::replicable(strategy = "blob", table = "widgets", enabled_by_default = true)]
#[derive(Debug, Clone)]
pub struct Widget {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
}

/// `n` scaled by `GEO_BENCH_SCALE` (at least 1,000).
pub fn scale(n: i64) -> i64 {
    let f: f64 = std::env::var("GEO_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64) * f).max(1000.0) as i64
}

/// A whole-number setting from the environment, or `default`.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `sql` (several statements allowed) on the writer; panics with the statement on error.
pub async fn exec(db: &Database, sql: &str) {
    let r = match db.dialect() {
        Dialect::Postgres => sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(db.as_postgres().expect("pg"))
            .await
            .map(|_| ()),
        Dialect::Sqlite => sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(db.as_sqlite_writer().expect("sqlite"))
            .await
            .map(|_| ()),
    };
    r.unwrap_or_else(|e| panic!("{sql}: {e}"));
}
