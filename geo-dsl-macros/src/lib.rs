//! The `#[replicable]` attribute of geo-dsl.
//!
//! Depend on `geo-runtime`, which re-exports this macro; generated code reaches the runtime only
//! through `::geo_runtime::__private` (or the path given with `crate = "…"`).
//!
//! Phases, one module each: `replicable::args` (darling) → `replicable::validate` (checks,
//! every error accumulated with its span) → `replicable::ir` (the validated model) →
//! `codegen` (tokens) and `sql` (the migrations for both dialects, from `geo-schema`'s columns).

#![warn(missing_docs, unreachable_pub)]

mod codegen;
mod replicable;
mod sql;

#[cfg(test)]
mod tests;

use proc_macro::TokenStream;

/// Turns a model struct into a replicable.
///
/// ```ignore
/// #[geo_runtime::replicable(strategy = "blob", registry = "widget_registry", table = "widgets")]
/// pub struct Widget {
///     #[replicable(id)]   pub id: i64,
///     #[replicable(blob)] pub file: String,
///     pub project_id: i64,
/// }
/// ```
///
/// Keys: `strategy` (required: `"blob"`), `registry` (default `<name>_registry`), `table`
/// (default: the plural of `name`), `name` (default: the struct name in snake_case),
/// `verification` (`"separate_table"`, the default, or `"inline"`), `enabled_by_default`
/// (default false), `crate` (path of the runtime when it is re-exported).
///
/// Field attributes: `#[replicable(id)]` (required, `i64`), `#[replicable(blob)]` (required for
/// the blob strategy, `String`), `#[replicable(file_store)]`, `#[replicable(selective_sync)]`.
#[proc_macro_attribute]
pub fn replicable(args: TokenStream, item: TokenStream) -> TokenStream {
    replicable::expand(args.into(), item.into()).into()
}
