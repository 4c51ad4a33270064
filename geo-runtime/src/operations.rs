//! Operator actions on registries and verification state: resync and reverify one record, a
//! list, or every record in a state (Geo's `resync` / `reverify` and their bulk "all" forms).
//!
//! Bulk actions walk the table in id order, [`BATCH`] ids per short transaction, so they never
//! hold a lock on a whole table and can be stopped and run again: each step only moves rows
//! back to pending, so a second run does the same harmless thing.

use sqlx::AssertSqlSafe;

use crate::db::dialect::{IdList, in_id_list, param, quote};
use crate::db::{Database, NodeRole, on_pool};
use crate::error::DbError;
use crate::registry::{Registry, SyncState};
use crate::replicator::{ReplicatorDescriptor, VerificationStorage};
use crate::verification::VerificationState;

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

/// Where a replicable's records and states live on a node of `role`: (table, model id column).
fn table_and_key(d: &ReplicatorDescriptor, role: NodeRole) -> (&'static str, &'static str) {
    match (role, d.verification) {
        (NodeRole::Secondary, _) => (d.registry_table, d.model_foreign_key),
        (NodeRole::Primary, VerificationStorage::Inline) => (d.model_table, d.model_id_column),
        (NodeRole::Primary, VerificationStorage::SeparateTable { table }) => {
            (table, d.model_foreign_key)
        }
    }
}

/// Calls `apply` with the selected model ids, [`BATCH`] at a time; returns the sum of what it
/// returned.
async fn for_each_batch<F, Fut>(
    db: &Database,
    d: &ReplicatorDescriptor,
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
    let (table, key) = table_and_key(d, role);
    let p = |n| param(db.dialect(), n);
    let mut filter = String::new();
    if sync_state.is_some() {
        filter.push_str(&format!(" AND \"state\" = {}", p(3)));
    }
    if verification_state.is_some() {
        let n = if sync_state.is_some() { 4 } else { 3 };
        filter.push_str(&format!(" AND \"verification_state\" = {}", p(n)));
    }
    let sql = format!(
        "SELECT {key} FROM {table} WHERE {key} > {}{filter} ORDER BY {key} LIMIT {}",
        p(1),
        p(2),
        key = quote(key),
        table = quote(table),
    );
    let mut after = i64::MIN;
    let mut total = 0;
    loop {
        let ids: Vec<i64> = on_pool!(db, read, pool => {
            let mut q = sqlx::query_scalar(AssertSqlSafe(sql.as_str())).bind(after).bind(BATCH);
            if let Some(s) = sync_state {
                q = q.bind(s as i16);
            }
            if let Some(s) = verification_state {
                q = q.bind(s as i16);
            }
            q.fetch_all(pool).await?
        });
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
    let (table, key) = table_and_key(d, role);
    let only_synced = if role == NodeRole::Secondary {
        " AND \"state\" = 2"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE {} SET \"verification_state\" = 0, \"verification_retry_count\" = 0, \
         \"verification_retry_at\" = NULL, \"verification_failure\" = NULL \
         WHERE {}{only_synced} AND \"verification_state\" <> 1",
        quote(table),
        in_id_list(db.dialect(), &quote(key), 1)
    );
    let sql = sql.as_str();
    for_each_batch(db, d, role, selection, progress, |ids| async move {
        let ids = IdList(ids);
        Ok(on_pool!(db, write, pool => sqlx::query(AssertSqlSafe(sql)).bind(ids).execute(pool).await?.rows_affected()))
    })
    .await
}
