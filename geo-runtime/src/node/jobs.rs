//! A node's jobs, as a list: each is a worker that runs until cancelled, or a task run at an
//! interval. `Node::start` builds the list of its role and spawns it; what each job does lives in
//! its worker, and the few lines here say when it runs and what it logs when it fails.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::PrimaryClient;
use super::runner::SecondaryConfig;
use crate::db::Database;
use crate::db::dialect::now;
use crate::events::{EventCursor, prune_events};
use crate::flags;
use crate::registry::Registry;
use crate::replicator::ReplicatorSet;
use crate::status::StatusCollector;
use crate::storage::BlobStore;
use crate::worker::consistency::Consistency;
use crate::worker::removal::remove_objects;
use crate::worker::sync::BlobSync;
use crate::worker::verify::{PrimaryVerification, SecondaryVerification};

type Tick = Box<dyn FnMut() -> BoxFuture<'static, ()> + Send>;
type Run = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// One job of a node.
pub(crate) struct Job {
    name: &'static str,
    kind: Kind,
}

enum Kind {
    /// Runs until cancelled.
    Worker(Run),
    /// Runs every interval (the first time at once) until cancelled.
    Every(Duration, Tick),
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("name", &self.name).finish()
    }
}

impl Job {
    /// A worker: `run` is given the node's cancellation.
    pub(crate) fn worker<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let run: Run = Box::new(move |cancel| Box::pin(run(cancel)));
        Job {
            name,
            kind: Kind::Worker(run),
        }
    }

    /// A task run every `interval`.
    pub(crate) fn every<F, Fut>(name: &'static str, interval: Duration, mut tick: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let tick: Tick = Box::new(move || Box::pin(tick()));
        Job {
            name,
            kind: Kind::Every(interval, tick),
        }
    }
}

/// Spawns every job on `tracker`, each stopping when `cancel` is cancelled.
pub(crate) fn spawn_all(tracker: &TaskTracker, cancel: &CancellationToken, jobs: Vec<Job>) {
    for job in jobs {
        tracing::debug!(job = job.name, "starting");
        let cancel = cancel.clone();
        match job.kind {
            Kind::Worker(run) => {
                tracker.spawn(run(cancel));
            }
            Kind::Every(interval, mut tick) => {
                tracker.spawn(async move {
                    loop {
                        tick().await;
                        tokio::select! {
                            () = cancel.cancelled() => break,
                            () = tokio::time::sleep(interval) => {}
                        }
                    }
                });
            }
        }
    }
}

/// The primary's checksumming, and its sweep of checksums that timed out (every 10 minutes).
pub(crate) fn primary_verification<S: BlobStore>(verification: PrimaryVerification<S>) -> [Job; 2] {
    let worker = verification.clone();
    [
        Job::worker("primary verification", move |cancel| async move {
            worker.run(cancel).await
        }),
        Job::every(
            "checksum timeout sweep",
            Duration::from_secs(600),
            move || {
                let verification = verification.clone();
                async move {
                    match verification.fail_timed_out().await {
                        Ok(0) => {}
                        Ok(n) => tracing::warn!(rows = n, "failed checksums that timed out"),
                        Err(e) => {
                            tracing::warn!(error = %e, "the verification-timeout sweep failed")
                        }
                    }
                }
            },
        ),
    ]
}

/// The primary's pruning of events every secondary has applied.
pub(crate) fn event_pruning(db: &Database, interval: Duration) -> Job {
    let db = db.clone();
    Job::every("event pruning", interval, move || {
        let db = db.clone();
        async move {
            if let Err(e) = prune_events(&db, 50_000).await {
                tracing::warn!(error = %e, "pruning the event log failed");
            }
        }
    })
}

/// The secondary's event cursor.
pub(crate) fn event_cursor(cursor: EventCursor<PrimaryClient>) -> Job {
    Job::worker("event cursor", move |cancel| async move {
        if let Err(e) = cursor.run(cancel).await {
            tracing::error!(error = %e, "the event cursor stopped");
        }
    })
}

/// The secondary's verification of its copies, its sweep of verifications that timed out, and
/// its look at the copies disabled for want of a primary checksum.
pub(crate) fn secondary_verification<S: BlobStore>(
    verification: SecondaryVerification<S>,
    client: PrimaryClient,
    sweep: Duration,
    recheck_every: Duration,
    recheck: Duration,
) -> [Job; 3] {
    let (worker, sweeper) = (verification.clone(), verification.clone());
    [
        Job::worker("secondary verification", move |cancel| async move {
            worker.run(cancel).await
        }),
        Job::every("verification timeout sweep", sweep, move || {
            let sweeper = sweeper.clone();
            async move {
                match sweeper.release_timed_out().await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(rows = n, "released verifications that timed out"),
                    Err(e) => tracing::warn!(error = %e, "the verification-timeout sweep failed"),
                }
            }
        }),
        Job::every("disabled copies recheck", recheck_every, move || {
            let (verification, client) = (verification.clone(), client.clone());
            async move {
                if let Err(e) = verification.check_disabled(&client, recheck).await {
                    tracing::warn!(error = %e, "checking disabled copies against the primary failed");
                }
            }
        }),
    ]
}

