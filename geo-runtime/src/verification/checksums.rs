//! The primary's verification state, as its checksum worker reads and writes it: claims of
//! records due (pending, failed and due, or due for re-verification) and the outcomes, each only
//! for the attempt that claimed it. The statements are [`VerificationSql`]'s.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Row};

use super::VerificationState;
use super::sql::{VerificationSql, reset_to_pending};
use crate::db::dialect::{IdList, Ts, in_id_list, param};
use crate::db::{Conn, Database, on_conn, on_pool};
use crate::descriptor::ReplicatorDescriptor;
use crate::error::DbError;
use crate::retry::truncate_failure;

/// A record claimed for checksumming: id, failures so far, the checksum to compare with.
pub(crate) type ClaimedRecord = (i64, i32, Option<Vec<u8>>);

/// Rows per verification state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerificationCounts {
    /// Pending.
    pub pending: i64,
    /// Started.
    pub started: i64,
    /// Succeeded.
    pub succeeded: i64,
    /// Failed.
    pub failed: i64,
    /// Disabled.
    pub disabled: i64,
}

/// Which records a claim takes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Due {
    /// Never verified.
    Pending,
    /// Failed, and its retry is due.
    Retry,
    /// Verified before this time: due for re-verification.
    VerifiedBefore(DateTime<Utc>),
}

/// One replicable's verification state on the primary.
#[derive(Debug, Clone)]
pub(crate) struct Checksums {
    db: Database,
    sql: VerificationSql,
}

impl Checksums {
    /// The verification state of `d` in the primary's `db`.
    pub(crate) fn new(db: &Database, d: &ReplicatorDescriptor) -> Self {
        Checksums {
            db: db.clone(),
            sql: VerificationSql::new(d, db.dialect()),
        }
    }

    /// Claims up to `limit` records that are `due`, as of `at`.
    pub(crate) async fn claim(
        &self,
        due: Due,
        limit: usize,
        at: DateTime<Utc>,
    ) -> Result<Vec<ClaimedRecord>, DbError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (sql, before) = match due {
            Due::Pending => (&self.sql.claim_pending, None),
            Due::Retry => (&self.sql.claim_failed_due, None),
            Due::VerifiedBefore(t) => (&self.sql.claim_reverify, Some(t)),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        on_pool!(self.db, write, pool => {
            let mut q = sqlx::query(AssertSqlSafe(sql.as_str())).bind(limit).bind(Ts(at));
            if let Some(before) = before {
                q = q.bind(Ts(before));
            }
            let rows = q.fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i32, _>(1)?, r.try_get::<Option<Vec<u8>>, _>(2)?)))
                .collect()
        })
    }

    /// Creates the state rows of up to `limit` records that never published an event (a
    /// separate state table only); returns how many.
    pub(crate) async fn ensure_rows(&self, limit: i64) -> Result<u64, DbError> {
        let Some(sql) = &self.sql.ensure_rows else {
            return Ok(0);
        };
        Ok(
            on_pool!(self.db, write, pool => sqlx::query(AssertSqlSafe(sql.as_str())).bind(limit).execute(pool).await?.rows_affected()),
        )
    }

    /// Records record `id`'s checksum, in the caller's transaction; false when the attempt
    /// started at `started` is no longer the running one.
    pub(crate) async fn succeeded_in(
        &self,
        conn: Conn<'_>,
        id: i64,
        started: DateTime<Utc>,
        sum: &[u8; 32],
        now: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let n = on_conn!(conn, c => sqlx::query(AssertSqlSafe(self.sql.mark_succeeded.as_str()))
            .bind(id)
            .bind(Ts(started))
            .bind(sum.as_slice())
            .bind(Ts(now))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Records record `id`'s failure (`keep`: the checksum a re-verification compares with),
    /// in the caller's transaction; false when the attempt is no longer the running one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn failed_in(
        &self,
        conn: Conn<'_>,
        id: i64,
        started: DateTime<Utc>,
        reason: &str,
        at: DateTime<Utc>,
        retry_at: DateTime<Utc>,
        keep: Option<&[u8]>,
    ) -> Result<bool, DbError> {
        let n = on_conn!(conn, c => sqlx::query(AssertSqlSafe(self.sql.mark_failed.as_str()))
            .bind(id)
            .bind(Ts(started))
            .bind(truncate_failure(reason))
            .bind(Ts(at))
            .bind(Ts(retry_at))
            .bind(keep)
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Checksums started before `before` become failed with `message`, retried from
    /// `earliest_retry`; returns how many.
    pub(crate) async fn fail_timed_out(
        &self,
        before: DateTime<Utc>,
        earliest_retry: DateTime<Utc>,
        message: &str,
    ) -> Result<u64, DbError> {
        Ok(
            on_pool!(self.db, write, pool => sqlx::query(AssertSqlSafe(self.sql.fail_timed_out.as_str()))
            .bind(Ts(before))
            .bind(Ts(earliest_retry))
            .bind(message)
            .execute(pool)
            .await?
            .rows_affected()),
        )
    }

    /// Up to `limit` model ids above `after` with verification state, ascending, only those in
    /// `state` when given.
    pub(crate) async fn ids_after(
        &self,
        after: i64,
        limit: i64,
        state: Option<VerificationState>,
    ) -> Result<Vec<i64>, DbError> {
        let p = |n| param(self.db.dialect(), n);
        let filter = state.map_or_else(String::new, |s| {
            format!(" AND \"verification_state\" = {}", s.as_i16())
        });
        let (table, key) = (&self.sql.table, &self.sql.key);
        let sql = format!(
            "SELECT {key} FROM {table} WHERE {key} > {}{filter} ORDER BY {key} LIMIT {}",
            p(1),
            p(2)
        );
        Ok(
            on_pool!(self.db, read, pool => sqlx::query_scalar(AssertSqlSafe(sql)).bind(after).bind(limit).fetch_all(pool).await?),
        )
    }

    /// The records `ids` back to verification pending (those being checksummed now are left to
    /// finish); returns how many changed.
    pub(crate) async fn reverify(&self, ids: &[i64]) -> Result<u64, DbError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let (table, key) = (&self.sql.table, &self.sql.key);
        let sql = format!(
            "UPDATE {table} SET {} WHERE {} AND {}",
            reset_to_pending(),
            in_id_list(self.db.dialect(), key, 1),
            super::sql::not_running()
        );
        let ids = IdList(ids.to_vec());
        Ok(
            on_pool!(self.db, write, pool => sqlx::query(AssertSqlSafe(sql)).bind(ids).execute(pool).await?.rows_affected()),
        )
    }

    /// Rows per verification state.
    pub(crate) async fn counts(&self) -> Result<VerificationCounts, DbError> {
        let rows: Vec<(i16, i64)> = on_pool!(self.db, read, pool => sqlx::query_as(AssertSqlSafe(self.sql.count_by_state.as_str())).fetch_all(pool).await?);
        let mut counts = VerificationCounts::default();
        for (state, n) in rows {
            let count = match VerificationState::stored(state)? {
                VerificationState::Pending => &mut counts.pending,
                VerificationState::Started => &mut counts.started,
                VerificationState::Succeeded => &mut counts.succeeded,
                VerificationState::Failed => &mut counts.failed,
                VerificationState::Disabled => &mut counts.disabled,
            };
            *count = n;
        }
        Ok(counts)
    }
}
