//! The consistency pass (Geo's registry consistency worker, "backfill"): walks the primary's
//! model ids in ranges of [`BATCH_SIZE`], creates the registry rows that are missing (pending)
//! and removes orphan rows (their model is gone), scheduling their objects' removal. Each range
//! is its own short transaction and the position is stored with it, so a pass is resumable and
//! never holds a transaction for a whole table. Registry rows above the primary's highest id are
//! visited too.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::db::dialect::now;
use crate::db::{Conn, Database};
use crate::error::DbError;
use crate::events::{ListedVersions, Listing, ModelIdSource, SourceError};
use crate::model::versions_digest;
use crate::registry::backfill;
use crate::registry::sql::RegistrySql;
use crate::registry::store::{
    delete_many, insert_pending_many, lock_model_ids, model_ids_above, model_ids_between,
};
use crate::registry::synced::{RecordedCopy, resync_changed, synced_copies};
use crate::replicator::ReplicatorDescriptor;

/// Ids per range (Geo's `BATCH_SIZE`).
pub const BATCH_SIZE: usize = 10_000;

/// What a consistency step or pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsistencyReport {
    /// Ranges visited.
    pub ranges: usize,
    /// Registry rows created (pending).
    pub created: u64,
    /// Orphan rows removed (their objects scheduled for removal).
    pub removed: u64,
    /// Synced copies found to differ from what the primary holds now (another key, or another
    /// verified checksum: an update whose event was lost), put back to pending.
    pub changed: u64,
    /// Whether the pass reached the end and will start over from the first id.
    pub completed: bool,
}

/// The consistency pass of one tracking database.
#[derive(Debug)]
pub struct Consistency<S> {
    tracking: Database,
    source: S,
    batch_size: usize,
}

impl<S: ModelIdSource> Consistency<S> {
    /// A pass over `tracking` (the secondary's database) against the primary's ids.
    pub fn new(tracking: &Database, source: S) -> Self {
        Consistency {
            tracking: tracking.clone(),
            source,
            batch_size: BATCH_SIZE,
        }
    }

    /// Ids per range (default [`BATCH_SIZE`]).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The stored position of `descriptor`'s pass (0: at the start).
    pub async fn position(&self, descriptor: &ReplicatorDescriptor) -> Result<i64, DbError> {
        backfill::position(&self.tracking, descriptor.replicable_name).await
    }

    /// One range from the stored position: creates missing rows, removes orphans, puts back to
    /// pending the copies whose primary object changed, stores the new position, all in one
    /// short transaction.
    pub async fn step(
        &self,
        descriptor: &'static ReplicatorDescriptor,
    ) -> Result<ConsistencyReport, SourceError> {
        let sql = RegistrySql::new(descriptor, self.tracking.dialect());
        let after = self.position(descriptor).await?;
        let listed_at = now();
        let listing = self
            .source
            .listing(descriptor, after, self.batch_size)
            .await?;
        self.apply_range(descriptor, &sql, after, &listing, listed_at)
            .await
    }

    /// Steps until the pass completes, resuming from the stored position. The next range is
    /// read from the primary while the current one is written, so the two overlap.
    pub async fn run_pass(
        &self,
        descriptor: &'static ReplicatorDescriptor,
    ) -> Result<ConsistencyReport, SourceError> {
        let sql = RegistrySql::new(descriptor, self.tracking.dialect());
        let mut total = ConsistencyReport::default();
        let mut after = self.position(descriptor).await?;
        let mut listed_at = now();
        let mut listing = self
            .source
            .listing(descriptor, after, self.batch_size)
            .await?;
        loop {
            let next_after = listing.ids.last().copied();
            let next_listed_at = now();
            let (applied, next) = match next_after {
                Some(hi) => {
                    let (applied, next) = tokio::join!(
                        self.apply_range(descriptor, &sql, after, &listing, listed_at),
                        self.source.listing(descriptor, hi, self.batch_size)
                    );
                    (applied?, Some(next?))
                }
                None => (
                    self.apply_range(descriptor, &sql, after, &listing, listed_at)
                        .await?,
                    None,
                ),
            };
            listed_at = next_listed_at;
            total.ranges += applied.ranges;
            total.created += applied.created;
            total.removed += applied.removed;
            total.changed += applied.changed;
            if applied.completed {
                total.completed = true;
                return Ok(total);
            }
            if let (Some(hi), Some(next)) = (next_after, next) {
                after = hi;
                listing = next;
            } else {
                // More orphans above `after` than one range: the next range starts there again.
                listing = Listing::default();
            }
        }
    }

