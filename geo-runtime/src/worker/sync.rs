//! The secondary's blob sync (Geo's registry sync worker + blob downloader): claims due registry
//! rows, `files_max_capacity` at a time, downloads each object from the primary into the local
//! store (temp file, SHA-256 while streaming, checked against the primary's checksum and size,
//! fsync, rename, directory fsync), then marks the batch synced, or failed with the reason and
//! Geo's backoff. A row is marked synced only after its bytes are durable, and only by the
//! attempt that claimed it.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::db::Database;
use crate::db::dialect::now;
use crate::error::DbError;
use crate::flags;
use crate::node::{FILE_NOT_FOUND, HEADER_OBJECT_KEY, HEADER_SHA256, PrimaryClient};
use crate::registry::{ClaimedRow, Registry, SyncFailure, SyncedCopy};
use crate::replicator::{ReplicatorDescriptor, ReplicatorSet};
use crate::storage::{BlobStore, LocalStore, ObjectKey, parse_sha256};
use crate::telemetry::Metrics;

/// Objects up to this size are read whole and written in one step; larger ones are streamed.
pub const SMALL_OBJECT: u64 = 1024 * 1024;

/// Rows claimed per replicable and round, as a multiple of the capacity, so that a slow download
/// does not leave the other slots idle until the round ends.
const CLAIM_FACTOR: usize = 4;

/// Tuning of the blob sync.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Downloads at once (Geo's `files_max_capacity`, default 10).
    pub files_max_capacity: usize,
    /// Pause when there was nothing to sync.
    pub idle_wait: Duration,
    /// Objects larger than this are refused (the row fails with the reason); `None`: no limit.
    pub max_object_size: Option<u64>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            files_max_capacity: 10,
            idle_wait: Duration::from_secs(1),
            max_object_size: None,
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncRound {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows marked synced.
    pub synced: usize,
    /// Rows marked failed.
    pub failed: usize,
    /// Bytes downloaded.
    pub bytes: u64,
}

/// The blob sync of one secondary.
#[derive(Debug, Clone)]
pub struct BlobSync<S = LocalStore> {
    tracking: Database,
    client: PrimaryClient,
    store: S,
    config: SyncConfig,
    registries: Vec<Registry>,
    metrics: Metrics,
    /// Rows a round claimed but could not record (the tracking database failed after the
    /// claim): the next round fails them first, so they do not wait for the sweeper.
    unrecorded: std::sync::Arc<std::sync::Mutex<Vec<(usize, ClaimedRow)>>>,
}

/// A downloaded row, its key and whether its checksum was the primary's.
type DownloadMeta = (ClaimedRow, String, bool);

struct Downloaded<T> {
    row: ClaimedRow,
    key: String,
    staged: T,
    /// Whether the primary sent its checksum (and the bytes matched it).
    checked: bool,
}

impl<S: BlobStore> BlobSync<S> {
    /// The sync of `tracking`'s registries from the primary behind `client` into `store`.
    pub fn new(
        tracking: &Database,
        set: &ReplicatorSet,
        client: PrimaryClient,
        store: S,
        config: SyncConfig,
    ) -> Self {
        BlobSync {
            registries: set
                .descriptors()
                .iter()
                .map(|d| Registry::new(tracking, d))
                .collect(),
            tracking: tracking.clone(),
            client,
            store,
            config,
            metrics: Metrics::default(),
            unrecorded: Default::default(),
        }
    }

    /// Records transfers, bytes, failures by reason and download times into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// One round: for each replicable whose replication is on here, claims due rows and syncs
    /// them, `files_max_capacity` at once.
    pub async fn step(&self) -> Result<SyncRound, DbError> {
        let mut round = SyncRound::default();
        let capacity = self.config.files_max_capacity.max(1);
        self.record_unrecorded().await?;
        for (index, registry) in self.registries.iter().enumerate() {
            let d = registry.descriptor();
            if !flags::is_enabled(&self.tracking, d).await? {
                continue;
            }
            let claimed = registry.claim(capacity * CLAIM_FACTOR, now()).await?;
            if claimed.is_empty() {
                continue;
            }
            let outcome = self
                .sync_claimed(d, registry, &claimed, capacity, &mut round)
                .await;
            if let Err(e) = outcome {
                let mut unrecorded = self
                    .unrecorded
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                unrecorded.extend(claimed.into_iter().map(|r| (index, r)));
                return Err(e);
            }
        }
        Ok(round)
    }

