//! The secondary's registries: one row per replicable record, carrying Geo's sync state machine
//! (pending 0 / started 1 / synced 2 / failed 3) and the secondary's verification columns.

pub mod backoff;
mod row;
pub mod sql;
mod state;
pub mod store;

pub use row::{LAST_SYNC_FAILURE_MAX, REGISTRY_COLUMNS, RegistryRecord, truncate_failure};
pub use state::{InvalidTransition, SyncEvent, SyncState};
pub use store::{ClaimedRow, Registry, StateCounts, SyncFailure, SyncedCopy};
