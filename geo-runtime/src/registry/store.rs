//! Registry operations on the database: Geo's state machine as set-based statements.
//!
//! - [`Registry::claim`] leases due rows (pending first, then failed rows whose `retry_at` has
//!   come) with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so two workers never claim one row; each
//!   claim numbers the attempt.
//! - [`Registry::mark_synced`] / [`Registry::mark_failed`] finish only the attempt that is still
//!   running: a row reset to pending (or re-claimed) meanwhile is left alone, so a stale sync can
//!   never be marked synced.
//! - [`Registry::fail_timed_out`] is the sweeper for rows stuck in `started`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row;

use super::sql::RegistrySql;
use super::{RegistryRecord, SyncState};
use crate::db::dialect::{BlobList, IdList, RowReader, TextList, Ts};
use crate::db::{Conn, Database, on_conn, on_pool};
use crate::descriptor::ReplicatorDescriptor;
use crate::error::DbError;
use crate::retry::{self, truncate_failure};
use crate::verification::VerificationState;
use sqlx::AssertSqlSafe;

/// A row a worker has claimed: its identity and the attempt it must finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimedRow {
    /// Registry row id.
    pub id: i64,
    /// The model record to sync.
    pub model_record_id: i64,
    /// Consecutive failures before this attempt.
    pub retry_count: i32,
    /// This attempt's number.
    pub sync_attempt: i64,
}

impl ClaimedRow {
    /// The failure of this attempt.
    pub fn failed(&self, message: impl Into<String>, missing_on_primary: bool) -> SyncFailure {
        SyncFailure {
            row: *self,
            message: message.into(),
            missing_on_primary,
        }
    }

    /// The span of this attempt's work: every line about it carries the replicable, the id
    /// and the attempt.
    pub fn span(&self, d: &ReplicatorDescriptor) -> tracing::Span {
        tracing::info_span!(
            "sync",
            replicable = d.replicable_name,
            id = self.model_record_id,
            attempt = self.sync_attempt
        )
    }
}

/// A synced copy, to record with [`Registry::mark_synced_copies`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedCopy {
    /// The claimed row.
    pub row: ClaimedRow,
    /// Where the copy is stored.
    pub object_key: Option<String>,
    /// Its SHA-256, computed while it was written.
    pub sha256: Option<[u8; 32]>,
    /// Whether it was compared with the primary's checksum (and matched).
    pub checked_against_primary: bool,
}

/// A failed attempt, to record with [`Registry::mark_failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFailure {
    /// The claimed row.
    pub row: ClaimedRow,
    /// Why; cut to 255 characters.
    pub message: String,
    /// The primary said the object does not exist (longer backoff cap).
    pub missing_on_primary: bool,
}

/// The registry of one replicable in one tracking database.
#[derive(Debug, Clone)]
pub struct Registry {
    pub(super) db: Database,
    pub(super) descriptor: &'static ReplicatorDescriptor,
    pub(super) sql: Arc<RegistrySql>,
}

fn decode_claimed<R: RowReader>(row: &R) -> Result<ClaimedRow, DbError> {
    Ok(ClaimedRow {
        id: row.i64("id")?,
        model_record_id: row.i64("model_record_id")?,
        retry_count: row.i32("retry_count")?,
        sync_attempt: row.i64("sync_attempt")?,
    })
}

impl Registry {
    /// The registry of `descriptor` in `db` (a secondary's tracking database).
    pub fn new(db: &Database, descriptor: &'static ReplicatorDescriptor) -> Self {
        Registry {
            sql: Arc::new(RegistrySql::new(descriptor, db.dialect())),
            db: db.clone(),
            descriptor,
        }
    }

