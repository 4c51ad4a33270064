//! Blob storage: where a node keeps the objects behind its models.
//!
//! [`ObjectKey`] is the only way to name an object: a relative path whose every component is
//! checked, so no key (from a database, an event or a response header) can reach outside the
//! store's root. [`LocalStore`] writes durably: a temp file in the destination directory, SHA-256
//! while streaming, fsync, rename into place, fsync of the directory; a failed or interrupted write
//! leaves nothing at the final path.

mod local;
#[cfg(feature = "object-store")]
mod remote;

use std::fmt;
use std::future::Future;

use bytes::Bytes;
use futures_util::Stream;

pub use local::{LocalStore, StagedBlob, TEMP_PREFIX};
#[cfg(feature = "object-store")]
pub use remote::{ObjectStoreBlobs, RemoteStaged};

/// A stream of an object's bytes.
pub type ByteStream = futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>;

/// An object opened for serving.
pub enum Opened {
    /// Read whole (small objects).
    Whole(Bytes),
    /// To stream, with its size.
    Stream(ByteStream, u64),
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Opened::Whole(b) => write!(f, "Opened::Whole({} bytes)", b.len()),
            Opened::Stream(_, size) => write!(f, "Opened::Stream({size} bytes)"),
        }
    }
}

/// An object read for a batch response ([`BlobStore::read_small_many`]).
#[derive(Debug)]
pub enum SmallObject {
    /// The whole object.
    Whole(Bytes),
    /// Larger than asked for: its size (to be streamed on its own).
    TooLarge(u64),
    /// No such object.
    Missing,
}

impl From<Option<Opened>> for SmallObject {
    fn from(opened: Option<Opened>) -> Self {
        match opened {
            None => SmallObject::Missing,
            Some(Opened::Whole(bytes)) => SmallObject::Whole(bytes),
            Some(Opened::Stream(_, size)) => SmallObject::TooLarge(size),
        }
    }
}

/// Reads of one batch response in flight at once, for stores with a round trip per read.
const READS_AT_ONCE: usize = 16;

