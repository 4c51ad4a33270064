//! What the test kit writes into a registry directly: whole rows (its factories) and time
//! passing (a backoff or a re-verification interval elapsed). Never used by a running node.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::AssertSqlSafe;

use super::{REGISTRY_COLUMNS, Registry, RegistryRecord, SyncState};
use crate::db::dialect::{Ts, now, param, quote};
use crate::db::on_pool;
use crate::error::DbError;

impl Registry {
    /// The model id after the highest one tracked (1 for an empty registry).
    pub(crate) async fn next_model_id(&self) -> Result<i64, DbError> {
        let sql = format!(
            "SELECT COALESCE(MAX({}), 0) + 1 FROM {}",
            quote(self.descriptor.model_foreign_key),
            quote(self.descriptor.registry_table)
        );
        Ok(
            on_pool!(self.db, read, pool => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(pool).await?),
        )
    }

    /// Writes `record` as a new row (its `id` is the database's choice).
    pub(crate) async fn insert_record(&self, r: &RegistryRecord) -> Result<(), DbError> {
        let d = self.db.dialect();
        let columns: Vec<String> = std::iter::once(self.descriptor.model_foreign_key)
            .chain(REGISTRY_COLUMNS)
            .map(quote)
            .collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            quote(self.descriptor.registry_table),
            columns.join(", "),
            (1..=columns.len())
                .map(|n| param(d, n))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let ts = |t: Option<DateTime<Utc>>| t.map(Ts);
        // In `REGISTRY_COLUMNS` order.
        on_pool!(self.db, write, pool => sqlx::query(AssertSqlSafe(sql))
            .bind(r.model_record_id)
            .bind(r.state.as_i16())
            .bind(r.retry_count)
            .bind(ts(r.retry_at))
            .bind(ts(r.last_synced_at))
            .bind(r.sync_attempt)
            .bind(r.object_key.as_deref())
            .bind(r.last_sync_failure.as_deref())
            .bind(Ts(r.created_at))
            .bind(r.verification_state.as_i16())
            .bind(ts(r.verification_started_at))
            .bind(ts(r.verified_at))
            .bind(ts(r.verification_retry_at))
            .bind(r.verification_retry_count)
            .bind(r.verification_checksum.as_deref())
            .bind(r.verification_checksum_mismatched.as_deref())
            .bind(r.checksum_mismatch)
            .bind(r.verification_failure.as_deref())
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Failed rows become due, as if their backoff had elapsed `ago`.
    pub(crate) async fn backdate_retries(&self, ago: TimeDelta) -> Result<u64, DbError> {
        self.backdate("retry_at", SyncState::Failed, ago).await
    }

    /// Synced copies read as verified `ago` (due for re-verification when that is longer than
    /// the interval).
    pub(crate) async fn backdate_verifications(&self, ago: TimeDelta) -> Result<u64, DbError> {
        self.backdate("verified_at", SyncState::Synced, ago).await
    }

    async fn backdate(
        &self,
        column: &str,
        state: SyncState,
        ago: TimeDelta,
    ) -> Result<u64, DbError> {
        let sql = format!(
            "UPDATE {} SET {} = {} WHERE \"state\" = {}",
            quote(self.descriptor.registry_table),
            quote(column),
            param(self.db.dialect(), 1),
            state.as_i16()
        );
        Ok(
            on_pool!(self.db, write, pool => sqlx::query(AssertSqlSafe(sql)).bind(Ts(now() - ago)).execute(pool).await?.rows_affected()),
        )
    }
}
