//! The validated model of one replicable: every name is checked and final, and the syn nodes it
//! came from are kept for spans.

use proc_macro2::Ident;

/// How the data moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    Blob,
}

/// Where the primary keeps verification state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verification {
    Inline,
    SeparateTable { table: String },
}

/// A field with a role.
#[derive(Debug, Clone)]
pub(crate) struct RoleField {
    /// The field's identifier (raw identifiers keep their `r#`).
    pub ident: Ident,
    /// Its type, as written.
    pub ty: syn::Type,
    /// Its column: the field name without `r#`.
    pub column: String,
}

/// Everything codegen and SQL need.
#[derive(Debug, Clone)]
pub(crate) struct ReplicableDef {
    pub vis: syn::Visibility,
    pub ident: Ident,
    /// Path to the runtime (`::geo_runtime` or the `crate = "…"` override).
    pub krate: syn::Path,
    pub strategy: Strategy,
    pub name: String,
    pub name_plural: String,
    pub model_table: String,
    pub registry_table: String,
    /// `<name>_id`.
    pub foreign_key: String,
    pub verification: Verification,
    /// `geo_<name>_replication`.
    pub feature_flag: String,
    pub enabled_by_default: bool,
    pub id: RoleField,
    pub blob: Option<RoleField>,
    pub file_store: Option<RoleField>,
    pub selective_sync: Option<RoleField>,
}
