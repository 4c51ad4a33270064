//! Strategies: how one kind of data moves from the primary to a secondary, is served, is
//! checksummed and is removed. The workers hold the schedule (claims, rounds, retries, the
//! registry's states); a strategy holds what is particular to its data. Geo's blob strategy is
//! [`blob`].
//!
//! The workers reach a strategy through the functions here, each a `match` on the
//! descriptor's [`Strategy`]: a new strategy is a new module plus an arm in each, and its own
//! sync worker and routes registered beside the blob ones (`node::jobs`, `node::server`); the
//! verification and check loops stay as they are. The blob sync worker takes only the blob
//! replicables (`is_blob`), and the blob routes answer only for them.

pub mod blob;

use crate::descriptor::{ReplicatorDescriptor, Strategy};
use crate::storage::BlobStore;

/// A record's data checksummed where it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Checksummed {
    /// Its SHA-256.
    Sum([u8; 32]),
    /// Nothing is stored there.
    Missing,
    /// The location cannot be read safely (an unsafe key); the reason.
    Unreadable(String),
    /// Reading it failed; the reason.
    Failed(String),
}

/// The checksum of the data recorded at `key` for a record of `d`, in `store` (the primary's
/// objects or a secondary's copies).
pub(crate) async fn checksum<S: BlobStore>(
    d: &ReplicatorDescriptor,
    store: &S,
    key: &str,
) -> Checksummed {
    match d.strategy {
        Strategy::Blob => blob::checksum::checksum(store, key).await,
    }
}

/// Whether `d`'s data is moved by the blob strategy's sync worker and served by its routes.
pub(crate) fn is_blob(d: &ReplicatorDescriptor) -> bool {
    matches!(d.strategy, Strategy::Blob)
}
