//! Reading the model table on the primary: the few columns replication needs.

use sqlx::AssertSqlSafe;

use super::ReplicatorDescriptor;
use crate::db::dialect::{IdList, in_id_list, param, quote};
use crate::db::{Database, on_pool};
use crate::error::DbError;

/// The join (model table aliased `m`) and the expression that give a record's verified
/// checksum: the checksum counts only when its verification succeeded (state 2).
fn verified_checksum(descriptor: &ReplicatorDescriptor) -> (String, &'static str) {
    match descriptor.verification {
        super::VerificationStorage::Inline => (
            String::new(),
            "CASE WHEN m.\"verification_state\" = 2 THEN m.\"verification_checksum\" END",
        ),
        super::VerificationStorage::SeparateTable { table } => (
            format!(
                " LEFT JOIN {} s ON s.{} = m.{}",
                quote(table),
                quote(descriptor.model_foreign_key),
                quote(descriptor.model_id_column)
            ),
            "CASE WHEN s.\"verification_state\" = 2 THEN s.\"verification_checksum\" END",
        ),
    }
}

/// The object key of model record `id` and the primary's verified SHA-256 of it, in one query:
/// `None` when there is no such record.
pub async fn model_object(
    primary: &Database,
    descriptor: &ReplicatorDescriptor,
    id: i64,
) -> Result<Option<(Option<String>, Option<Vec<u8>>)>, DbError> {
    let key_column = descriptor
        .blob_column
        .map_or_else(|| "NULL".to_owned(), |c| format!("m.{}", quote(c)));
    let (join, checksum) = verified_checksum(descriptor);
    let sql = format!(
        "SELECT {key_column}, {checksum} FROM {} m{join} WHERE m.{} = {}",
        quote(descriptor.model_table),
        quote(descriptor.model_id_column),
        param(primary.dialect(), 1)
    );
    let row: Option<(Option<String>, Option<Vec<u8>>)> = on_pool!(primary, read, pool => sqlx::query_as(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?);
    Ok(row)
}

/// The primary's verified SHA-256 of each of `ids` that exists (`None`: not verified yet).
pub async fn model_checksums(
    primary: &Database,
    descriptor: &ReplicatorDescriptor,
    ids: &[i64],
) -> Result<Vec<(i64, Option<Vec<u8>>)>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let (join, checksum) = verified_checksum(descriptor);
    let id = format!("m.{}", quote(descriptor.model_id_column));
    let sql = format!(
        "SELECT {id}, {checksum} FROM {} m{join} WHERE {} ORDER BY {id}",
        quote(descriptor.model_table),
        in_id_list(primary.dialect(), &id, 1)
    );
    let rows: Vec<(i64, Option<Vec<u8>>)> = on_pool!(primary, read, pool => sqlx::query_as(AssertSqlSafe(sql))
        .bind(IdList(ids.to_vec()))
        .fetch_all(pool)
        .await?);
    Ok(rows)
}

/// [`model_object`] for several records at once: `(id, key, verified checksum)` of each of `ids`
/// that exists, in one query.
pub async fn model_objects(
    primary: &Database,
    descriptor: &ReplicatorDescriptor,
    ids: &[i64],
) -> Result<Vec<(i64, Option<String>, Option<Vec<u8>>)>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let key_column = descriptor
        .blob_column
        .map_or_else(|| "NULL".to_owned(), |c| format!("m.{}", quote(c)));
    let (join, checksum) = verified_checksum(descriptor);
    let id = format!("m.{}", quote(descriptor.model_id_column));
    let sql = format!(
        "SELECT {id}, {key_column}, {checksum} FROM {} m{join} WHERE {}",
        quote(descriptor.model_table),
        in_id_list(primary.dialect(), &id, 1)
    );
    let rows: Vec<(i64, Option<String>, Option<Vec<u8>>)> = on_pool!(primary, read, pool => sqlx::query_as(AssertSqlSafe(sql))
        .bind(IdList(ids.to_vec()))
        .fetch_all(pool)
        .await?);
    Ok(rows)
}

/// The object keys of `ids` (`None`: the record has none); records that do not exist are left
/// out.
pub async fn model_object_keys(
    primary: &Database,
    descriptor: &ReplicatorDescriptor,
    ids: &[i64],
) -> Result<Vec<(i64, Option<String>)>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let id = quote(descriptor.model_id_column);
    let key_column = descriptor
        .blob_column
        .map_or_else(|| "NULL".to_owned(), quote);
    let sql = format!(
        "SELECT {id}, {key_column} FROM {} WHERE {}",
        quote(descriptor.model_table),
        in_id_list(primary.dialect(), &id, 1)
    );
    let rows: Vec<(i64, Option<String>)> = on_pool!(primary, read, pool => sqlx::query_as(AssertSqlSafe(sql))
        .bind(IdList(ids.to_vec()))
        .fetch_all(pool)
        .await?);
    Ok(rows)
}
