//! The secondary's registries: one row per replicable record, carrying Geo's sync state machine
//! (pending 0 / started 1 / synced 2 / failed 3) and the secondary's verification columns.

pub(crate) mod backfill;
mod bulk;
mod copies;
mod counts;
#[cfg(feature = "testkit")]
mod fixture;
mod keys;
pub mod query;
mod row;
pub(crate) mod sql;
mod state;
pub(crate) mod store;
pub(crate) mod synced;
#[cfg(all(test, feature = "testing"))]
mod tests;

pub use crate::retry::{LAST_SYNC_FAILURE_MAX, truncate_failure};
pub(crate) use copies::{Copies, CopyFailure};
pub use counts::StateCounts;
pub use row::{ColumnValue, REGISTRY_COLUMNS, RegistryRecord};
pub use state::{InvalidTransition, SyncEvent, SyncState};
pub use store::{ClaimedRow, Registry, SyncFailure, SyncedCopy};
