//! The primary's verification (checksumming) worker, Geo's `VerificationBatchWorker`: claims
//! records whose verification is pending (or failed and due) with `SKIP LOCKED` / the single
//! writer, computes the SHA-256 of each object in constant memory off the async threads, and
//! records it. Only the attempt that started a checksum may record it, so a record changed while
//! it was hashed goes back to pending rather than keeping a wrong checksum.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use sqlx::{AssertSqlSafe, Row};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::db::dialect::{Ts, now};
use crate::db::{Database, on_pool};
use crate::error::DbError;
use crate::replicator::{ReplicatorDescriptor, ReplicatorSet, model_object_keys};
use crate::retry::{self, truncate_failure};
use crate::storage::{BlobStore, ObjectKey};
use crate::strategy::blob::BlobSource;
use crate::telemetry::Metrics;
use crate::verification::VerificationState;
use crate::verification::sql::VerificationSql;

/// Tuning of the verification worker.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// Checksums at once, shared fairly across replicables (Geo's `verification_max_capacity`).
    pub verification_max_capacity: usize,
    /// Pause when there was nothing to verify.
    pub idle_wait: Duration,
    /// A checksum running longer than this is failed by the sweep (Geo: 8 h).
    pub timeout: Duration,
    /// Verified objects are checked again this long after their last verification (Geo's
    /// `minimum_reverification_interval`: 7 days; at least a day).
    pub reverify_interval: Duration,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            verification_max_capacity: 100,
            idle_wait: Duration::from_secs(1),
            timeout: Duration::from_secs(8 * 3600),
            reverify_interval: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What a verification round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyRound {
    /// Records claimed.
    pub claimed: usize,
    /// Checksums recorded.
    pub succeeded: usize,
    /// Failures recorded.
    pub failed: usize,
    /// Results dropped because the record changed while it was hashed.
    pub superseded: usize,
}

/// Rows per verification state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerificationCounts {
    /// Pending.
    pub pending: i64,
    /// Started.
    pub started: i64,
    /// Succeeded.
    pub succeeded: i64,
    /// Failed.
    pub failed: i64,
    /// Disabled.
    pub disabled: i64,
}

