//! # geo-runtime
//!
//! Replicate and verify the data behind your models across sites. Annotate a model with
//! [`replicable`] and the macro generates its replicator, its registry, its migrations and its
//! verification accessors; this crate holds the traits that generated code implements, the
//! state machines, the database layer and the migration runner.
//!
//! ```
//! use geo_runtime::{BlobReplicator, ReplicableModel, Replicator};
//!
//! #[geo_runtime::replicable(strategy = "blob", registry = "widget_registry", table = "widgets")]
//! #[derive(Debug, Clone)]
//! pub struct Widget {
//!     #[replicable(id)]   pub id: i64,
//!     #[replicable(blob)] pub file: String,
//!     pub project_id: i64,
//! }
//!
//! let widget = Widget { id: 1, file: "widgets/1.png".into(), project_id: 7 };
//! let replicator = widget.replicator();
//! assert_eq!(replicator.object_key(), Some("widgets/1.png"));
//! assert_eq!(WidgetReplicator::feature_flag_name(), "geo_widget_replication");
//! assert_eq!(WidgetRegistry::TABLE_NAME, "widget_registry");
//! ```
//!
//! The guide "Replicating a new data type" in `docs/` walks through it step by step.
//!
//! Module map (one concern each, in GitLab Geo's vocabulary):
//! - [`replicator`]: the `Replicator` / `BlobReplicator` / `ReplicableModel` traits, the static
//!   [`ReplicatorDescriptor`] every replicator carries, and link-time registration.
//! - [`registry`]: the secondary's sync state machine and registry rows.
//! - [`verification`]: the checksum state machine shared by both sides.
//! - [`db`]: one [`Database`] type over PostgreSQL and SQLite, and the migration runner.
//! - [`strategy`]: what is particular to a kind of data (`strategy::blob`: fetch, commit, serve).
//! - [`worker`], [`node`], [`status`]: the workers, the HTTP API and its client, the status.
//!
//! `docs/architecture.md` lists every module, its layer and which may import which (a test
//! keeps it true).

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, unreachable_pub)]

pub mod check;
#[cfg(feature = "cli")]
pub mod cli;
pub mod db;
mod descriptor;
pub mod error;
pub mod events;
pub mod flags;
#[cfg(feature = "graphql")]
pub mod graphql;
mod model;
pub mod node;
pub mod operations;
pub mod registry;
mod removals;
pub mod replicator;
pub mod retry;
pub mod status;
pub mod storage;
mod store_checks;
pub mod strategy;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod verification;
pub mod worker;

#[doc(hidden)]
pub mod __private;

/// Turns a model struct into a replicable: see the crate docs and `docs/replicating-a-new-data-type.md`.
pub use geo_dsl_macros::replicable;

/// The date-time crate of the registry's timestamps.
pub use chrono;

pub use db::{Database, Dialect, NodeRole};
pub use error::{DbError, MigrateError, RegistrationError};
pub use registry::{RegistryRecord, SyncState};
pub use replicator::{
    BlobReplicator, MigrationDef, ReplicableModel, Replicator, ReplicatorDescriptor, ReplicatorSet,
    Strategy, VerificationStorage,
};
pub use verification::{VerificationDetails, VerificationState};
