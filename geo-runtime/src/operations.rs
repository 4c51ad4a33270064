//! Operator actions on registries and verification state: resync and reverify one record, a
//! list, or every record in a state (Geo's `resync` / `reverify` and their bulk "all" forms).
//!
//! Bulk actions walk the table in id order, [`BATCH`] ids per short transaction, so they never
//! hold a lock on a whole table and can be stopped and run again: each step only moves rows
//! back to pending, so a second run does the same harmless thing.

use crate::db::{Database, NodeRole};
use crate::error::DbError;
use crate::registry::{Registry, SyncState};
use crate::replicator::ReplicatorDescriptor;
use crate::verification::{Checksums, VerificationState};

/// Ids per batch of a bulk action.
pub const BATCH: i64 = 1000;

/// Which records an action applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// These model ids.
    Ids(Vec<i64>),
    /// Every record, or only those in the given states.
    All {
        /// Only rows in this sync state (secondary registries).
        sync_state: Option<SyncState>,
        /// Only rows in this verification state.
        verification_state: Option<VerificationState>,
    },
}

impl Selection {
    /// Every record.
    pub const fn all() -> Self {
        Selection::All {
            sync_state: None,
            verification_state: None,
        }
    }
}

/// Where the selected ids are listed: the registry (secondary) or the verification state
/// (primary), its statements rendered once for the whole walk.
enum Listed {
    Registry(Registry),
    Checksums(Box<Checksums>),
}

impl Listed {
    fn new(
        db: &Database,
        d: &'static ReplicatorDescriptor,
        role: NodeRole,
        sync_state: Option<SyncState>,
    ) -> Result<Self, DbError> {
        match (role, sync_state) {
            (NodeRole::Secondary, _) => Ok(Listed::Registry(Registry::new(db, d))),
            (NodeRole::Primary, None) => Ok(Listed::Checksums(Box::new(Checksums::new(db, d)))),
            (NodeRole::Primary, Some(s)) => Err(DbError::InvalidValue {
                column: "state".into(),
                what: "filter on a primary, which has no sync state (filter on the verification state)",
                value: s.to_string(),
            }),
        }
    }

    /// Up to [`BATCH`] selected model ids above `after`.
    async fn ids_after(
        &self,
        after: i64,
        sync_state: Option<SyncState>,
        verification_state: Option<VerificationState>,
    ) -> Result<Vec<i64>, DbError> {
        match self {
            Listed::Registry(r) => {
                r.ids_after(after, BATCH, sync_state, verification_state)
                    .await
            }
            Listed::Checksums(c) => c.ids_after(after, BATCH, verification_state).await,
        }
    }
}

/// Calls `apply` with the selected model ids, [`BATCH`] at a time; returns the sum of what it
/// returned.
async fn for_each_batch<F, Fut>(
    db: &Database,
    d: &'static ReplicatorDescriptor,
    role: NodeRole,
    selection: &Selection,
    progress: &(dyn Fn(u64) + Send + Sync),
    mut apply: F,
) -> Result<u64, DbError>
where
    F: FnMut(Vec<i64>) -> Fut,
    Fut: Future<Output = Result<u64, DbError>>,
{
    let (sync_state, verification_state) = match selection {
        Selection::Ids(ids) => {
            let mut total = 0;
            for chunk in ids.chunks(BATCH as usize) {
                let n = apply(chunk.to_vec()).await?;
                progress(n);
                total += n;
            }
            return Ok(total);
        }
        Selection::All {
            sync_state,
            verification_state,
        } => (*sync_state, *verification_state),
    };
    let listed = Listed::new(db, d, role, sync_state)?;
    let mut after = i64::MIN;
    let mut total = 0;
    loop {
        let ids = listed
            .ids_after(after, sync_state, verification_state)
            .await?;
        let Some(last) = ids.last().copied() else {
            return Ok(total);
        };
        let full = ids.len() as i64 == BATCH;
        let n = apply(ids).await?;
        progress(n);
        total += n;
        if !full {
            return Ok(total);
        }
        after = last;
    }
}

/// The ids out of `ids` that no record has on a node of `role`: no registry row on a
/// secondary, no model record on a primary (an operator's typo, or a record since deleted).
pub async fn unknown_ids(
    db: &Database,
    role: NodeRole,
    d: &'static ReplicatorDescriptor,
    ids: &[i64],
) -> Result<Vec<i64>, DbError> {
    match role {
        NodeRole::Secondary => Registry::new(db, d).untracked(ids).await,
        NodeRole::Primary => {
            let known: std::collections::HashSet<i64> = crate::model::model_object_keys(db, d, ids)
                .await?
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            Ok(ids
                .iter()
                .copied()
                .filter(|id| !known.contains(id))
                .collect())
        }
    }
}

/// Secondary: the selected synced or failed rows go back to pending and are downloaded again.
/// Returns how many rows changed.
pub async fn resync(
    db: &Database,
    d: &'static ReplicatorDescriptor,
    selection: &Selection,
) -> Result<u64, DbError> {
    resync_with_progress(db, d, selection, &|_| {}).await
}

/// [`resync`], calling `progress` with the rows changed by each batch.
pub async fn resync_with_progress(
    db: &Database,
    d: &'static ReplicatorDescriptor,
    selection: &Selection,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<u64, DbError> {
    let registry = Registry::new(db, d);
    for_each_batch(db, d, NodeRole::Secondary, selection, progress, |ids| {
        let registry = &registry;
        async move { registry.resync(&ids).await }
    })
    .await
}

/// The selected records' verification goes back to pending: on a primary the object is
/// checksummed again; on a secondary the synced copy is hashed again and compared with the
/// primary's checksum. Returns how many rows changed.
pub async fn reverify(
    db: &Database,
    role: NodeRole,
    d: &'static ReplicatorDescriptor,
    selection: &Selection,
) -> Result<u64, DbError> {
    reverify_with_progress(db, role, d, selection, &|_| {}).await
}

/// [`reverify`], calling `progress` with the rows changed by each batch.
pub async fn reverify_with_progress(
    db: &Database,
    role: NodeRole,
    d: &'static ReplicatorDescriptor,
    selection: &Selection,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<u64, DbError> {
    let registry = Registry::new(db, d);
    let checksums = Checksums::new(db, d);
    for_each_batch(db, d, role, selection, progress, |ids| {
        let (registry, checksums) = (&registry, &checksums);
        async move {
            match role {
                NodeRole::Secondary => registry.reverify(&ids).await,
                NodeRole::Primary => checksums.reverify(&ids).await,
            }
        }
    })
    .await
}
