//! The test kit for your own replicables (feature `testkit`, for `[dev-dependencies]`): the
//! conformance suite, Geo's shared examples done as real end-to-end checks, and registry
//! factories.
//!
//! Implement [`Fixture`] for your model (how the application creates, updates and deletes a
//! record with its object), then write one line in your tests:
//!
//! ```ignore
//! geo_runtime::conformance_suite!(widget_conformance, my_app::WidgetFixture);
//! ```
//!
//! That expands to a module with one test per [`Check`], so a failure names what broke. Each check
//! starts a real primary and a real secondary in process, over loopback HTTP, on SQLite, and also
//! on PostgreSQL when `GEO_TEST_DATABASE_URL` is set. It then drives the application through your
//! fixture and judges the result by the bytes on both sides and the rows in both databases, never
//! by what the secondary says about itself.

mod checks;
mod factory;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use factory::{RegistryFactory, RegistryFactoryExt, verification};

use crate::db::{Database, NodeRole};
use crate::flags;
use crate::node::nodes::add_secondary;
use crate::node::{Node, NodeConfig, NodeHandle, PrimaryConfig, SecondaryConfig};
use crate::registry::{Registry, SyncState};
use crate::replicator::{
    BlobReplicator, ReplicableModel, Replicator, ReplicatorDescriptor, ReplicatorSet,
};
use crate::storage::{LocalStore, ObjectKey};
use crate::testing::{self, TestDatabase};
use crate::worker::verify::{SecondaryVerifyConfig, VerifyConfig};

/// What a fixture's steps may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The application on the primary, as the fixture sees it: its database and its object store.
#[derive(Debug, Clone)]
pub struct App {
    /// The primary's database (the application's tables and the runtime's).
    pub db: Database,
    /// The primary's object store.
    pub store: LocalStore,
}

impl App {
    /// Writes `bytes` durably at `key` in the primary's store.
    pub async fn write_object(&self, key: &str, bytes: Vec<u8>) -> Result<(), BoxError> {
        self.store
            .write_bytes(&ObjectKey::parse(key)?, bytes.into(), None)
            .await?;
        Ok(())
    }

    /// Removes the object at `key` from the primary's store.
    pub async fn delete_object(&self, key: &str) -> Result<(), BoxError> {
        self.store.delete(&ObjectKey::parse(key)?).await?;
        Ok(())
    }
}

/// Deterministic test content for record `id`, version `version`: a few KiB of pseudo-random
/// bytes (empty for every 10th id, to cover empty objects).
pub fn content(id: i64, version: u32) -> Vec<u8> {
    let len = if id % 10 == 0 {
        0
    } else {
        1000 + (id as usize * 797) % 9000
    };
    let mut rng = fastrand::Rng::with_seed(((id as u64) << 8) | u64::from(version));
    (0..len).map(|_| rng.u8(..)).collect()
}

