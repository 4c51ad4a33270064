//! The secondary's blob sync (Geo's registry sync worker + blob downloader): claims due registry
//! rows, downloads their objects from the primary, `files_max_capacity` requests at a time, into
//! the local store (temp file, SHA-256 while streaming, checked against the primary's checksum
//! and size, fsync, rename, directory fsync), then marks the batch synced, or failed with the
//! reason and Geo's backoff. A row is marked synced only after its bytes are durable, and only
//! by the attempt that claimed it.
//!
//! Small objects travel many to a request (`batch_size`, up to 64 KiB each): per-request costs
//! (a token, a query and a round trip on each side) would otherwise dominate a 4 KiB object.
//! Larger ones are streamed one to a request.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::db::Database;
use crate::db::dialect::now;
use crate::db::lock::lock_object_keys;
use crate::error::DbError;
use crate::flags;
use crate::node::client::FrameReader;
use crate::node::server::{FrameStatus, MAX_BATCH};
use crate::node::{FILE_NOT_FOUND, HEADER_OBJECT_KEY, HEADER_SHA256, PrimaryClient};
use crate::registry::{ClaimedRow, Registry, SyncFailure, SyncState, SyncedCopy};
use crate::replicator::{ReplicatorDescriptor, ReplicatorSet};
use crate::storage::{BlobStore, LocalStore, ObjectKey, StorageError, parse_sha256};
use crate::telemetry::Metrics;

/// Objects up to this size are read whole and written in one step; larger ones are streamed.
pub const SMALL_OBJECT: u64 = 1024 * 1024;

/// Rows claimed per replicable and round, as a multiple of the capacity, so that a slow download
/// does not leave the other slots idle until the round ends.
const CLAIM_FACTOR: usize = 4;

/// Claims one round may make while they come back full (the round ends when one does not).
const CLAIMS_PER_ROUND: usize = 8;

/// Tuning of the blob sync.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Downloads at once (Geo's `files_max_capacity`, default 10).
    pub files_max_capacity: usize,
    /// Pause when there was nothing to sync.
    pub idle_wait: Duration,
    /// Objects larger than this are refused (the row fails with the reason); `None`: no limit.
    pub max_object_size: Option<u64>,
    /// Rows asked for in one request; the primary sends the objects of up to 64 KiB inline and
    /// marks larger ones, which are then fetched one to a request. 1 fetches every object on its
    /// own request.
    pub batch_size: usize,
    /// How often the rows of the downloads under way are looked at: a transfer whose row was
    /// deleted, reset (an update) or re-claimed meanwhile is cancelled.
    pub supersede_check: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            files_max_capacity: 10,
            idle_wait: Duration::from_secs(1),
            max_object_size: None,
            batch_size: 32,
            supersede_check: Duration::from_secs(1),
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
    /// Downloads dropped because their record was deleted or changed meanwhile: cancelled in
    /// flight, or found stale when their copy was about to be published (nothing published).
    pub superseded: usize,
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

/// Why an attempt failed: its metrics label (`reason`), the reason recorded on the row, and
/// whether the object is missing on the primary (which gets the long backoff). The one-object
/// and the batch downloads word their failures alike through it.
#[derive(Debug)]
struct Failed {
    kind: &'static str,
    reason: String,
    missing: bool,
}

impl Failed {
    fn new(kind: &'static str, reason: impl Into<String>) -> Self {
        Failed {
            kind,
            reason: reason.into(),
            missing: false,
        }
    }

    /// The transfer broke (connection, stall, short or unusable body).
    fn transport(e: impl std::fmt::Display) -> Self {
        Failed::new("transport", format!("Error downloading file: {e}"))
    }

    /// The store could not take the object.
    fn storage(e: &StorageError) -> Self {
        Failed::new(e.kind(), format!("Error downloading file: {e}"))
    }

    fn http_status(code: u16) -> Self {
        Failed::new(
            "http_status",
            format!("Non-success HTTP response status code {code}"),
        )
    }

