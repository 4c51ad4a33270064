//! The verification workers: the primary's checksumming of its objects ([`PrimaryVerification`],
//! primary.rs) and a secondary's verification of its own copies ([`SecondaryVerification`],
//! secondary.rs), with the tuning and the round reports they share.

mod primary;
mod secondary;

pub use crate::verification::VerificationCounts;
pub use primary::PrimaryVerification;
pub use secondary::{SecondaryVerification, SecondaryVerifyConfig};

use std::time::Duration;

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

/// The minimum re-verification interval.
pub const MIN_REVERIFY_INTERVAL: Duration = Duration::from_secs(24 * 3600);
