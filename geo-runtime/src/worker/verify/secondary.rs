//! A secondary's verification of its own copies against the primary's checksums.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::primary::count_outcomes;
use super::{MIN_REVERIFY_INTERVAL, VerifyRound};
use crate::db::Database;
use crate::db::dialect::now;
use crate::error::DbError;
use crate::registry::{Copies, CopyFailure};
use crate::replicator::{ReplicatorDescriptor, ReplicatorSet};
use crate::retry::{self};
use crate::storage::BlobStore;
use crate::strategy::blob::BlobSource;
use crate::strategy::{self, Checksummed};
use crate::telemetry::Metrics;

/// A secondary's verification of its own copies, on its own schedule (Geo's secondaries verify
/// only when the primary publishes `checksum_succeeded`): synced rows whose copy was verified
/// longer ago than the interval are hashed again and compared with the checksum recorded when
/// the copy was written (the primary's). A mismatch or a missing file records both checksums,
/// fails the verification and puts the row back to the sync with a backoff that follows the
/// verification's failure count, which only a verified copy resets (Geo's counter bug is not
/// copied).
#[derive(Debug, Clone)]
pub struct SecondaryVerification<S> {
    store: S,
    config: SecondaryVerifyConfig,
    items: Arc<Vec<(&'static ReplicatorDescriptor, Copies)>>,
    metrics: Metrics,
}

/// Tuning of a secondary's verification.
#[derive(Debug, Clone)]
pub struct SecondaryVerifyConfig {
    /// Copies verified at once, shared across replicables.
    pub verification_max_capacity: usize,
    /// A copy is verified again this long after its last verification (default 7 days; at
    /// least one day, as Geo's minimum re-verification interval).
    pub reverify_interval: Duration,
    /// Pause when there was nothing to verify (5 s: a `geo reverify` from another process is
    /// picked up within it; an idle round is one indexed claim).
    pub idle_wait: Duration,
    /// How often a copy disabled for want of a primary checksum is looked at again.
    pub disabled_recheck: Duration,
    /// A verification running longer than this is released back to pending by the periodic
    /// sweep (a process that died mid-check, or a hung read); Geo's 8 h.
    pub timeout: Duration,
}

impl Default for SecondaryVerifyConfig {
    fn default() -> Self {
        SecondaryVerifyConfig {
            verification_max_capacity: 100,
            reverify_interval: Duration::from_secs(7 * 24 * 3600),
            idle_wait: Duration::from_secs(5),
            disabled_recheck: Duration::from_secs(300),
            timeout: Duration::from_secs(8 * 3600),
        }
    }
}

impl<S: BlobStore> SecondaryVerification<S> {
    /// The verification of `tracking`'s registries against the copies in `store`.
    pub fn new(
        tracking: &Database,
        set: &ReplicatorSet,
        store: S,
        config: SecondaryVerifyConfig,
    ) -> Self {
        SecondaryVerification {
            items: Arc::new(
                set.descriptors()
                    .iter()
                    .map(|d| (*d, Copies::new(tracking, d)))
                    .collect(),
            ),
            store,
            config,
            metrics: Metrics::default(),
        }
    }

    /// Records copies verified, by outcome, into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// One round, verifying copies last verified before `verified_before` (normally now minus
    /// the interval, never less than a day).
    pub async fn step_before(
        &self,
        verified_before: DateTime<Utc>,
    ) -> Result<VerifyRound, DbError> {
        let mut round = VerifyRound::default();
        let share = (self.config.verification_max_capacity / self.items.len().max(1)).max(1);
        for (d, copies) in self.items.iter() {
            let before = (round.succeeded, round.failed);
            let started = now();
            let claimed = copies.claim(share, started, verified_before).await?;
            round.claimed += claimed.len();
            let outcomes: Vec<_> = futures_util::stream::iter(claimed)
                .map(|copy| async move {
                    let local = match copy.key.as_deref() {
                        Some(key) => strategy::checksum(d, &self.store, key).await,
                        None => Checksummed::Missing,
                    };
                    (copy, local)
                })
                .buffer_unordered(share)
                .collect()
                .await;
            for (copy, local) in outcomes {
                let (id, retries) = (copy.id, copy.retries);
                let applied = match (copy.expected, local) {
                    (None, _) => copies.disabled(id, started).await?,
                    (Some(want), Checksummed::Sum(got)) if want.as_slice() == got.as_slice() => {
                        let ok = copies.succeeded(id, started, now()).await?;
                        round.succeeded += usize::from(ok);
                        ok
                    }
                    (Some(want), local) => {
                        let failed = Self::copy_failed(&want, local, retries);
                        tracing::warn!(replicable = d.replicable_name, id = copy.model_id, reason = %failed.reason, "a local copy failed verification; resyncing it");
                        let applied = copies.failed(id, started, failed).await?;
                        round.failed += usize::from(applied);
                        applied
                    }
                };
                round.superseded += usize::from(!applied);
            }
            count_outcomes(
                &self.metrics,
                d,
                round.succeeded - before.0,
                round.failed - before.1,
            );
        }
        Ok(round)
    }

