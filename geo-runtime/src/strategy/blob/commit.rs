//! Committing staged copies: made durable (flushed at their temp paths), then published (renamed
//! into place, or uploaded) and recorded synced in one transaction that holds the rows' and the
//! keys' locks. Only the copies whose attempt is still the row's running one are put in place;
//! the others (their record was deleted, updated or re-claimed meanwhile) are discarded with
//! their temp files, so no copy outlives its record.

use std::collections::HashSet;

use super::fetch::{Failed, Fetched};
use crate::db::Database;
use crate::db::lock::lock_object_keys;
use crate::descriptor::ReplicatorDescriptor;
use crate::error::DbError;
use crate::registry::{ClaimedRow, Registry, SyncState, SyncedCopy};
use crate::storage::BlobStore;

/// Flushes the data of a group: each copy that made it, or its row's failure.
pub(crate) async fn flush<S: BlobStore>(
    store: &S,
    group: Vec<Fetched<S::Staged>>,
) -> Vec<Result<Fetched<S::Staged>, (ClaimedRow, Failed)>> {
    let (meta, staged): (Vec<_>, Vec<S::Staged>) = group
        .into_iter()
        .map(|g| ((g.row, g.key, g.checked), g.staged))
        .unzip();
    meta.into_iter()
        .zip(store.flush(staged).await)
        .map(|((row, key, checked), flushed)| match flushed {
            Ok(staged) => Ok(Fetched {
                row,
                key,
                staged,
                checked,
            }),
            Err(e) => Err((row, Failed::storage(&e))),
        })
        .collect()
}

/// What publishing a group did.
#[derive(Debug, Default)]
pub(crate) struct Published {
    /// Rows marked synced.
    pub(crate) synced: usize,
    /// Bytes put in place.
    pub(crate) bytes: u64,
    /// Copies not published: their row had changed.
    pub(crate) superseded: usize,
    /// Copies the store could not publish.
    pub(crate) failed: Vec<(ClaimedRow, Failed)>,
}

/// Publishes a flushed group and marks it synced, in one transaction on `tracking` holding the
/// rows' and the keys' locks.
pub(crate) async fn publish<S: BlobStore>(
    tracking: &Database,
    registry: &Registry,
    store: &S,
    group: Vec<Fetched<S::Staged>>,
) -> Result<Published, DbError> {
    let d = registry.descriptor();
    let mut published = Published::default();
    let mut tx = tracking.begin_write().await?;
    let ids: Vec<i64> = group.iter().map(|g| g.row.id).collect();
    let found = registry.lock_rows(tx.conn(), &ids).await?;
    let mut live = Vec::with_capacity(group.len());
    for g in group {
        let now_found = found.get(&g.row.id).copied();
        if now_found == Some((SyncState::Started, g.row.sync_attempt)) {
            live.push(g);
        } else {
            let _entered = g.row.span(d).entered();
            tracing::info!("download superseded: {}", superseded_because(now_found));
            published.superseded += 1;
        }
    }
    let keys: Vec<&str> = live.iter().map(|g| g.key.as_str()).collect();
    lock_object_keys(tx.conn(), keys).await?;
    let (meta, staged): (Vec<_>, Vec<S::Staged>) = live
        .into_iter()
        .map(|g| ((g.row, g.key, g.checked), g.staged))
        .unzip();
    let mut copies = Vec::with_capacity(meta.len());
    for ((row, key, checked), written) in meta.into_iter().zip(store.publish(staged).await) {
        match written {
            Ok(written) => {
                published.bytes += written.size;
                copies.push(SyncedCopy {
                    row,
                    object_key: Some(key),
                    sha256: Some(written.sha256),
                    checked_against_primary: checked,
                });
            }
            Err(e) => published.failed.push((row, Failed::storage(&e))),
        }
    }
    let marked: HashSet<i64> = registry
        .mark_synced_in(tx.conn(), &copies)
        .await?
        .into_iter()
        .collect();
    // The crash suite stops the process here: copies in place, registry not yet told.
    #[cfg(feature = "failpoints")]
    fail::fail_point!("sync::before_registry_commit", |_| std::process::abort());
    tx.commit().await?;
    published.synced += marked.len();
    log_synced(d, &copies);
    Ok(published)
}

/// One line per transition, in the row's own span, as the download's lines are.
fn log_synced(d: &ReplicatorDescriptor, copies: &[SyncedCopy]) {
    for copy in copies {
        let _entered = copy.row.span(d).entered();
        tracing::debug!(
            object_key = copy.object_key.as_deref(),
            verified = copy.checked_against_primary,
            "registry row synced"
        );
    }
}

/// Why a download's copy is no longer wanted: the row as found under its lock.
fn superseded_because(found: Option<(SyncState, i64)>) -> &'static str {
    match found {
        None => {
            "the record was deleted on the primary while it was downloaded; the copy was discarded"
        }
        Some((SyncState::Started, _)) => {
            "a newer attempt is syncing the record; this attempt's copy was discarded"
        }
        Some(_) => {
            "the record changed while it was downloaded and is due to sync again; the copy was discarded"
        }
    }
}
