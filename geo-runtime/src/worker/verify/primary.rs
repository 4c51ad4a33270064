//! The primary's verification (checksumming) worker, Geo's `VerificationBatchWorker`: claims
//! records whose verification is pending (or failed and due) with `SKIP LOCKED` / the single
//! writer, computes the SHA-256 of each object in constant memory off the async threads, and
//! records it. Only the attempt that started a checksum may record it, so a record changed while
//! it was hashed goes back to pending rather than keeping a wrong checksum.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{MIN_REVERIFY_INTERVAL, VerifyConfig, VerifyRound};
use crate::db::Database;
use crate::db::dialect::now;
use crate::error::DbError;
use crate::replicator::{ReplicatorDescriptor, ReplicatorSet, model_object_keys};
use crate::retry::{self};
use crate::storage::BlobStore;
use crate::strategy::{self, Checksummed as Local};
use crate::telemetry::Metrics;
use crate::verification::VerificationCounts;
use crate::verification::{Checksums, ClaimedRecord, Due};

/// The primary's verification of every replicable in a set.
#[derive(Debug, Clone)]
pub struct PrimaryVerification<S> {
    db: Database,
    store: S,
    config: VerifyConfig,
    items: Arc<Vec<(&'static ReplicatorDescriptor, Checksums)>>,
    metrics: Metrics,
}

/// Counts one replicable's outcomes of a round into `geo_verification_total`.
pub(super) fn count_outcomes(
    metrics: &Metrics,
    d: &ReplicatorDescriptor,
    succeeded: usize,
    failed: usize,
) {
    for (outcome, n) in [("succeeded", succeeded), ("failed", failed)] {
        metrics.verifications(d.replicable_name, outcome, n as u64);
    }
}

impl<S: BlobStore> PrimaryVerification<S> {
    /// The verification of the primary's `db` and `store`.
    pub fn new(db: &Database, set: &ReplicatorSet, store: S, config: VerifyConfig) -> Self {
        PrimaryVerification {
            items: Arc::new(
                set.descriptors()
                    .iter()
                    .map(|d| (*d, Checksums::new(db, d)))
                    .collect(),
            ),
            db: db.clone(),
            store,
            config,
            metrics: Metrics::default(),
        }
    }

    /// Records checksums computed, by outcome, into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// One round: claims a batch per replicable (pending first, then failed and due, then due
    /// for re-verification) and checksums it, each replicable's share of the capacity at once.
    /// Missing state rows are created when a replicable runs out of pending work.
    pub async fn step(&self) -> Result<VerifyRound, DbError> {
        let mut round = VerifyRound::default();
        let share = (self.config.verification_max_capacity / self.items.len().max(1)).max(1);
        // A batch is a few rounds of the concurrency (Geo claims 10 per job), so claims and
        // their queries are amortised even with one worker.
        let batch = (share * 4).max(10);
        for (d, checksums) in self.items.iter() {
            let before = (round.succeeded, round.failed);
            let started = now();
            let claimed = self.claim_batch(checksums, batch, started).await?;
            round.claimed += claimed.len();
            let outcomes = self.checksum_all(d, claimed, share).await?;
            self.record_all(d, checksums, outcomes, started, &mut round)
                .await?;
            count_outcomes(
                &self.metrics,
                d,
                round.succeeded - before.0,
                round.failed - before.1,
            );
        }
        Ok(round)
    }

    /// Up to `batch` records due: pending first (records that never published an event get
    /// their state rows on the way), then failed and due, then due for re-verification.
    async fn claim_batch(
        &self,
        checksums: &Checksums,
        batch: usize,
        started: DateTime<Utc>,
    ) -> Result<Vec<ClaimedRecord>, DbError> {
        let reverify_before = started
            .checked_sub_signed(
                TimeDelta::from_std(self.config.reverify_interval.max(MIN_REVERIFY_INTERVAL))
                    .unwrap_or(TimeDelta::MAX),
            )
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut claimed = checksums.claim(Due::Pending, batch, started).await?;
        // Records that never published an event get their state rows now.
        if claimed.len() < batch && checksums.ensure_rows(10_000).await? > 0 {
            let more = checksums
                .claim(Due::Pending, batch - claimed.len(), started)
                .await?;
            claimed.extend(more);
        }
        for due in [Due::Retry, Due::VerifiedBefore(reverify_before)] {
            if claimed.len() < batch {
                let more = checksums.claim(due, batch - claimed.len(), started).await?;
                claimed.extend(more);
            }
        }
        Ok(claimed)
    }

    /// Checksums the claimed records' objects, `share` at once. A re-verification compares
    /// with the recorded checksum: a primary object that changed behind our back is a primary
    /// failure, never silently re-checksummed.
    async fn checksum_all(
        &self,
        d: &ReplicatorDescriptor,
        claimed: Vec<ClaimedRecord>,
        share: usize,
    ) -> Result<Vec<Checksummed>, DbError> {
        // One query for the batch's object keys.
        let ids: Vec<i64> = claimed.iter().map(|(id, _, _)| *id).collect();
        let keys: std::collections::HashMap<i64, Option<String>> =
            model_object_keys(&self.db, d, &ids)
                .await?
                .into_iter()
                .collect();
        Ok(futures_util::stream::iter(claimed)
            .map(|(id, retries, expected)| {
                let span = tracing::info_span!("verify", replicable = d.replicable_name, id);
                let key = keys.get(&id).cloned();
                async move {
                    let outcome = match (self.checksum(d, key).await, &expected) {
                        (Ok(sum), Some(want)) if want.as_slice() != sum.as_slice() => Err(format!(
                            "The primary's copy no longer matches its checksum (recorded {}, now {})",
                            hex::encode(want),
                            hex::encode(sum)
                        )),
                        (other, _) => other,
                    };
                    (id, retries, expected, outcome)
                }
                .instrument(span)
            })
            .buffer_unordered(share)
            .collect()
            .await)
    }

