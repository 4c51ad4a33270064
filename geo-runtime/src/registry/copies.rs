//! A secondary's verification of its own copies, on the registry table: claims of synced copies
//! due for a look, and their outcomes, each only for the attempt that claimed it. The
//! statements are `SecondaryVerificationSql`'s; the verification worker decides, this module
//! writes.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Row};

use super::sql::SecondaryVerificationSql;
use crate::db::dialect::Ts;
use crate::db::{Database, on_pool};
use crate::descriptor::ReplicatorDescriptor;
use crate::error::DbError;
use crate::retry::truncate_failure;

/// A copy claimed for verification: registry id, object key, expected checksum, failures.
#[derive(Debug)]
pub(crate) struct ClaimedCopy {
    /// The registry row.
    pub(crate) id: i64,
    /// The model record it copies (what an operator names).
    pub(crate) model_id: i64,
    /// Where the copy is.
    pub(crate) key: Option<String>,
    /// The primary's checksum (`None`: verification disabled for it).
    pub(crate) expected: Option<Vec<u8>>,
    /// Failures so far.
    pub(crate) retries: i32,
}

/// A copy that failed its verification: why, whether its checksum differs (and what it is),
/// when, and when to sync it again.
#[derive(Debug)]
pub(crate) struct CopyFailure {
    pub(crate) reason: String,
    pub(crate) mismatch: bool,
    pub(crate) got: Option<Vec<u8>>,
    pub(crate) at: DateTime<Utc>,
    pub(crate) retry_at: DateTime<Utc>,
}

/// One replicable's copies in a tracking database.
#[derive(Debug, Clone)]
pub(crate) struct Copies {
    db: Database,
    sql: SecondaryVerificationSql,
}

impl Copies {
    /// The copies of `d` in `db`.
    pub(crate) fn new(db: &Database, d: &ReplicatorDescriptor) -> Self {
        Copies {
            db: db.clone(),
            sql: SecondaryVerificationSql::new(d, db.dialect()),
        }
    }

    /// Claims up to `limit` synced copies never verified, or verified before `verified_before`.
    pub(crate) async fn claim(
        &self,
        limit: usize,
        started: DateTime<Utc>,
        verified_before: DateTime<Utc>,
    ) -> Result<Vec<ClaimedCopy>, DbError> {
        on_pool!(self.db, write, pool => {
            let rows = sqlx::query(AssertSqlSafe(self.sql.claim.as_str()))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .bind(Ts(started))
                .bind(Ts(verified_before))
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| Ok(ClaimedCopy {
                    id: r.try_get("id")?,
                    model_id: r.try_get("model_record_id")?,
                    key: r.try_get("object_key")?,
                    expected: r.try_get("verification_checksum")?,
                    retries: r.try_get("verification_retry_count")?,
                }))
                .collect()
        })
    }

    /// The claimed copy `id` matched; false when the attempt is no longer the running one.
    pub(crate) async fn succeeded(
        &self,
        id: i64,
        started: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let n = on_pool!(self.db, write, pool => sqlx::query(AssertSqlSafe(self.sql.mark_succeeded.as_str())).bind(id).bind(Ts(started)).bind(Ts(now)).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// The claimed copy `id` has nothing to compare with (no primary checksum).
    pub(crate) async fn disabled(&self, id: i64, started: DateTime<Utc>) -> Result<bool, DbError> {
        let n = on_pool!(self.db, write, pool => sqlx::query(AssertSqlSafe(self.sql.mark_disabled.as_str())).bind(id).bind(Ts(started)).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// The claimed copy `id` failed: recorded, and the row put back to the sync.
    pub(crate) async fn failed(
        &self,
        id: i64,
        started: DateTime<Utc>,
        f: CopyFailure,
    ) -> Result<bool, DbError> {
        let failure = truncate_failure(&f.reason);
        let sync_failure = truncate_failure(&format!("Verification failed with: {}", f.reason));
        let n = on_pool!(self.db, write, pool => sqlx::query(AssertSqlSafe(self.sql.mark_failed.as_str()))
            .bind(id)
            .bind(Ts(started))
            .bind(failure)
            .bind(f.mismatch)
            .bind(f.got)
            .bind(Ts(f.at))
            .bind(Ts(f.retry_at))
            .bind(sync_failure)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Verifications started before `before` and never finished go back to pending.
    pub(crate) async fn release_stuck(&self, before: DateTime<Utc>) -> Result<u64, DbError> {
        Ok(
            on_pool!(self.db, write, pool => sqlx::query(AssertSqlSafe(self.sql.release_stuck.as_str())).bind(Ts(before)).execute(pool).await?.rows_affected()),
        )
    }

    /// Claims up to `limit` copies disabled for want of a primary checksum whose look is due
    /// at `at` (the next one at `next`): registry id, model id, local checksum.
    pub(crate) async fn claim_disabled(
        &self,
        limit: i64,
        at: DateTime<Utc>,
        next: DateTime<Utc>,
    ) -> Result<Vec<(i64, i64, Option<Vec<u8>>)>, DbError> {
        on_pool!(self.db, write, pool => {
            let rows = sqlx::query(AssertSqlSafe(self.sql.claim_disabled.as_str()))
                .bind(limit)
                .bind(Ts(at))
                .bind(Ts(next))
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?, r.try_get::<Option<Vec<u8>>, _>(2)?)))
                .collect()
        })
    }

    /// A disabled copy the primary's checksum now confirms.
    pub(crate) async fn disabled_succeeded(
        &self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        let n = on_pool!(self.db, write, pool => sqlx::query(AssertSqlSafe(self.sql.disabled_succeeded.as_str())).bind(id).bind(Ts(now)).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// A disabled copy that differs from the primary's now-known checksum (`primary`).
    pub(crate) async fn disabled_mismatch(
        &self,
        id: i64,
        f: CopyFailure,
        primary: &[u8],
    ) -> Result<bool, DbError> {
        let n = on_pool!(self.db, write, pool => sqlx::query(AssertSqlSafe(self.sql.disabled_mismatch.as_str()))
            .bind(id)
            .bind(truncate_failure(&f.reason))
            .bind(f.got)
            .bind(Ts(f.at))
            .bind(Ts(f.retry_at))
            .bind(truncate_failure(&format!("Verification failed with: {}", f.reason)))
            .bind(primary)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n == 1)
    }
}
