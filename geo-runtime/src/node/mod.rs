//! Nodes and the wire between them: the primary's HTTP API ([`PrimaryApi`]), the secondary's client
//! ([`client`]), authentication ([`auth`]), the secondaries the primary knows ([`nodes`]), and
//! [`Node`], which runs everything a node of either role needs.

pub mod admin;
pub mod auth;
pub mod client;
mod jobs;
pub mod nodes;
mod runner;
mod server;
mod wire;

pub use admin::AdminConfig;
pub use auth::{RequestScope, Secret, SecretsKey};
pub use client::{ClientError, PrimaryClient};
pub use runner::{Node, NodeConfig, NodeHandle, NodeStartError, PrimaryConfig, SecondaryConfig};
#[cfg(feature = "cli")]
pub(crate) use server::NODE_CACHE_TTL;
pub use server::{PrimaryApi, serve};

pub use wire::{FILE_NOT_FOUND, HEADER_OBJECT_KEY, HEADER_SHA256};