    /// Why a copy failed its verification (`local`: its checksum, missing, or unreadable) and
    /// when to sync it again: the backoff follows the verification's failure count.
    fn copy_failed(want: &[u8], local: Checksummed, retries: i32) -> CopyFailure {
        let (reason, mismatch, got) = match local {
            Checksummed::Sum(got) => (
                format!(
                    "Checksum does not match the primary checksum (primary {}, local {})",
                    hex::encode(want),
                    hex::encode(got)
                ),
                true,
                Some(got.to_vec()),
            ),
            Checksummed::Missing => ("The local copy is missing".to_owned(), false, None),
            Checksummed::Unreadable(e) | Checksummed::Failed(e) => {
                (format!("Error during verification: {e}"), false, None)
            }
        };
        let at = now();
        CopyFailure {
            retry_at: retry::next_retry_at(
                at,
                u32::try_from(retries.saturating_add(1)).unwrap_or(1),
                false,
            ),
            at,
            reason,
            mismatch,
            got,
        }
    }

    /// Verifications of synced copies started before `before` and never finished (the process
    /// died, or the check hangs) go back to pending, so no copy is left out of verification.
    /// Returns how many. A node runs it at start (for checks started an hour before) and with
    /// the sync sweeper (for checks older than [`SecondaryVerifyConfig::timeout`]).
    pub async fn release_stuck(&self, before: DateTime<Utc>) -> Result<u64, DbError> {
        let mut total = 0;
        for (_, copies) in self.items.iter() {
            total += copies.release_stuck(before).await?;
        }
        Ok(total)
    }

    /// Looks at copies `disabled` for want of a primary checksum (at most once per `recheck`
    /// each): confirmed by the primary's checksum now → verified; different → failed and
    /// resynced; still none → left for the next look. No event is needed.
    pub async fn check_disabled(
        &self,
        client: &impl BlobSource,
        recheck: Duration,
    ) -> Result<VerifyRound, crate::events::SourceError> {
        self.check_disabled_at(client, recheck, now()).await
    }

    /// [`SecondaryVerification::check_disabled`] as of `at`: the copies whose next look is due
    /// by then.
    pub async fn check_disabled_at(
        &self,
        client: &impl BlobSource,
        recheck: Duration,
        at: DateTime<Utc>,
    ) -> Result<VerifyRound, crate::events::SourceError> {
        let mut round = VerifyRound::default();
        for (d, copies) in self.items.iter() {
            let next = at + TimeDelta::from_std(recheck).unwrap_or(TimeDelta::MAX);
            let claimed = copies.claim_disabled(1000, at, next).await?;
            if claimed.is_empty() {
                continue;
            }
            round.claimed += claimed.len();
            let ids: Vec<i64> = claimed.iter().map(|(_, model_id, _)| *model_id).collect();
            let primary: std::collections::HashMap<i64, Option<[u8; 32]>> = client
                .primary_checksums(d.replicable_name, &ids)
                .await?
                .into_iter()
                .collect();
            for (id, model_id, local) in claimed {
                let Some(Some(want)) = primary.get(&model_id) else {
                    continue;
                };
                let applied = if local.as_deref() == Some(want.as_slice()) {
                    round.succeeded += 1;
                    copies.disabled_succeeded(id, now()).await?
                } else {
                    round.failed += 1;
                    let reason = format!(
                        "Checksum does not match the primary checksum (primary {}, local {})",
                        hex::encode(want),
                        local.as_deref().map(hex::encode).unwrap_or_default()
                    );
                    tracing::warn!(replicable = d.replicable_name, model_id, reason = %reason, "a copy differs from the primary's now-known checksum; resyncing it");
                    let at = now();
                    let failure = CopyFailure {
                        reason,
                        mismatch: true,
                        got: local,
                        at,
                        retry_at: retry::next_retry_at(at, 1, false),
                    };
                    copies
                        .disabled_mismatch(id, failure, want.as_slice())
                        .await?
                };
                round.superseded += usize::from(!applied);
            }
        }
        Ok(round)
    }

    /// The periodic sweep: releases verifications running longer than the configured timeout.
    pub async fn release_timed_out(&self) -> Result<u64, DbError> {
        let timeout = TimeDelta::from_std(self.config.timeout).unwrap_or(TimeDelta::MAX);
        let before = now()
            .checked_sub_signed(timeout)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        self.release_stuck(before).await
    }

    /// One round with the configured interval.
    pub async fn step(&self) -> Result<VerifyRound, DbError> {
        let interval = self.config.reverify_interval.max(MIN_REVERIFY_INTERVAL);
        let before = now()
            .checked_sub_signed(TimeDelta::from_std(interval).unwrap_or(TimeDelta::MAX))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        self.step_before(before).await
    }

    /// Runs rounds until cancelled. Verifications a crash interrupted (started more than an hour
    /// before this process) are released first.
    pub async fn run(&self, cancel: CancellationToken) {
        match self.release_stuck(now() - TimeDelta::hours(1)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "released verifications a crash interrupted"),
            Err(e) => tracing::warn!(error = %e, "could not release interrupted verifications"),
        }
        crate::worker::run_rounds(
            &cancel,
            self.config.idle_wait,
            "secondary verification round",
            || async { self.step().await.map(|r| r.claimed > 0) },
        )
        .await;
    }
}
