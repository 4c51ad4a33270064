//! The static facts of a replicator, fixed at compile time: its [`ReplicatorDescriptor`]
//! (names, tables, columns, strategy, migrations) and the validated [`ReplicatorSet`] of them.
//!
//! A leaf: it imports nothing from the rest of the crate but its errors, so that the database
//! layer, the registries, the events and the workers can all read descriptors without
//! depending on the [`Replicator`](crate::replicator::Replicator) traits above them.

mod set;

pub use set::{RegisteredReplicator, ReplicatorSet};

/// The part a node plays; it decides which tables its database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Owns the models, writes events and checksums, serves data.
    Primary,
    /// Tracks registries in its own database and pulls data from the primary.
    Secondary,
}

impl NodeRole {
    /// `primary` / `secondary`.
    pub const fn as_str(self) -> &'static str {
        match self {
            NodeRole::Primary => "primary",
            NodeRole::Secondary => "secondary",
        }
    }
}

/// How a replicable's data is moved and checksummed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// A file or object: streamed over HTTP, SHA-256 checksummed.
    Blob,
}

impl Strategy {
    /// The strategy's name as written in `strategy = "…"` (Geo's `data_type`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Strategy::Blob => "blob",
        }
    }
}

/// Where the primary keeps a replicable's verification state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerificationStorage {
    /// Columns on the model table itself (`verification = "inline"`, Geo's option 1).
    Inline,
    /// A `<name>_states` table keyed by the model id, rows deleted with the model
    /// (`verification = "separate_table"`, the default; Geo's option 2).
    SeparateTable {
        /// The state table's name.
        table: &'static str,
    },
}

/// One versioned migration, with its text for each dialect. Applied migrations are recorded with
/// a checksum and must never change: add a new version instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationDef {
    /// Version inside its owner's scope, from 1, strictly increasing.
    pub version: i64,
    /// What it does, for humans.
    pub description: &'static str,
    /// SQL for PostgreSQL (several statements allowed).
    pub postgres: &'static str,
    /// SQL for SQLite (several statements allowed).
    pub sqlite: &'static str,
}

/// Everything the runtime knows about one replicator, fixed at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicatorDescriptor {
    /// `widget`: the replicable name, key of events, flags and the wire protocol.
    pub replicable_name: &'static str,
    /// `widgets`.
    pub replicable_name_plural: &'static str,
    /// Rust type name of the model, `Widget`.
    pub model_type: &'static str,
    /// Rust type name of the replicator, `WidgetReplicator`.
    pub replicator_type: &'static str,
    /// How the data moves.
    pub strategy: Strategy,
    /// The model's table on the primary.
    pub model_table: &'static str,
    /// The model table's id column.
    pub model_id_column: &'static str,
    /// The registry's column that holds the model id (Geo's `MODEL_FOREIGN_KEY`), `widget_id`.
    pub model_foreign_key: &'static str,
    /// The secondary's registry table.
    pub registry_table: &'static str,
    /// Where the primary keeps verification state.
    pub verification: VerificationStorage,
    /// `geo_widget_replication`.
    pub feature_flag: &'static str,
    /// Whether replication is on before anyone switches the flag.
    pub enabled_by_default: bool,
    /// Column of the object key (blob strategy).
    pub blob_column: Option<&'static str>,
    /// Column saying local disk or object storage, when the model has one.
    pub file_store_column: Option<&'static str>,
    /// Column a secondary may filter on (selective sync), when the model has one.
    pub selective_sync_column: Option<&'static str>,
    /// Migrations for the primary's database (verification state).
    pub primary_migrations: &'static [MigrationDef],
    /// Migrations for a secondary's tracking database (the registry).
    pub secondary_migrations: &'static [MigrationDef],
}

impl ReplicatorDescriptor {
    /// The table that holds the primary's verification columns.
    pub const fn verification_table(&self) -> &'static str {
        match self.verification {
            VerificationStorage::Inline => self.model_table,
            VerificationStorage::SeparateTable { table } => table,
        }
    }

    /// The migrations a node of `role` applies for this replicator.
    pub const fn migrations(&self, role: NodeRole) -> &'static [MigrationDef] {
        match role {
            NodeRole::Primary => self.primary_migrations,
            NodeRole::Secondary => self.secondary_migrations,
        }
    }
}

/// A replicable for the crate's own unit tests (no migrations: a test creates its tables).
#[cfg(test)]
pub(crate) static TEST_WIDGET: ReplicatorDescriptor = ReplicatorDescriptor {
    replicable_name: "widget",
    replicable_name_plural: "widgets",
    model_type: "Widget",
    replicator_type: "WidgetReplicator",
    strategy: Strategy::Blob,
    model_table: "widgets",
    model_id_column: "id",
    model_foreign_key: "widget_id",
    registry_table: "widget_registry",
    verification: VerificationStorage::SeparateTable {
        table: "widget_states",
    },
    feature_flag: "geo_widget_replication",
    enabled_by_default: true,
    blob_column: Some("file"),
    file_store_column: None,
    selective_sync_column: None,
    primary_migrations: &[],
    secondary_migrations: &[],
};
