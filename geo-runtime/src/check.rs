//! Compares a secondary with its primary object by object, as `rclone check` compares two trees:
//! every record the primary has must have a synced row here and a local copy whose SHA-256 is the
//! primary's checksum; every row here must still exist on the primary.
//!
//! The check reads the primary's ids and checksums over the node API, page by page, and merges
//! them with the registry in id order, so memory stays flat however many records there are. It
//! hashes the local copies itself (it never trusts the registry's recorded checksum), and changes
//! nothing.
//!
//! [`extra_files`] looks at the store as a whole: every file must be a copy some registry row is
//! recorded with (or one waiting for removal); the others are reported as `rclone check` reports
//! files only on the destination. [`delete_extra`] deletes them, each under its key's lock.

use std::collections::{HashMap, HashSet};

use futures_util::StreamExt;

use crate::db::Database;
use crate::db::dialect::TextList;
use crate::db::lock::lock_object_keys;
use crate::error::DbError;
use crate::events::ModelIdSource;
use crate::events::SourceError;
use crate::registry::{Registry, SyncState};
use crate::removals;
use crate::replicator::{ReplicatorDescriptor, ReplicatorSet};
use crate::storage::{BlobStore, ObjectKey, StorageError};
use crate::store_checks;
use crate::strategy::blob::BlobSource;
use crate::strategy::{self, Checksummed};

/// Primary ids read per page.
const PAGE: usize = 5_000;

/// Local copies hashed at once.
const HASHING: usize = 4;

/// A check could not run to the end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The tracking database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The primary could not be asked.
    #[error("asking the primary failed: {0}")]
    Primary(#[from] SourceError),
    /// The local store could not be listed.
    #[error("listing the local store failed: {0}")]
    Store(StorageError),
}

/// One object that is not as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The primary has the record; there is no good copy here.
    Missing {
        /// The model id.
        id: i64,
        /// The object key, when known.
        key: Option<String>,
        /// Why: no registry row, not synced yet, or the file is gone.
        reason: String,
    },
    /// The local copy's SHA-256 is not the primary's checksum.
    Differs {
        /// The model id.
        id: i64,
        /// The object key.
        key: String,
        /// The primary's checksum, hex.
        primary: String,
        /// The local copy's, hex.
        local: String,
    },
    /// A row here whose record the primary no longer has.
    Extra {
        /// The model id.
        id: i64,
        /// The object key, when known.
        key: Option<String>,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = |k: &Option<String>| k.clone().unwrap_or_else(|| "-".into());
        match self {
            Difference::Missing { id, key: k, reason } => {
                write!(f, "{id} ({}): missing on the secondary: {reason}", key(k))
            }
            Difference::Differs {
                id,
                key,
                primary,
                local,
            } => write!(
                f,
                "{id} ({key}): checksums differ: primary {primary}, secondary {local}"
            ),
            Difference::Extra { id, key: k } => {
                write!(
                    f,
                    "{id} ({}): on the secondary but not on the primary",
                    key(k)
                )
            }
        }
    }
}

/// What the check of one replicable found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Records on the primary.
    pub primary_records: u64,
    /// Copies whose SHA-256 equals the primary's checksum.
    pub matching: u64,
    /// Copies present here whose primary has no checksum yet (nothing to compare with).
    pub unverifiable: u64,
    /// Everything that differs.
    pub differences: Vec<Difference>,
}

/// A local copy looked at: (model id, object key, its SHA-256 or why there is none).
type Hashed = (i64, Option<String>, Result<Option<[u8; 32]>, String>);