    /// Fails the rows an earlier round claimed but could not record (due at the usual backoff).
    async fn record_unrecorded(&self) -> Result<(), DbError> {
        let rows: Vec<(usize, ClaimedRow)> = std::mem::take(
            &mut *self
                .unrecorded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if rows.is_empty() {
            return Ok(());
        }
        for (index, registry) in self.registries.iter().enumerate() {
            let failures: Vec<SyncFailure> = rows
                .iter()
                .filter(|(i, _)| *i == index)
                .map(|(_, r)| {
                    r.failed(
                        "The sync's outcome could not be recorded (the tracking database failed); retrying",
                        false,
                    )
                })
                .collect();
            if failures.is_empty() {
                continue;
            }
            if let Err(e) = registry.mark_failed(&failures, now()).await {
                self.unrecorded
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(rows);
                return Err(e);
            }
        }
        tracing::info!(
            rows = rows.len(),
            "failed the syncs whose outcome could not be recorded"
        );
        Ok(())
    }

    /// Downloads `claimed`, makes the copies durable and records the outcome.
    async fn sync_claimed(
        &self,
        d: &'static ReplicatorDescriptor,
        registry: &Registry,
        claimed: &[ClaimedRow],
        capacity: usize,
        round: &mut SyncRound,
    ) -> Result<(), DbError> {
        round.claimed += claimed.len();
        let results: Vec<Result<Downloaded<S::Staged>, SyncFailure>> =
            futures_util::stream::iter(claimed.iter().copied())
                .map(|row| {
                    let span = tracing::info_span!(
                        "sync",
                        replicable = d.replicable_name,
                        id = row.model_record_id,
                        attempt = row.sync_attempt
                    );
                    self.download(d, row).instrument(span)
                })
                .buffer_unordered(capacity)
                .collect()
                .await;
        let mut downloaded = Vec::new();
        let mut failed = Vec::new();
        for r in results {
            match r {
                Ok(d) => downloaded.push(d),
                Err(f) => failed.push(f),
            }
        }
        // Durable and in place, all together, before any row is marked synced.
        let (meta, staged): (Vec<DownloadMeta>, Vec<S::Staged>) = downloaded
            .into_iter()
            .map(|d| ((d.row, d.key, d.checked), d.staged))
            .unzip();
        let mut ok = Vec::new();
        let mut round_bytes = 0;
        for ((row, key, checked), committed) in
            meta.into_iter().zip(self.store.commit(staged).await)
        {
            match committed {
                Ok(written) => {
                    round_bytes += written.size;
                    ok.push(SyncedCopy {
                        row,
                        object_key: Some(key),
                        sha256: Some(written.sha256),
                        checked_against_primary: checked,
                    });
                }
                Err(e) => {
                    self.metrics.add(
                        "geo_sync_failures_total",
                        &[("replicable", d.replicable_name), ("reason", e.kind())],
                        1,
                    );
                    tracing::warn!(id = row.model_record_id, error = %e, "making a downloaded object durable failed");
                    failed.push(row.failed(format!("Error downloading file: {e}"), false))
                }
            }
        }
        // The crash suite stops the process here: bytes durable, registry not yet told.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("sync::before_registry_commit", |_| std::process::abort());
        let marked = registry.mark_synced_copies(&ok).await?;
        // One line per transition, in the row's own span, as the download's lines are.
        for copy in &ok {
            let row = &copy.row;
            let span = tracing::info_span!(
                "sync",
                replicable = d.replicable_name,
                id = row.model_record_id,
                attempt = row.sync_attempt
            );
            let _entered = span.enter();
            if marked.contains(&row.id) {
                tracing::debug!(
                    object_key = copy.object_key.as_deref(),
                    verified = copy.checked_against_primary,
                    "registry row synced"
                );
            } else {
                tracing::info!(
                    "download superseded: the row changed while it was downloaded; the newer attempt wins"
                );
            }
        }
        let synced = marked.len();
        let failed =
            usize::try_from(registry.mark_failed(&failed, now()).await?).unwrap_or(usize::MAX);
        let replicable = [("replicable", d.replicable_name)];
        self.metrics
            .add("geo_sync_bytes_total", &replicable, round_bytes);
        for (outcome, n) in [("synced", synced), ("failed", failed)] {
            self.metrics.add(
                "geo_sync_transfers_total",
                &[("replicable", d.replicable_name), ("outcome", outcome)],
                n as u64,
            );
        }
        round.synced += synced;
        round.failed += failed;
        round.bytes += round_bytes;
        Ok(())
    }

    /// Downloads one object into a staged temp file (checked, not yet durable).
    async fn download(
        &self,
        d: &ReplicatorDescriptor,
        row: ClaimedRow,
    ) -> Result<Downloaded<S::Staged>, SyncFailure> {
        let started = std::time::Instant::now();
        let fail = |kind: &'static str, reason: String, missing: bool| {
            tracing::warn!(reason = %reason, missing_on_primary = missing, "blob download failed");
            self.metrics.add(
                "geo_sync_failures_total",
                &[("replicable", d.replicable_name), ("reason", kind)],
                1,
            );
            row.failed(reason, missing)
        };
        let response = self
            .client
            .retrieve(d.replicable_name, row.model_record_id)
            .await
            .map_err(|e| fail("transport", format!("Error downloading file: {e}"), false))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            return Err(
                if body.get("geo_code").and_then(|c| c.as_str()) == Some(FILE_NOT_FOUND) {
                    fail(
                        "missing_on_primary",
                        "The file is missing on the Geo primary site".into(),
                        true,
                    )
                } else {
                    fail(
                        "record_missing_on_primary",
                        "The record is missing on the Geo primary site".into(),
                        false,
                    )
                },
            );
        }
        if !status.is_success() {
            return Err(fail(
                "http_status",
                format!("Non-success HTTP response status code {}", status.as_u16()),
                false,
            ));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let key = header(HEADER_OBJECT_KEY)
            .ok_or_else(|| fail("protocol", "the primary sent no object key".into(), false))?;
        let key = ObjectKey::parse(&key).map_err(|e| fail("protocol", e.to_string(), false))?;
        let expected_sha = match header(HEADER_SHA256) {
            Some(h) => Some(parse_sha256(&h).ok_or_else(|| {
                fail(
                    "protocol",
                    "the primary sent a malformed checksum".into(),
                    false,
                )
            })?),
            None => None,
        };
        let expected_size = response.content_length();
        if let (Some(size), Some(max)) = (expected_size, self.config.max_object_size)
            && size > max
        {
            return Err(fail(
                "too_large",
                format!("The object is too large to sync: {size} bytes, the limit is {max}"),
                false,
            ));
        }
        let staged = match expected_size {
            // Small objects: read whole, then written in one step.
            Some(size) if size <= SMALL_OBJECT => {
                let data = response.bytes().await.map_err(|e| {
                    fail("transport", format!("Error downloading file: {e}"), false)
                })?;
                if data.len() as u64 != size {
                    return Err(fail(
                        "size_mismatch",
                        format!(
                            "Error downloading file: size mismatch: expected {size} bytes, got {}",
                            data.len()
                        ),
                        false,
                    ));
                }
                self.store.stage_bytes(&key, data, expected_sha).await
            }
            _ => {
                let body = response.bytes_stream().map_err(|e| e.to_string());
                self.store
                    .stage_stream(&key, body, expected_size, expected_sha)
                    .await
            }
        }
        .map_err(|e| fail(e.kind(), format!("Error downloading file: {e}"), false))?;
        self.metrics.observe(
            "geo_sync_download_duration_seconds",
            &[("replicable", d.replicable_name)],
            started.elapsed().as_secs_f64(),
        );
        tracing::debug!(
            bytes = S::staged_size(&staged),
            download_time_s = started.elapsed().as_secs_f64(),
            checksum_checked = expected_sha.is_some(),
            "blob downloaded"
        );
        Ok(Downloaded {
            row,
            key: key.as_str().to_owned(),
            staged,
            checked: expected_sha.is_some(),
        })
    }

    /// Runs rounds until cancelled; an interrupted round leaves its rows `started` for the
    /// sweeper (or finishes them when the cancellation comes between rounds).
    pub async fn run(&self, cancel: CancellationToken) {
        super::run_rounds(
            &cancel,
            self.config.idle_wait,
            "blob sync round",
            || async { self.step().await.map(|r| r.claimed > 0) },
        )
        .await;
    }
}
