//! Registry factories (Geo's FactoryBot registries with their `synced`, `failed` and `started`
//! traits): real rows in a real tracking database, for testing code that reads registries.
//!
//! ```ignore
//! use geo_runtime::testkit::RegistryFactoryExt;
//! let row = WidgetRegistry::factory(&db).failed("boom").retry_count(3).insert().await?;
//! let rows = WidgetRegistry::factory(&db).synced().verification_succeeded([7; 32]).insert_many(100).await?;
//! ```

use std::marker::PhantomData;

use crate::db::Database;
use crate::db::dialect::now;
use crate::error::DbError;
use crate::registry::{Registry, RegistryRecord, SyncState, truncate_failure};
use crate::replicator::RegistryRow;
use crate::verification::VerificationState;
use chrono::{DateTime, TimeDelta, Utc};

/// `Registry::factory(&db)` for every generated registry type.
pub trait RegistryFactoryExt: RegistryRow {
    /// A factory of rows of this registry in `db` (a secondary's tracking database, migrated).
    fn factory(db: &Database) -> RegistryFactory<Self> {
        RegistryFactory::new(db)
    }
}

impl<R: RegistryRow> RegistryFactoryExt for R {}

/// Builds registry rows; every trait and override returns the factory, `insert` writes.
#[derive(Debug)]
pub struct RegistryFactory<R> {
    db: Database,
    model_record_id: Option<i64>,
    state: SyncState,
    retry_count: i32,
    retry_at: Option<DateTime<Utc>>,
    last_synced_at: Option<DateTime<Utc>>,
    sync_attempt: i64,
    object_key: Option<String>,
    last_sync_failure: Option<String>,
    verification_state: VerificationState,
    verified_at: Option<DateTime<Utc>>,
    verification_started_at: Option<DateTime<Utc>>,
    verification_retry_count: i32,
    verification_retry_at: Option<DateTime<Utc>>,
    verification_checksum: Option<Vec<u8>>,
    verification_failure: Option<String>,
    checksum_mismatch: bool,
    _row: PhantomData<fn() -> R>,
}

impl<R> Clone for RegistryFactory<R> {
    fn clone(&self) -> Self {
        RegistryFactory {
            db: self.db.clone(),
            model_record_id: self.model_record_id,
            state: self.state,
            retry_count: self.retry_count,
            retry_at: self.retry_at,
            last_synced_at: self.last_synced_at,
            sync_attempt: self.sync_attempt,
            object_key: self.object_key.clone(),
            last_sync_failure: self.last_sync_failure.clone(),
            verification_state: self.verification_state,
            verified_at: self.verified_at,
            verification_started_at: self.verification_started_at,
            verification_retry_count: self.verification_retry_count,
            verification_retry_at: self.verification_retry_at,
            verification_checksum: self.verification_checksum.clone(),
            verification_failure: self.verification_failure.clone(),
            checksum_mismatch: self.checksum_mismatch,
            _row: PhantomData,
        }
    }
}

impl<R: RegistryRow> RegistryFactory<R> {
    /// A pending row for the next free model id.
    pub fn new(db: &Database) -> Self {
        RegistryFactory {
            db: db.clone(),
            model_record_id: None,
            state: SyncState::Pending,
            retry_count: 0,
            retry_at: None,
            last_synced_at: None,
            sync_attempt: 0,
            object_key: None,
            last_sync_failure: None,
            verification_state: VerificationState::Pending,
            verified_at: None,
            verification_started_at: None,
            verification_retry_count: 0,
            verification_retry_at: None,
            verification_checksum: None,
            verification_failure: None,
            checksum_mismatch: false,
            _row: PhantomData,
        }
    }

    /// Waiting for its first sync (the default).
    pub fn pending(mut self) -> Self {
        self.state = SyncState::Pending;
        self.last_synced_at = None;
        self
    }

    /// Being synced now, by attempt 1.
    pub fn started(mut self) -> Self {
        self.state = SyncState::Started;
        self.last_synced_at = Some(now());
        self.sync_attempt = self.sync_attempt.max(1);
        self
    }

    /// Synced, with an object key (`<plural>/<id>` unless overridden).
    pub fn synced(mut self) -> Self {
        self.state = SyncState::Synced;
        self.last_synced_at = Some(now());
        self.sync_attempt = self.sync_attempt.max(1);
        self.retry_count = 0;
        self.retry_at = None;
        self.last_sync_failure = None;
        self
    }

    /// Failed once with `reason`, retrying in an hour.
    pub fn failed(mut self, reason: &str) -> Self {
        self.state = SyncState::Failed;
        self.last_synced_at = Some(now());
        self.sync_attempt = self.sync_attempt.max(1);
        self.retry_count = self.retry_count.max(1);
        self.retry_at = Some(now() + TimeDelta::hours(1));
        self.last_sync_failure = Some(truncate_failure(reason));
        self
    }

    /// The model record id.
    pub fn model_id(mut self, id: i64) -> Self {
        self.model_record_id = Some(id);
        self
    }

    /// Consecutive failures.
    pub fn retry_count(mut self, n: i32) -> Self {
        self.retry_count = n;
        self
    }

    /// When the next attempt may run.
    pub fn retry_at(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.retry_at = at;
        self
    }

    /// The copy's object key.
    pub fn object_key(mut self, key: &str) -> Self {
        self.object_key = Some(key.to_owned());
        self
    }

    /// The attempt number.
    pub fn sync_attempt(mut self, n: i64) -> Self {
        self.sync_attempt = n;
        self
    }

    /// The copy is waiting for verification.
    pub fn verification_pending(mut self) -> Self {
        self.verification_state = VerificationState::Pending;
        self.verified_at = None;
        self
    }

