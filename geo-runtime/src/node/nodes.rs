//! The secondaries a primary knows (`geo_nodes`): name, URL, access key and secret. A request is
//! accepted only from an enabled, known node.
//!
//! With a [`SecretsKey`] (Geo encrypts these with its `db_key_base`), secrets are stored sealed:
//! `geo:v1:` and the base64 of a random nonce and the ChaCha20-Poly1305 ciphertext, with the
//! node's access key as associated data, so a sealed secret copied to another row does not
//! open. A database dump then holds no usable secret. Secrets stored in clear (before a key was
//! configured) are still read, and [`seal_clear_secrets`] seals them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use sqlx::AssertSqlSafe;

use super::auth::{Secret, SecretsKey, generate_access_key};
use crate::db::dialect::{Ts, now, param};
use crate::db::{Database, on_conn, on_pool};
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
    /// A node's secret is sealed and no key was configured to open it.
    #[error("the secret of node {0} is encrypted, and no secrets_key is configured to decrypt it")]
    NoKey(String),
    /// A node's sealed secret does not open with the configured key.
    #[error(
        "the secret of node {0} does not decrypt with the configured secrets_key (another key, or a damaged value)"
    )]
    WrongKey(String),
    /// A secondary's name that cannot be one.
    #[error("`{name}` is not a valid node name: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A secondary's URL that cannot be one.
    #[error("`{url}` is not a valid node URL: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A secondary of that name is registered already.
    #[error(
        "a secondary named `{0}` is registered already (`geo nodes list`; remove it first with `geo nodes remove {0}`, or pick another name)"
    )]
    Exists(String),
}

/// Why `name` cannot name a node: 1 to 64 letters, digits, `.`, `_` or `-`.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 64 {
        Some("it is longer than 64 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("use letters, digits, `.`, `_` and `-` only")
    } else {
        None
    }
}

/// Checks a new secondary's name and URL.
fn validate(name: &str, url: &str) -> Result<(), NodeError> {
    if let Some(reason) = name_problem(name) {
        return Err(NodeError::InvalidName {
            name: name.to_owned(),
            reason,
        });
    }
    let invalid = |reason: String| NodeError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid("it must be http:// or https:// with a host".into()));
    }
    Ok(())
}

/// Stored secrets that start with this are sealed.
const SEALED: &str = "geo:v1:";

/// Seals `secret` for the node with `access_key`.
fn seal(key: &SecretsKey, access_key: &str, secret: &Secret) -> Result<String, NodeError> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| NodeError::Random(e.to_string()))?;
    let sealed = ChaCha20Poly1305::new(&(*key.bytes()).into())
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: secret.expose().as_bytes(),
                aad: access_key.as_bytes(),
            },
        )
        .map_err(|_| NodeError::Random("encryption failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(format!("{SEALED}{}", URL_SAFE_NO_PAD.encode(out)))
}

/// The secret stored for node `name` (access key `access_key`), opened with `key` when sealed.
fn open(
    key: Option<&SecretsKey>,
    name: &str,
    access_key: &str,
    stored: String,
) -> Result<Secret, NodeError> {
    let Some(sealed) = stored.strip_prefix(SEALED) else {
        return Ok(Secret::new(stored));
    };
    let key = key.ok_or_else(|| NodeError::NoKey(name.to_owned()))?;
    let wrong = || NodeError::WrongKey(name.to_owned());
    let raw = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| wrong())?;
    if raw.len() < 12 {
        return Err(wrong());
    }
    let (nonce, ciphertext) = raw.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| wrong())?;
    let plain = ChaCha20Poly1305::new(&(*key.bytes()).into())
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: access_key.as_bytes(),
            },
        )
        .map_err(|_| wrong())?;
    String::from_utf8(plain)
        .map(Secret::new)
        .map_err(|_| wrong())
}

/// Registers a secondary on the primary and returns its new credentials; the secret is stored
/// in clear (tests, development). [`register`] seals it with a key.
pub async fn add_secondary(
    primary: &Database,
    name: &str,
    url: &str,
) -> Result<NodeCredentials, NodeError> {
    register(primary, name, url, None).await
}

/// Registers a secondary on the primary and returns its new credentials, its secret sealed
/// with `key` when given.
pub async fn register(
    primary: &Database,
    name: &str,
    url: &str,
    key: Option<&SecretsKey>,
) -> Result<NodeCredentials, NodeError> {
    let credentials = NodeCredentials {
        access_key: generate_access_key(),
        secret: Secret::generate(),
    };
    add_secondary_with(primary, name, url, &credentials, key).await?;
    Ok(credentials)
}

