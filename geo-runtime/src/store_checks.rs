//! The outcome of the latest check of a secondary's store for extra files
//! (`geo_store_checks`, one row): written by `geo check --store`, shown by the status.

use chrono::{DateTime, Utc};

use crate::db::dialect::{RowReader, Ts, now, param};
use crate::db::{Database, on_pool};
use crate::error::DbError;

/// The latest store check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreCheck {
    /// When it ran.
    pub(crate) checked_at: DateTime<Utc>,
    /// Files no registry row accounted for, left in the store.
    pub(crate) extra_files: i64,
}

/// Records a check that found `files` files, `extra` of them extra, as of now.
pub(crate) async fn record(tracking: &Database, files: u64, extra: u64) -> Result<(), DbError> {
    let d = tracking.dialect();
    let sql = format!(
        "INSERT INTO \"geo_store_checks\" (\"id\", \"checked_at\", \"files\", \"extra_files\") VALUES (1, {}, {}, {}) \
         ON CONFLICT (\"id\") DO UPDATE SET \"checked_at\" = excluded.\"checked_at\", \"files\" = excluded.\"files\", \"extra_files\" = excluded.\"extra_files\"",
        param(d, 1),
        param(d, 2),
        param(d, 3)
    );
    let files = i64::try_from(files).unwrap_or(i64::MAX);
    let extra = i64::try_from(extra).unwrap_or(i64::MAX);
    on_pool!(tracking, write, pool => sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(Ts(now()))
        .bind(files)
        .bind(extra)
        .execute(pool)
        .await?
        .rows_affected());
    Ok(())
}

/// The latest check, if one ran.
pub(crate) async fn latest(tracking: &Database) -> Result<Option<StoreCheck>, DbError> {
    on_pool!(tracking, read, pool => {
        let row = sqlx::query("SELECT \"checked_at\", \"extra_files\" FROM \"geo_store_checks\" WHERE \"id\" = 1").fetch_optional(pool).await?;
        row.map(|r| Ok(StoreCheck { checked_at: r.timestamp("checked_at")?, extra_files: r.i64("extra_files")? })).transpose()
    })
}
