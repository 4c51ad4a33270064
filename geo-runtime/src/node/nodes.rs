//! The secondaries a primary knows (`geo_nodes`): name, URL, access key and secret. A request is
//! accepted only from an enabled, known node.

use sqlx::AssertSqlSafe;

use super::auth::{Secret, generate_access_key};
use crate::db::dialect::{Ts, now, param};
use crate::db::{Database, on_pool};
use crate::error::DbError;

/// A known node, as the primary's request check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownNode {
    /// Its name.
    pub name: String,
    /// Its shared secret (redacted in `Debug`).
    pub secret: Secret,
    /// Whether it may make requests.
    pub enabled: bool,
}

/// The credentials a new secondary is configured with. Shown once; `Debug` hides the secret.
#[derive(Debug, Clone)]
pub struct NodeCredentials {
    /// Names the node in every request.
    pub access_key: String,
    /// Signs its requests.
    pub secret: Secret,
}

/// Generating a secret failed (no OS randomness).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// No OS randomness for the credentials.
    #[error("cannot generate credentials: {0}")]
    Random(String),
}

/// Registers a secondary on the primary and returns its new credentials.
pub async fn add_secondary(
    primary: &Database,
    name: &str,
    url: &str,
) -> Result<NodeCredentials, NodeError> {
    let random = |e: getrandom::Error| NodeError::Random(e.to_string());
    let credentials = NodeCredentials {
        access_key: generate_access_key().map_err(random)?,
        secret: Secret::generate().map_err(random)?,
    };
    add_secondary_with(primary, name, url, &credentials).await?;
    Ok(credentials)
}

/// Registers a secondary with credentials chosen elsewhere (configuration management).
pub async fn add_secondary_with(
    primary: &Database,
    name: &str,
    url: &str,
    credentials: &NodeCredentials,
) -> Result<(), DbError> {
    let d = primary.dialect();
    let sql = format!(
        "INSERT INTO \"geo_nodes\" (\"name\", \"url\", \"access_key\", \"secret\", \"enabled\", \"created_at\") VALUES ({}, {}, {}, {}, {}, {})",
        param(d, 1),
        param(d, 2),
        param(d, 3),
        param(d, 4),
        param(d, 5),
        param(d, 6)
    );
    on_pool!(primary, write, pool => sqlx::query(AssertSqlSafe(sql))
        .bind(name)
        .bind(url)
        .bind(&credentials.access_key)
        .bind(credentials.secret.expose())
        .bind(true)
        .bind(Ts(now()))
        .execute(pool)
        .await?
        .rows_affected());
    tracing::info!(node = name, url, "secondary registered");
    Ok(())
}

/// Enables or disables a node; a disabled node's requests are refused.
pub async fn set_enabled(primary: &Database, name: &str, enabled: bool) -> Result<bool, DbError> {
    let d = primary.dialect();
    let sql = format!(
        "UPDATE \"geo_nodes\" SET \"enabled\" = {} WHERE \"name\" = {}",
        param(d, 1),
        param(d, 2)
    );
    let n = on_pool!(primary, write, pool => sqlx::query(AssertSqlSafe(sql)).bind(enabled).bind(name).execute(pool).await?.rows_affected());
    Ok(n == 1)
}

/// The node with this access key, if any.
pub async fn find_by_access_key(
    primary: &Database,
    access_key: &str,
) -> Result<Option<KnownNode>, DbError> {
    let sql = format!(
        "SELECT \"name\", \"secret\", \"enabled\" FROM \"geo_nodes\" WHERE \"access_key\" = {}",
        param(primary.dialect(), 1)
    );
    let row: Option<(String, String, bool)> = on_pool!(primary, read, pool => sqlx::query_as(AssertSqlSafe(sql))
        .bind(access_key)
        .fetch_optional(pool)
        .await?);
    Ok(row.map(|(name, secret, enabled)| KnownNode {
        name,
        secret: Secret::new(secret),
        enabled,
    }))
}

/// A registered secondary as an operator sees it (no secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeSummary {
    /// Its name.
    pub name: String,
    /// Its URL, as registered.
    pub url: String,
    /// Its access key (not a secret: it names the node).
    pub access_key: String,
    /// Whether it may make requests.
    pub enabled: bool,
}

/// Every registered secondary, by name.
pub async fn list(primary: &Database) -> Result<Vec<NodeSummary>, DbError> {
    let sql = "SELECT \"name\", \"url\", \"access_key\", \"enabled\" FROM \"geo_nodes\" ORDER BY \"name\"";
    let rows: Vec<(String, String, String, bool)> =
        on_pool!(primary, read, pool => sqlx::query_as(sql).fetch_all(pool).await?);
    Ok(rows
        .into_iter()
        .map(|(name, url, access_key, enabled)| NodeSummary {
            name,
            url,
            access_key,
            enabled,
        })
        .collect())
}
