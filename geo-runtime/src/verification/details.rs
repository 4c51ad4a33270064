//! The primary's verification columns of one model record, wherever they are stored (inline on
//! the model table or in its `<name>_states` table).

use chrono::{DateTime, Utc};

use super::VerificationState;
use crate::db::dialect::RowReader;
use crate::error::DbError;

/// The verification columns, in the order generated SQL binds and selects them.
pub const VERIFICATION_COLUMNS: [&str; 7] =
    geo_schema::columns::names(&geo_schema::VERIFICATION_COLUMNS);

/// The primary's verification state of one model record. A record with no state row yet reads
/// as the default: pending, never verified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerificationDetails {
    /// State of the checksum.
    pub verification_state: VerificationState,
    /// When the running verification started.
    pub verification_started_at: Option<DateTime<Utc>>,
    /// Earliest time of the next attempt after a failure.
    pub verification_retry_at: Option<DateTime<Utc>>,
    /// When the checksum was last computed.
    pub verified_at: Option<DateTime<Utc>>,
    /// Consecutive failures.
    pub verification_retry_count: i32,
    /// SHA-256 of the object.
    pub verification_checksum: Option<Vec<u8>>,
    /// Why the latest attempt failed, at most 255 characters.
    pub verification_failure: Option<String>,
}

impl VerificationDetails {
    /// Decodes the columns of [`VERIFICATION_COLUMNS`].
    pub fn decode<R: RowReader>(row: &R) -> Result<Self, DbError> {
        Ok(VerificationDetails {
            verification_state: VerificationState::stored(row.i16("verification_state")?)?,
            verification_started_at: row.opt_timestamp("verification_started_at")?,
            verification_retry_at: row.opt_timestamp("verification_retry_at")?,
            verified_at: row.opt_timestamp("verified_at")?,
            verification_retry_count: row.i32("verification_retry_count")?,
            verification_checksum: row.opt_bytes("verification_checksum")?,
            verification_failure: row.opt_string("verification_failure")?,
        })
    }
}
