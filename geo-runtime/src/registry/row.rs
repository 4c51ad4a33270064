//! The registry row, independent of the replicable (the generated `WidgetRegistry` converts from
//! it), and its decoding.

use chrono::{DateTime, Utc};

use super::SyncState;
use crate::db::dialect::RowReader;
use crate::error::DbError;
use crate::verification::VerificationState;

/// The registry's columns after `id` and the model foreign key, in the order generated SQL
/// selects them (the schema's [`geo_schema::REGISTRY_COLUMNS`]).
pub const REGISTRY_COLUMNS: [&str; 17] = geo_schema::columns::names(&geo_schema::REGISTRY_COLUMNS);

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

/// One column's value in a [`RegistryRecord`], typed as the schema's column type reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnValue<'a> {
    /// `state`.
    SyncState(SyncState),
    /// `verification_state`.
    VerificationState(VerificationState),
    /// A count.
    I32(i32),
    /// An attempt number.
    I64(i64),
    /// A point in time, or none.
    OptionalTimestamp(Option<DateTime<Utc>>),
    /// A point in time.
    Timestamp(DateTime<Utc>),
    /// Text, or none.
    OptionalString(Option<&'a str>),
    /// Bytes, or none.
    OptionalBytes(Option<&'a [u8]>),
    /// A flag.
    Bool(bool),
}

impl RegistryRecord {
    /// The record's values of [`geo_schema::REGISTRY_COLUMNS`], in that order, each with its
    /// column (what GraphQL shows and the test kit writes, without naming a column again).
    pub fn values(&self) -> [(geo_schema::Column, ColumnValue<'_>); 17] {
        use ColumnValue as V;
        let values = [
            V::SyncState(self.state),
            V::I32(self.retry_count),
            V::OptionalTimestamp(self.retry_at),
            V::OptionalTimestamp(self.last_synced_at),
            V::I64(self.sync_attempt),
            V::OptionalString(self.object_key.as_deref()),
            V::OptionalString(self.last_sync_failure.as_deref()),
            V::Timestamp(self.created_at),
            V::VerificationState(self.verification_state),
            V::OptionalTimestamp(self.verification_started_at),
            V::OptionalTimestamp(self.verified_at),
            V::OptionalTimestamp(self.verification_retry_at),
            V::I32(self.verification_retry_count),
            V::OptionalBytes(self.verification_checksum.as_deref()),
            V::OptionalBytes(self.verification_checksum_mismatched.as_deref()),
            V::Bool(self.checksum_mismatch),
            V::OptionalString(self.verification_failure.as_deref()),
        ];
        let mut i = 0;
        values.map(|v| {
            let column = geo_schema::REGISTRY_COLUMNS[i];
            i += 1;
            (column, v)
        })
    }

    /// Decodes a row selected with the generated column list; `foreign_key` is the model id
    /// column (`widget_id`).
    pub fn decode<R: RowReader>(row: &R, foreign_key: &str) -> Result<Self, DbError> {
        Ok(RegistryRecord {
            id: row.i64("id")?,
            model_record_id: row.i64(foreign_key)?,
            state: SyncState::stored(row.i16("state")?)?,
            retry_count: row.i32("retry_count")?,
            retry_at: row.opt_timestamp("retry_at")?,
            last_synced_at: row.opt_timestamp("last_synced_at")?,
            sync_attempt: row.i64("sync_attempt")?,
            object_key: row.opt_string("object_key")?,
            last_sync_failure: row.opt_string("last_sync_failure")?,
            created_at: row.timestamp("created_at")?,
            verification_state: VerificationState::stored(row.i16("verification_state")?)?,
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

#[cfg(test)]
mod tests {
    use geo_schema::columns::RustType;

    use super::*;

    #[test]
    fn values_follow_the_schema_in_order_and_type() {
        let r = RegistryRecord {
            id: 1,
            model_record_id: 2,
            state: SyncState::Pending,
            retry_count: 0,
            retry_at: None,
            last_synced_at: None,
            sync_attempt: 0,
            object_key: None,
            last_sync_failure: None,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            verification_state: VerificationState::Pending,
            verification_started_at: None,
            verified_at: None,
            verification_retry_at: None,
            verification_retry_count: 0,
            verification_checksum: None,
            verification_checksum_mismatched: None,
            checksum_mismatch: false,
            verification_failure: None,
        };
        for (column, value) in r.values() {
            let matches = matches!(
                (column.ty.rust(), value),
                (RustType::SyncState, ColumnValue::SyncState(_))
                    | (
                        RustType::VerificationState,
                        ColumnValue::VerificationState(_)
                    )
                    | (RustType::I32, ColumnValue::I32(_))
                    | (RustType::I64, ColumnValue::I64(_))
                    | (
                        RustType::OptionalTimestamp,
                        ColumnValue::OptionalTimestamp(_)
                    )
                    | (RustType::Timestamp, ColumnValue::Timestamp(_))
                    | (RustType::OptionalString, ColumnValue::OptionalString(_))
                    | (RustType::OptionalBytes, ColumnValue::OptionalBytes(_))
                    | (RustType::Bool, ColumnValue::Bool(_))
            );
            assert!(matches, "{}: {value:?}", column.name);
        }
        // Same-typed columns are not swapped: each reads its own field.
        let at = |s: i64| DateTime::<Utc>::from_timestamp(s, 0);
        let r = RegistryRecord {
            retry_at: at(1),
            last_synced_at: at(2),
            verification_started_at: at(3),
            verified_at: at(4),
            verification_retry_at: at(5),
            retry_count: 6,
            verification_retry_count: 7,
            object_key: Some("key".into()),
            last_sync_failure: Some("sync".into()),
            verification_failure: Some("verification".into()),
            verification_checksum: Some(vec![1]),
            verification_checksum_mismatched: Some(vec![2]),
            ..r
        };
        let expected = [
            ("retry_at", ColumnValue::OptionalTimestamp(at(1))),
            ("last_synced_at", ColumnValue::OptionalTimestamp(at(2))),
            (
                "verification_started_at",
                ColumnValue::OptionalTimestamp(at(3)),
            ),
            ("verified_at", ColumnValue::OptionalTimestamp(at(4))),
            (
                "verification_retry_at",
                ColumnValue::OptionalTimestamp(at(5)),
            ),
            ("retry_count", ColumnValue::I32(6)),
            ("verification_retry_count", ColumnValue::I32(7)),
            ("object_key", ColumnValue::OptionalString(Some("key"))),
            (
                "last_sync_failure",
                ColumnValue::OptionalString(Some("sync")),
            ),
            (
                "verification_failure",
                ColumnValue::OptionalString(Some("verification")),
            ),
            (
                "verification_checksum",
                ColumnValue::OptionalBytes(Some(&[1])),
            ),
            (
                "verification_checksum_mismatched",
                ColumnValue::OptionalBytes(Some(&[2])),
            ),
        ];
        let values = r.values();
        for (name, want) in expected {
            let got = values.iter().find(|(c, _)| c.name == name).map(|(_, v)| *v);
            assert_eq!(got, Some(want), "{name}");
        }
    }
}
