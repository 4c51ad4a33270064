//! The registry as the operator's bulk actions walk it: ids in order with optional state
//! filters, and copies sent back to verification.

use sqlx::AssertSqlSafe;

use super::{Registry, SyncState};
use crate::db::dialect::{IdList, in_id_list, param, quote};
use crate::db::on_pool;
use crate::error::DbError;
use crate::verification::VerificationState;
use crate::verification::sql::{not_running, reset_to_pending};

impl Registry {
    /// Up to `limit` tracked model ids above `after`, ascending, only those in `sync_state`
    /// and `verification_state` when given.
    pub(crate) async fn ids_after(
        &self,
        after: i64,
        limit: i64,
        sync_state: Option<SyncState>,
        verification_state: Option<VerificationState>,
    ) -> Result<Vec<i64>, DbError> {
        let p = |n| param(self.db.dialect(), n);
        let mut filter = String::new();
        if let Some(s) = sync_state {
            filter.push_str(&format!(" AND \"state\" = {}", s.as_i16()));
        }
        if let Some(s) = verification_state {
            filter.push_str(&format!(" AND \"verification_state\" = {}", s.as_i16()));
        }
        let sql = format!(
            "SELECT {fk} FROM {t} WHERE {fk} > {}{filter} ORDER BY {fk} LIMIT {}",
            p(1),
            p(2),
            fk = quote(self.descriptor.model_foreign_key),
            t = quote(self.descriptor.registry_table),
        );
        Ok(
            on_pool!(self.db, read, pool => sqlx::query_scalar(AssertSqlSafe(sql)).bind(after).bind(limit).fetch_all(pool).await?),
        )
    }

    /// The ids out of `model_record_ids` that have no row here.
    pub(crate) async fn untracked(&self, model_record_ids: &[i64]) -> Result<Vec<i64>, DbError> {
        let mut missing = Vec::new();
        for chunk in model_record_ids.chunks(1000) {
            let sql = AssertSqlSafe(self.sql.object_keys.as_str());
            let ids = IdList(chunk.to_vec());
            let rows: Vec<(i64, Option<String>)> = on_pool!(self.db, read, pool => sqlx::query_as(sql).bind(ids).fetch_all(pool).await?);
            let tracked: std::collections::HashSet<i64> =
                rows.into_iter().map(|(id, _)| id).collect();
            missing.extend(chunk.iter().filter(|id| !tracked.contains(id)));
        }
        Ok(missing)
    }

    /// The synced copies of `model_record_ids` back to verification pending (those being
    /// verified now are left to finish); returns how many rows changed.
    pub(crate) async fn reverify(&self, model_record_ids: &[i64]) -> Result<u64, DbError> {
        if model_record_ids.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "UPDATE {} SET {} WHERE {} AND \"state\" = {} AND {}",
            quote(self.descriptor.registry_table),
            reset_to_pending(),
            in_id_list(
                self.db.dialect(),
                &quote(self.descriptor.model_foreign_key),
                1
            ),
            SyncState::Synced.as_i16(),
            not_running(),
        );
        let ids = IdList(model_record_ids.to_vec());
        Ok(
            on_pool!(self.db, write, pool => sqlx::query(AssertSqlSafe(sql)).bind(ids).execute(pool).await?.rows_affected()),
        )
    }
}