/// The secondary's blob sync.
pub(crate) fn blob_sync<S: BlobStore>(sync: BlobSync<PrimaryClient, S>) -> Job {
    Job::worker(
        "blob sync",
        move |cancel| async move { sync.run(cancel).await },
    )
}

/// The consistency pass of every replicable whose replication is on.
pub(crate) fn consistency_pass(
    db: &Database,
    set: &ReplicatorSet,
    client: PrimaryClient,
    interval: Duration,
) -> Job {
    let (db, set) = (db.clone(), set.clone());
    Job::every("consistency pass", interval, move || {
        let pass = Consistency::new(&db, client.clone());
        let (db, set) = (db.clone(), set.clone());
        async move {
            for d in set.descriptors() {
                match flags::is_enabled(&db, d).await {
                    Ok(true) => {
                        if let Err(e) = pass.run_pass(d).await {
                            tracing::warn!(replicable = d.replicable_name, error = %e, "consistency pass failed");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "reading a feature flag failed"),
                }
            }
        }
    })
}

/// The sweep of syncs that ran longer than `timeout`.
pub(crate) fn sync_timeout_sweep(
    db: &Database,
    set: &ReplicatorSet,
    timeout: Duration,
    interval: Duration,
) -> Job {
    let (db, set) = (db.clone(), set.clone());
    Job::every("sync timeout sweep", interval, move || {
        let (db, set) = (db.clone(), set.clone());
        async move {
            for d in set.descriptors() {
                match Registry::new(&db, d).fail_timed_out(timeout, now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(
                        replicable = d.replicable_name,
                        rows = n,
                        "failed syncs that timed out"
                    ),
                    Err(e) => tracing::warn!(error = %e, "the sync-timeout sweep failed"),
                }
            }
        }
    })
}

/// The removal of local copies whose records are gone (every second, in rounds of 1,000).
pub(crate) fn removals<S: BlobStore>(db: &Database, set: &ReplicatorSet, store: S) -> Job {
    let (db, set) = (db.clone(), set.clone());
    Job::every("removals", Duration::from_secs(1), move || {
        let (db, set, store) = (db.clone(), set.clone(), store.clone());
        async move {
            loop {
                match remove_objects(&db, &set, &store, 1000).await {
                    // A full round of entries it could finish: there may be more.
                    Ok(r) if r.deleted + r.kept + r.orphaned == 1000 => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "removing local objects failed");
                        break;
                    }
                }
            }
        }
    })
}

/// The report of the cursor's safe position to the primary (which prunes its log with it and
/// shows it in its status): as soon as the position moved, at most once per
/// `report_min_interval`, and at least once per `report_interval` while it stays put (so the
/// report's age says the secondary is alive).
pub(crate) fn cursor_report(
    db: &Database,
    set: &ReplicatorSet,
    client: PrimaryClient,
    c: &SecondaryConfig,
) -> Job {
    let (db, set, config) = (db.clone(), set.clone(), c.cursor.clone());
    let (at_most_every, at_least_every) = (c.report_min_interval, c.report_interval);
    let last: Arc<Mutex<Option<(i64, Instant)>>> = Arc::default();
    Job::every(
        "cursor report",
        at_most_every.min(at_least_every),
        move || {
            let reader = EventCursor::new(&db, &set, client.clone(), config.clone(), "reporter");
            let (client, last) = (client.clone(), last.clone());
            async move {
                let Ok(Some(position)) = reader.safe_position().await else {
                    return;
                };
                let previous = last.lock().ok().and_then(|l| *l);
                if previous.is_some_and(|(reported, at)| {
                    reported == position && at.elapsed() < at_least_every
                }) {
                    return;
                }
                match client.report_cursor(position).await {
                    Ok(()) => {
                        if let Ok(mut l) = last.lock() {
                            *l = Some((position, Instant::now()));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "could not report the cursor to the primary")
                    }
                }
            }
        },
    )
}

/// The node's status, collected every `interval` for the admin endpoint and the gauges.
pub(crate) fn status_collection(status: StatusCollector, interval: Duration) -> Job {
    Job::every("status collection", interval, move || {
        let status = status.clone();
        async move {
            if let Err(e) = status.refresh().await {
                tracing::warn!(error = %e, "collecting the status failed");
            }
        }
    })
}
