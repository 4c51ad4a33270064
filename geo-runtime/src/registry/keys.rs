//! The registry read by key and by range for `geo check`: which copies the rows are recorded
//! with, and each row's state.

use sqlx::AssertSqlSafe;

use super::{Registry, SyncState};
use crate::db::dialect::{TextList, in_id_list, param, quote};
use crate::db::{Conn, on_conn, on_pool};
use crate::error::DbError;

/// A registry row as `geo check` compares it: model id, sync state, object key.
pub(crate) type CheckedRow = (i64, SyncState, Option<String>);

impl Registry {
    /// The rows tracking model ids in `(after, upto]`, ascending.
    pub(crate) async fn rows_between(
        &self,
        after: i64,
        upto: i64,
    ) -> Result<Vec<CheckedRow>, DbError> {
        let d = self.db.dialect();
        let sql = format!(
            "SELECT {fk}, \"state\", \"object_key\" FROM {t} WHERE {fk} > {} AND {fk} <= {} ORDER BY {fk}",
            param(d, 1),
            param(d, 2),
            fk = quote(self.descriptor.model_foreign_key),
            t = quote(self.descriptor.registry_table),
        );
        let rows: Vec<(i64, i16, Option<String>)> = on_pool!(self.db, read, pool => sqlx::query_as(AssertSqlSafe(sql))
            .bind(after)
            .bind(upto)
            .fetch_all(pool)
            .await?);
        rows.into_iter()
            .map(|(id, state, key)| {
                let state = SyncState::stored(state)?;
                Ok((id, state, key))
            })
            .collect()
    }

    /// Every object key a row is recorded with.
    pub(crate) async fn object_keys(&self) -> Result<Vec<String>, DbError> {
        let sql = format!(
            "SELECT \"object_key\" FROM {} WHERE \"object_key\" IS NOT NULL",
            quote(self.descriptor.registry_table)
        );
        Ok(
            on_pool!(self.db, read, pool => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_all(pool).await?),
        )
    }

    /// Inside a caller's transaction: the keys out of `keys` some row is recorded with.
    pub(crate) async fn object_keys_among(
        &self,
        conn: Conn<'_>,
        keys: &TextList,
    ) -> Result<Vec<String>, DbError> {
        let sql = format!(
            "SELECT \"object_key\" FROM {} WHERE {}",
            quote(self.descriptor.registry_table),
            in_id_list(conn.dialect(), "\"object_key\"", 1)
        );
        Ok(
            on_conn!(conn, c => sqlx::query_scalar(AssertSqlSafe(sql)).bind(keys.clone()).fetch_all(&mut *c).await?),
        )
    }
}