/// Checks one replicable of a secondary (`tracking`, `store`) against its primary (`client`,
/// the node's client in the CLI). `on_difference` sees each difference as it is found (to print
/// it at once).
pub async fn check_replicable<S: BlobStore, C: ModelIdSource + BlobSource>(
    tracking: &Database,
    d: &'static ReplicatorDescriptor,
    client: &C,
    store: &S,
    mut on_difference: impl FnMut(&Difference),
) -> Result<CheckReport, CheckError> {
    let mut report = CheckReport::default();
    let mut found = |report: &mut CheckReport, diff: Difference| {
        on_difference(&diff);
        report.differences.push(diff);
    };
    let registry = Registry::new(tracking, d);
    let mut after = i64::MIN;
    loop {
        let ids = client.model_ids_after(d, after, PAGE).await?;
        let last_page = ids.len() < PAGE;
        let upto = if last_page {
            i64::MAX
        } else {
            ids.last().copied().unwrap_or(i64::MAX)
        };
        let rows = registry.rows_between(after, upto).await?;
        let checksums: HashMap<i64, Option<[u8; 32]>> = client
            .primary_checksums(d.replicable_name, &ids)
            .await?
            .into_iter()
            .collect();
        report.primary_records += ids.len() as u64;
        let mut local: HashMap<i64, (SyncState, Option<String>)> =
            HashMap::with_capacity(rows.len());
        for (id, state, key) in rows {
            if ids.binary_search(&id).is_err() {
                found(&mut report, Difference::Extra { id, key });
            } else {
                local.insert(id, (state, key));
            }
        }
        let hashed = hash_local_copies(d, store, &ids, &local).await;
        for (id, key, sum) in hashed {
            let primary = checksums.get(&id).copied().flatten();
            if let Some(diff) = compare(&mut report, id, key, sum, primary) {
                found(&mut report, diff);
            }
        }
        if last_page {
            return Ok(report);
        }
        after = upto;
    }
}

/// The local copy of each of `ids` hashed, `HASHING` at once, or why there is none to hash.
async fn hash_local_copies<S: BlobStore>(
    d: &ReplicatorDescriptor,
    store: &S,
    ids: &[i64],
    local: &HashMap<i64, (SyncState, Option<String>)>,
) -> Vec<Hashed> {
    futures_util::stream::iter(ids.iter().copied())
        .map(|id| {
            let row = local.get(&id).cloned();
            async move {
                match row {
                    None => (id, None, Err("no registry row".to_owned())),
                    Some((state, key)) if state != SyncState::Synced => {
                        (id, key, Err(format!("not synced (state {state})")))
                    }
                    Some((_, None)) => (id, None, Err("synced without a key".to_owned())),
                    Some((_, Some(key))) => {
                        let sum = match strategy::checksum(d, store, &key).await {
                            Checksummed::Sum(sum) => Ok(Some(sum)),
                            Checksummed::Missing => Ok(None),
                            Checksummed::Unreadable(e) | Checksummed::Failed(e) => Err(e),
                        };
                        (id, Some(key), sum)
                    }
                }
            }
        })
        .buffered(HASHING)
        .collect()
        .await
}

/// A copy against the primary's checksum: a difference, or counted as matching or not yet
/// verifiable.
fn compare(
    report: &mut CheckReport,
    id: i64,
    key: Option<String>,
    sum: Result<Option<[u8; 32]>, String>,
    primary: Option<[u8; 32]>,
) -> Option<Difference> {
    match (sum, primary) {
        (Err(reason), _) => Some(Difference::Missing { id, key, reason }),
        (Ok(None), _) => Some(Difference::Missing {
            id,
            key,
            reason: "the file is gone".into(),
        }),
        (Ok(Some(_)), None) => {
            report.unverifiable += 1;
            None
        }
        (Ok(Some(local)), Some(primary)) if local == primary => {
            report.matching += 1;
            None
        }
        (Ok(Some(local)), Some(primary)) => Some(Difference::Differs {
            id,
            key: key.unwrap_or_default(),
            primary: hex::encode(primary),
            local: hex::encode(local),
        }),
    }
}

/// What the store holds that no registry row accounts for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreReport {
    /// Files in the store (temp files of writes under way left out).
    pub files: u64,
    /// Files no registry row is recorded with, and none waits for removal: a copy that
    /// outlived its record (`+ path: extra on the secondary`), sorted.
    pub extra: Vec<String>,
    /// Files waiting in `geo_blob_removals` (the removal worker deletes them within a second
    /// or so on a running secondary).
    pub pending_removal: u64,
}

/// Keys out of `keys` that some registry row of `set` is recorded with, or that wait for
/// removal, read on `conn` (a caller's transaction, to decide under its locks).
async fn accounted_for(
    tracking: &Database,
    mut conn: crate::db::Conn<'_>,
    set: &ReplicatorSet,
    keys: &[String],
) -> Result<(HashSet<String>, HashSet<String>), DbError> {
    let list = TextList(keys.iter().cloned().map(Some).collect());
    let mut recorded = HashSet::new();
    for desc in set.descriptors() {
        let registry = Registry::new(tracking, desc);
        recorded.extend(registry.object_keys_among(conn.reborrow(), &list).await?);
    }
    let waiting = removals::waiting_among(conn, list).await?;
    Ok((recorded, waiting.into_iter().collect()))
}

