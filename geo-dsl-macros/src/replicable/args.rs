//! The attribute's arguments as darling parses them, before any cross-checks.

use darling::FromMeta;
use darling::util::{Flag, SpannedValue};

/// `#[replicable(strategy = "blob", registry = "…", …)]` on the struct.
#[derive(Debug, Default, FromMeta)]
pub(crate) struct ReplicableArgs {
    /// Checked in `validate` so that a missing strategy gets a message that says what to write.
    #[darling(default)]
    pub strategy: Option<SpannedValue<StrategyArg>>,
    #[darling(default)]
    pub registry: Option<SpannedValue<SqlName>>,
    #[darling(default)]
    pub table: Option<SpannedValue<SqlName>>,
    #[darling(default)]
    pub name: Option<SpannedValue<SqlName>>,
    #[darling(default)]
    pub verification: Option<SpannedValue<VerificationArg>>,
    #[darling(default)]
    pub enabled_by_default: Option<bool>,
    #[darling(default, rename = "crate")]
    pub krate: Option<syn::Path>,
}

/// The keys `#[replicable(...)]` accepts on a struct, for "did you mean" hints.
pub(crate) const KEYS: &[&str] = &[
    "strategy",
    "registry",
    "table",
    "name",
    "verification",
    "enabled_by_default",
    "crate",
];

/// A table or replicable name: a string literal (checked against the identifier rule later).
#[derive(Debug, Clone)]
pub(crate) struct SqlName(pub String);

impl std::ops::Deref for SqlName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SqlName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromMeta for SqlName {
    fn from_string(value: &str) -> darling::Result<Self> {
        Ok(SqlName(value.to_owned()))
    }

    fn from_expr(expr: &syn::Expr) -> darling::Result<Self> {
        match expr {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Ok(SqlName(s.value())),
            other => {
                let shown = quote::ToTokens::to_token_stream(other).to_string();
                Err(darling::Error::custom(format!(
                    "write the name as a string literal: `\"{shown}\"`"
                ))
                .with_span(other))
            }
        }
    }
}

/// `strategy = "…"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromMeta)]
pub(crate) enum StrategyArg {
    Blob,
    Repository,
}

/// `verification = "…"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromMeta)]
pub(crate) enum VerificationArg {
    Inline,
    SeparateTable,
}

/// `#[replicable(id)]`, `#[replicable(blob)]`, … on a field.
#[derive(Debug, Default, FromMeta)]
pub(crate) struct FieldArgs {
    #[darling(default)]
    pub id: Flag,
    #[darling(default)]
    pub blob: Flag,
    #[darling(default)]
    pub file_store: Flag,
    #[darling(default)]
    pub selective_sync: Flag,
}