    fn file_missing() -> Self {
        Failed {
            missing: true,
            ..Failed::new(
                "missing_on_primary",
                "The file is missing on the Geo primary site",
            )
        }
    }

    fn record_missing() -> Self {
        Failed::new(
            "record_missing_on_primary",
            "The record is missing on the Geo primary site",
        )
    }
}

/// The object key and checksum the primary sent (a header or a frame), checked.
fn object_meta(
    key: Option<&str>,
    sha256: Option<&str>,
) -> Result<(ObjectKey, Option<[u8; 32]>), Failed> {
    let key = key.ok_or_else(|| Failed::new("protocol", "the primary sent no object key"))?;
    let key = ObjectKey::parse(key).map_err(|e| Failed::new("protocol", e.to_string()))?;
    let sha256 = sha256
        .map(|h| {
            parse_sha256(h)
                .ok_or_else(|| Failed::new("protocol", "the primary sent a malformed checksum"))
        })
        .transpose()?;
    Ok((key, sha256))
}

/// The span of one row's sync: every line about it carries the replicable, id and attempt.
fn row_span(d: &ReplicatorDescriptor, row: &ClaimedRow) -> tracing::Span {
    tracing::info_span!(
        "sync",
        replicable = d.replicable_name,
        id = row.model_record_id,
        attempt = row.sync_attempt
    )
}

/// What recording a round's downloads did.
#[derive(Debug, Default)]
struct Recorded {
    synced: usize,
    bytes: u64,
    /// Copies not published: their row had changed.
    superseded: usize,
    /// Downloads that could not be made durable.
    failed: Vec<SyncFailure>,
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

/// Single-object transfers under way, by registry row id, with their attempt: the watcher of a
/// round cancels those whose row was deleted, reset or re-claimed meanwhile.
#[derive(Debug, Default)]
struct InFlight(std::sync::Mutex<HashMap<i64, (i64, CancellationToken)>>);

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (i64, CancellationToken)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers `row`'s transfer; cancelled when it is superseded.
    fn start(&self, row: &ClaimedRow) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock()
            .insert(row.id, (row.sync_attempt, token.clone()));
        token
    }

    fn finish(&self, row: &ClaimedRow) {
        self.lock().remove(&row.id);
    }

    fn snapshot(&self) -> Vec<(i64, i64)> {
        self.lock().iter().map(|(id, (a, _))| (*id, *a)).collect()
    }

    fn cancel(&self, id: i64) {
        if let Some((_, token)) = self.lock().get(&id) {
            token.cancel();
        }
    }
}