    /// Records a batch's outcomes in one write transaction (each only for the attempt that
    /// started it).
    async fn record_all(
        &self,
        d: &ReplicatorDescriptor,
        checksums: &Checksums,
        outcomes: Vec<Checksummed>,
        started: DateTime<Utc>,
        round: &mut VerifyRound,
    ) -> Result<(), DbError> {
        let mut tx = self.db.begin_write().await?;
        for (id, retries, expected, outcome) in outcomes {
            let applied = match &outcome {
                Ok(sum) => {
                    checksums
                        .succeeded_in(tx.conn(), id, started, sum, now())
                        .await?
                }
                Err(reason) => {
                    Self::record_failure(
                        tx.conn(),
                        checksums,
                        id,
                        started,
                        reason,
                        retries,
                        expected.as_deref(),
                    )
                    .await?
                }
            };
            let span = tracing::info_span!("verify", replicable = d.replicable_name, id);
            let _entered = span.enter();
            match (applied, outcome.is_ok()) {
                (false, _) => {
                    tracing::debug!("checksum dropped: the record changed while it was hashed");
                    round.superseded += 1;
                }
                (true, true) => {
                    tracing::debug!("verification succeeded");
                    round.succeeded += 1;
                }
                (true, false) => {
                    let reason = outcome.as_ref().err().map_or("", String::as_str);
                    tracing::warn!(
                        replicable = d.replicable_name,
                        id,
                        reason,
                        "verification failed"
                    );
                    round.failed += 1;
                }
            }
        }
        tx.commit().await
    }

    /// The SHA-256 of a record's object; `key` is the record's key as looked up for the batch
    /// (`None`: no such record; `Some(None)`: no object key).
    async fn checksum(
        &self,
        d: &ReplicatorDescriptor,
        key: Option<Option<String>>,
    ) -> Result<[u8; 32], String> {
        let key = match key {
            Some(Some(key)) => key,
            Some(None) => {
                return Err("File is not checksummable: the record has no object key".into());
            }
            None => return Err("The model record is missing".into()),
        };
        match strategy::checksum(d, &self.store, &key).await {
            Local::Sum(sum) => Ok(sum),
            Local::Missing => Err("The file is missing".into()),
            Local::Unreadable(e) => Err(format!("File is not checksummable: {e}")),
            Local::Failed(e) => Err(format!("Error during verification: {e}")),
        }
    }

    /// Records a failed checksum with the backoff after `retries` failures.
    async fn record_failure(
        conn: crate::db::Conn<'_>,
        checksums: &Checksums,
        id: i64,
        started: DateTime<Utc>,
        reason: &str,
        retries: i32,
        keep: Option<&[u8]>,
    ) -> Result<bool, DbError> {
        let at = now();
        let retry_at = retry::next_retry_at(
            at,
            u32::try_from(retries.saturating_add(1)).unwrap_or(1),
            false,
        );
        checksums
            .failed_in(conn, id, started, reason, at, retry_at, keep)
            .await
    }

    /// Checksums running longer than the timeout become failed ("Verification timed out after
    /// …"). Returns how many.
    pub async fn fail_timed_out(&self) -> Result<u64, DbError> {
        let at = now();
        let before = at
            .checked_sub_signed(TimeDelta::from_std(self.config.timeout).unwrap_or(TimeDelta::MAX))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let message = format!(
            "Verification timed out after {}",
            self.config.timeout.as_secs()
        );
        let mut total = 0;
        for (_, checksums) in self.items.iter() {
            total += checksums
                .fail_timed_out(before, at + TimeDelta::seconds(16), &message)
                .await?;
        }
        Ok(total)
    }

    /// Rows per verification state for `descriptor`.
    pub async fn counts(
        &self,
        descriptor: &ReplicatorDescriptor,
    ) -> Result<VerificationCounts, DbError> {
        let Some((_, checksums)) = self
            .items
            .iter()
            .find(|(d, _)| d.replicable_name == descriptor.replicable_name)
        else {
            return Ok(VerificationCounts::default());
        };
        checksums.counts().await
    }

    /// Runs rounds until cancelled.
    pub async fn run(&self, cancel: CancellationToken) {
        crate::worker::run_rounds(
            &cancel,
            self.config.idle_wait,
            "verification round",
            || async { self.step().await.map(|r| r.claimed > 0) },
        )
        .await;
    }
}

/// A checksum attempt: id, failures so far, the checksum to compare with, and the outcome.
type Checksummed = (i64, i32, Option<Vec<u8>>, Result<[u8; 32], String>);