/// How the application creates, changes and deletes records of one replicable. The suite calls
/// these exactly as your application would run them; each must do the whole application write
/// (object, row, and the event in the row's transaction).
pub trait Fixture: Send + Sync + 'static {
    /// The model.
    type Model: ReplicableModel<Replicator: BlobReplicator> + Clone + Send + Sync;

    /// Creates the application's tables on the primary (its own migrations).
    fn create_tables(&self, db: &Database) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Creates record `id` with an object (use [`content`]`(id, 0)`), and publishes `created`.
    fn create(
        &self,
        app: &App,
        id: i64,
    ) -> impl Future<Output = Result<Self::Model, BoxError>> + Send;

    /// Replaces the record's object with new bytes (use [`content`]`(id, version)`), and
    /// publishes `updated`.
    fn update(
        &self,
        app: &App,
        model: &Self::Model,
        version: u32,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Deletes the record (publishing `deleted`) and its object.
    fn delete(
        &self,
        app: &App,
        model: &Self::Model,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// The checks of the conformance suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    /// Records created while the secondary runs reach it, byte for byte.
    CreatedEventsReplicate,
    /// An `updated` record's new bytes reach the secondary.
    UpdatedEventsReplicate,
    /// A `deleted` record's row and copy disappear from the secondary.
    DeletedEventsReplicate,
    /// Records created before the secondary started are backfilled.
    BackfillPicksUpExistingRecords,
    /// A download that fails is retried with backoff and succeeds once the object is back.
    FailedDownloadIsRetriedWithBackoff,
    /// The primary checksums every object correctly; the secondary verifies every copy.
    VerificationSucceedsOnBothSides,
    /// A corrupted copy on the secondary is found by its own re-verification and healed.
    CorruptedCopyIsDetectedAndHealed,
    /// With the feature flag off, the application's writes publish nothing.
    FeatureFlagOffPublishesNothing,
}

impl Check {
    /// Every check, in the order the suite lists them.
    pub const ALL: [Check; 8] = [
        Check::CreatedEventsReplicate,
        Check::UpdatedEventsReplicate,
        Check::DeletedEventsReplicate,
        Check::BackfillPicksUpExistingRecords,
        Check::FailedDownloadIsRetriedWithBackoff,
        Check::VerificationSucceedsOnBothSides,
        Check::CorruptedCopyIsDetectedAndHealed,
        Check::FeatureFlagOffPublishesNothing,
    ];

    /// The check's name, as its test is named.
    pub const fn name(self) -> &'static str {
        match self {
            Check::CreatedEventsReplicate => "created_events_replicate",
            Check::UpdatedEventsReplicate => "updated_events_replicate",
            Check::DeletedEventsReplicate => "deleted_events_replicate",
            Check::BackfillPicksUpExistingRecords => "backfill_picks_up_existing_records",
            Check::FailedDownloadIsRetriedWithBackoff => "failed_download_is_retried_with_backoff",
            Check::VerificationSucceedsOnBothSides => "verification_succeeds_on_both_sides",
            Check::CorruptedCopyIsDetectedAndHealed => "corrupted_copy_is_detected_and_healed",
            Check::FeatureFlagOffPublishesNothing => "feature_flag_off_publishes_nothing",
        }
    }
}

/// A check that failed: which, on which database, and what was seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("conformance check `{}` failed on {database}: {reason}", check.name())]
pub struct CheckFailure {
    /// The check.
    pub check: Check,
    /// `sqlite` or `postgres (schema …)`.
    pub database: String,
    /// What went wrong.
    pub reason: String,
}

/// Tuning of a suite run.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Records created per check.
    pub records: i64,
    /// How long a check waits for the secondary before it fails.
    pub deadline: Duration,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        SuiteOptions {
            records: 12,
            deadline: Duration::from_secs(60),
        }
    }
}

/// Runs `check` for `fixture` on SQLite and, when configured, PostgreSQL. Panics are not used
/// for failures: the error names the check and what was seen.
pub async fn run_check<F: Fixture>(
    check: Check,
    fixture: &F,
    options: &SuiteOptions,
) -> Result<(), CheckFailure> {
    let mut dbs = vec![(testing::sqlite().await, testing::sqlite().await)];
    if let Some(p) = testing::postgres().await
        && let Some(s) = testing::postgres().await
    {
        dbs.push((p, s));
    }
    for (primary, secondary) in dbs {
        let database = primary.label().to_owned();
        let fail = |reason: String| CheckFailure {
            check,
            database: database.clone(),
            reason,
        };
        let mut sites = Sites::new(fixture, primary, secondary, options)
            .await
            .map_err(|e| fail(format!("setting up: {e}")))?;
        let result = sites.run(check, fixture).await;
        sites.shutdown().await;
        result.map_err(fail)?;
    }
    Ok(())
}

/// A primary running, and a secondary that a check starts when it wants.
struct Sites<'a> {
    d: &'static ReplicatorDescriptor,
    set: ReplicatorSet,
    app: App,
    primary_db: TestDatabase,
    secondary_db: TestDatabase,
    primary: Option<NodeHandle>,
    secondary: Option<NodeHandle>,
    url: String,
    secondary_root: PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    options: &'a SuiteOptions,
}

type Outcome = Result<(), String>;