/// The primary's verification of every replicable in a set.
#[derive(Debug, Clone)]
pub struct PrimaryVerification<S> {
    db: Database,
    store: S,
    config: VerifyConfig,
    items: Arc<Vec<(&'static ReplicatorDescriptor, VerificationSql)>>,
    metrics: Metrics,
}

/// Counts one replicable's outcomes of a round into `geo_verification_total`.
fn count_outcomes(metrics: &Metrics, d: &ReplicatorDescriptor, succeeded: usize, failed: usize) {
    for (outcome, n) in [("succeeded", succeeded), ("failed", failed)] {
        metrics.add(
            "geo_verification_total",
            &[("replicable", d.replicable_name), ("outcome", outcome)],
            n as u64,
        );
    }
}

impl<S: BlobStore> PrimaryVerification<S> {
    /// The verification of the primary's `db` and `store`.
    pub fn new(db: &Database, set: &ReplicatorSet, store: S, config: VerifyConfig) -> Self {
        PrimaryVerification {
            items: Arc::new(
                set.descriptors()
                    .iter()
                    .map(|d| (*d, VerificationSql::new(d, db.dialect())))
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
        for (d, sql) in self.items.iter() {
            let before = (round.succeeded, round.failed);
            let started = now();
            let reverify_before = started
                .checked_sub_signed(
                    TimeDelta::from_std(self.config.reverify_interval.max(MIN_REVERIFY_INTERVAL))
                        .unwrap_or(TimeDelta::MAX),
                )
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            let mut claimed = self.claim(&sql.claim_pending, batch, started, None).await?;
            if claimed.len() < batch
                && let Some(ensure) = &sql.ensure_rows
            {
                // Records that never published an event get their state rows now.
                let created = on_pool!(self.db, write, pool => sqlx::query(AssertSqlSafe(ensure.as_str())).bind(10_000_i64).execute(pool).await?.rows_affected());
                if created > 0 {
                    claimed.extend(
                        self.claim(&sql.claim_pending, batch - claimed.len(), started, None)
                            .await?,
                    );
                }
            }
            for (claim, before) in [
                (&sql.claim_failed_due, None),
                (&sql.claim_reverify, Some(reverify_before)),
            ] {
                if claimed.len() < batch {
                    claimed.extend(
                        self.claim(claim, batch - claimed.len(), started, before)
                            .await?,
                    );
                }
            }
            round.claimed += claimed.len();
            // One query for the batch's object keys.
            let ids: Vec<i64> = claimed.iter().map(|(id, _, _)| *id).collect();
            let keys: std::collections::HashMap<i64, Option<String>> =
                model_object_keys(&self.db, d, &ids)
                    .await?
                    .into_iter()
                    .collect();
            let outcomes: Vec<Checksummed> = futures_util::stream::iter(claimed)
                .map(|(id, retries, expected)| {
                    let span = tracing::info_span!("verify", replicable = d.replicable_name, id);
                    let key = keys.get(&id).cloned();
                    async move { (id, retries, expected, self.checksum(key).await) }
                        .instrument(span)
                })
                .buffer_unordered(share)
                .collect()
                .await;
            // One write transaction records the whole batch.
            let mut tx = self.db.begin_write().await?;
            for (id, retries, expected, outcome) in outcomes {
                // A re-verification compares with the recorded checksum: a primary object that
                // changed behind our back is a primary failure, never silently re-checksummed.
                let outcome = match (outcome, &expected) {
                    (Ok(sum), Some(want)) if want.as_slice() != sum.as_slice() => Err(format!(
                        "The primary's copy no longer matches its checksum (recorded {}, now {})",
                        hex::encode(want),
                        hex::encode(sum)
                    )),
                    (other, _) => other,
                };
                let applied = match &outcome {
                    Ok(sum) => Self::record_success(tx.conn(), sql, id, started, sum).await?,
                    Err(reason) => {
                        Self::record_failure(
                            tx.conn(),
                            sql,
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
                    (true, false) => round.failed += 1,
                }
            }
            tx.commit().await?;
            count_outcomes(
                &self.metrics,
                d,
                round.succeeded - before.0,
                round.failed - before.1,
            );
        }
        Ok(round)
    }

    /// Claims with `sql` (`$1` limit, `$2` now, and `$3` verified-before when given); returns
    /// (id, failures so far, checksum to compare with).
    async fn claim(
        &self,
        sql: &str,
        limit: usize,
        at: DateTime<Utc>,
        before: Option<DateTime<Utc>>,
    ) -> Result<Vec<(i64, i32, Option<Vec<u8>>)>, DbError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        on_pool!(self.db, write, pool => {
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(limit).bind(Ts(at));
            if let Some(before) = before {
                q = q.bind(Ts(before));
            }
            let rows = q.fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i32, _>(1)?, r.try_get::<Option<Vec<u8>>, _>(2)?)))
                .collect()
        })
    }

    /// The SHA-256 of a record's object; `key` is the record's key as looked up for the batch
    /// (`None`: no such record; `Some(None)`: no object key).
    async fn checksum(&self, key: Option<Option<String>>) -> Result<[u8; 32], String> {
        let key = match key {
            Some(Some(key)) => key,
            Some(None) => {
                return Err("File is not checksummable: the record has no object key".into());
            }
            None => return Err("The model record is missing".into()),
        };
        let key = ObjectKey::parse(&key).map_err(|e| format!("File is not checksummable: {e}"))?;
        match self.store.sha256(&key).await {
            Ok(Some((_, sum))) => Ok(sum),
            Ok(None) => Err("The file is missing".into()),
            Err(e) => Err(format!("Error during verification: {e}")),
        }
    }