    /// The copy is being verified now.
    pub fn verification_started(mut self) -> Self {
        self.verification_state = VerificationState::Started;
        self.verification_started_at = Some(now());
        self
    }

    /// The copy was verified just now with `checksum`.
    pub fn verification_succeeded(mut self, checksum: [u8; 32]) -> Self {
        self.verification_state = VerificationState::Succeeded;
        self.verified_at = Some(now());
        self.verification_checksum = Some(checksum.to_vec());
        self.verification_failure = None;
        self.checksum_mismatch = false;
        self
    }

    /// The copy failed verification with `reason` (a checksum mismatch when `mismatch`). As in
    /// the runtime, a copy that fails verification goes back to the sync: the row is failed too,
    /// retrying in an hour (a synced row whose verification failed cannot exist: the registry's
    /// CHECK constraints refuse it).
    pub fn verification_failed(mut self, reason: &str, mismatch: bool) -> Self {
        self.verification_state = VerificationState::Failed;
        self.verification_retry_count = self.verification_retry_count.max(1);
        self.verification_retry_at = Some(now() + TimeDelta::hours(1));
        self.verification_failure = Some(truncate_failure(reason));
        self.checksum_mismatch = mismatch;
        self.state = SyncState::Failed;
        self.last_synced_at = self.last_synced_at.or_else(|| Some(now()));
        self.retry_count = self.verification_retry_count;
        self.retry_at = self.verification_retry_at;
        self.last_sync_failure = Some(truncate_failure(&format!(
            "Verification failed with: {reason}"
        )));
        self
    }

    /// Nothing to compare the copy with yet.
    pub fn verification_disabled(mut self) -> Self {
        self.verification_state = VerificationState::Disabled;
        self
    }

    /// When the copy was last verified.
    pub fn verified_at(mut self, at: Option<DateTime<Utc>>) -> Self {
        self.verified_at = at;
        self
    }

    async fn next_id(&self) -> Result<i64, DbError> {
        Registry::new(&self.db, R::DESCRIPTOR).next_model_id().await
    }

    /// Inserts the row and returns it, read back through the generated type.
    pub async fn insert(&self) -> Result<R, DbError> {
        let id = match self.model_record_id {
            Some(id) => id,
            None => self.next_id().await?,
        };
        let d = R::DESCRIPTOR;
        let object_key = self.object_key.clone().or_else(|| {
            (self.state == SyncState::Synced).then(|| format!("{}/{id}", d.replicable_name_plural))
        });
        let registry = Registry::new(&self.db, d);
        registry
            .insert_record(&RegistryRecord {
                id: 0,
                model_record_id: id,
                state: self.state,
                retry_count: self.retry_count,
                retry_at: self.retry_at,
                last_synced_at: self.last_synced_at,
                sync_attempt: self.sync_attempt,
                object_key,
                last_sync_failure: self.last_sync_failure.clone(),
                created_at: now(),
                verification_state: self.verification_state,
                verification_started_at: self.verification_started_at,
                verified_at: self.verified_at,
                verification_retry_at: self.verification_retry_at,
                verification_retry_count: self.verification_retry_count,
                verification_checksum: self.verification_checksum.clone(),
                verification_checksum_mismatched: None,
                checksum_mismatch: self.checksum_mismatch,
                verification_failure: self.verification_failure.clone(),
            })
            .await?;
        let record = registry
            .find_by_model_id(id)
            .await?
            .ok_or(DbError::RowNotFound {
                table: d.registry_table,
                id,
            })?;
        Ok(R::from(record))
    }

    /// Inserts `n` rows like this one for consecutive model ids (from the next free one, or
    /// from the overridden id).
    pub async fn insert_many(&self, n: usize) -> Result<Vec<R>, DbError> {
        let first = match self.model_record_id {
            Some(id) => id,
            None => self.next_id().await?,
        };
        let mut rows = Vec::with_capacity(n);
        for i in 0..n {
            rows.push(
                self.clone()
                    .model_id(first + i64::try_from(i).unwrap_or(i64::MAX))
                    .insert()
                    .await?,
            );
        }
        Ok(rows)
    }
}

/// Verification details for a primary's records, in each state (write them with the generated
/// `model.set_verification_details(&db, &details)`).
pub mod verification {
    use chrono::TimeDelta;

    use crate::db::dialect::now;
    use crate::verification::{VerificationDetails, VerificationState};

    /// Waiting to be checksummed.
    pub fn pending() -> VerificationDetails {
        VerificationDetails::default()
    }

    /// Being checksummed now.
    pub fn started() -> VerificationDetails {
        VerificationDetails {
            verification_state: VerificationState::Started,
            verification_started_at: Some(now()),
            ..VerificationDetails::default()
        }
    }

    /// Checksummed just now.
    pub fn succeeded(checksum: [u8; 32]) -> VerificationDetails {
        VerificationDetails {
            verification_state: VerificationState::Succeeded,
            verified_at: Some(now()),
            verification_checksum: Some(checksum.to_vec()),
            ..VerificationDetails::default()
        }
    }

    /// Failed once with `reason`, retrying in an hour.
    pub fn failed(reason: &str) -> VerificationDetails {
        VerificationDetails {
            verification_state: VerificationState::Failed,
            verification_retry_count: 1,
            verification_retry_at: Some(now() + TimeDelta::hours(1)),
            verification_failure: Some(reason.to_owned()),
            ..VerificationDetails::default()
        }
    }

    /// Not verified (disabled).
    pub fn disabled() -> VerificationDetails {
        VerificationDetails {
            verification_state: VerificationState::Disabled,
            ..VerificationDetails::default()
        }
    }
}