fn sha(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl<'a> Sites<'a> {
    async fn new<F: Fixture>(
        fixture: &F,
        primary_db: TestDatabase,
        secondary_db: TestDatabase,
        options: &'a SuiteOptions,
    ) -> Result<Sites<'a>, String> {
        let d = <<F::Model as ReplicableModel>::Replicator as Replicator>::DESCRIPTOR;
        let set = ReplicatorSet::empty().with_descriptor(d).map_err(err)?;
        let pdir = tempfile::tempdir().map_err(err)?;
        let sdir = tempfile::tempdir().map_err(err)?;
        fixture.create_tables(&primary_db).await.map_err(err)?;
        let mut config = PrimaryConfig::new("127.0.0.1:0".parse().map_err(err)?, pdir.path());
        config.verification = VerifyConfig {
            idle_wait: Duration::from_millis(50),
            ..VerifyConfig::default()
        };
        let primary = Node::start(NodeConfig::Primary(config), &primary_db, &set)
            .await
            .map_err(err)?;
        // The suite checks replication; a replicable off by default is switched on for it
        // (the flag check switches it off on purpose).
        flags::set_enabled(&primary_db, d, true)
            .await
            .map_err(err)?;
        let url = format!(
            "http://{}",
            primary.local_addr().ok_or("the primary has no address")?
        );
        Ok(Sites {
            d,
            set,
            app: App {
                db: primary_db.database().clone(),
                store: LocalStore::new(pdir.path()),
            },
            secondary_root: sdir.path().to_path_buf(),
            primary_db,
            secondary_db,
            primary: Some(primary),
            secondary: None,
            url,
            _dirs: (pdir, sdir),
            options,
        })
    }

    async fn start_secondary(&mut self) -> Outcome {
        let creds = add_secondary(&self.primary_db, "conformance", "http://secondary.invalid")
            .await
            .map_err(err)?;
        let mut config = SecondaryConfig::new(
            "conformance",
            &self.url,
            &creds.access_key,
            creds.secret,
            &self.secondary_root,
        );
        testing::fast_secondary(&mut config);
        config.sync.files_max_capacity = 8;
        // One consistency pass at start (the backfill); after that, changes must arrive by
        // their events, so a replicable that forgets to publish one is caught.
        config.consistency_interval = Duration::from_secs(3600);
        config.verification = SecondaryVerifyConfig {
            idle_wait: Duration::from_millis(50),
            disabled_recheck: Duration::from_millis(100),
            ..SecondaryVerifyConfig::default()
        };
        // The secondary's migrations create its flag table; switch the flag on there too.
        crate::db::migrate(&self.secondary_db, NodeRole::Secondary, &self.set)
            .await
            .map_err(err)?;
        flags::set_enabled(&self.secondary_db, self.d, true)
            .await
            .map_err(err)?;
        self.secondary = Some(
            Node::start(NodeConfig::Secondary(config), &self.secondary_db, &self.set)
                .await
                .map_err(err)?,
        );
        Ok(())
    }

    async fn shutdown(&mut self) {
        if let Some(s) = self.secondary.take() {
            s.shutdown().await;
        }
        if let Some(p) = self.primary.take() {
            p.shutdown().await;
        }
    }

    /// Waits until `check` passes; the last reason it gave when the deadline passes.
    async fn eventually<C, Fut>(&self, what: &str, mut check: C) -> Outcome
    where
        C: FnMut() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let start = Instant::now();
        loop {
            match check().await {
                Ok(()) => return Ok(()),
                Err(e) if start.elapsed() > self.options.deadline => {
                    return Err(format!(
                        "{what}: still {e} after {:?}",
                        self.options.deadline
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn key_of<M>(model: &M) -> Result<String, String>
    where
        M: ReplicableModel<Replicator: BlobReplicator> + Clone,
    {
        model
            .clone()
            .replicator()
            .object_key()
            .map(str::to_owned)
            .ok_or_else(|| format!("record {} has no object key", model.model_record_id()))
    }

    /// Every model's copy on the secondary has the primary's bytes, and its row is synced.
    async fn converged<M>(&self, models: &[M]) -> Outcome
    where
        M: ReplicableModel<Replicator: BlobReplicator> + Clone,
    {
        let registry = Registry::new(&self.secondary_db, self.d);
        for m in models {
            let id = m.model_record_id();
            let row = registry
                .find_by_model_id(id)
                .await
                .map_err(err)?
                .ok_or_else(|| format!("record {id} has no registry row on the secondary"))?;
            if row.state != SyncState::Synced {
                return Err(format!(
                    "record {id} is {} on the secondary ({})",
                    row.state.as_str(),
                    row.last_sync_failure.unwrap_or_default()
                ));
            }
            let key = Self::key_of(m)?;
            let primary = sha(&self.app.store.path(&ObjectKey::parse(&key).map_err(err)?))
                .ok_or_else(|| format!("record {id}: no object at {key} on the primary"))?;
            let secondary = row
                .object_key
                .as_deref()
                .and_then(|k| ObjectKey::parse(k).ok())
                .and_then(|k| sha(&self.secondary_path(&k)));
            if secondary != Some(primary) {
                return Err(format!(
                    "record {id}: the secondary's copy is not the primary's bytes at {key}"
                ));
            }
        }
        Ok(())
    }

    fn secondary_path(&self, key: &ObjectKey) -> PathBuf {
        LocalStore::new(&self.secondary_root).path(key)
    }

    async fn create_all<F: Fixture>(&self, fixture: &F) -> Result<Vec<F::Model>, String> {
        let mut models = Vec::new();
        for id in 1..=self.options.records {
            models.push(
                fixture
                    .create(&self.app, id)
                    .await
                    .map_err(|e| format!("the fixture could not create record {id}: {e}"))?,
            );
        }
        Ok(models)
    }

    async fn run<F: Fixture>(&mut self, check: Check, fixture: &F) -> Outcome {
        match check {
            Check::CreatedEventsReplicate => self.created_events_replicate(fixture).await,
            Check::UpdatedEventsReplicate => self.updated_events_replicate(fixture).await,
            Check::DeletedEventsReplicate => self.deleted_events_replicate(fixture).await,
            Check::BackfillPicksUpExistingRecords => {
                self.backfill_picks_up_existing_records(fixture).await
            }
            Check::FailedDownloadIsRetriedWithBackoff => {
                self.failed_download_is_retried_with_backoff(fixture).await
            }
            Check::VerificationSucceedsOnBothSides => {
                self.verification_succeeds_on_both_sides(fixture).await
            }
            Check::CorruptedCopyIsDetectedAndHealed => {
                self.corrupted_copy_is_detected_and_healed(fixture).await
            }
            Check::FeatureFlagOffPublishesNothing => {
                self.feature_flag_off_publishes_nothing(fixture).await
            }
        }
    }

    /// Fails unless the primary's log has a `name` event for every one of `models`.
    async fn published<M: ReplicableModel>(&self, name: &str, models: &[M]) -> Outcome {
        for m in models {
            let id = m.model_record_id();
            let n =
                crate::events::count_events(&self.app.db, self.d.replicable_name, Some((name, id)))
                    .await
                    .map_err(err)?;
            if n == 0 {
                return Err(format!(
                    "the application published no `{name}` event for record {id}"
                ));
            }
        }
        Ok(())
    }

    async fn events(&self) -> Result<i64, String> {
        crate::events::count_events(&self.app.db, self.d.replicable_name, None)
            .await
            .map_err(err)
    }
}

/// One test per [`Check`] for a fixture: `conformance_suite!(module_name, FixtureExpr)`.
///
/// The fixture expression is evaluated in each test. Add `options = expr` to tune
/// [`SuiteOptions`].
#[macro_export]
macro_rules! conformance_suite {
    ($module:ident, $fixture:expr) => {
        $crate::conformance_suite!($module, $fixture, options = $crate::testkit::SuiteOptions::default());
    };
    ($module:ident, $fixture:expr, options = $options:expr) => {
        #[allow(missing_docs)]
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_suite!(@check $fixture, $options,
                created_events_replicate => CreatedEventsReplicate,
                updated_events_replicate => UpdatedEventsReplicate,
                deleted_events_replicate => DeletedEventsReplicate,
                backfill_picks_up_existing_records => BackfillPicksUpExistingRecords,
                failed_download_is_retried_with_backoff => FailedDownloadIsRetriedWithBackoff,
                verification_succeeds_on_both_sides => VerificationSucceedsOnBothSides,
                corrupted_copy_is_detected_and_healed => CorruptedCopyIsDetectedAndHealed,
                feature_flag_off_publishes_nothing => FeatureFlagOffPublishesNothing
            );
        }
    };
    (@check $fixture:expr, $options:expr, $($name:ident => $check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Err(e) = $crate::testkit::run_check(
                    $crate::testkit::Check::$check,
                    &$fixture,
                    &$options,
                )
                .await
                {
                    panic!("{e}");
                }
            }
        )*
    };
}
