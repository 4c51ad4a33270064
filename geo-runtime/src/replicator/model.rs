//! Reading the model table on the primary: the few columns replication needs.

use sqlx::AssertSqlSafe;

use super::ReplicatorDescriptor;
use crate::db::dialect::{param, quote};
use crate::db::{Database, on_pool};
use crate::error::DbError;

/// The object key of model record `id`: `None` when there is no such record, `Some(None)` when
/// the record has no object (a null key, or a replicable without a blob column).
pub async fn model_object_key(
    primary: &Database,
    descriptor: &ReplicatorDescriptor,
    id: i64,
) -> Result<Option<Option<String>>, DbError> {
    let key_column = descriptor
        .blob_column
        .map_or_else(|| "NULL".to_owned(), quote);
    let sql = format!(
        "SELECT {key_column} FROM {} WHERE {} = {}",
        quote(descriptor.model_table),
        quote(descriptor.model_id_column),
        param(primary.dialect(), 1)
    );
    let row: Option<(Option<String>,)> = on_pool!(primary, read, pool => sqlx::query_as(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?);
    Ok(row.map(|(key,)| key))
}
