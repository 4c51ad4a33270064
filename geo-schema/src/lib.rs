//! The schema of geo-dsl's tables, in one place for the `#[replicable]` macro (which renders the
//! migrations and the registry type at compile time) and the runtime (which reads and writes
//! the rows), the way `serde_derive_internals` serves serde: no dependencies, no I/O, plain data.
//!
//! - [`Dialect`]: the two SQL dialects and their column types.
//! - [`columns`]: the registry's and the primary's verification columns, each with its SQL
//!   type, its Rust type and what it means.
//! - [`state`]: the sync and verification state numbers (Geo's).
//! - [`ident`]: the rule every SQL identifier follows, and index and constraint names.

#![warn(missing_docs, unreachable_pub)]

pub mod columns;
mod dialect;
pub mod ident;
pub mod state;

pub use columns::{Column, ColumnType, REGISTRY_COLUMNS, VERIFICATION_COLUMNS};
pub use dialect::Dialect;
