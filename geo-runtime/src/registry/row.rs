//! The registry row, independent of the replicable (the generated `WidgetRegistry` converts from
//! it), and its decoding.

use chrono::{DateTime, Utc};

use super::SyncState;
use crate::db::dialect::RowReader;
use crate::error::DbError;
use crate::verification::VerificationState;

/// The registry's columns after `id` and the model foreign key, in the order generated SQL
/// selects them.
pub const REGISTRY_COLUMNS: [&str; 17] = [
    "state",
    "retry_count",
    "retry_at",
    "last_synced_at",
    "sync_attempt",
    "object_key",
    "last_sync_failure",
    "created_at",
    "verification_state",
    "verification_started_at",
    "verified_at",
    "verification_retry_at",
    "verification_retry_count",
    "verification_checksum",
    "verification_checksum_mismatched",
    "checksum_mismatch",
    "verification_failure",
];

/// One registry row, whatever the replicable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRecord {
    /// Registry row id.
    pub id: i64,
    /// The model record tracked (the `<name>_id` column).
    pub model_record_id: i64,
    /// Sync state.
    pub state: SyncState,
    /// Consecutive failures.
    pub retry_count: i32,
    /// Earliest time of the next attempt after a failure.
    pub retry_at: Option<DateTime<Utc>>,
    /// Start of the latest attempt (Geo sets it on `start`, clears it on `pending`).
    pub last_synced_at: Option<DateTime<Utc>>,
    /// Number of the latest attempt; only that attempt may finish it.
    pub sync_attempt: i64,
    /// The object key of the synced copy.
    pub object_key: Option<String>,
    /// Why the latest attempt failed, at most 255 characters.
    pub last_sync_failure: Option<String>,
    /// When the row was created.
    pub created_at: DateTime<Utc>,
    /// The secondary's verification state of its copy.
    pub verification_state: VerificationState,
    /// When the running verification started.
    pub verification_started_at: Option<DateTime<Utc>>,
    /// When the copy was last verified.
    pub verified_at: Option<DateTime<Utc>>,
    /// Earliest time of the next verification after a failure.
    pub verification_retry_at: Option<DateTime<Utc>>,
    /// Consecutive verification failures.
    pub verification_retry_count: i32,
    /// SHA-256 of the local copy.
    pub verification_checksum: Option<Vec<u8>>,
    /// The checksum that did not match (see the verification docs for which side's).
    pub verification_checksum_mismatched: Option<Vec<u8>>,
    /// Whether the last verification found a mismatch.
    pub checksum_mismatch: bool,
    /// Why the latest verification failed, at most 255 characters.
    pub verification_failure: Option<String>,
}

impl RegistryRecord {
    /// Decodes a row selected with the generated column list; `foreign_key` is the model id
    /// column (`widget_id`).
    pub fn decode<R: RowReader>(row: &R, foreign_key: &str) -> Result<Self, DbError> {
        let state = row.i16("state")?;
        let verification_state = row.i16("verification_state")?;
        Ok(RegistryRecord {
            id: row.i64("id")?,
            model_record_id: row.i64(foreign_key)?,
            state: SyncState::from_i16(state).ok_or(DbError::InvalidValue {
                column: "state".into(),
                what: "sync state (0..=3)",
                value: state.to_string(),
            })?,
            retry_count: row.i32("retry_count")?,
            retry_at: row.opt_timestamp("retry_at")?,
            last_synced_at: row.opt_timestamp("last_synced_at")?,
            sync_attempt: row.i64("sync_attempt")?,
            object_key: row.opt_string("object_key")?,
            last_sync_failure: row.opt_string("last_sync_failure")?,
            created_at: row.timestamp("created_at")?,
            verification_state: VerificationState::from_i16(verification_state).ok_or(
                DbError::InvalidValue {
                    column: "verification_state".into(),
                    what: "verification state (0..=4)",
                    value: verification_state.to_string(),
                },
            )?,
            verification_started_at: row.opt_timestamp("verification_started_at")?,
            verified_at: row.opt_timestamp("verified_at")?,
            verification_retry_at: row.opt_timestamp("verification_retry_at")?,
            verification_retry_count: row.i32("verification_retry_count")?,
            verification_checksum: row.opt_bytes("verification_checksum")?,
            verification_checksum_mismatched: row.opt_bytes("verification_checksum_mismatched")?,
            checksum_mismatch: row.bool("checksum_mismatch")?,
            verification_failure: row.opt_string("verification_failure")?,
        })
    }
}
