//! Verification: the checksum state machine on both sides (pending 0 / started 1 / succeeded 2 /
//! failed 3 / disabled 4), and the primary's verification details.

mod checksums;
mod details;
pub(crate) mod sql;
mod state;
pub(crate) mod store;

pub use checksums::VerificationCounts;
pub(crate) use checksums::{Checksums, ClaimedRecord, Due};
pub use details::{VERIFICATION_COLUMNS, VerificationDetails};
pub use state::{InvalidVerificationTransition, VerificationEvent, VerificationState};
