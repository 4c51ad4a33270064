//! The attribute's arguments as darling parses them, before any cross-checks.

use darling::FromMeta;
use darling::util::{Flag, SpannedValue};

/// `#[replicable(strategy = "blob", registry = "…", …)]` on the struct.
#[derive(Debug, FromMeta)]
pub struct ReplicableArgs {
    /// Checked in `validate` so that a missing strategy gets a message that says what to write.
    #[darling(default)]
    pub strategy: Option<SpannedValue<StrategyArg>>,
    #[darling(default)]
    pub registry: Option<SpannedValue<String>>,
    #[darling(default)]
    pub table: Option<SpannedValue<String>>,
    #[darling(default)]
    pub name: Option<SpannedValue<String>>,
    #[darling(default)]
    pub verification: Option<SpannedValue<VerificationArg>>,
    #[darling(default)]
    pub enabled_by_default: Option<bool>,
    #[darling(default, rename = "crate")]
    pub krate: Option<syn::Path>,
}

/// `strategy = "…"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromMeta)]
pub enum StrategyArg {
    Blob,
    Repository,
}

/// `verification = "…"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromMeta)]
pub enum VerificationArg {
    Inline,
    SeparateTable,
}

/// `#[replicable(id)]`, `#[replicable(blob)]`, … on a field.
#[derive(Debug, Default, FromMeta)]
pub struct FieldArgs {
    #[darling(default)]
    pub id: Flag,
    #[darling(default)]
    pub blob: Flag,
    #[darling(default)]
    pub file_store: Flag,
    #[darling(default)]
    pub selective_sync: Flag,
}
