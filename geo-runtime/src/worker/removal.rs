//! Removes the local copies of objects whose models are gone (recorded in `geo_blob_removals`
//! by `deleted` events and by the consistency pass) or that a sync superseded under another key
//! (the model's object moved). A file is kept while its record uses it: tracked again and not
//! yet synced (the sync writes it anyway), or synced under that very key.

use sqlx::AssertSqlSafe;

use crate::db::dialect::param;
use crate::db::{Database, on_pool};
use crate::error::DbError;
use crate::registry::Registry;
use crate::replicator::ReplicatorSet;
use crate::storage::{BlobStore, ObjectKey};

/// What a removal round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemovalRound {
    /// Files deleted.
    pub deleted: usize,
    /// Entries skipped because the record uses the file (tracked again, or synced under that
    /// key).
    pub kept: usize,
    /// Entries whose file could not be located (no key, or an unsafe one).
    pub orphaned: usize,
}

/// Processes up to `limit` pending removals.
pub async fn remove_objects<S: BlobStore>(
    tracking: &Database,
    set: &ReplicatorSet,
    store: &S,
    limit: i64,
) -> Result<RemovalRound, DbError> {
    let sql = format!(
        "SELECT \"id\", \"replicable_name\", \"model_record_id\", \"object_key\" FROM \"geo_blob_removals\" ORDER BY \"id\" LIMIT {}",
        param(tracking.dialect(), 1)
    );
    let rows: Vec<(i64, String, i64, Option<String>)> = on_pool!(tracking, read, pool => sqlx::query_as(AssertSqlSafe(sql)).bind(limit).fetch_all(pool).await?);
    let mut round = RemovalRound::default();
    let delete_sql = format!(
        "DELETE FROM \"geo_blob_removals\" WHERE \"id\" = {}",
        param(tracking.dialect(), 1)
    );
    for (entry, name, model_id, key) in rows {
        let in_use = match set.get(&name) {
            Some(d) => Registry::new(tracking, d)
                .find_by_model_id(model_id)
                .await?
                .is_some_and(|row| row.object_key.is_none() || row.object_key == key),
            None => false,
        };
        if in_use {
            round.kept += 1;
        } else {
            match key.as_deref().map(ObjectKey::parse) {
                Some(Ok(key)) => match store.delete(&key).await {
                    Ok(_) => round.deleted += 1,
                    Err(e) => {
                        // Kept for the next round.
                        tracing::warn!(replicable = %name, id = model_id, error = %e, "could not remove a local object");
                        continue;
                    }
                },
                Some(Err(e)) => {
                    tracing::warn!(replicable = %name, id = model_id, error = %e, "a file may be orphaned: its key is not a safe path");
                    round.orphaned += 1;
                }
                None => {
                    tracing::warn!(replicable = %name, id = model_id, "a file may be orphaned: its key is unknown");
                    round.orphaned += 1;
                }
            }
        }
        on_pool!(tracking, write, pool => sqlx::query(AssertSqlSafe(delete_sql.as_str())).bind(entry).execute(pool).await?.rows_affected());
    }
    Ok(round)
}