    /// The replicator this registry belongs to.
    pub fn descriptor(&self) -> &'static ReplicatorDescriptor {
        self.descriptor
    }

    /// The model id a registry row tracks, if the row exists.
    pub async fn model_id_of(&self, registry_id: i64) -> Result<Option<i64>, DbError> {
        let sql = AssertSqlSafe(self.sql.model_id_of.as_str());
        Ok(
            on_pool!(self.db, read, pool => sqlx::query_scalar(sql).bind(registry_id).fetch_optional(pool).await?),
        )
    }

    /// The row tracking `model_record_id`, if any.
    pub async fn find_by_model_id(
        &self,
        model_record_id: i64,
    ) -> Result<Option<RegistryRecord>, DbError> {
        let sql = AssertSqlSafe(self.sql.select_by_model_id.as_str());
        let fk = self.descriptor.model_foreign_key;
        on_pool!(self.db, read, pool => {
            sqlx::query(sql)
                .bind(model_record_id)
                .fetch_optional(pool)
                .await?
                .map(|row| RegistryRecord::decode(&row, fk))
                .transpose()
        })
    }

    /// Creates pending rows for the ids not tracked yet; returns how many were created.
    pub async fn insert_pending(
        &self,
        model_record_ids: &[i64],
        now: DateTime<Utc>,
    ) -> Result<u64, DbError> {
        let sql = AssertSqlSafe(self.sql.insert_pending_many.as_str());
        let ids = IdList(model_record_ids.to_vec());
        on_pool!(self.db, write, pool => Ok(sqlx::query(sql).bind(ids).bind(Ts(now)).execute(pool).await?.rows_affected()))
    }

    /// Operator resync: synced or failed rows back to pending (Geo's `resync`). Returns how many.
    pub async fn resync(&self, model_record_ids: &[i64]) -> Result<u64, DbError> {
        let sql = AssertSqlSafe(self.sql.resync_many.as_str());
        let ids = IdList(model_record_ids.to_vec());
        on_pool!(self.db, write, pool => Ok(sqlx::query(sql).bind(ids).execute(pool).await?.rows_affected()))
    }

    /// Rows of `model_record_ids` back to pending from any state (created when missing), as an
    /// `updated` event does; returns the rows written.
    pub async fn reset_pending(
        &self,
        model_record_ids: &[i64],
        now: DateTime<Utc>,
    ) -> Result<u64, DbError> {
        let mut tx = self.db.begin_write().await?;
        let n = reset_pending_many(tx.conn(), &self.sql, model_record_ids, now).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Deletes the rows of `model_record_ids`, as a `deleted` event does (without scheduling
    /// the removal of their copies); returns the model ids that had a row, with their copies'
    /// object keys.
    pub async fn delete(
        &self,
        model_record_ids: &[i64],
    ) -> Result<Vec<(i64, Option<String>)>, DbError> {
        let mut tx = self.db.begin_write().await?;
        let deleted = delete_many(tx.conn(), &self.sql, model_record_ids).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// Claims up to `limit` due rows, pending first, then failed rows whose retry time has come;
    /// each becomes `started` with a new attempt number.
    pub async fn claim(
        &self,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedRow>, DbError> {
        let mut claimed = self.claim_with(&self.sql.claim_pending, limit, now).await?;
        if claimed.len() < limit {
            let more = self
                .claim_with(&self.sql.claim_failed_due, limit - claimed.len(), now)
                .await?;
            claimed.extend(more);
        }
        Ok(claimed)
    }

    async fn claim_with(
        &self,
        sql: &str,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedRow>, DbError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = AssertSqlSafe(sql);
        on_pool!(self.db, write, pool => {
            sqlx::query(sql)
                .bind(limit)
                .bind(Ts(now))
                .fetch_all(pool)
                .await?
                .iter()
                .map(decode_claimed)
                .collect()
        })
    }

    /// started → synced for each row whose attempt is still the running one; returns the ids
    /// that were marked (the others were reset or re-claimed meanwhile and stay as they are).
    pub async fn mark_synced(&self, rows: &[ClaimedRow]) -> Result<Vec<i64>, DbError> {
        let copies: Vec<SyncedCopy> = rows
            .iter()
            .map(|r| SyncedCopy {
                row: *r,
                object_key: None,
                sha256: None,
                checked_against_primary: false,
            })
            .collect();
        self.mark_synced_copies(&copies).await
    }

    /// Like [`Registry::mark_synced`], recording where each copy is stored and its checksum: a
    /// copy checked against the primary's checksum is verified (`succeeded`) at once; one the
    /// primary had no checksum for is `disabled` until it has. A copy stored under another key
    /// than the row's previous one schedules the removal of the previous copy, in the same
    /// transaction.
    pub async fn mark_synced_copies(&self, copies: &[SyncedCopy]) -> Result<Vec<i64>, DbError> {
        if copies.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.db.begin_write().await?;
        let marked = self.mark_synced_in(tx.conn(), copies).await?;
        tx.commit().await?;
        Ok(marked)
    }

    /// [`Registry::mark_synced_copies`] inside the caller's transaction.
    pub async fn mark_synced_in(
        &self,
        conn: Conn<'_>,
        copies: &[SyncedCopy],
    ) -> Result<Vec<i64>, DbError> {
        if copies.is_empty() {
            return Ok(Vec::new());
        }
        let sql = AssertSqlSafe(self.sql.mark_synced_many.as_str());
        let ids = IdList(copies.iter().map(|c| c.row.id).collect());
        let attempts = IdList(copies.iter().map(|c| c.row.sync_attempt).collect());
        let keys = TextList(copies.iter().map(|c| c.object_key.clone()).collect());
        let sums = BlobList(
            copies
                .iter()
                .map(|c| c.sha256.map(|s| s.to_vec()))
                .collect(),
        );
        let states = IdList(
            copies
                .iter()
                .map(|c| {
                    let state = if c.checked_against_primary && c.sha256.is_some() {
                        VerificationState::Succeeded
                    } else {
                        VerificationState::Disabled
                    };
                    i64::from(state.as_i16())
                })
                .collect(),
        );
        let now = Ts(crate::db::dialect::now());
        let superseded = AssertSqlSafe(self.sql.schedule_superseded.as_str());
        let marked = on_conn!(conn, c => {
            sqlx::query(superseded)
                .bind(ids.clone())
                .bind(attempts.clone())
                .bind(keys.clone())
                .bind(sums.clone())
                .bind(states.clone())
                .bind(now)
                .bind(self.descriptor.replicable_name)
                .execute(&mut *c)
                .await?;
            let done = sqlx::query(sql)
                .bind(ids)
                .bind(attempts)
                .bind(keys)
                .bind(sums)
                .bind(states)
                .bind(now)
                .fetch_all(&mut *c)
                .await?;
            done.iter().map(|r| Ok(r.try_get::<i64, _>(0)?)).collect::<Result<Vec<i64>, DbError>>()?
        });
        Ok(marked)
    }

    /// Inside the caller's write transaction: the current `(state, sync_attempt)` of each of
    /// the rows `ids` that still exists, locked until the transaction ends (on PostgreSQL; a
    /// SQLite write transaction excludes every other writer anyway). An attempt found current
    /// here cannot be reset, re-claimed or deleted before the transaction commits.
    pub async fn lock_rows(
        &self,
        conn: Conn<'_>,
        ids: &[i64],
    ) -> Result<HashMap<i64, (SyncState, i64)>, DbError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = AssertSqlSafe(self.sql.lock_rows.as_str());
        let ids = IdList(ids.to_vec());
        let rows: Vec<(i64, i16, i64)> =
            on_conn!(conn, c => sqlx::query_as(sql).bind(ids).fetch_all(&mut *c).await?);
        rows.into_iter()
            .map(|(id, state, attempt)| {
                let state = SyncState::stored(state)?;
                Ok((id, (state, attempt)))
            })
            .collect()
    }

    /// Inside the caller's transaction: the object key of the copy each of `model_record_ids`
    /// is recorded with (`None`: tracked, no copy recorded); untracked ids are left out.
    pub async fn object_keys_in(
        &self,
        conn: Conn<'_>,
        model_record_ids: &[i64],
    ) -> Result<HashMap<i64, Option<String>>, DbError> {
        if model_record_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = AssertSqlSafe(self.sql.object_keys.as_str());
        let ids = IdList(model_record_ids.to_vec());
        let rows: Vec<(i64, Option<String>)> =
            on_conn!(conn, c => sqlx::query_as(sql).bind(ids).fetch_all(&mut *c).await?);
        Ok(rows.into_iter().collect())
    }

    /// The running attempt of each of the rows `ids` that is `started` (rows reset, deleted or
    /// finished are left out).
    pub async fn started_attempts(&self, ids: &[i64]) -> Result<HashMap<i64, i64>, DbError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = AssertSqlSafe(self.sql.started_attempts.as_str());
        let ids = IdList(ids.to_vec());
        let rows: Vec<(i64, i64)> =
            on_pool!(self.db, read, pool => sqlx::query_as(sql).bind(ids).fetch_all(pool).await?);
        Ok(rows.into_iter().collect())
    }

    /// started → failed for each failure whose attempt is still the running one, with Geo's
    /// backoff; returns how many rows were marked.
    pub async fn mark_failed(
        &self,
        failures: &[SyncFailure],
        now: DateTime<Utc>,
    ) -> Result<u64, DbError> {
        if failures.is_empty() {
            return Ok(0);
        }
        // In id order, as every writer that locks several rows.
        let mut failures: Vec<&SyncFailure> = failures.iter().collect();
        failures.sort_by_key(|f| f.row.id);
        let mut tx = self.db.begin_write().await?;
        let mut marked = 0;
        for f in failures {
            let sql = AssertSqlSafe(self.sql.mark_failed.as_str());
            let count = u32::try_from(f.row.retry_count.saturating_add(1)).unwrap_or(1);
            let retry_at = Ts(retry::next_retry_at(now, count, f.missing_on_primary));
            let message = truncate_failure(&f.message);
            marked += on_conn!(tx.conn(), c => sqlx::query(sql)
                .bind(f.row.id)
                .bind(f.row.sync_attempt)
                .bind(retry_at)
                .bind(message)
                .execute(&mut *c)
                .await?
                .rows_affected());
        }
        tx.commit().await?;
        Ok(marked)
    }

    /// The sweeper: rows `started` for longer than `timeout` become failed ("Sync timed out
    /// after …", `retry_count` 1, retried after a first-retry delay spread over a minute), so a
    /// worker that died mid-sync never leaves a row stuck. Returns how many.
    pub async fn fail_timed_out(
        &self,
        timeout: Duration,
        now: DateTime<Utc>,
    ) -> Result<u64, DbError> {
        let sql = AssertSqlSafe(self.sql.fail_timed_out.as_str());
        let timeout_delta = TimeDelta::from_std(timeout).unwrap_or(TimeDelta::MAX);
        let started_before = Ts(now
            .checked_sub_signed(timeout_delta)
            .unwrap_or(DateTime::<Utc>::MIN_UTC));
        let earliest = Ts(now + TimeDelta::seconds(16));
        let message = format!("Sync timed out after {}", timeout.as_secs());
        on_pool!(self.db, write, pool => Ok(sqlx::query(sql)
            .bind(started_before)
            .bind(earliest)
            .bind(message)
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// Syncs left in `started` by a process that stopped (rows started before `started_before`,
    /// this process's start) become failed and due at once, with the reason recorded: a
    /// restart converges without waiting for the sweeper's timeout. A sync still running in
    /// another process loses nothing but its result: its attempt no longer matches.
    pub async fn release_interrupted(
        &self,
        started_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, DbError> {
        let sql = AssertSqlSafe(self.sql.release_interrupted.as_str());
        on_pool!(self.db, write, pool => Ok(sqlx::query(sql)
            .bind(Ts(started_before))
            .bind(Ts(now))
            .bind("The sync was interrupted (its process stopped); retrying")
            .execute(pool)
            .await?
            .rows_affected()))
    }
}

/// Runs a statement taking (`$1` ids, `$2` now); returns the rows affected.
async fn ids_at(
    conn: Conn<'_>,
    sql: &str,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<u64, DbError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids = IdList(ids.to_vec());
    Ok(on_conn!(conn, c => sqlx::query(AssertSqlSafe(sql))
        .bind(ids)
        .bind(Ts(now))
        .execute(&mut *c)
        .await?
        .rows_affected()))
}

/// Inside a caller's transaction: new pending rows for untracked ids. Returns rows created.
pub(crate) async fn insert_pending_many(
    conn: Conn<'_>,
    sql: &RegistrySql,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<u64, DbError> {
    ids_at(conn, &sql.insert_pending_many, ids, now).await
}

/// Inside a caller's transaction: locks the rows of `model_ids` in id order (PostgreSQL; a
/// SQLite write transaction excludes every other writer anyway). Call it before writing several
/// rows, so that the lock order is the one every writer uses.
pub(crate) async fn lock_model_ids(
    conn: Conn<'_>,
    sql: &RegistrySql,
    model_ids: &[i64],
) -> Result<(), DbError> {
    if model_ids.is_empty() || conn.dialect() == crate::db::Dialect::Sqlite {
        return Ok(());
    }
    let q = AssertSqlSafe(sql.lock_model_ids.as_str());
    let ids = IdList(model_ids.to_vec());
    on_conn!(conn, c => sqlx::query(q).bind(ids).fetch_all(&mut *c).await?.len());
    Ok(())
}

/// Inside a caller's transaction: rows back to pending from any state (created when missing).
pub(crate) async fn reset_pending_many(
    conn: Conn<'_>,
    sql: &RegistrySql,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<u64, DbError> {
    ids_at(conn, &sql.reset_pending_many, ids, now).await
}

/// Inside a caller's transaction: deletes rows, returning the model ids that had one and the
/// object keys of their copies.
pub(crate) async fn delete_many(
    conn: Conn<'_>,
    sql: &RegistrySql,
    ids: &[i64],
) -> Result<Vec<(i64, Option<String>)>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let q = AssertSqlSafe(sql.delete_many.as_str());
    let ids = IdList(ids.to_vec());
    on_conn!(conn, c => {
        let rows = sqlx::query(q).bind(ids).fetch_all(&mut *c).await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<Option<String>, _>(1)?)))
            .collect()
    })
}

/// Inside a caller's transaction: tracked model ids in `lo..=hi` whose rows were created
/// before `created_before`, ascending.
pub(crate) async fn model_ids_between(
    conn: Conn<'_>,
    sql: &RegistrySql,
    lo: i64,
    hi: i64,
    created_before: DateTime<Utc>,
) -> Result<Vec<i64>, DbError> {
    let q = AssertSqlSafe(sql.model_ids_between.as_str());
    Ok(
        on_conn!(conn, c => sqlx::query_scalar(q).bind(lo).bind(hi).bind(Ts(created_before)).fetch_all(&mut *c).await?),
    )
}

/// Inside a caller's transaction: up to `limit` tracked model ids above `above` whose rows were
/// created before `created_before`, ascending.
pub(crate) async fn model_ids_above(
    conn: Conn<'_>,
    sql: &RegistrySql,
    above: i64,
    limit: i64,
    created_before: DateTime<Utc>,
) -> Result<Vec<i64>, DbError> {
    let q = AssertSqlSafe(sql.model_ids_above.as_str());
    Ok(
        on_conn!(conn, c => sqlx::query_scalar(q).bind(above).bind(limit).bind(Ts(created_before)).fetch_all(&mut *c).await?),
    )
}
