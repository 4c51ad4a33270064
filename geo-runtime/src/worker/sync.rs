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

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::db::Database;
use crate::db::dialect::now;
use crate::error::DbError;
use crate::flags;
use crate::registry::{ClaimedRow, Registry, SyncFailure};
use crate::replicator::{ReplicatorDescriptor, ReplicatorSet};
use crate::storage::{BlobStore, LocalStore};
use crate::strategy;
use crate::strategy::blob::commit::{self, Published};
use crate::strategy::blob::fetch::{Failed, Fetch, Fetched};
use crate::strategy::blob::{BlobSource, MAX_BATCH};
use crate::telemetry::Metrics;

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
pub struct BlobSync<C, S = LocalStore> {
    tracking: Database,
    client: C,
    store: S,
    config: SyncConfig,
    registries: Vec<Registry>,
    metrics: Metrics,
    /// Rows a round claimed but could not record (the tracking database failed after the
    /// claim): the next round fails them first, so they do not wait for the sweeper.
    unrecorded: std::sync::Arc<std::sync::Mutex<Vec<(usize, ClaimedRow)>>>,
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

impl Recorded {
    fn add<C: BlobSource, S: BlobStore>(
        &mut self,
        sync: &BlobSync<C, S>,
        d: &ReplicatorDescriptor,
        published: Published,
    ) {
        self.synced += published.synced;
        self.bytes += published.bytes;
        self.superseded += published.superseded;
        for (row, f) in published.failed {
            self.failed.push(sync.failure(d, &row, f));
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
    Downloaded(Fetched<T>),
    Failed(SyncFailure),
    /// Cancelled in flight: its row was deleted, reset or re-claimed.
    Superseded,
}

impl<C: BlobSource, S: BlobStore> BlobSync<C, S> {
    /// The sync of `tracking`'s registries from the primary behind `client` into `store`.
    pub fn new(
        tracking: &Database,
        set: &ReplicatorSet,
        client: C,
        store: S,
        config: SyncConfig,
    ) -> Self {
        BlobSync {
            registries: set
                .descriptors()
                .iter()
                .filter(|d| strategy::is_blob(d))
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
        self.metrics.sync_bytes(d.replicable_name, recorded.bytes);
        for (outcome, n) in [
            ("synced", recorded.synced),
            ("failed", failed),
            ("superseded", superseded),
        ] {
            self.metrics
                .sync_transfers(d.replicable_name, outcome, n as u64);
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
        done: &tokio::sync::mpsc::UnboundedSender<Fetched<S::Staged>>,
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
                .map(|rows| self.fetch().many(d, rows))
                .buffer_unordered(capacity);
            while let Some(fetched) = batches.next().await {
                for (row, r) in fetched.results {
                    settle(match r {
                        Ok(copy) => Outcome::Downloaded(copy),
                        Err(f) => Outcome::Failed(self.failure(d, &row, f)),
                    });
                }
                alone.extend(fetched.alone);
            }
        } else {
            alone = claimed.to_vec();
        }
        let mut singles = futures_util::stream::iter(alone)
            .take_while(|_| futures_util::future::ready(!stop.is_cancelled() && !done.is_closed()))
            .map(|row| {
                let cancelled = in_flight.start(&row);
                let span = row.span(d);
                async move {
                    let outcome = tokio::select! {
                        r = self.fetch().one(d, row) => match r {
                            Ok(copy) => Outcome::Downloaded(copy),
                            Err(f) => Outcome::Failed(self.failed_here(d, &row, f)),
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
        mut arrived: tokio::sync::mpsc::UnboundedReceiver<Fetched<S::Staged>>,
    ) -> Result<Recorded, DbError> {
        let (flushed_tx, mut flushed) =
            tokio::sync::mpsc::unbounded_channel::<Fetched<S::Staged>>();
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
                for flushed in commit::flush(&self.store, group).await {
                    match flushed {
                        // Only fails when publishing stopped: the row stays started and is
                        // failed at the next round.
                        Ok(copy) => drop(flushed_tx.send(copy)),
                        Err((row, f)) => failed.push(self.failure(d, &row, f)),
                    }
                }
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
                match commit::publish(&self.tracking, registry, &self.store, group).await {
                    Ok(published) => recorded.add(self, d, published),
                    Err(e) => {
                        // Ends the round: the flushes stop, then the downloads.
                        flushed.close();
                        return Err(e);
                    }
                }
            }
            Ok::<_, DbError>(recorded)
        };
        let (failed, recorded) = tokio::join!(flush, publish);
        let mut recorded = recorded?;
        recorded.failed.extend(failed);
        Ok(recorded)
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

    /// The fetcher of this sync.
    fn fetch(&self) -> Fetch<'_, C, S> {
        Fetch {
            source: &self.client,
            store: &self.store,
            metrics: &self.metrics,
            max_object_size: self.config.max_object_size,
        }
    }

    /// A failed attempt, logged in the row's span and counted by reason.
    fn failure(&self, d: &ReplicatorDescriptor, row: &ClaimedRow, f: Failed) -> SyncFailure {
        let _entered = row.span(d).entered();
        self.failed_here(d, row, f)
    }

    /// [`BlobSync::failure`], from inside the row's span already.
    fn failed_here(&self, d: &ReplicatorDescriptor, row: &ClaimedRow, f: Failed) -> SyncFailure {
        tracing::warn!(reason = %f.reason, missing_on_primary = f.missing, "blob download failed");
        self.metrics.sync_failure(d.replicable_name, f.kind);
        row.failed(f.reason, f.missing)
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
