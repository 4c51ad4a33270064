//! Reading the model table on the primary: the few columns replication needs.

use sqlx::AssertSqlSafe;

use crate::db::dialect::{IdList, in_id_list, param, quote};
use crate::db::{Database, on_pool};
use crate::descriptor::ReplicatorDescriptor;
use crate::error::DbError;
use crate::verification::VerificationState;

/// The join (model table aliased `m`) and the expression that give a record's verified
/// checksum: the checksum counts only when its verification succeeded.
fn verified_checksum(descriptor: &ReplicatorDescriptor) -> (String, String) {
    let (join, table) = match descriptor.verification {
        super::VerificationStorage::Inline => (String::new(), "m"),
        super::VerificationStorage::SeparateTable { table } => (
            format!(
                " LEFT JOIN {} s ON s.{} = m.{}",
                quote(table),
                quote(descriptor.model_foreign_key),
                quote(descriptor.model_id_column)
            ),
            "s",
        ),
    };
    let succeeded = VerificationState::Succeeded.as_i16();
    (
        join,
        format!(
            "CASE WHEN {table}.\"verification_state\" = {succeeded} THEN {table}.\"verification_checksum\" END"
        ),
    )
}

/// `SELECT <id>, <object key>, <verified checksum> FROM <model> m…` (what each record holds
/// now), and the id expression, for a `WHERE` to follow.
fn select_objects(descriptor: &ReplicatorDescriptor) -> (String, String) {
    let key_column = descriptor
        .blob_column
        .map_or_else(|| "NULL".to_owned(), |c| format!("m.{}", quote(c)));
    let (join, checksum) = verified_checksum(descriptor);
    let id = format!("m.{}", quote(descriptor.model_id_column));
    (
        format!(
            "SELECT {id}, {key_column}, {checksum} FROM {} m{join}",
            quote(descriptor.model_table)
        ),
        id,
    )
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
    let (select, id) = select_objects(descriptor);
    let sql = format!("{select} WHERE {}", in_id_list(primary.dialect(), &id, 1));
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

/// What the primary holds for a record now: its object key and its verified SHA-256 (`None`
/// until its verification succeeds: after a create or an update, the checksum of the new object
/// is pending). The consistency pass compares it with the copy a secondary recorded, so that an
/// update whose event was lost is still found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordVersion {
    /// The model id.
    pub id: i64,
    /// The object key.
    pub key: Option<String>,
    /// The verified SHA-256.
    pub sha256: Option<[u8; 32]>,
}

/// The versions of the records with ids in `(after, until]` (no upper bound with `None`), at
/// most `limit`, ascending: one query, the verification state joined.
pub async fn model_versions(
    primary: &Database,
    descriptor: &ReplicatorDescriptor,
    after: i64,
    until: Option<i64>,
    limit: usize,
) -> Result<Vec<RecordVersion>, DbError> {
    let d = primary.dialect();
    let (select, id) = select_objects(descriptor);
    let sql = format!(
        "{select} WHERE {id} > {} AND {id} <= {} ORDER BY {id} LIMIT {}",
        param(d, 1),
        param(d, 2),
        param(d, 3)
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<(i64, Option<String>, Option<Vec<u8>>)> = on_pool!(primary, read, pool => sqlx::query_as(AssertSqlSafe(sql))
        .bind(after)
        .bind(until.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(pool)
        .await?);
    Ok(rows
        .into_iter()
        .map(|(id, key, sum)| RecordVersion {
            id,
            key,
            sha256: sum.and_then(|s| <[u8; 32]>::try_from(s.as_slice()).ok()),
        })
        .collect())
}

/// The digest of a page of versions, in id order: what the primary sends with a listing and a
/// secondary recomputes from its registry (with `sha256` left out for the records the primary
/// reported unverified), so that a page whose copies all match costs one comparison.
pub fn versions_digest<'a>(
    versions: impl IntoIterator<Item = (i64, Option<&'a str>, Option<&'a [u8; 32]>)>,
) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (id, key, sha256) in versions {
        hasher.update(id.to_be_bytes());
        match key {
            Some(k) => {
                hasher.update([1]);
                hasher.update((k.len() as u64).to_be_bytes());
                hasher.update(k.as_bytes());
            }
            None => hasher.update([0]),
        }
        match sha256 {
            Some(s) => {
                hasher.update([1]);
                hasher.update(s);
            }
            None => hasher.update([0]),
        }
    }
    hasher.finalize().into()
}

/// How many records the model table holds.
pub(crate) async fn count(
    primary: &Database,
    descriptor: &ReplicatorDescriptor,
) -> Result<i64, DbError> {
    let sql = format!("SELECT COUNT(*) FROM {}", quote(descriptor.model_table));
    Ok(
        on_pool!(primary, read, pool => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(pool).await?),
    )
}

/// Up to `limit` model ids above `after`, ascending.
pub(crate) async fn model_ids_after(
    primary: &Database,
    descriptor: &ReplicatorDescriptor,
    after: i64,
    limit: usize,
) -> Result<Vec<i64>, DbError> {
    let d = primary.dialect();
    let id = quote(descriptor.model_id_column);
    let sql = format!(
        "SELECT {id} FROM {} WHERE {id} > {} ORDER BY {id} LIMIT {}",
        quote(descriptor.model_table),
        param(d, 1),
        param(d, 2)
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let ids: Vec<i64> = on_pool!(primary, read, pool => sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?);
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::versions_digest;

    #[test]
    fn the_digest_tells_keys_checksums_and_their_absence_apart() {
        let sum = [7_u8; 32];
        let base = versions_digest([(1, Some("a/1"), Some(&sum))]);
        assert_eq!(base, versions_digest([(1, Some("a/1"), Some(&sum))]));
        for other in [
            versions_digest([(2, Some("a/1"), Some(&sum))]),
            versions_digest([(1, Some("a/2"), Some(&sum))]),
            versions_digest([(1, Some("a/1"), Some(&[8; 32]))]),
            versions_digest([(1, Some("a/1"), None)]),
            versions_digest([(1, None, Some(&sum))]),
            versions_digest([]),
        ] {
            assert_ne!(base, other);
        }
        // Keys are length-prefixed: no two pages run together into one.
        assert_ne!(
            versions_digest([(1, Some("ab"), None), (2, Some("c"), None)]),
            versions_digest([(1, Some("a"), None), (2, Some("bc"), None)])
        );
    }
}
