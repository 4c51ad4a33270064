//! Nodes and the wire between them: the primary's HTTP API ([`server`]), the secondary's client
//! ([`client`]), authentication ([`auth`]), the secondaries the primary knows ([`nodes`]), and
//! [`Node`], which runs everything a node of either role needs.

pub mod admin;
pub mod auth;
pub mod client;
pub mod nodes;
mod runner;
pub mod server;

pub use admin::AdminConfig;
pub use auth::{RequestScope, Secret, SecretsKey};
pub use client::{ClientError, PrimaryClient};
pub use runner::{Node, NodeConfig, NodeHandle, NodeStartError, PrimaryConfig, SecondaryConfig};
pub use server::{PrimaryApi, serve};

/// Response header: the object's SHA-256 (hex) when the primary has a verified checksum.
pub const HEADER_SHA256: &str = "x-geo-sha256";
/// Response header: the object's key on the primary.
pub const HEADER_OBJECT_KEY: &str = "x-geo-object-key";
/// `geo_code` of a 404 whose record exists but whose object does not.
pub const FILE_NOT_FOUND: &str = "FILE_NOT_FOUND";
