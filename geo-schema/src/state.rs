//! Geo's state numbers, as stored in the `state` and `verification_state` columns.

/// The sync states of a registry row: pending 0, started 1, synced 2, failed 3.
pub mod sync {
    /// Waiting to be synced.
    pub const PENDING: i16 = 0;
    /// A worker is syncing it.
    pub const STARTED: i16 = 1;
    /// The local copy is in place.
    pub const SYNCED: i16 = 2;
    /// The last attempt failed.
    pub const FAILED: i16 = 3;
    /// The highest state number.
    pub const MAX: i16 = FAILED;
}

/// The verification states, on both sides: pending 0, started 1, succeeded 2, failed 3,
/// disabled 4.
pub mod verification {
    /// Waiting for a checksum.
    pub const PENDING: i16 = 0;
    /// A worker is computing the checksum.
    pub const STARTED: i16 = 1;
    /// The checksum was computed (primary) or matched the primary's (secondary).
    pub const SUCCEEDED: i16 = 2;
    /// Checksumming failed, or the checksums did not match.
    pub const FAILED: i16 = 3;
    /// Not verified.
    pub const DISABLED: i16 = 4;
    /// The highest state number.
    pub const MAX: i16 = DISABLED;
}
