//! The consistency pass's position per replicable (`geo_backfill_cursors`): the last model id
//! its ranges reached, so a pass resumes where it stopped.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use crate::db::dialect::{Ts, param};
use crate::db::{Conn, Database, on_conn, on_pool};
use crate::error::DbError;

/// The stored position of `replicable`'s pass (0: at the start).
pub(crate) async fn position(tracking: &Database, replicable: &str) -> Result<i64, DbError> {
    let sql = format!(
        "SELECT \"last_model_id\" FROM \"geo_backfill_cursors\" WHERE \"replicable_name\" = {}",
        param(tracking.dialect(), 1)
    );
    let p: Option<i64> = on_pool!(tracking, read, pool => sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(replicable)
        .fetch_optional(pool)
        .await?);
    Ok(p.unwrap_or(0))
}

/// Inside the caller's transaction (the one that applied the range): the new position.
pub(crate) async fn store_position(
    conn: Conn<'_>,
    replicable: &str,
    last: i64,
    at: DateTime<Utc>,
) -> Result<(), DbError> {
    let d = conn.dialect();
    let sql = format!(
        "INSERT INTO \"geo_backfill_cursors\" (\"replicable_name\", \"last_model_id\", \"updated_at\") VALUES ({}, {}, {}) \
         ON CONFLICT (\"replicable_name\") DO UPDATE SET \"last_model_id\" = excluded.\"last_model_id\", \"updated_at\" = excluded.\"updated_at\"",
        param(d, 1),
        param(d, 2),
        param(d, 3)
    );
    on_conn!(conn, c => sqlx::query(AssertSqlSafe(sql))
        .bind(replicable)
        .bind(last)
        .bind(Ts(at))
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}
