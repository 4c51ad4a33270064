//! Removes the local copies of objects whose models are gone (recorded in `geo_blob_removals`
//! by `deleted` events and by the consistency pass) or that a sync superseded under another key
//! (the model's object moved). A file is kept only while its record's row is recorded with that
//! very key; a row tracked again and not yet synced does not keep it (its sync will write
//! whichever key the record has now).
//!
//! Each batch decides and deletes inside one write transaction that holds the keys' locks, the
//! same locks the sync holds while it puts a copy in place and records it: a removal never runs
//! between a copy landing at a key and its row being recorded with it.

use std::collections::HashMap;

use crate::db::lock::lock_object_keys;
use crate::db::{Conn, Database};
use crate::error::DbError;
use crate::registry::Registry;
use crate::replicator::ReplicatorSet;
use crate::storage::{BlobStore, ObjectKey};

/// Entries decided and deleted in one transaction.
const PER_TRANSACTION: usize = 100;

/// What a removal round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemovalRound {
    /// Files deleted (or already gone).
    pub deleted: usize,
    /// Entries dropped because the record's row is recorded with that very key.
    pub kept: usize,
    /// Entries whose file could not be located (no key, or an unsafe one).
    pub orphaned: usize,
    /// Entries left for the next round: the store could not delete their file.
    pub retried: usize,
}

use crate::removals::{self, Removal as Entry};

/// Processes up to `limit` pending removals.
pub async fn remove_objects<S: BlobStore>(
    tracking: &Database,
    set: &ReplicatorSet,
    store: &S,
    limit: i64,
) -> Result<RemovalRound, DbError> {
    let entries = removals::due(tracking, limit).await?;
    let mut round = RemovalRound::default();
    for chunk in entries.chunks(PER_TRANSACTION) {
        remove_chunk(tracking, set, store, chunk, &mut round).await?;
    }
    Ok(round)
}

/// The key each entry's record is recorded with now, per replicable, read under the locks.
async fn recorded_keys<'e>(
    tracking: &Database,
    set: &ReplicatorSet,
    mut conn: Conn<'_>,
    chunk: &'e [Entry],
) -> Result<HashMap<(&'e str, i64), Option<String>>, DbError> {
    let mut recorded = HashMap::new();
    let mut by_replicable: HashMap<&str, Vec<i64>> = HashMap::new();
    for e in chunk {
        by_replicable
            .entry(e.replicable.as_str())
            .or_default()
            .push(e.model_id);
    }
    for (name, ids) in by_replicable {
        if let Some(d) = set.get(name) {
            for (id, key) in Registry::new(tracking, d)
                .object_keys_in(conn.reborrow(), &ids)
                .await?
            {
                recorded.insert((name, id), key);
            }
        }
    }
    Ok(recorded)
}

/// Decides, deletes and forgets one chunk of entries in one write transaction.
async fn remove_chunk<S: BlobStore>(
    tracking: &Database,
    set: &ReplicatorSet,
    store: &S,
    chunk: &[Entry],
    round: &mut RemovalRound,
) -> Result<(), DbError> {
    let mut tx = tracking.begin_write().await?;
    let keys: Vec<&str> = chunk.iter().filter_map(|e| e.key.as_deref()).collect();
    lock_object_keys(tx.conn(), keys).await?;
    let recorded = recorded_keys(tracking, set, tx.conn(), chunk).await?;
    let mut forget = Vec::with_capacity(chunk.len());
    let mut to_delete: Vec<(&Entry, ObjectKey)> = Vec::new();
    for e in chunk {
        let in_use = e.key.is_some()
            && recorded
                .get(&(e.replicable.as_str(), e.model_id))
                .is_some_and(|k| *k == e.key);
        if in_use {
            round.kept += 1;
            forget.push(e.id);
            continue;
        }
        match e.key.as_deref().map(ObjectKey::parse) {
            Some(Ok(key)) => to_delete.push((e, key)),
            Some(Err(err)) => {
                tracing::warn!(replicable = %e.replicable, id = e.model_id, error = %err, "a file may be orphaned: its key is not a safe path");
                round.orphaned += 1;
                forget.push(e.id);
            }
            None => {
                tracing::warn!(replicable = %e.replicable, id = e.model_id, "a file may be orphaned: its key is unknown");
                round.orphaned += 1;
                forget.push(e.id);
            }
        }
    }
    let deleted = store
        .delete_many(to_delete.iter().map(|(_, k)| k.clone()).collect())
        .await;
    for ((e, key), result) in to_delete.iter().zip(deleted) {
        match result {
            Ok(_) => {
                tracing::debug!(replicable = %e.replicable, id = e.model_id, object_key = %key, "local copy removed");
                round.deleted += 1;
                forget.push(e.id);
            }
            Err(err) => {
                // Kept for the next round.
                tracing::warn!(replicable = %e.replicable, id = e.model_id, error = %err, "could not remove a local object");
                round.retried += 1;
            }
        }
    }
    removals::forget(tx.conn(), forget).await?;
    tx.commit().await?;
    Ok(())
}