/// How a download ended.
enum Outcome<T> {
    Downloaded(Downloaded<T>),
    Failed(SyncFailure),
    /// Cancelled in flight: its row was deleted, reset or re-claimed.
    Superseded,
}

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
        self.step_until(&CancellationToken::new()).await
    }

    /// [`BlobSync::step`], starting no new download once `stop` is cancelled: the downloads
    /// under way finish and are recorded, the rows not yet started stay `started` and are
    /// released when a node starts (or by the sweeper).
    pub async fn step_until(&self, stop: &CancellationToken) -> Result<SyncRound, DbError> {
        let mut round = SyncRound::default();
        self.record_unrecorded().await?;
        for (index, registry) in self.registries.iter().enumerate() {
            let d = registry.descriptor();
            if !flags::is_enabled(&self.tracking, d).await? {
                continue;
            }
            let claimed = registry.claim(self.claim_size(), now()).await?;
            if claimed.is_empty() {
                continue;
            }
            let mut taken = claimed.clone();
            let outcome = self
                .sync_claimed(d, registry, claimed, &mut taken, &mut round, stop)
                .await;
            if let Err(e) = outcome {
                self.unrecorded
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(taken.into_iter().map(|r| (index, r)));
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

    /// Downloads `claimed`, makes the copies durable and records the outcome. Downloading and
    /// recording run side by side: whatever has arrived is flushed while the next objects
    /// download, then published and marked synced in one transaction (a group commit), so the
    /// flushes and the registry transaction cost little per object and never stall the
    /// transfers. A watcher cancels the transfers whose row is deleted or changed meanwhile.
    ///
    /// While the claims come back full, the round claims again (up to [`CLAIMS_PER_ROUND`]
    /// times) as soon as the previous claim's downloads are done, so the last group of one claim
    /// is recorded while the next claim downloads. Every row claimed is added to `taken`.
    async fn sync_claimed(
        &self,
        d: &'static ReplicatorDescriptor,
        registry: &Registry,
        claimed: Vec<ClaimedRow>,
        taken: &mut Vec<ClaimedRow>,
        round: &mut SyncRound,
        stop: &CancellationToken,
    ) -> Result<(), DbError> {
        let (capacity, claim_size) = (self.capacity(), self.claim_size());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let in_flight = InFlight::default();
        let downloads_done = CancellationToken::new();
        let downloads = async {
            let _done = downloads_done.clone().drop_guard();
            let mut failed = Vec::new();
            let mut superseded = 0;
            let mut rows = claimed;
            for claim in 1.. {
                let full = rows.len() >= claim_size;
                round.claimed += rows.len();
                let (f, s) = self
                    .download_all(d, &rows, capacity, &tx, stop, &in_flight)
                    .await;
                failed.extend(f);
                superseded += s;
                // A closed channel: recording failed, the round is over.
                if !full || claim >= CLAIMS_PER_ROUND || tx.is_closed() || stop.is_cancelled() {
                    break;
                }
                rows = registry.claim(claim_size, now()).await?;
                if rows.is_empty() {
                    break;
                }
                taken.extend(rows.iter().copied());
            }
            drop(tx);
            Ok::<_, DbError>((failed, superseded))
        };
        let (downloaded, recorded, ()) = tokio::join!(
            downloads,
            self.record_downloads(d, registry, rx),
            self.watch_in_flight(registry, &in_flight, &downloads_done)
        );
        let recorded = recorded?;
        let (mut failed, cancelled) = downloaded?;
        failed.extend(recorded.failed);
        let failed =
            usize::try_from(registry.mark_failed(&failed, now()).await?).unwrap_or(usize::MAX);
        let superseded = cancelled + recorded.superseded;
        let replicable = [("replicable", d.replicable_name)];
        self.metrics
            .add("geo_sync_bytes_total", &replicable, recorded.bytes);
        for (outcome, n) in [
            ("synced", recorded.synced),
            ("failed", failed),
            ("superseded", superseded),
        ] {
            self.metrics.add(
                "geo_sync_transfers_total",
                &[("replicable", d.replicable_name), ("outcome", outcome)],
                n as u64,
            );
        }
        round.synced += recorded.synced;
        round.failed += failed;
        round.bytes += recorded.bytes;
        round.superseded += superseded;
        Ok(())
    }

    /// Until `done`, every [`SyncConfig::supersede_check`]: cancels the transfers in
    /// `in_flight` whose row is no longer `started` by their attempt (deleted by a `deleted`
    /// event or the consistency pass, reset by an `updated` event, released by another process).
    /// It reads the registry, so it sees the changes of every process sharing it.
    async fn watch_in_flight(
        &self,
        registry: &Registry,
        in_flight: &InFlight,
        done: &CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = done.cancelled() => return,
                () = tokio::time::sleep(self.config.supersede_check) => {}
            }
            let running = in_flight.snapshot();
            if running.is_empty() {
                continue;
            }
            let ids: Vec<i64> = running.iter().map(|(id, _)| *id).collect();
            match registry.started_attempts(&ids).await {
                Ok(current) => {
                    for (id, attempt) in running {
                        if current.get(&id) != Some(&attempt) {
                            in_flight.cancel(id);
                        }
                    }
                }
                // The next look retries; the publish checks the row under its lock anyway.
                Err(e) => {
                    tracing::debug!(error = %e, "could not look at the rows being downloaded")
                }
            }
        }
    }

    /// Downloads the objects of `claimed`, `capacity` requests at once, passing each staged
    /// object to `done` as it arrives; returns the failed attempts and how many transfers were
    /// cancelled because their row was superseded.
    async fn download_all(
        &self,
        d: &'static ReplicatorDescriptor,
        claimed: &[ClaimedRow],
        capacity: usize,
        done: &tokio::sync::mpsc::UnboundedSender<Downloaded<S::Staged>>,
        stop: &CancellationToken,
        in_flight: &InFlight,
    ) -> (Vec<SyncFailure>, usize) {
        let mut failed = Vec::new();
        let mut superseded = 0;
        // A send fails only when recording stopped on an error: the staged object is dropped
        // (its temp file removed) and the row waits for the next round.
        let mut settle = |r: Outcome<S::Staged>| match r {
            Outcome::Downloaded(downloaded) => drop(done.send(downloaded)),
            Outcome::Failed(f) => failed.push(f),
            Outcome::Superseded => superseded += 1,
        };
        let mut alone = Vec::new();
        if self.batch_size() > 1 {
            // Spread the rows over the request slots, full batches when there are enough.
            let per_request = claimed.len().div_ceil(capacity).clamp(1, self.batch_size());
            let requests: Vec<Vec<ClaimedRow>> =
                claimed.chunks(per_request).map(<[_]>::to_vec).collect();
            let mut batches = futures_util::stream::iter(requests)
                .take_while(|_| {
                    futures_util::future::ready(!stop.is_cancelled() && !done.is_closed())
                })
                .map(|rows| self.download_many(d, rows))
                .buffer_unordered(capacity);
            while let Some((results, too_large)) = batches.next().await {
                for r in results {
                    settle(match r {
                        Ok(downloaded) => Outcome::Downloaded(downloaded),
                        Err(f) => Outcome::Failed(f),
                    });
                }
                alone.extend(too_large);
            }
        } else {
            alone = claimed.to_vec();
        }
        let mut singles = futures_util::stream::iter(alone)
            .take_while(|_| futures_util::future::ready(!stop.is_cancelled() && !done.is_closed()))
            .map(|row| {
                let cancelled = in_flight.start(&row);
                let span = row_span(d, &row);
                async move {
                    let outcome = tokio::select! {
                        r = self.download(d, row) => match r {
                            Ok(downloaded) => Outcome::Downloaded(downloaded),
                            Err(f) => Outcome::Failed(f),
                        },
                        () = cancelled.cancelled() => {
                            tracing::info!("transfer cancelled: the record was deleted or changed on the primary meanwhile");
                            Outcome::Superseded
                        }
                    };
                    in_flight.finish(&row);
                    outcome
                }
                .instrument(span)
            })
            .buffer_unordered(capacity);
        while let Some(outcome) = singles.next().await {
            settle(outcome);
        }
        (failed, superseded)
    }

    /// Makes the staged objects arriving on `arrived` durable and publishes them, until the
    /// downloads are done. Two stages run side by side: one flushes whatever has arrived (the
    /// data, still at temp paths), the other publishes whatever has been flushed and marks it
    /// synced in one transaction; so the file system and the database work at the same time.
    async fn record_downloads(
        &self,
        d: &'static ReplicatorDescriptor,
        registry: &Registry,
        mut arrived: tokio::sync::mpsc::UnboundedReceiver<Downloaded<S::Staged>>,
    ) -> Result<Recorded, DbError> {
        let (flushed_tx, mut flushed) =
            tokio::sync::mpsc::unbounded_channel::<Downloaded<S::Staged>>();
        let flush = async {
            let mut failed = Vec::new();
            while let Some(first) = arrived.recv().await {
                // A closed channel: publishing failed, the round is over; what is left is
                // dropped (its temp files removed) and synced again, and the downloads are told
                // to claim no more.
                if flushed_tx.is_closed() {
                    arrived.close();
                    break;
                }
                let mut group = vec![first];
                while let Ok(more) = arrived.try_recv() {
                    group.push(more);
                }
                self.flush_group(d, group, &flushed_tx, &mut failed).await;
            }
            drop(flushed_tx);
            failed
        };
        let publish = async {
            let mut recorded = Recorded::default();
            while let Some(first) = flushed.recv().await {
                let mut group = vec![first];
                while let Ok(more) = flushed.try_recv() {
                    group.push(more);
                }
                if let Err(e) = self.publish_group(d, registry, group, &mut recorded).await {
                    // Ends the round: the flushes stop, then the downloads.
                    flushed.close();
                    return Err(e);
                }
            }
            Ok::<_, DbError>(recorded)
        };
        let (failed, recorded) = tokio::join!(flush, publish);
        let mut recorded = recorded?;
        recorded.failed.extend(failed);
        Ok(recorded)
    }

    /// Flushes the data of a group: each object that made it is passed to `flushed`, each that
    /// did not to `failed`.
    async fn flush_group(
        &self,
        d: &'static ReplicatorDescriptor,
        group: Vec<Downloaded<S::Staged>>,
        flushed: &tokio::sync::mpsc::UnboundedSender<Downloaded<S::Staged>>,
        failed: &mut Vec<SyncFailure>,
    ) {
        let (meta, staged): (Vec<_>, Vec<S::Staged>) = group
            .into_iter()
            .map(|g| ((g.row, g.key, g.checked), g.staged))
            .unzip();
        for ((row, key, checked), result) in meta.into_iter().zip(self.store.flush(staged).await) {
            match result {
                // Only fails when publishing stopped: the row stays started and is failed at
                // the next round.
                Ok(staged) => drop(flushed.send(Downloaded {
                    row,
                    key,
                    staged,
                    checked,
                })),
                Err(e) => failed.push(self.failure(d, &row, Failed::storage(&e))),
            }
        }
    }

    /// Publishes a flushed group and marks it synced, in one transaction that holds the rows'
    /// and the keys' locks: only the copies whose attempt is still the running one are put in
    /// place; the others (their record was deleted, updated or re-claimed meanwhile) are
    /// discarded, their temp files removed, so no copy outlives its record.
    async fn publish_group(
        &self,
        d: &'static ReplicatorDescriptor,
        registry: &Registry,
        group: Vec<Downloaded<S::Staged>>,
        recorded: &mut Recorded,
    ) -> Result<(), DbError> {
        let mut tx = self.tracking.begin_write().await?;
        let ids: Vec<i64> = group.iter().map(|g| g.row.id).collect();
        let found = registry.lock_rows(tx.conn(), &ids).await?;
        let mut live = Vec::with_capacity(group.len());
        for g in group {
            let now_found = found.get(&g.row.id).copied();
            if now_found == Some((SyncState::Started, g.row.sync_attempt)) {
                live.push(g);
            } else {
                let _entered = row_span(d, &g.row).entered();
                tracing::info!("download superseded: {}", superseded_because(now_found));
                recorded.superseded += 1;
            }
        }
        let keys: Vec<&str> = live.iter().map(|g| g.key.as_str()).collect();
        lock_object_keys(tx.conn(), keys).await?;
        let (meta, staged): (Vec<_>, Vec<S::Staged>) = live
            .into_iter()
            .map(|g| ((g.row, g.key, g.checked), g.staged))
            .unzip();
        let mut copies = Vec::with_capacity(meta.len());
        for ((row, key, checked), published) in
            meta.into_iter().zip(self.store.publish(staged).await)
        {
            match published {
                Ok(written) => {
                    recorded.bytes += written.size;
                    copies.push(SyncedCopy {
                        row,
                        object_key: Some(key),
                        sha256: Some(written.sha256),
                        checked_against_primary: checked,
                    });
                }
                Err(e) => recorded
                    .failed
                    .push(self.failure(d, &row, Failed::storage(&e))),
            }
        }
        let marked: std::collections::HashSet<i64> = registry
            .mark_synced_in(tx.conn(), &copies)
            .await?
            .into_iter()
            .collect();
        // The crash suite stops the process here: copies in place, registry not yet told.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("sync::before_registry_commit", |_| std::process::abort());
        tx.commit().await?;
        recorded.synced += marked.len();
        // One line per transition, in the row's own span, as the download's lines are.
        for copy in &copies {
            let _entered = row_span(d, &copy.row).entered();
            tracing::debug!(
                object_key = copy.object_key.as_deref(),
                verified = copy.checked_against_primary,
                "registry row synced"
            );
        }
        Ok(())
    }

    fn batch_size(&self) -> usize {
        self.config.batch_size.clamp(1, MAX_BATCH)
    }

    fn capacity(&self) -> usize {
        self.config.files_max_capacity.max(1)
    }

    /// Rows per claim: batched requests carry up to `batch_size` rows each, so enough to keep
    /// every request slot busy with a full batch.
    fn claim_size(&self) -> usize {
        self.capacity() * CLAIM_FACTOR.max(self.batch_size())
    }

    /// A failed attempt, logged in the row's span and counted by reason.
    fn failure(&self, d: &ReplicatorDescriptor, row: &ClaimedRow, f: Failed) -> SyncFailure {
        let _entered = row_span(d, row).entered();
        self.failed_here(d, row, f)
    }

    /// [`BlobSync::failure`], from inside the row's span already.
    fn failed_here(&self, d: &ReplicatorDescriptor, row: &ClaimedRow, f: Failed) -> SyncFailure {
        tracing::warn!(reason = %f.reason, missing_on_primary = f.missing, "blob download failed");
        self.metrics.add(
            "geo_sync_failures_total",
            &[("replicable", d.replicable_name), ("reason", f.kind)],
            1,
        );
        row.failed(f.reason, f.missing)
    }

    /// Refuses an object over `max_object_size`.
    fn check_size(&self, size: Option<u64>) -> Result<(), Failed> {
        match (size, self.config.max_object_size) {
            (Some(size), Some(max)) if size > max => Err(Failed::new(
                "too_large",
                format!("The object is too large to sync: {size} bytes, the limit is {max}"),
            )),
            _ => Ok(()),
        }
    }

    /// Downloads the objects of `rows` in one request and stages them. Returns the outcomes
    /// and the rows whose objects are too large to travel in a batch (to download alone).
    async fn download_many(
        &self,
        d: &ReplicatorDescriptor,
        rows: Vec<ClaimedRow>,
    ) -> (
        Vec<Result<Downloaded<S::Staged>, SyncFailure>>,
        Vec<ClaimedRow>,
    ) {
        let started = std::time::Instant::now();
        let ids: Vec<i64> = rows.iter().map(|r| r.model_record_id).collect();
        let fail_all = |f: Failed| {
            let failed = rows
                .iter()
                .map(|row| Err(self.failure(d, row, Failed::new(f.kind, f.reason.clone()))))
                .collect();
            (failed, Vec::new())
        };
        let response = match self.client.retrieve_many(d.replicable_name, &ids).await {
            Ok(r) => r,
            Err(e) => return fail_all(Failed::transport(e)),
        };
        let status = response.status();
        if !status.is_success() {
            return fail_all(Failed::http_status(status.as_u16()));
        }
        let mut waiting: HashMap<i64, ClaimedRow> =
            rows.iter().map(|r| (r.model_record_id, *r)).collect();
        let mut results = Vec::with_capacity(rows.len());
        let mut alone = Vec::new();
        let mut to_stage = Vec::new();
        let mut reader = FrameReader::new(response);
        let broken = loop {
            let (frame, data) = match reader.next().await {
                Ok(Some(next)) => next,
                Ok(None) => break None,
                Err(e) => break Some(e),
            };
            let Some(row) = waiting.remove(&frame.id) else {
                break Some(format!(
                    "the primary answered for record {}, which was not asked for",
                    frame.id
                ));
            };
            let outcome = self
                .check_size(frame.size)
                .and_then(|()| match frame.status {
                    FrameStatus::Ok => object_meta(frame.key.as_deref(), frame.sha256.as_deref())
                        .map(|(key, sha)| Some((key, sha))),
                    FrameStatus::Separately => Ok(None),
                    FrameStatus::FileMissing => Err(Failed::file_missing()),
                    FrameStatus::RecordMissing => Err(Failed::record_missing()),
                    FrameStatus::Error => Err(Failed::new(
                        "http_status",
                        "The primary could not read the object",
                    )),
                });
            match outcome {
                Ok(Some((key, sha))) => to_stage.push((row, key, data, sha)),
                Ok(None) => alone.push(row),
                Err(f) => results.push(Err(self.failure(d, &row, f))),
            }
        };
        // Rows the response never answered: it broke, or ended early.
        let reason = broken.unwrap_or_else(|| "the primary's response ended early".into());
        for row in waiting.into_values() {
            results.push(Err(self.failure(d, &row, Failed::transport(&reason))));
        }
        let (meta, items): (Vec<_>, Vec<_>) = to_stage
            .into_iter()
            .map(
                |(row, key, data, sha): (ClaimedRow, ObjectKey, bytes::Bytes, _)| {
                    (
                        (row, key.as_str().to_owned(), sha.is_some()),
                        (key, data, sha),
                    )
                },
            )
            .unzip();
        let took = started.elapsed().as_secs_f64();
        for ((row, key, checked), staged) in meta
            .into_iter()
            .zip(self.store.stage_many_bytes(items).await)
        {
            results.push(match staged {
                Ok(staged) => {
                    self.metrics.observe(
                        "geo_sync_download_duration_seconds",
                        &[("replicable", d.replicable_name)],
                        took,
                    );
                    Ok(Downloaded {
                        row,
                        key,
                        staged,
                        checked,
                    })
                }
                Err(e) => Err(self.failure(d, &row, Failed::storage(&e))),
            });
        }
        (results, alone)
    }

    /// Downloads one object into a staged temp file (checked, not yet durable).
    async fn download(
        &self,
        d: &ReplicatorDescriptor,
        row: ClaimedRow,
    ) -> Result<Downloaded<S::Staged>, SyncFailure> {
        self.download_one(d, row)
            .await
            .map_err(|f| self.failed_here(d, &row, f))
    }

    async fn download_one(
        &self,
        d: &ReplicatorDescriptor,
        row: ClaimedRow,
    ) -> Result<Downloaded<S::Staged>, Failed> {
        let started = std::time::Instant::now();
        let response = self
            .client
            .retrieve(d.replicable_name, row.model_record_id)
            .await
            .map_err(Failed::transport)?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            return Err(
                if body.get("geo_code").and_then(|c| c.as_str()) == Some(FILE_NOT_FOUND) {
                    Failed::file_missing()
                } else {
                    Failed::record_missing()
                },
            );
        }
        if !status.is_success() {
            return Err(Failed::http_status(status.as_u16()));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (key, expected_sha) = object_meta(
            header(HEADER_OBJECT_KEY).as_deref(),
            header(HEADER_SHA256).as_deref(),
        )?;
        let expected_size = response.content_length();
        self.check_size(expected_size)?;
        let staged = match expected_size {
            // Small objects: read whole, then written in one step.
            Some(size) if size <= SMALL_OBJECT => {
                let data = response.bytes().await.map_err(Failed::transport)?;
                if data.len() as u64 != size {
                    return Err(Failed::storage(&StorageError::SizeMismatch {
                        expected: size,
                        actual: data.len() as u64,
                    }));
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
        .map_err(|e| Failed::storage(&e))?;
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

    /// Runs rounds until cancelled. A cancelled round starts no new download: those under way
    /// finish and are recorded, and the rows it had not started stay `started` until a node
    /// starts (which releases them at once) or the sweeper fails them.
    pub async fn run(&self, cancel: CancellationToken) {
        super::run_rounds(
            &cancel,
            self.config.idle_wait,
            "blob sync round",
            || async { self.step_until(&cancel).await.map(|r| r.claimed > 0) },
        )
        .await;
    }
}
