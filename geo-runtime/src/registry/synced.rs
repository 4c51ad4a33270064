//! The synced copies the consistency pass compares with what the primary holds now, and the
//! resync of those that changed, on the registry table.

use sqlx::AssertSqlSafe;

use super::sql::RegistrySql;
use crate::db::{Conn, Database, on_conn, on_pool};
use crate::error::DbError;

/// A synced copy as the registry records it.
#[derive(Debug, Clone)]
pub(crate) struct RecordedCopy {
    pub(crate) model_id: i64,
    pub(crate) key: Option<String>,
    pub(crate) sha256: Option<[u8; 32]>,
    pub(crate) attempt: i64,
}

/// The synced copies of `(after, hi]`, ascending.
pub(crate) async fn synced_copies(
    tracking: &Database,
    sql: &RegistrySql,
    after: i64,
    hi: i64,
) -> Result<Vec<RecordedCopy>, DbError> {
    let q = AssertSqlSafe(sql.synced_copies_between.as_str());
    type CopyRow = (i64, Option<String>, Option<Vec<u8>>, i64);
    let rows: Vec<CopyRow> = on_pool!(tracking, read, pool => sqlx::query_as(q)
        .bind(after)
        .bind(hi)
        .fetch_all(pool)
        .await?);
    Ok(rows
        .into_iter()
        .map(|(model_id, key, sum, attempt)| RecordedCopy {
            model_id,
            key,
            sha256: sum.and_then(|s| <[u8; 32]>::try_from(s.as_slice()).ok()),
            attempt,
        })
        .collect())
}

/// Puts the `changed` copies back to pending, each only while it is still the copy that was
/// compared (synced by the same attempt): one synced again meanwhile is left alone.
pub(crate) async fn resync_changed(
    mut conn: Conn<'_>,
    sql: &RegistrySql,
    changed: &[RecordedCopy],
) -> Result<u64, DbError> {
    let mut n = 0;
    for c in changed {
        let q = AssertSqlSafe(sql.resync_synced_attempt.as_str());
        n += on_conn!(conn.reborrow(), conn => sqlx::query(q)
            .bind(c.model_id)
            .bind(c.attempt)
            .execute(&mut *conn)
            .await?
            .rows_affected());
    }
    Ok(n)
}
