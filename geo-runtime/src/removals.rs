//! The owner of `geo_blob_removals`: the copies a secondary is to remove, scheduled when their
//! record goes (an event, the consistency pass) or their key changes (a sync), taken by the
//! removal worker, counted by the status and consulted by `geo check`. Every statement on the
//! table is here, except the registry's own scheduling of a superseded copy, which is one
//! statement with the sync's mark (`registry::sql`).

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use crate::db::dialect::{IdList, TextList, Ts, in_id_list, param};
use crate::db::{Conn, Database, on_conn, on_pool};
use crate::error::DbError;

/// A copy to remove: its entry, the record it belonged to, and its key when one is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Removal {
    pub(crate) id: i64,
    pub(crate) replicable: String,
    pub(crate) model_id: i64,
    pub(crate) key: Option<String>,
}

/// The statement that schedules removals from a query: `select` returns the replicable's name,
/// the model id, the object key and the time, in that order (the registry schedules the copies
/// a newer sync supersedes in the statement that records it).
pub(crate) fn schedule_from(select: &str) -> String {
    format!(
        "INSERT INTO \"geo_blob_removals\" (\"replicable_name\", \"model_record_id\", \"object_key\", \"created_at\") {select}"
    )
}

/// Schedules the removal of `removals` (model id, object key) of `replicable`, in the caller's
/// transaction.
pub(crate) async fn schedule(
    conn: Conn<'_>,
    replicable: &str,
    removals: &[(i64, Option<String>)],
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    if removals.is_empty() {
        return Ok(());
    }
    let d = conn.dialect();
    let sql = format!(
        "INSERT INTO \"geo_blob_removals\" (\"replicable_name\", \"model_record_id\", \"object_key\", \"created_at\") VALUES ({}, {}, {}, {})",
        param(d, 1),
        param(d, 2),
        param(d, 3),
        param(d, 4)
    );
    on_conn!(conn, c => {
        for (id, key) in removals {
            sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(replicable)
                .bind(*id)
                .bind(key.as_deref())
                .bind(Ts(now))
                .execute(&mut *c)
                .await?;
        }
    });
    Ok(())
}

/// Up to `limit` removals, oldest first.
pub(crate) async fn due(tracking: &Database, limit: i64) -> Result<Vec<Removal>, DbError> {
    let sql = format!(
        "SELECT \"id\", \"replicable_name\", \"model_record_id\", \"object_key\" FROM \"geo_blob_removals\" ORDER BY \"id\" LIMIT {}",
        param(tracking.dialect(), 1)
    );
    let rows: Vec<(i64, String, i64, Option<String>)> = on_pool!(tracking, read, pool => sqlx::query_as(AssertSqlSafe(sql)).bind(limit).fetch_all(pool).await?);
    Ok(rows
        .into_iter()
        .map(|(id, replicable, model_id, key)| Removal {
            id,
            replicable,
            model_id,
            key,
        })
        .collect())
}

/// Forgets the removals `ids` (done, or nothing to do), in the caller's transaction.
pub(crate) async fn forget(conn: Conn<'_>, ids: Vec<i64>) -> Result<(), DbError> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "DELETE FROM \"geo_blob_removals\" WHERE {}",
        in_id_list(conn.dialect(), "\"id\"", 1)
    );
    on_conn!(conn, c => sqlx::query(AssertSqlSafe(sql)).bind(IdList(ids)).execute(&mut *c).await?.rows_affected());
    Ok(())
}

/// How many removals wait.
pub(crate) async fn count(tracking: &Database) -> Result<i64, DbError> {
    Ok(
        on_pool!(tracking, read, pool => sqlx::query_scalar("SELECT COUNT(*) FROM \"geo_blob_removals\"").fetch_one(pool).await?),
    )
}

/// Every key waiting for removal.
pub(crate) async fn waiting_keys(tracking: &Database) -> Result<Vec<String>, DbError> {
    Ok(on_pool!(tracking, read, pool => sqlx::query_scalar(
        "SELECT \"object_key\" FROM \"geo_blob_removals\" WHERE \"object_key\" IS NOT NULL",
    )
    .fetch_all(pool)
    .await?))
}

/// The keys among `keys` waiting for removal, in the caller's transaction.
pub(crate) async fn waiting_among(conn: Conn<'_>, keys: TextList) -> Result<Vec<String>, DbError> {
    let sql = format!(
        "SELECT \"object_key\" FROM \"geo_blob_removals\" WHERE {}",
        in_id_list(conn.dialect(), "\"object_key\"", 1)
    );
    Ok(
        on_conn!(conn, c => sqlx::query_scalar(AssertSqlSafe(sql)).bind(keys).fetch_all(&mut *c).await?),
    )
}
