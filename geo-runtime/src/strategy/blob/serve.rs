//! Serving the primary's objects: one, streamed when large, or the small objects of many
//! records at once, read from the store a group at a time. The answers are typed; the node's
//! server puts them on the wire.

use super::BATCH_INLINE_MAX;
use super::source::{Answer, Frame};
use crate::db::Database;
use crate::descriptor::ReplicatorDescriptor;
use crate::error::DbError;
use crate::model::{model_object, model_objects};
use crate::storage::{BlobStore, ObjectKey, Opened, SmallObject, StorageError};

/// Objects up to this size are read whole before they are sent; larger ones are streamed.
pub(crate) const WHOLE_READ_BELOW: u64 = 256 * 1024;

/// Objects of a batch read from the store in one go (and sent as one chunk).
pub(crate) const READ_GROUP: usize = 32;

/// The answer for one object.
#[derive(Debug)]
pub(crate) enum Served {
    /// The object: its key, the primary's verified checksum, the bytes (whole or streamed) and
    /// their size.
    Object {
        key: ObjectKey,
        sha256: Option<[u8; 32]>,
        body: Opened,
    },
    /// There is no such record.
    RecordMissing,
    /// The record exists, its object does not.
    FileMissing,
}

/// Why an object could not be served (logged; the client sees a 500).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The model's key is not a safe path.
    #[error("the model's object key is not a safe path: {0}")]
    UnsafeKey(String),
    /// The store failed.
    #[error("opening an object: {0}")]
    Store(#[from] StorageError),
}

/// Record `id`'s object.
pub(crate) async fn one<S: BlobStore>(
    db: &Database,
    store: &S,
    d: &ReplicatorDescriptor,
    id: i64,
) -> Result<Served, ServeError> {
    let (key, checksum) = match model_object(db, d, id).await? {
        None => return Ok(Served::RecordMissing),
        Some((None, _)) => return Ok(Served::FileMissing),
        Some((Some(key), checksum)) => (key, checksum),
    };
    let key = ObjectKey::parse(&key).map_err(|e| ServeError::UnsafeKey(e.to_string()))?;
    let sha256 = checksum.and_then(|c| <[u8; 32]>::try_from(c).ok());
    Ok(match store.read_or_open(&key, WHOLE_READ_BELOW).await? {
        None => Served::FileMissing,
        Some(body) => Served::Object { key, sha256, body },
    })
}

/// A requested id resolved to its key and checksum, or to the answer it gets without a read.
pub(crate) type Resolved = (i64, Result<(ObjectKey, Option<[u8; 32]>), Answer>);

/// Resolves each of `ids` (in order; an id asked for twice is answered twice).
pub(crate) async fn resolve(
    db: &Database,
    d: &ReplicatorDescriptor,
    ids: &[i64],
) -> Result<Vec<Resolved>, DbError> {
    let known: std::collections::HashMap<i64, (Option<String>, Option<Vec<u8>>)> =
        model_objects(db, d, ids)
            .await?
            .into_iter()
            .map(|(id, key, sum)| (id, (key, sum)))
            .collect();
    Ok(ids
        .iter()
        .map(|&id| {
            let resolved = match known.get(&id) {
                None => Err(Answer::RecordMissing),
                Some((None, _)) => Err(Answer::FileMissing),
                Some((Some(key), sum)) => ObjectKey::parse(key)
                    .map(|key| {
                        let sum = sum.clone().and_then(|c| <[u8; 32]>::try_from(c).ok());
                        (key, sum)
                    })
                    .map_err(|e| {
                        tracing::error!(replicable = d.replicable_name, id, error = %e, "the model's object key is not a safe path");
                        Answer::Error
                    }),
            };
            (id, resolved)
        })
        .collect())
}

/// The frames of a group of resolved ids, their small objects read from the store in one go.
pub(crate) async fn read_group<S: BlobStore>(
    store: &S,
    replicable: &'static str,
    group: Vec<Resolved>,
) -> Vec<Frame> {
    let keys = group
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().map(|(key, _)| key.clone()))
        .collect();
    let mut reads = store
        .read_small_many(keys, BATCH_INLINE_MAX)
        .await
        .into_iter();
    group
        .into_iter()
        .map(|(id, resolved)| {
            let answer = match resolved {
                Err(answer) => answer,
                Ok((key, sha256)) => match reads.next() {
                    Some(read) => answer_of(replicable, id, key, sha256, read),
                    None => Answer::Error,
                },
            };
            Frame { id, answer }
        })
        .collect()
}

/// What one read of a batch answers.
fn answer_of(
    replicable: &str,
    id: i64,
    key: ObjectKey,
    sha256: Option<[u8; 32]>,
    read: Result<SmallObject, StorageError>,
) -> Answer {
    match read {
        Ok(SmallObject::Whole(data)) => {
            // One line per object served, as for single retrievals: operators and the crash
            // suite count transfers per object with it.
            tracing::debug!(replicable, id, "serving an object");
            Answer::Object { key, sha256, data }
        }
        Ok(SmallObject::TooLarge(size)) => Answer::Separately { size: Some(size) },
        Ok(SmallObject::Missing) => Answer::FileMissing,
        Err(e) => {
            tracing::error!(replicable, id, error = %e, "reading an object");
            Answer::Error
        }
    }
}