/// Where a node keeps its objects: the local file system ([`LocalStore`]) or, with the
/// `object-store` feature, any `object_store` backend ([`ObjectStoreBlobs`]: S3 with `s3`).
/// The sync and the API use only this trait, never local paths.
///
/// Writes are staged, then committed in batches: nothing is visible at a key, and nothing may be
/// reported written, before [`BlobStore::commit`] returns it as written (durable and in place).
pub trait BlobStore: Clone + Send + Sync + fmt::Debug + 'static {
    /// A staged write.
    type Staged: Send + 'static;

    /// Bytes a staged write holds.
    fn staged_size(staged: &Self::Staged) -> u64;

    /// Stages a body already in memory, checking its SHA-256.
    fn stage_bytes(
        &self,
        key: &ObjectKey,
        data: Bytes,
        expected_sha256: Option<[u8; 32]>,
    ) -> impl Future<Output = Result<Self::Staged, StorageError>> + Send;

    /// Stages a streamed body, checking its size and SHA-256.
    fn stage_stream<S, E>(
        &self,
        key: &ObjectKey,
        body: S,
        expected_size: Option<u64>,
        expected_sha256: Option<[u8; 32]>,
    ) -> impl Future<Output = Result<Self::Staged, StorageError>> + Send
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: fmt::Display + Send;

    /// Makes staged writes durable where they are, still invisible at their keys (a local
    /// store flushes their data; an object store has nothing to do before the upload). One
    /// result per staged write, in order.
    fn flush(
        &self,
        staged: Vec<Self::Staged>,
    ) -> impl Future<Output = Vec<Result<Self::Staged, StorageError>>> + Send;

    /// Puts flushed staged writes in place, durably: each becomes visible at its key only
    /// complete, and none is reported written before it is (a local store renames them and
    /// flushes their directories; an object store uploads them). One result per staged write,
    /// in order. The sync publishes under the registry's lock, so that only the attempt still
    /// current puts its bytes in place.
    fn publish(
        &self,
        staged: Vec<Self::Staged>,
    ) -> impl Future<Output = Vec<Result<WrittenBlob, StorageError>>> + Send;

    /// Makes a batch durable and visible ([`BlobStore::flush`], then [`BlobStore::publish`]);
    /// one result per staged write, in order.
    fn commit(
        &self,
        staged: Vec<Self::Staged>,
    ) -> impl Future<Output = Vec<Result<WrittenBlob, StorageError>>> + Send {
        async move {
            let (ready, slots) = split_ready(self.flush(staged).await);
            fill_slots(slots, self.publish(ready).await)
        }
    }

    /// Opens `key` for serving (whole when at most `whole_below` bytes); `None` when missing.
    fn read_or_open(
        &self,
        key: &ObjectKey,
        whole_below: u64,
    ) -> impl Future<Output = Result<Option<Opened>, StorageError>> + Send;

    /// Stages several bodies already in memory; one result per item, in order. (A local store
    /// does it in one trip to the blocking pool.)
    fn stage_many_bytes(
        &self,
        items: Vec<(ObjectKey, Bytes, Option<[u8; 32]>)>,
    ) -> impl Future<Output = Vec<Result<Self::Staged, StorageError>>> + Send {
        async move {
            let mut out = Vec::with_capacity(items.len());
            for (key, data, sha256) in items {
                out.push(self.stage_bytes(&key, data, sha256).await);
            }
            out
        }
    }

    /// Reads the objects of `keys` that are at most `max` bytes whole, for a batch response;
    /// one result per key, in order. By default several reads at once, so that a batch does not
    /// cost its objects' round trips one after the other; a local store does it in one trip to
    /// the blocking pool.
    fn read_small_many(
        &self,
        keys: Vec<ObjectKey>,
        max: u64,
    ) -> impl Future<Output = Vec<Result<SmallObject, StorageError>>> + Send {
        use futures_util::StreamExt;
        futures_util::stream::iter(keys)
            .map(
                move |key| async move { self.read_or_open(&key, max).await.map(SmallObject::from) },
            )
            .buffered(READS_AT_ONCE)
            .collect()
    }

    /// Removes `key`; true when it existed.
    fn delete(&self, key: &ObjectKey) -> impl Future<Output = Result<bool, StorageError>> + Send;

    /// Removes `keys`, durably; one result per key, in order (true when it existed). By
    /// default one [`BlobStore::delete`] after the other; a local store flushes the directories
    /// once for the batch.
    fn delete_many(
        &self,
        keys: Vec<ObjectKey>,
    ) -> impl Future<Output = Vec<Result<bool, StorageError>>> + Send {
        async move {
            let mut out = Vec::with_capacity(keys.len());
            for key in &keys {
                out.push(self.delete(key).await);
            }
            out
        }
    }

    /// Removes what an interrupted write left behind; returns how many.
    fn remove_stale_temp_files(&self) -> impl Future<Output = Result<usize, StorageError>> + Send;

    /// Why the store cannot serve objects now (its root missing, not a directory, not
    /// readable), or `Ok` when it can. A primary refuses to start on such a store, and its
    /// status says why while it lasts. The default has nothing to check.
    fn usable(&self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }

    /// Every object's key, sorted (temp files left out): what `geo check` compares with the
    /// registries to find files no row accounts for. A key that is not a safe [`ObjectKey`]
    /// (a file someone put there by hand) is listed as found. The default cannot list.
    fn list_keys(&self) -> impl Future<Output = Result<Vec<String>, StorageError>> + Send {
        async {
            Err(StorageError::Io {
                op: "list",
                path: String::new(),
                source: std::io::Error::other("this store cannot list its objects"),
            })
        }
    }

    /// Size and SHA-256 of `key`, streamed in constant memory; `None` when missing.
    fn sha256(
        &self,
        key: &ObjectKey,
    ) -> impl Future<Output = Result<Option<(u64, [u8; 32])>, StorageError>> + Send {
        async move {
            use futures_util::StreamExt;
            use sha2::{Digest, Sha256};
            let Some(opened) = self.read_or_open(key, 1 << 20).await? else {
                return Ok(None);
            };
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            match opened {
                Opened::Whole(b) => {
                    size = b.len() as u64;
                    hasher.update(&b);
                }
                Opened::Stream(mut s, _) => {
                    while let Some(chunk) = s.next().await {
                        let chunk = chunk.map_err(|e| StorageError::Source {
                            bytes: size,
                            reason: e.to_string(),
                        })?;
                        size += chunk.len() as u64;
                        hasher.update(&chunk);
                    }
                }
            }
            Ok(Some((size, hasher.finalize().into())))
        }
    }
}

