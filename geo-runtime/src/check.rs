//! Compares a secondary with its primary object by object, as `rclone check` compares two trees:
//! every record the primary has must have a synced row here and a local copy whose SHA-256 is the
//! primary's checksum; every row here must still exist on the primary.
//!
//! The check reads the primary's ids and checksums over the node API, page by page, and merges
//! them with the registry in id order, so memory stays flat however many records there are. It
//! hashes the local copies itself (it never trusts the registry's recorded checksum), and changes
//! nothing.

use std::collections::HashMap;

use futures_util::StreamExt;
use sqlx::AssertSqlSafe;

use crate::db::dialect::{param, quote};
use crate::db::{Database, on_pool};
use crate::error::DbError;
use crate::events::SourceError;
use crate::node::PrimaryClient;
use crate::registry::SyncState;
use crate::replicator::ReplicatorDescriptor;
use crate::storage::{BlobStore, ObjectKey, hex};
use crate::worker::consistency::ModelIdSource;

/// Primary ids read per page.
const PAGE: usize = 5_000;

/// Local copies hashed at once.
const HASHING: usize = 4;

/// A check could not run to the end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The tracking database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The primary could not be asked.
    #[error("asking the primary failed: {0}")]
    Primary(#[from] SourceError),
}

/// One object that is not as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The primary has the record; there is no good copy here.
    Missing {
        /// The model id.
        id: i64,
        /// The object key, when known.
        key: Option<String>,
        /// Why: no registry row, not synced yet, or the file is gone.
        reason: String,
    },
    /// The local copy's SHA-256 is not the primary's checksum.
    Differs {
        /// The model id.
        id: i64,
        /// The object key.
        key: String,
        /// The primary's checksum, hex.
        primary: String,
        /// The local copy's, hex.
        local: String,
    },
    /// A row here whose record the primary no longer has.
    Extra {
        /// The model id.
        id: i64,
        /// The object key, when known.
        key: Option<String>,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = |k: &Option<String>| k.clone().unwrap_or_else(|| "-".into());
        match self {
            Difference::Missing { id, key: k, reason } => {
                write!(f, "{id} ({}): missing on the secondary: {reason}", key(k))
            }
            Difference::Differs {
                id,
                key,
                primary,
                local,
            } => write!(
                f,
                "{id} ({key}): checksums differ: primary {primary}, secondary {local}"
            ),
            Difference::Extra { id, key: k } => {
                write!(
                    f,
                    "{id} ({}): on the secondary but not on the primary",
                    key(k)
                )
            }
        }
    }
}

/// What the check of one replicable found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Records on the primary.
    pub primary_records: u64,
    /// Copies whose SHA-256 equals the primary's checksum.
    pub matching: u64,
    /// Copies present here whose primary has no checksum yet (nothing to compare with).
    pub unverifiable: u64,
    /// Everything that differs.
    pub differences: Vec<Difference>,
}

/// A registry row: (model id, state, object key).
type Row = (i64, i16, Option<String>);

/// A local copy looked at: (model id, object key, its SHA-256 or why there is none).
type Hashed = (i64, Option<String>, Result<Option<[u8; 32]>, String>);

/// Checks one replicable of a secondary (`tracking`, `store`) against its primary (`client`).
/// `on_difference` sees each difference as it is found (to print it at once).
pub async fn check_replicable<S: BlobStore>(
    tracking: &Database,
    d: &'static ReplicatorDescriptor,
    client: &PrimaryClient,
    store: &S,
    mut on_difference: impl FnMut(&Difference),
) -> Result<CheckReport, CheckError> {
    let mut report = CheckReport::default();
    let mut found = |report: &mut CheckReport, diff: Difference| {
        on_difference(&diff);
        report.differences.push(diff);
    };
    let sql = format!(
        "SELECT {fk}, \"state\", \"object_key\" FROM {t} WHERE {fk} > {} AND {fk} <= {} ORDER BY {fk}",
        param(tracking.dialect(), 1),
        param(tracking.dialect(), 2),
        fk = quote(d.model_foreign_key),
        t = quote(d.registry_table),
    );
    let mut after = i64::MIN;
    loop {
        let ids = client.model_ids_after(d, after, PAGE).await?;
        let last_page = ids.len() < PAGE;
        let upto = if last_page {
            i64::MAX
        } else {
            ids.last().copied().unwrap_or(i64::MAX)
        };
        let rows: Vec<Row> = on_pool!(tracking, read, pool => sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(after)
            .bind(upto)
            .fetch_all(pool)
            .await
            .map_err(DbError::from)?);
        let checksums: HashMap<i64, Option<[u8; 32]>> = client
            .primary_checksums(d.replicable_name, &ids)
            .await?
            .into_iter()
            .collect();
        report.primary_records += ids.len() as u64;
        let mut local: HashMap<i64, (i16, Option<String>)> = HashMap::with_capacity(rows.len());
        for (id, state, key) in rows {
            if ids.binary_search(&id).is_err() {
                found(&mut report, Difference::Extra { id, key });
            } else {
                local.insert(id, (state, key));
            }
        }
        let hashed: Vec<Hashed> = futures_util::stream::iter(ids.iter().copied())
            .map(|id| {
                let row = local.get(&id).cloned();
                async move {
                    match row {
                        None => (id, None, Err("no registry row".to_owned())),
                        Some((state, key)) if state != SyncState::Synced as i16 => {
                            let state =
                                SyncState::from_i16(state).map_or("unknown", SyncState::as_str);
                            (id, key, Err(format!("not synced (state {state})")))
                        }
                        Some((_, None)) => (id, None, Err("synced without a key".to_owned())),
                        Some((_, Some(key))) => {
                            let sum = match ObjectKey::parse(&key) {
                                Ok(k) => store
                                    .sha256(&k)
                                    .await
                                    .map(|s| s.map(|(_, sum)| sum))
                                    .map_err(|e| e.to_string()),
                                Err(e) => Err(e.to_string()),
                            };
                            (id, Some(key), sum)
                        }
                    }
                }
            })
            .buffered(HASHING)
            .collect()
            .await;
        for (id, key, sum) in hashed {
            match (sum, checksums.get(&id).copied().flatten()) {
                (Err(reason), _) => found(&mut report, Difference::Missing { id, key, reason }),
                (Ok(None), _) => found(
                    &mut report,
                    Difference::Missing {
                        id,
                        key,
                        reason: "the file is gone".into(),
                    },
                ),
                (Ok(Some(_)), None) => report.unverifiable += 1,
                (Ok(Some(local)), Some(primary)) if local == primary => report.matching += 1,
                (Ok(Some(local)), Some(primary)) => found(
                    &mut report,
                    Difference::Differs {
                        id,
                        key: key.unwrap_or_default(),
                        primary: hex(&primary),
                        local: hex(&local),
                    },
                ),
            }
        }
        if last_page {
            return Ok(report);
        }
        after = upto;
    }
}