/// Extra files decided and deleted in one transaction (each statement scans the registries).
const KEYS_PER_LOOKUP: usize = 1000;

/// Lists `store` and reports the files no registry row of `set` accounts for, as `rclone check`
/// reports files only on the destination. Records the result in `geo_store_checks`, which the
/// secondary's status shows. The store is listed first and the registries read after, so a
/// copy published meanwhile is found with its row. Each registry is read once, its keys held in
/// memory with the listing's (about 100 bytes a file).
pub async fn extra_files<S: BlobStore>(
    tracking: &Database,
    set: &ReplicatorSet,
    store: &S,
) -> Result<StoreReport, CheckError> {
    let keys = store.list_keys().await.map_err(CheckError::Store)?;
    let mut recorded: HashSet<String> = HashSet::new();
    for d in set.descriptors() {
        recorded.extend(Registry::new(tracking, d).object_keys().await?);
    }
    let waiting: HashSet<String> = removals::waiting_keys(tracking)
        .await?
        .into_iter()
        .collect();
    let mut report = StoreReport {
        files: keys.len() as u64,
        ..StoreReport::default()
    };
    for key in keys {
        if waiting.contains(&key) {
            report.pending_removal += 1;
        } else if !recorded.contains(&key) {
            report.extra.push(key);
        }
    }
    store_checks::record(tracking, report.files, report.extra.len() as u64).await?;
    Ok(report)
}

/// What deleting one extra file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtraRemoval {
    /// Deleted.
    Deleted,
    /// Kept: a row is recorded with it now, or it waits for removal (it was published or
    /// scheduled after the listing).
    InUse,
    /// Kept: not a safe object key (a file put there by hand); remove it yourself.
    UnsafeKey(String),
    /// The store could not delete it.
    Failed(String),
}

/// Deletes the extra files of `report` (from [`extra_files`]), each only while still
/// unaccounted for: decided under the keys' locks, the ones the sync holds while it publishes
/// and records a copy, so a copy published since the listing is never deleted. Records what is
/// left.
pub async fn delete_extra<S: BlobStore>(
    tracking: &Database,
    set: &ReplicatorSet,
    store: &S,
    report: &StoreReport,
) -> Result<Vec<(String, ExtraRemoval)>, CheckError> {
    let mut out = Vec::with_capacity(report.extra.len());
    for chunk in report.extra.chunks(KEYS_PER_LOOKUP) {
        let mut tx = tracking.begin_write().await?;
        lock_object_keys(
            tx.conn(),
            chunk.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await?;
        let (recorded, waiting) = accounted_for(tracking, tx.conn(), set, chunk).await?;
        let mut to_delete = Vec::new();
        for key in chunk {
            if recorded.contains(key) || waiting.contains(key) {
                out.push((key.clone(), ExtraRemoval::InUse));
                continue;
            }
            match ObjectKey::parse(key) {
                Ok(k) => to_delete.push((key.clone(), k)),
                Err(e) => out.push((key.clone(), ExtraRemoval::UnsafeKey(e.to_string()))),
            }
        }
        let deleted = store
            .delete_many(to_delete.iter().map(|(_, k)| k.clone()).collect())
            .await;
        for ((key, _), result) in to_delete.into_iter().zip(deleted) {
            out.push((
                key,
                match result {
                    Ok(_) => ExtraRemoval::Deleted,
                    Err(e) => ExtraRemoval::Failed(e.to_string()),
                },
            ));
        }
        tx.commit().await?;
    }
    let count = |what: fn(&ExtraRemoval) -> bool| out.iter().filter(|(_, r)| what(r)).count();
    let deleted = count(|r| matches!(r, ExtraRemoval::Deleted)) as u64;
    let left = count(|r| !matches!(r, ExtraRemoval::Deleted | ExtraRemoval::InUse)) as u64;
    store_checks::record(tracking, report.files.saturating_sub(deleted), left).await?;
    Ok(out)
}