    async fn record_success(
        conn: crate::db::Conn<'_>,
        sql: &VerificationSql,
        id: i64,
        started: DateTime<Utc>,
        sum: &[u8; 32],
    ) -> Result<bool, DbError> {
        let n = crate::db::on_conn!(conn, c => sqlx::query(AssertSqlSafe(sql.mark_succeeded.as_str()))
            .bind(id)
            .bind(Ts(started))
            .bind(sum.as_slice())
            .bind(Ts(now()))
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    async fn record_failure(
        conn: crate::db::Conn<'_>,
        sql: &VerificationSql,
        id: i64,
        started: DateTime<Utc>,
        reason: &str,
        retries: i32,
        keep: Option<&[u8]>,
    ) -> Result<bool, DbError> {
        tracing::warn!(reason, "verification failed");
        let at = now();
        let retry_at = retry::next_retry_at(
            at,
            u32::try_from(retries.saturating_add(1)).unwrap_or(1),
            false,
        );
        let n = crate::db::on_conn!(conn, c => sqlx::query(AssertSqlSafe(sql.mark_failed.as_str()))
            .bind(id)
            .bind(Ts(started))
            .bind(truncate_failure(reason))
            .bind(Ts(at))
            .bind(Ts(retry_at))
            .bind(keep)
            .execute(&mut *c)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Checksums running longer than the timeout become failed ("Verification timed out after
    /// …"). Returns how many.
    pub async fn fail_timed_out(&self) -> Result<u64, DbError> {
        let at = now();
        let before = Ts(at
            .checked_sub_signed(TimeDelta::from_std(self.config.timeout).unwrap_or(TimeDelta::MAX))
            .unwrap_or(DateTime::<Utc>::MIN_UTC));
        let message = format!(
            "Verification timed out after {}",
            self.config.timeout.as_secs()
        );
        let mut total = 0;
        for (_, sql) in self.items.iter() {
            total += on_pool!(self.db, write, pool => sqlx::query(AssertSqlSafe(sql.fail_timed_out.as_str()))
                .bind(before)
                .bind(Ts(at + TimeDelta::seconds(16)))
                .bind(message.as_str())
                .execute(pool)
                .await?
                .rows_affected());
        }
        Ok(total)
    }

    /// Rows per verification state for `descriptor`.
    pub async fn counts(
        &self,
        descriptor: &ReplicatorDescriptor,
    ) -> Result<VerificationCounts, DbError> {
        let mut counts = VerificationCounts::default();
        let Some((_, sql)) = self
            .items
            .iter()
            .find(|(d, _)| d.replicable_name == descriptor.replicable_name)
        else {
            return Ok(counts);
        };
        let rows: Vec<(i16, i64)> = on_pool!(self.db, read, pool => sqlx::query_as(AssertSqlSafe(sql.count_by_state.as_str())).fetch_all(pool).await?);
        for (state, n) in rows {
            match VerificationState::from_i16(state) {
                Some(VerificationState::Pending) => counts.pending = n,
                Some(VerificationState::Started) => counts.started = n,
                Some(VerificationState::Succeeded) => counts.succeeded = n,
                Some(VerificationState::Failed) => counts.failed = n,
                Some(VerificationState::Disabled) => counts.disabled = n,
                None => {}
            }
        }
        Ok(counts)
    }

    /// Runs rounds until cancelled.
    pub async fn run(&self, cancel: CancellationToken) {
        super::run_rounds(
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

/// A copy claimed for verification: registry id, object key, expected checksum, failures.
type ClaimedCopy = (i64, Option<String>, Option<Vec<u8>>, i32);

/// A secondary's verification of its own copies, on its own schedule (Geo's secondaries verify
/// only when the primary publishes `checksum_succeeded`): synced rows whose copy was verified
/// longer ago than the interval are hashed again and compared with the checksum recorded when
/// the copy was written (the primary's). A mismatch or a missing file records both checksums,
/// fails the verification and puts the row back to the sync with a backoff that follows the
/// verification's failure count, which only a verified copy resets (Geo's counter bug is not
/// copied).
#[derive(Debug, Clone)]
pub struct SecondaryVerification<S> {
    tracking: Database,
    store: S,
    config: SecondaryVerifyConfig,
    items: Arc<
        Vec<(
            &'static ReplicatorDescriptor,
            crate::registry::sql::SecondaryVerificationSql,
        )>,
    >,
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
    /// Pause when there was nothing to verify.
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
            idle_wait: Duration::from_secs(60),
            disabled_recheck: Duration::from_secs(300),
            timeout: Duration::from_secs(8 * 3600),
        }
    }
}

/// The minimum re-verification interval.
pub const MIN_REVERIFY_INTERVAL: Duration = Duration::from_secs(24 * 3600);

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
                    .map(|d| {
                        (
                            *d,
                            crate::registry::sql::SecondaryVerificationSql::new(
                                d,
                                tracking.dialect(),
                            ),
                        )
                    })
                    .collect(),
            ),
            tracking: tracking.clone(),
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
        for (d, sql) in self.items.iter() {
            let before = (round.succeeded, round.failed);
            let started = now();
            let claimed: Vec<ClaimedCopy> = on_pool!(self.tracking, write, pool => {
                let rows = sqlx::query(AssertSqlSafe(sql.claim.as_str()))
                    .bind(i64::try_from(share).unwrap_or(i64::MAX))
                    .bind(Ts(started))
                    .bind(Ts(verified_before))
                    .fetch_all(pool)
                    .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get::<i64, _>("id")?, r.try_get::<Option<String>, _>("object_key")?, r.try_get::<Option<Vec<u8>>, _>("verification_checksum")?, r.try_get::<i32, _>("verification_retry_count")?)))
                    .collect::<Result<Vec<_>, DbError>>()?
            });
            round.claimed += claimed.len();
            let outcomes: Vec<_> = futures_util::stream::iter(claimed)
                .map(|(id, key, expected, retries)| async move {
                    let local = match key.as_deref().map(ObjectKey::parse) {
                        Some(Ok(k)) => self.store.sha256(&k).await.map_err(|e| e.to_string()),
                        Some(Err(e)) => Err(e.to_string()),
                        None => Ok(None),
                    };
                    (id, expected, retries, local)
                })
                .buffer_unordered(share)
                .collect()
                .await;
            for (id, expected, retries, local) in outcomes {
                let applied = match (expected, local) {
                    (None, _) => self.exec(&sql.mark_disabled, id, started).await?,
                    (Some(want), Ok(Some((_, got)))) if want.as_slice() == got.as_slice() => {
                        let n = on_pool!(self.tracking, write, pool => sqlx::query(AssertSqlSafe(sql.mark_succeeded.as_str())).bind(id).bind(Ts(started)).bind(Ts(now())).execute(pool).await?.rows_affected());
                        if n == 1 {
                            round.succeeded += 1;
                        }
                        n == 1
                    }
                    (Some(want), local) => {
                        let (reason, mismatch, got) = match local {
                            Ok(Some((_, got))) => (
                                format!(
                                    "Checksum does not match the primary checksum (primary {}, local {})",
                                    hex::encode(&want),
                                    hex::encode(got)
                                ),
                                true,
                                Some(got.to_vec()),
                            ),
                            Ok(None) => ("The local copy is missing".to_owned(), false, None),
                            Err(e) => (format!("Error during verification: {e}"), false, None),
                        };
                        tracing::warn!(registry_id = id, reason = %reason, "a local copy failed verification; resyncing it");
                        let at = now();
                        let retry_at = retry::next_retry_at(
                            at,
                            u32::try_from(retries.saturating_add(1)).unwrap_or(1),
                            false,
                        );
                        let failure = truncate_failure(&reason);
                        let sync_failure =
                            truncate_failure(&format!("Verification failed with: {reason}"));
                        let n = on_pool!(self.tracking, write, pool => sqlx::query(AssertSqlSafe(sql.mark_failed.as_str()))
                            .bind(id)
                            .bind(Ts(started))
                            .bind(failure)
                            .bind(mismatch)
                            .bind(got)
                            .bind(Ts(at))
                            .bind(Ts(retry_at))
                            .bind(sync_failure)
                            .execute(pool)
                            .await?
                            .rows_affected());
                        if n == 1 {
                            round.failed += 1;
                        }
                        n == 1
                    }
                };
                if !applied {
                    round.superseded += 1;
                }
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

    async fn exec(&self, sql: &str, id: i64, started: DateTime<Utc>) -> Result<bool, DbError> {
        let n = on_pool!(self.tracking, write, pool => sqlx::query(AssertSqlSafe(sql)).bind(id).bind(Ts(started)).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// Verifications of synced copies started before `before` and never finished (the process
    /// died, or the check hangs) go back to pending, so no copy is left out of verification.
    /// Returns how many. A node runs it at start (for checks started an hour before) and with
    /// the sync sweeper (for checks older than [`SecondaryVerifyConfig::timeout`]).
    pub async fn release_stuck(&self, before: DateTime<Utc>) -> Result<u64, DbError> {
        let mut total = 0;
        for (_, sql) in self.items.iter() {
            total += on_pool!(self.tracking, write, pool => sqlx::query(AssertSqlSafe(sql.release_stuck.as_str())).bind(Ts(before)).execute(pool).await?.rows_affected());
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
        for (d, sql) in self.items.iter() {
            let next = at + TimeDelta::from_std(recheck).unwrap_or(TimeDelta::MAX);
            let claimed: Vec<(i64, i64, Option<Vec<u8>>)> = on_pool!(self.tracking, write, pool => {
                let rows = sqlx::query(AssertSqlSafe(sql.claim_disabled.as_str()))
                    .bind(1000_i64)
                    .bind(Ts(at))
                    .bind(Ts(next))
                    .fetch_all(pool)
                    .await
                    .map_err(DbError::from)?;
                rows.iter()
                    .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?, r.try_get::<Option<Vec<u8>>, _>(2)?)))
                    .collect::<Result<Vec<_>, DbError>>()?
            });
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
                let n = if local.as_deref() == Some(want.as_slice()) {
                    round.succeeded += 1;
                    on_pool!(self.tracking, write, pool => sqlx::query(AssertSqlSafe(sql.disabled_succeeded.as_str()))
                        .bind(id)
                        .bind(Ts(now()))
                        .execute(pool)
                        .await
                        .map_err(DbError::from)?
                        .rows_affected())
                } else {
                    round.failed += 1;
                    let reason = format!(
                        "Checksum does not match the primary checksum (primary {}, local {})",
                        hex::encode(want),
                        local.as_deref().map(hex::encode).unwrap_or_default()
                    );
                    tracing::warn!(replicable = d.replicable_name, model_id, reason = %reason, "a copy differs from the primary's now-known checksum; resyncing it");
                    let at = now();
                    let retry_at = retry::next_retry_at(at, 1, false);
                    on_pool!(self.tracking, write, pool => sqlx::query(AssertSqlSafe(sql.disabled_mismatch.as_str()))
                        .bind(id)
                        .bind(truncate_failure(&reason))
                        .bind(local.as_deref())
                        .bind(Ts(at))
                        .bind(Ts(retry_at))
                        .bind(truncate_failure(&format!("Verification failed with: {reason}")))
                        .bind(want.as_slice())
                        .execute(pool)
                        .await
                        .map_err(DbError::from)?
                        .rows_affected())
                };
                if n == 0 {
                    round.superseded += 1;
                }
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
        super::run_rounds(
            &cancel,
            self.config.idle_wait,
            "secondary verification round",
            || async { self.step().await.map(|r| r.claimed > 0) },
        )
        .await;
    }
}