/// Registers a secondary with credentials chosen elsewhere (configuration management), its
/// secret sealed with `key` when given.
pub async fn add_secondary_with(
    primary: &Database,
    name: &str,
    url: &str,
    credentials: &NodeCredentials,
    key: Option<&SecretsKey>,
) -> Result<(), NodeError> {
    validate(name, url)?;
    let stored = match key {
        Some(key) => seal(key, &credentials.access_key, &credentials.secret)?,
        None => credentials.secret.expose().to_owned(),
    };
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
        .bind(&stored)
        .bind(true)
        .bind(Ts(now()))
        .execute(pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => NodeError::Exists(name.to_owned()),
            _ => NodeError::Db(DbError::from(e)),
        })?
        .rows_affected());
    tracing::info!(
        node = name,
        url,
        sealed = key.is_some(),
        "secondary registered"
    );
    Ok(())
}

/// Seals every secret still stored in clear with `key`; returns how many. Run when a primary
/// with a key starts, so configuring a key is all it takes.
pub async fn seal_clear_secrets(primary: &Database, key: &SecretsKey) -> Result<usize, NodeError> {
    let d = primary.dialect();
    let select = format!(
        "SELECT \"access_key\", \"secret\" FROM \"geo_nodes\" WHERE \"secret\" NOT LIKE {}",
        param(d, 1)
    );
    let rows: Vec<(String, String)> = on_pool!(primary, read, pool => sqlx::query_as(AssertSqlSafe(select))
        .bind(format!("{SEALED}%"))
        .fetch_all(pool)
        .await
        .map_err(DbError::from)?);
    let update = format!(
        "UPDATE \"geo_nodes\" SET \"secret\" = {} WHERE \"access_key\" = {} AND \"secret\" = {}",
        param(d, 1),
        param(d, 2),
        param(d, 3)
    );
    let mut sealed = 0;
    for (access_key, secret) in rows {
        let value = seal(key, &access_key, &Secret::new(secret.clone()))?;
        let n = on_pool!(primary, write, pool => sqlx::query(AssertSqlSafe(update.clone()))
            .bind(value)
            .bind(&access_key)
            .bind(&secret)
            .execute(pool)
            .await
            .map_err(DbError::from)?
            .rows_affected());
        sealed += usize::try_from(n).unwrap_or(0);
    }
    Ok(sealed)
}

/// How many secrets are stored in clear.
pub async fn clear_secret_count(primary: &Database) -> Result<i64, DbError> {
    let sql = format!(
        "SELECT COUNT(*) FROM \"geo_nodes\" WHERE \"secret\" NOT LIKE {}",
        param(primary.dialect(), 1)
    );
    let n: i64 = on_pool!(primary, read, pool => sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(format!("{SEALED}%"))
        .fetch_one(pool)
        .await?);
    Ok(n)
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

/// Forgets a secondary: its credentials stop working at once (within the primary's 5 s node
/// cache) and its reported cursor no longer holds back the pruning of the event log. True
/// when it existed.
pub async fn remove(primary: &Database, name: &str) -> Result<bool, DbError> {
    let d = primary.dialect();
    let mut tx = primary.begin_write().await?;
    let removed = on_conn!(tx.conn(), c => sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM \"geo_nodes\" WHERE \"name\" = {}",
            param(d, 1)
        )))
        .bind(name)
        .execute(&mut *c)
        .await?
        .rows_affected());
    crate::events::forget_secondary_cursor(tx.conn(), name).await?;
    tx.commit().await?;
    if removed > 0 {
        tracing::info!(node = name, "secondary removed");
    }
    Ok(removed > 0)
}

/// The node with this access key, if any, its secret opened with `key` when sealed.
pub async fn find_by_access_key(
    primary: &Database,
    access_key: &str,
    key: Option<&SecretsKey>,
) -> Result<Option<KnownNode>, NodeError> {
    let sql = format!(
        "SELECT \"name\", \"secret\", \"enabled\" FROM \"geo_nodes\" WHERE \"access_key\" = {}",
        param(primary.dialect(), 1)
    );
    let row: Option<(String, String, bool)> = on_pool!(primary, read, pool => sqlx::query_as(AssertSqlSafe(sql))
        .bind(access_key)
        .fetch_optional(pool)
        .await
        .map_err(DbError::from)?);
    row.map(|(name, stored, enabled)| {
        Ok(KnownNode {
            secret: open(key, &name, access_key, stored)?,
            name,
            enabled,
        })
    })
    .transpose()
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
