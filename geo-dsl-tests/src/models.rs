//! Models shared by the integration tests, one per verification mode.

/// A blob with its verification state in `widget_states` (the default), with every optional
/// field attribute.
#[geo_runtime::replicable(strategy = "blob", registry = "widget_registry", table = "widgets")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Widget {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
    #[replicable(file_store)]
    pub file_store: Option<i16>,
    #[replicable(selective_sync)]
    pub project_id: i64,
}

/// A blob with its verification state inline on `gadgets`, replication on by default.
#[geo_runtime::replicable(strategy = "blob", verification = "inline", enabled_by_default)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gadget {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub path: Option<String>,
}

/// The application's own tables for these models (what its migrations would create).
pub mod app_schema {
    /// PostgreSQL.
    pub const POSTGRES: &str = "CREATE TABLE widgets (id BIGINT PRIMARY KEY, file TEXT NOT NULL, file_store SMALLINT, project_id BIGINT NOT NULL);
CREATE TABLE gadgets (id BIGINT PRIMARY KEY, path TEXT);";
    /// SQLite.
    pub const SQLITE: &str = "CREATE TABLE widgets (id INTEGER PRIMARY KEY, file TEXT NOT NULL, file_store INTEGER, project_id INTEGER NOT NULL);
CREATE TABLE gadgets (id INTEGER PRIMARY KEY, path TEXT);";
}
