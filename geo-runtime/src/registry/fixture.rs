//! What the test kit writes into a registry directly: whole rows (its factories) and time
//! passing (a backoff or a re-verification interval elapsed). Never used by a running node.

use chrono::TimeDelta;
use sqlx::AssertSqlSafe;

use super::{ColumnValue, REGISTRY_COLUMNS, Registry, RegistryRecord, SyncState};
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
        let values = r.values();
        on_pool!(self.db, write, pool => {
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(r.model_record_id);
            for (_, value) in values {
                q = match value {
                    ColumnValue::SyncState(s) => q.bind(s.as_i16()),
                    ColumnValue::VerificationState(s) => q.bind(s.as_i16()),
                    ColumnValue::I32(n) => q.bind(n),
                    ColumnValue::I64(n) => q.bind(n),
                    ColumnValue::OptionalTimestamp(t) => q.bind(t.map(Ts)),
                    ColumnValue::Timestamp(t) => q.bind(Ts(t)),
                    ColumnValue::OptionalString(t) => q.bind(t),
                    ColumnValue::OptionalBytes(b) => q.bind(b),
                    ColumnValue::Bool(b) => q.bind(b),
                };
            }
            q.execute(pool).await?.rows_affected()
        });
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