/// The objects that were flushed, and one slot per object: `None` where the flushed object's
/// outcome goes, or its flush error ([`fill_slots`] puts them back together).
pub(crate) fn split_ready<T>(
    flushed: Vec<Result<T, StorageError>>,
) -> (Vec<T>, Vec<Option<Result<WrittenBlob, StorageError>>>) {
    let mut ready = Vec::with_capacity(flushed.len());
    let slots = flushed
        .into_iter()
        .map(|f| match f {
            Ok(s) => {
                ready.push(s);
                None
            }
            Err(e) => Some(Err(e)),
        })
        .collect();
    (ready, slots)
}

/// The outcomes of a flush and a publish, in the order of the staged objects.
pub(crate) fn fill_slots(
    slots: Vec<Option<Result<WrittenBlob, StorageError>>>,
    published: Vec<Result<WrittenBlob, StorageError>>,
) -> Vec<Result<WrittenBlob, StorageError>> {
    let mut published = published.into_iter();
    slots
        .into_iter()
        .map(|slot| {
            slot.or_else(|| published.next()).unwrap_or_else(|| {
                Err(StorageError::Source {
                    bytes: 0,
                    reason: "the store published fewer objects than it was given".into(),
                })
            })
        })
        .collect()
}

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The key is not a safe relative path.
    #[error("unsafe object key {key:?}: {reason}")]
    UnsafeKey {
        /// The key, as given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The bytes written do not have the expected SHA-256.
    #[error("checksum mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// Hex of the expected SHA-256.
        expected: String,
        /// Hex of what arrived.
        actual: String,
    },
    /// Fewer or more bytes arrived than announced.
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// Bytes announced.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// The body's source failed (connection closed, stalled…).
    #[error("source failed after {bytes} bytes: {reason}")]
    Source {
        /// Bytes received before it failed.
        bytes: u64,
        /// Why.
        reason: String,
    },
    /// The file system failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    /// A short, stable name for the kind of failure (a metrics label): `unsafe_key`,
    /// `checksum_mismatch`, `size_mismatch`, `source` (the body stopped or stalled),
    /// `no_space` or `io`.
    pub fn kind(&self) -> &'static str {
        match self {
            StorageError::UnsafeKey { .. } => "unsafe_key",
            StorageError::ChecksumMismatch { .. } => "checksum_mismatch",
            StorageError::SizeMismatch { .. } => "size_mismatch",
            StorageError::Source { .. } => "source",
            StorageError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                "no_space"
            }
            StorageError::Io { .. } => "io",
        }
    }
}

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 1024;

/// A checked object key: `a/b/c.bin`. Components are non-empty, not `.` or `..`, and made of
/// `A-Z a-z 0-9 . _ - + = @ ,`; no leading slash, no backslash, at most [`MAX_KEY_LEN`] bytes,
/// and no component starts with the store's temp prefix.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// Checks `key`.
    pub fn parse(key: &str) -> Result<Self, StorageError> {
        let bad = |reason| StorageError::UnsafeKey {
            key: key.chars().take(200).collect(),
            reason,
        };
        if key.is_empty() {
            return Err(bad("it is empty"));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(bad("it is longer than 1024 bytes"));
        }
        for component in key.split('/') {
            match component {
                "" => {
                    return Err(bad(
                        "it has an empty component (a leading, trailing or double slash)",
                    ));
                }
                "." | ".." => return Err(bad("it has a `.` or `..` component")),
                c if c.starts_with(TEMP_PREFIX) => {
                    return Err(bad("a component uses the temp-file prefix"));
                }
                c if !c
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-+=@,".contains(&b)) =>
                {
                    return Err(bad("only A-Z a-z 0-9 . _ - + = @ , and / are allowed"));
                }
                _ => {}
            }
        }
        Ok(ObjectKey(key.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({:?})", self.0)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a durable write stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenBlob {
    /// Bytes written.
    pub size: u64,
    /// Their SHA-256.
    pub sha256: [u8; 32],
}

/// Parses 64 hex digits into a SHA-256.
pub fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_root() {
        for ok in ["a", "widgets/1/file.bin", "a-b_c.d+e=f@g,h", "x/y/z"] {
            assert!(ObjectKey::parse(ok).is_ok(), "{ok} refused");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "a b",
            "é",
            "a\0b",
            ".geo-tmp-x",
            "a/.geo-tmp-1",
            "%2e%2e/x",
        ] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ObjectKey::parse(&"a".repeat(1025)).is_err());
    }

    #[test]
    fn hex_round_trip() {
        let sum = [0xab_u8; 32];
        assert_eq!(parse_sha256(&hex::encode(sum)), Some(sum));
        assert_eq!(parse_sha256("zz"), None);
        assert_eq!(parse_sha256(&"g".repeat(64)), None);
    }
}