    /// Reconciles the range `(after, last listed id]` (or, with no ids, the orphans above
    /// `after`) in one transaction, storing the new position with it. `listing` is the primary's
    /// as of `listed_at`: rows created after it (by the event cursor, for records newer than the
    /// listing) are never taken for orphans.
    async fn apply_range(
        &self,
        descriptor: &'static ReplicatorDescriptor,
        sql: &RegistrySql,
        after: i64,
        listing: &Listing,
        listed_at: DateTime<Utc>,
    ) -> Result<ConsistencyReport, SourceError> {
        let ids = listing.ids.as_slice();
        // Read before the write transaction: it may ask the primary for the range's versions.
        let changed = match (ids.last(), &listing.versions) {
            (Some(&hi), Some(listed)) => {
                self.changed_copies(descriptor, sql, after, hi, ids, listed)
                    .await?
            }
            _ => Vec::new(),
        };
        let at = now();
        let mut report = ConsistencyReport {
            ranges: 1,
            ..ConsistencyReport::default()
        };
        let mut tx = self.tracking.begin_write().await?;
        match ids.last() {
            Some(&hi) => {
                let tracked = model_ids_between(tx.conn(), sql, after + 1, hi, listed_at).await?;
                let (missing, orphans) = diff_sorted(ids, &tracked);
                let touched: Vec<i64> = orphans
                    .iter()
                    .copied()
                    .chain(changed.iter().map(|c| c.model_id))
                    .collect();
                lock_model_ids(tx.conn(), sql, &touched).await?;
                report.created = insert_pending_many(tx.conn(), sql, &missing, at).await?;
                report.removed = remove_orphans(tx.conn(), sql, descriptor, &orphans, at).await?;
                report.changed = resync_changed(tx.conn(), sql, &changed).await?;
                backfill::store_position(tx.conn(), descriptor.replicable_name, hi, at).await?;
            }
            None => {
                // The primary has nothing above `after`: every row above it is an orphan.
                let limit = i64::try_from(self.batch_size).unwrap_or(i64::MAX);
                let orphans = model_ids_above(tx.conn(), sql, after, limit, listed_at).await?;
                lock_model_ids(tx.conn(), sql, &orphans).await?;
                report.removed = remove_orphans(tx.conn(), sql, descriptor, &orphans, at).await?;
                if (orphans.len() as i64) < limit {
                    backfill::store_position(tx.conn(), descriptor.replicable_name, 0, at).await?;
                    report.completed = true;
                }
            }
        }
        tx.commit().await?;
        if report.changed > 0 {
            tracing::warn!(
                replicable = descriptor.replicable_name,
                after,
                changed = report.changed,
                ids = ?changed.iter().map(|c| c.model_id).collect::<Vec<_>>(),
                "copies differ from what the primary holds now (an update without its event); syncing them again"
            );
        }
        if report.created > 0 || report.removed > 0 {
            tracing::info!(
                replicable = descriptor.replicable_name,
                after,
                created = report.created,
                removed = report.removed,
                "registry consistency"
            );
        }
        Ok(report)
    }

    /// The synced copies in `(after, hi]` that differ from what the primary holds now. The
    /// registry's rows are hashed the way the primary hashed its page: when the digests agree,
    /// nothing differs; otherwise the range's versions are fetched and compared row by row. A
    /// copy differs when its key is not the record's, or when both checksums are known and not
    /// equal (a checksum the primary has not verified yet is compared once it is).
    async fn changed_copies(
        &self,
        descriptor: &'static ReplicatorDescriptor,
        sql: &RegistrySql,
        after: i64,
        hi: i64,
        ids: &[i64],
        listed: &ListedVersions,
    ) -> Result<Vec<RecordedCopy>, SourceError> {
        let copies: HashMap<i64, RecordedCopy> = synced_copies(&self.tracking, sql, after, hi)
            .await?
            .into_iter()
            .map(|c| (c.model_id, c))
            .collect();
        if copies.is_empty() {
            // Nothing synced here yet (a backfill): nothing to compare.
            return Ok(Vec::new());
        }
        let unverified: HashSet<i64> = listed.unverified.iter().copied().collect();
        // Our side of the digest; a listed record without a synced copy (or with no checksum
        // where the primary has one) cannot match.
        let mut ours = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(copy) = copies.get(id) else { break };
            let sum = if unverified.contains(id) {
                None
            } else if let Some(sum) = &copy.sha256 {
                Some(sum)
            } else {
                break;
            };
            ours.push((*id, copy.key.as_deref(), sum));
        }
        if ours.len() == ids.len() && versions_digest(ours) == listed.digest {
            return Ok(Vec::new());
        }
        let versions = self.source.versions_between(descriptor, after, hi).await?;
        Ok(versions
            .into_iter()
            .filter_map(|v| {
                let copy = copies.get(&v.id)?;
                let moved = v.key != copy.key;
                let rewritten = matches!((&v.sha256, &copy.sha256), (Some(p), Some(c)) if p != c);
                (moved || rewritten).then(|| copy.clone())
            })
            .collect())
    }
}

/// (in `source` but not `tracked`, in `tracked` but not `source`); both sorted ascending.
fn diff_sorted(source: &[i64], tracked: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let (mut missing, mut orphans) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < source.len() || j < tracked.len() {
        match (source.get(i), tracked.get(j)) {
            (Some(s), Some(t)) if s == t => {
                i += 1;
                j += 1;
            }
            (Some(s), Some(t)) if s < t => {
                missing.push(*s);
                i += 1;
            }
            (Some(_), Some(t)) => {
                orphans.push(*t);
                j += 1;
            }
            (Some(s), None) => {
                missing.push(*s);
                i += 1;
            }
            (None, Some(t)) => {
                orphans.push(*t);
                j += 1;
            }
            (None, None) => break,
        }
    }
    (missing, orphans)
}

async fn remove_orphans(
    mut conn: Conn<'_>,
    sql: &RegistrySql,
    descriptor: &ReplicatorDescriptor,
    orphans: &[i64],
    at: DateTime<Utc>,
) -> Result<u64, DbError> {
    if orphans.is_empty() {
        return Ok(0);
    }
    let deleted = delete_many(conn.reborrow(), sql, orphans).await?;
    crate::removals::schedule(conn, descriptor.replicable_name, &deleted, at).await?;
    Ok(deleted.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::diff_sorted;

    #[test]
    fn diff_of_sorted_ids() {
        assert_eq!(
            diff_sorted(&[1, 2, 3, 5], &[2, 4, 5, 6]),
            (vec![1, 3], vec![4, 6])
        );
        assert_eq!(diff_sorted(&[], &[1]), (vec![], vec![1]));
        assert_eq!(diff_sorted(&[1], &[]), (vec![1], vec![]));
    }
}
